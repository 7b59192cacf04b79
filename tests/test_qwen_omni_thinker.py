"""Parity of the Flax thinker with transformers' Qwen2_5OmniThinkerForConditionalGeneration (tiny, fp32)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from omnir1_jax.models.qwen_omni import (
    Thinker,
    get_rope_index,
    init_cache,
    init_params,
    load_hf,
    tiny,
    token_logprobs,
)
from omnir1_jax.models.qwen_omni.audio import audio_output_lengths
from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
from omnir1_jax.rollout.sampler import SamplerConfig, generate_jit
from omnir1_jax.models.qwen_omni.rope import decode_position_ids
from omnir1_jax.models.qwen_omni.thinker import static_grid
from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

D = 64
STATIC = ("image_grid_thw", "video_grid_thw", "feature_attention_mask", "video_second_per_grid")
MIXES = ("text", "image", "video", "audio_image", "audio", "audio_in_video")


def tiny_config():
    return tiny(
        vocab_size=256,
        vision=dataclasses.replace(VisionConfig.tiny(), out_hidden_size=D),
        audio=dataclasses.replace(AudioConfig.tiny(), output_dim=D),
    )


@pytest.fixture(scope="module")
def hf_and_ours():
    cfg = tiny_config()
    hf_cfg = cfg.to_hf()
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = Qwen2_5OmniThinkerForConditionalGeneration(hf_cfg).eval()
    model, params = load_hf(hf)
    assert model.config == cfg
    return hf, model, params


def make_inputs(cfg, mix: str, rows: int = 2, seed: int = 0, vid_grid=None, spg=None) -> dict:
    """Left-padded multimodal batch in transformers' format (rows alternate between two item sizes)."""
    rng = np.random.RandomState(seed)
    text = lambda n: list(rng.randint(0, 200, size=n))  # noqa: E731
    img_grid = np.array([[1, 4, 4], [1, 4, 6]] * (rows // 2))
    vid_grid = np.array([[2, 4, 4], [4, 4, 2]] * (rows // 2)) if vid_grid is None else vid_grid
    flens = ([40, 220] if mix == "audio_in_video" else [40, 23]) * (rows // 2)
    _, alens = audio_output_lengths(flens)
    spg = np.array([1.0, 0.5] * (rows // 2), np.float32) if spg is None else spg
    if mix == "audio_in_video":  # row 0: video has more chunks than audio; row 1: audio has more
        vid_grid = np.array([[4, 4, 4], [2, 4, 2]] * (rows // 2))

    def block(start, tok, n, end):
        return [start] + [tok] * n + [end]

    seqs = []
    for i in range(rows):
        img = block(cfg.vision_start_token_id, cfg.image_token_id, int(np.prod(img_grid[i])) // 4,
                    cfg.vision_end_token_id)
        vid = block(cfg.vision_start_token_id, cfg.video_token_id, int(np.prod(vid_grid[i])) // 4,
                    cfg.vision_end_token_id)
        aud = block(cfg.audio_start_token_id, cfg.audio_token_id, alens[i], cfg.audio_end_token_id)
        av = [cfg.vision_start_token_id] + av_tokens(cfg, vid_grid[i], spg[i], alens[i]) + [cfg.vision_end_token_id]
        body = {"text": [], "image": img, "video": vid, "audio_image": aud + img, "audio": aud,
                "audio_in_video": av}[mix]
        seqs.append(text(3 - i % 2) + body + text(4 - i % 2))
    L = max(map(len, seqs)) + 2
    ids = np.full((rows, L), cfg.pad_token_id, np.int64)
    mask = np.zeros((rows, L), np.int64)
    for b, s in enumerate(seqs):
        ids[b, L - len(s):] = s
        mask[b, L - len(s):] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    pdim = cfg.vision.patch_dim
    if mix in ("image", "audio_image"):
        out["image_grid_thw"] = img_grid
        out["pixel_values"] = rng.randn(int(np.prod(img_grid, -1).sum()), pdim).astype(np.float32)
    if mix in ("video", "audio_in_video"):
        out["video_grid_thw"] = vid_grid
        out["pixel_values_videos"] = rng.randn(int(np.prod(vid_grid, -1).sum()), pdim).astype(np.float32)
        out["video_second_per_grid"] = spg
    if mix in ("audio", "audio_image", "audio_in_video"):
        fm = np.zeros((rows, max(flens)), np.int64)
        for i, n in enumerate(flens):
            fm[i, :n] = 1
        out["feature_attention_mask"] = fm
        out["input_features"] = rng.randn(rows, cfg.audio.num_mel_bins, max(flens)).astype(np.float32)
    return out


def av_tokens(cfg, grid, spg: float, n_audio: int) -> list[int]:
    """``<audio_bos>`` + interleaved 2-second video/audio chunks + ``<audio_eos>`` (the processor's layout)."""
    t, h, w = (int(v) for v in grid)
    per = cfg.position_id_per_seconds * cfg.seconds_per_chunk
    v_chunk = np.repeat((np.arange(t) * spg * cfg.position_id_per_seconds) // per, h * w // 4)
    a_chunk = np.arange(n_audio) // per
    out = [cfg.audio_start_token_id]
    for j in range(int(max(v_chunk.max(), a_chunk.max())) + 1):
        out += [cfg.video_token_id] * int((v_chunk == j).sum()) + [cfg.audio_token_id] * int((a_chunk == j).sum())
    return out + [cfg.audio_end_token_id]


def split(inputs: dict) -> tuple[dict, dict]:
    static = {k: v for k, v in inputs.items() if k in STATIC}
    return static, {k: v for k, v in inputs.items() if k not in STATIC}


def hf_logits(hf, inputs: dict, use_audio_in_video: bool = False) -> np.ndarray:
    with torch.no_grad():
        return hf(**{k: torch.tensor(v) for k, v in inputs.items()},
                  use_audio_in_video=use_audio_in_video).logits.numpy()


def hf_rope(hf, inputs: dict, use_audio_in_video: bool = False):
    t = lambda k: torch.tensor(inputs[k]) if k in inputs else None  # noqa: E731
    fm = inputs.get("feature_attention_mask")
    with torch.no_grad():
        pos, deltas = hf.model.get_rope_index(
            t("input_ids"), t("image_grid_thw"), t("video_grid_thw"), t("attention_mask"), use_audio_in_video,
            None if fm is None else torch.tensor(fm).sum(-1), t("video_second_per_grid"))
    return pos.numpy(), deltas.numpy().reshape(-1)


@pytest.mark.parametrize("mix", MIXES)
def test_rope_index_matches_transformers(hf_and_ours, mix):
    hf, model, _ = hf_and_ours
    inputs = make_inputs(model.config, mix)
    av = mix == "audio_in_video"
    ref_pos, ref_deltas = hf_rope(hf, inputs, av)
    static, _ = split(inputs)
    spg = static.get("video_second_per_grid")
    fm = static.get("feature_attention_mask")
    fn = jax.jit(lambda ids, mask: get_rope_index(
        model.config, ids, mask, static_grid(static.get("image_grid_thw")),
        static_grid(static.get("video_grid_thw")), None if fm is None else tuple(fm.sum(-1).tolist()), av,
        None if spg is None else tuple(spg.tolist())))
    pos, deltas = fn(inputs["input_ids"], inputs["attention_mask"])  # input_ids traced
    np.testing.assert_array_equal(np.asarray(pos), ref_pos)
    np.testing.assert_array_equal(np.asarray(deltas), ref_deltas)
    assert inputs["attention_mask"][1, 0] == 0  # the batch really is left-padded


def test_rope_index_fractional_seconds_per_grid(hf_and_ours):
    hf, model, _ = hf_and_ours
    spg = np.array([5 / 3, 0.7, 10 / 3, 0.3], np.float32)  # k*(spg*25) would give 124 at k=3, not 125
    grid = np.array([[4, 4, 4], [4, 4, 2]] * 2)
    inputs = make_inputs(model.config, "video", rows=4, vid_grid=grid, spg=spg)
    ref_pos, ref_deltas = hf_rope(hf, inputs)
    pos, deltas = get_rope_index(model.config, jnp.asarray(inputs["input_ids"]),
                                 jnp.asarray(inputs["attention_mask"]), None, static_grid(grid), None, False,
                                 tuple(spg.tolist()))
    np.testing.assert_array_equal(np.asarray(pos), ref_pos)
    np.testing.assert_array_equal(np.asarray(deltas), ref_deltas)


@pytest.mark.parametrize("mix", ("text", "image", "video", "audio_image", "audio_in_video"))
def test_logits_match_transformers(hf_and_ours, mix):
    hf, model, params = hf_and_ours
    inputs = make_inputs(model.config, mix, seed=1)
    av = mix == "audio_in_video"
    ref = hf_logits(hf, inputs, av)
    static, dyn = split(inputs)
    out = np.asarray(jax.jit(lambda p, d: model.apply({"params": p}, **d, **static, use_audio_in_video=av))(
        params, dyn))
    valid = inputs["attention_mask"].astype(bool)
    assert out.shape == ref.shape
    assert np.abs(out - ref)[valid].max() < 1e-4


def test_prefill_then_cached_decode_equals_full_forward(hf_and_ours):
    _, model, params = hf_and_ours
    inputs = make_inputs(model.config, "image", seed=2)
    static, dyn = split(inputs)
    ids, mask = dyn["input_ids"], dyn["attention_mask"]
    B, L = ids.shape
    P = L - 4  # prefill the first L-4 tokens, then decode 1 + 3 at a time

    def run(p, d):
        full = model.apply({"params": p}, **d, **static)
        x, pos, _ = model.apply({"params": p}, d["input_ids"], d["attention_mask"], pixel_values=d["pixel_values"],
                                image_grid_thw=static["image_grid_thw"], method=Thinker.embed)
        cache = init_cache(model.config, B, L + 2)
        kmask = jnp.pad(d["attention_mask"], ((0, 0), (0, 2)))
        dec = lambda s, e, c, i: model.apply(  # noqa: E731
            {"params": p}, x[:, s:e], pos[:, :, s:e], kmask, c, i, method=Thinker.decode)
        h1, cache = dec(0, P, cache, 0)
        h2, cache = dec(P, P + 1, cache, P)
        h3, cache = dec(P + 1, L, cache, P + 1)
        hid = jnp.concatenate([h1, h2, h3], axis=1)
        return full, model.apply({"params": p}, hid, method=Thinker.logits), cache

    full, stepped, cache = jax.jit(run)(params, dyn)
    valid = mask.astype(bool)
    assert np.abs(np.asarray(full) - np.asarray(stepped))[valid].max() < 1e-4
    assert cache["k"].shape == (model.config.num_hidden_layers, B, 2, L + 2, 16)  # [layers, B, KV, S, hd]
    assert float(jnp.abs(cache["k"][:, :, :, L:]).max()) == 0.0  # slots past the written block untouched
    written = np.asarray(jnp.abs(cache["k"][:, :, :, :L]).max(axis=-1) > 0)  # [layers, B, KV, L]
    assert written.transpose(1, 3, 0, 2)[valid].all()  # every real token's slot is set, in every layer


def test_greedy_32_tokens_match_transformers_generate(hf_and_ours):
    hf, model, params = hf_and_ours
    inputs = make_inputs(model.config, "audio_image", seed=3)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = model.config.pad_token_id
    with torch.no_grad():
        ref = hf.generate(**{k: torch.tensor(v) for k, v in inputs.items()}, max_new_tokens=32,
                          do_sample=False)[:, inputs["input_ids"].shape[1]:].numpy()
    # Our KV-cache decode through the rollout sampler's greedy mode (one prefill, then cached steps).
    cfg = SamplerConfig(max_new_tokens=32, greedy=True, pad_id=model.config.pad_token_id)
    ours = np.asarray(generate_jit(model, params, inputs, jax.random.key(0), cfg).tokens)
    assert ref.shape == (2, 32)
    np.testing.assert_array_equal(ours, ref)
    assert len(np.unique(ref)) > 3  # a non-degenerate continuation


def test_decode_position_ids_continue_rope():
    deltas = jnp.array([-2, 5])
    pos = decode_position_ids(deltas, jnp.array([7, 3]), length=2)
    np.testing.assert_array_equal(np.asarray(pos[0]), [[5, 6], [8, 9]])
    assert pos.shape == (3, 2, 2)


def test_token_logprobs_chunked_equals_full_log_softmax(hf_and_ours):
    _, model, params = hf_and_ours
    rng = np.random.RandomState(4)
    hidden = jnp.asarray(rng.randn(2, 5, D).astype(np.float32))
    targets = jnp.asarray(rng.randint(0, model.config.vocab_size, size=(2, 5)))
    logits = model.apply({"params": params}, hidden, method=Thinker.logits)
    ref = jax.nn.log_softmax(logits, -1)
    ref_lp = jnp.take_along_axis(ref, targets[..., None], -1)[..., 0]
    ref_ent = -jnp.sum(jnp.exp(ref) * ref, -1)
    lp, ent = jax.jit(lambda p, h, t: token_logprobs(model, p, h, t, chunk_size=100, return_entropy=True))(
        params, hidden, targets)  # 256 = 2 full chunks + a remainder of 56
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), atol=1e-5)
    lp_only = token_logprobs(model, params, hidden, targets, chunk_size=256)
    np.testing.assert_allclose(np.asarray(lp_only), np.asarray(ref_lp), atol=1e-5)


def test_every_param_has_logical_axes_and_bf16_remat_runs(hf_and_ours):
    _, model, params = hf_and_ours
    boxed = jax.eval_shape(lambda r: init_params(model, r), jax.random.PRNGKey(0))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    # the loaded tree has exactly the structure init creates
    assert jax.tree_util.tree_structure(nn.unbox(boxed)) == jax.tree_util.tree_structure(params)
    q = boxed["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.names == ("layers", "embed", "heads", "head_dim")
    bf16 = Thinker(model.config, dtype=jnp.bfloat16, param_dtype=jnp.float32, remat=True)
    inputs = make_inputs(model.config, "text", seed=5)
    out = jax.jit(lambda p, i, m: bf16.apply({"params": p}, i, m))(params, inputs["input_ids"],
                                                                   inputs["attention_mask"])
    ref = model.apply({"params": params}, inputs["input_ids"], inputs["attention_mask"])
    assert out.dtype == jnp.bfloat16
    valid = inputs["attention_mask"].astype(bool)
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref))[valid].max()
    assert 0 < err < 0.1


def test_sharded_forward_equals_single_device(hf_and_ours):
    from omnir1_jax.parallel.rules import get_rules
    from omnir1_jax.parallel.sharding import mesh_rules, sharded_fraction

    _, model, params = hf_and_ours
    inputs = make_inputs(model.config, "image", rows=4, seed=6)
    static, dyn = split(inputs)
    fwd = lambda p, d: model.apply({"params": p}, **d, **static)  # noqa: E731
    ref = np.asarray(jax.jit(fwd)(params, dyn))

    mesh = jax.make_mesh((1, 4, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    rules = get_rules("train")
    boxed = jax.eval_shape(lambda r: init_params(model, r), jax.random.PRNGKey(0))
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    sharded = jax.device_put(params, shardings)
    assert sharded_fraction(sharded) > 0.5
    q = sharded["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec[1:3] == ("fsdp", "tensor")
    with mesh_rules(mesh, rules):
        out = np.asarray(jax.jit(fwd)(sharded, dyn))
    valid = inputs["attention_mask"].astype(bool)
    assert np.abs(out - ref)[valid].max() < 1e-5
