"""SFT: reference answers from world.json, the answer-only loss against a full-logits computation, frozen
towers, and the in-graph non-finite guard."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_pipelines.synthetic import answers, writer
from omnir1_jax.config import default_config
from omnir1_jax.models.qwen_omni import Thinker, init_params
from omnir1_jax.parallel import unbox
from omnir1_jax.rl.optim import make_optimizer_from_config
from omnir1_jax.rl.sft import make_train_step, sft_loss
from omnir1_jax.rl.state import TrainState, all_finite, guarded_apply
from omnir1_jax.rl.task import build_thinker, build_tokenizer, tiny_thinker_config
from omnir1_jax.text import SyntheticTokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    writer.write_vos(str(root / "revos"), seed=3, num_train=3, num_valid=1, no_target_prob=1.0)
    writer.write_refavs(str(root / "refavs"), seed=3, num_train=2, num_val=1, num_test=1)
    return root


def test_vos_answer_from_world(world):
    index = answers.load_world_index(str(world / "revos"))
    n_target = n_empty = 0
    for uid, entry in index.items():
        clip, q = entry["clip"], entry["query"]
        frames = np.linspace(0, clip["num_frames"] - 1, 12).astype(int)
        text = answers.reference_answer(index, "revos", uid, frames, max_keyframes=4)
        m = re.fullmatch(r"<think>.+</think><answer>(.*)</answer>", text, re.S)
        assert m, text
        moments = json.loads(m.group(1))
        assert len(moments) <= 4
        if q["target"] is None:
            assert moments == []
            n_empty += 1
            continue
        n_target += 1
        assert moments, uid
        boxes = clip["objects"][q["target"]]["boxes_xyxy"]
        times = []
        for mo in moments:
            assert mo["description"] == q["answer"] and mo["start_time"] == mo["end_time"]
            assert re.fullmatch(r"00:\d\d\.\d\d", mo["start_time"])
            pos = int(round(float(mo["start_time"][3:]) * 2))  # 2 fps over the sampled frames
            assert str(frames[pos]) in boxes  # the target is visible at each keyframe
            times.append(pos)
        assert times == sorted(set(times))
    assert n_target > 0 and n_empty > 0


def test_refavs_answer(world):
    index = answers.load_world_index(str(world / "refavs"))
    uid, entry = next(iter(index.items()))
    text = answers.reference_answer(index, "refavs", uid)
    assert text.endswith(f"<answer>{entry['query']['answer']}</answer>") and text.startswith("<think>")
    with pytest.raises(KeyError):
        answers.reference_answer(index, "refavs", "no-such-uid")


@pytest.fixture(scope="module")
def setup():
    config = default_config()
    config.model.preset, config.model.dtype, config.model.remat = "tiny", "float32", False
    config.optim.learning_rate, config.optim.schedule = 1e-2, "constant"
    tok = build_tokenizer(config)
    model, init_fn, load_fn = build_thinker(config, tok)
    assert load_fn is None and isinstance(tok, SyntheticTokenizer) and model.config.audio is not None
    model = Thinker(dataclasses.replace(model.config, audio=None))  # VOS batches never touch the audio tower
    params = jax.jit(lambda r: unbox(init_params(model, r)))(jax.random.key(0))
    c = model.config
    grid = ((2, 4, 4),)  # one 2-frame video of 4x4 patches -> 8 merged tokens
    n_vid = 2 * 4 * 4 // 4
    rng = np.random.default_rng(0)
    B, L = 2, 24
    ids = rng.integers(200, 400, size=(B, L)).astype(np.int32)
    ids[:, 2:2 + n_vid] = c.video_token_id
    ids[1, 2:2 + n_vid] = 300  # example 1 carries no video: keep one video per batch
    ids[1, 5:5 + n_vid] = c.video_token_id
    attn = np.ones((B, L), np.int32)
    attn[0, :1] = 0
    loss_mask = np.zeros((B, L), np.int32)
    loss_mask[:, 16:22] = 1
    pv = rng.normal(size=(B, 40, c.vision.patch_dim)).astype(np.float32)
    batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask, "pixel_values_videos": pv}
    layout = ("revos", grid * B, (1.0,) * B, (), ())
    return config, model, params, batch, layout


def test_loss_matches_full_logits(setup):
    config, model, params, batch, layout = setup
    loss_fn = jax.jit(lambda p, b: sft_loss(model, p, b, layout, chunk_size=100))
    loss, (n, _) = loss_fn(params, batch)
    # Reference: the model's own full-logits forward on the concatenated valid patches.
    pv = np.concatenate([batch["pixel_values_videos"][i, :32] for i in range(2)])
    logits = jax.jit(lambda p, ids, am, pv: model.apply(
        {"params": p}, ids, am, pixel_values_videos=pv, video_grid_thw=np.asarray(layout[1]),
        video_second_per_grid=layout[2]))(params, batch["input_ids"], batch["attention_mask"], pv)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    tgt = np.take_along_axis(np.asarray(logp), batch["input_ids"][:, 1:, None], -1)[..., 0]
    m = batch["loss_mask"][:, 1:]
    want = -(tgt * m).sum() / m.sum()
    assert float(n) == m.sum() == 12
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    # Changing an answer token (inside the loss mask) changes the loss.
    b3 = dict(batch, input_ids=batch["input_ids"].copy())
    b3["input_ids"][:, 18] = 7
    loss3, _ = loss_fn(params, b3)
    assert float(loss3) != pytest.approx(float(loss))


def test_step_updates_decoder_not_towers_and_guards_nan(setup):
    config, model, params, batch, layout = setup
    tx, lr = make_optimizer_from_config(params, config, total_steps=10)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params),
                       rng=jax.random.key_data(jax.random.key(0)))
    step = jax.jit(make_train_step(model, tx, lr, tuple(config.model.freeze), 100), static_argnames="layout")
    dev = {k: jnp.asarray(v) for k, v in batch.items()}
    new, m = step(state, dev, layout=layout)
    assert float(m["skipped_nonfinite"]) == 0 and np.isfinite(float(m["loss"])) and int(new.step) == 1
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new.params)
    assert not any(jax.tree.leaves(changed["visual"]))
    assert all(jax.tree.leaves(changed["decoder"]))
    # A NaN batch: in-graph skip, params and optimizer state unchanged, step still advances.
    bad = dict(dev, pixel_values_videos=dev["pixel_values_videos"].at[0, 0, 0].set(jnp.nan))
    newer, m2 = step(new, bad, layout=layout)
    assert float(m2["skipped_nonfinite"]) == 1 and int(newer.step) == 2
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), (new.params, new.opt_state),
                        (newer.params, newer.opt_state))
    assert all(jax.tree.leaves(same))


def test_guarded_apply_and_all_finite():
    params = {"w": jnp.ones(3)}
    tx = optax.sgd(0.5)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jnp.zeros(2, jnp.uint32))
    s1, m1 = guarded_apply(state, {"w": jnp.ones(3)}, tx, jnp.float32(1.0))
    np.testing.assert_allclose(s1.params["w"], 0.5)
    assert float(m1["skipped_nonfinite"]) == 0
    s2, m2 = guarded_apply(s1, {"w": jnp.ones(3)}, tx, jnp.float32(jnp.inf))  # finite grads, infinite loss
    np.testing.assert_allclose(s2.params["w"], 0.5)
    assert float(m2["skipped_nonfinite"]) == 1 and int(s2.step) == 2
    assert bool(all_finite({"a": jnp.ones(2), "i": jnp.arange(3)})) and not bool(all_finite(jnp.array([0.0, jnp.nan])))


def test_tiny_config_uses_tokenizer_ids():
    tok = SyntheticTokenizer()
    c = tiny_thinker_config(tok)
    assert c.vocab_size % 64 == 0 and tok.vocab_size <= c.vocab_size < tok.vocab_size + 64
    assert c.video_token_id == tok.mm_ids["<|VIDEO|>"]
    assert c.vision.out_hidden_size == c.hidden_size == c.audio.output_dim
    assert Thinker(c).config.eos_token_id == tok.eos_ids[0]
