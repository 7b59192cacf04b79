"""The jitted GRPO step on tiny real-architecture models: sample -> parse -> ground -> SAM2 -> reward -> update."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax import parallel, prompts
from omnir1_jax.models.qwen_omni import Thinker, init_params
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.model import Sam2VideoModel
from omnir1_jax.rewards.combine import RewardWeights
from omnir1_jax.rl import grpo, grpo_reward, grpo_rollout, optim
from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings
from omnir1_jax.rl.state import TrainState
from omnir1_jax.rl.task import tiny_thinker_config
from omnir1_jax.rollout.grounding import GroundingOutput, build_spec
from omnir1_jax.text import SyntheticTokenizer

B, G, F, S, M = 2, 2, 4, 64, 16  # prompts, generations, frames, SAM2 input side, reward-mask side
VGRID, HGRID = (2, 4, 4), (1, 4, 4)


@pytest.fixture(scope="module")
def env():
    tok = SyntheticTokenizer()
    cfg = tiny_thinker_config(tok)
    thinker = Thinker(cfg)
    params = parallel.unbox(jax.jit(init_params, static_argnums=0)(thinker, jax.random.key(0)))
    sam = Sam2VideoModel(Sam2Config.tiny())
    sam_params = parallel.unbox(jax.jit(lambda r: sam.init(r, jnp.zeros((1, 3, S, S)),
                                                           method=Sam2VideoModel.init_all)["params"])(jax.random.key(1)))
    pd = cfg.vision.patch_dim
    text = prompts.render_prompt(tok, "vos", "the red circle", F, seed_key="a")
    ids = tok.encode(prompts.expand_placeholders(text, video_grids=[VGRID]))
    row, mask = prompts.left_pad(ids, len(ids) + 3, tok.pad_id)
    row2, mask2 = prompts.left_pad(ids[:-2] + ids[-1:], len(ids) + 3, tok.pad_id)  # a different prompt length
    rng = np.random.default_rng(0)
    gt = np.zeros((B, 3, F, M, M), bool)
    gt[:, 0, :, 4:10, 4:12] = True
    boxes = np.full((B, 3, F, 4), -1.0, np.float32)
    boxes[:, 0] = [16, 16, 47, 39]  # original-pixel box of object 0 (frames are 64x64)
    batch = {
        "input_ids": jnp.asarray(np.stack([row, row2])), "attention_mask": jnp.asarray(np.stack([mask, mask2])),
        "pixel_values_videos": jnp.asarray(rng.normal(size=(B * 32, pd)).astype(np.float32)),
        "hires_patches": jnp.asarray(rng.normal(size=(B, F, 16, pd)).astype(np.float32)),
        "ground_ratio": jnp.ones((B, 2), jnp.float32),
        "sam_pixels": jnp.asarray(rng.normal(size=(B, F, 3, S, S)).astype(np.float32)),
        "sam_scale": jnp.ones((B, 2), jnp.float32),
        "gt_masks": jnp.asarray(gt), "gt_boxes": jnp.asarray(boxes),
        "obj_valid": jnp.asarray([[True, False, False]] * B), "num_frames": jnp.asarray([F] * B, jnp.int32),
    }
    shapes = BatchShapes.from_host(video_grid_thw=[VGRID] * B, hires_grid_thw=HGRID)
    spec = build_spec(tok, HGRID, max_desc_tokens=8, vocab_size=cfg.vocab_size)
    s = GRPOSettings(task="vos", num_generations=G, max_new_tokens=16, stop_ids=tok.eos_ids, pad_id=tok.pad_id,
                     grounding_max_new_tokens=8, micro_batch_completions=2, logprob_chunk_size=128,
                     weights=RewardWeights(alpha_g=2.0), sam_tracks_per_clip=G)  # C = G: compacted SAM2 tracks
    # eps = 1e-3 keeps Adam's first step (lr * g / (|g| + eps)) well-conditioned for near-zero gradients, so
    # different device layouts (whose reductions differ in the last bits) give comparable updates.
    tx, _ = optim.make_optimizer(params, learning_rate=1e-2, total_steps=10, eps=1e-3,
                                 freeze=("visual", "audio_tower"))
    models = grpo_rollout.StepModels(thinker, sam)

    def fresh_state():
        p = jax.tree.map(jnp.copy, params)
        return TrainState(step=jnp.int32(0), params=p, opt_state=tx.init(p),
                          rng=jax.random.key_data(jax.random.key(3)))

    ref = jax.tree.map(jnp.copy, params)
    return dict(tok=tok, models=models, s=s, spec=spec, tx=tx, batch=batch, shapes=shapes, ref=ref,
                sam_params=sam_params, fresh_state=fresh_state, split=grpo.GRPOStep(models, s, spec, tx, split=True))


def test_fused_and_split_steps_agree(env):
    e = env
    fused = grpo.GRPOStep(e["models"], e["s"], e["spec"], e["tx"])
    st_f, m_f = fused(e["fresh_state"](), e["ref"], e["sam_params"], e["batch"], e["shapes"])
    st_s, m_s = e["split"](e["fresh_state"](), e["ref"], e["sam_params"], e["batch"], e["shapes"])
    assert int(st_f.step) == int(st_s.step) == 1
    for k in ("reward_mean", "loss", "completion_len", "format_rate", "entropy", "kl", "reward/sam_iou"):
        assert np.isfinite(float(m_f[k])), k
        np.testing.assert_allclose(float(m_f[k]), float(m_s[k]), rtol=1e-4, atol=1e-5, err_msg=k)
    # The sampler's log-probs are the teacher-forced ones of the update pass (same full-softmax at T = 1).
    assert float(m_f["logp_gap"]) < 1e-4
    assert float(m_f["skipped_nonfinite"]) == 0.0
    assert float(m_f["sam_tracks_dropped"]) == float(m_s["sam_tracks_dropped"]) >= 0.0
    assert float(m_f["sam_tracks_prompted"]) == float(m_s["sam_tracks_prompted"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), st_f.params, st_s.params)


def test_update_follows_the_advantages(env):
    """Positive-advantage completions become more likely, negative ones less; frozen towers do not move."""
    e = env
    state = e["fresh_state"]()
    ro = e["split"].rollout(e["shapes"], state.params, e["ref"], e["sam_params"], e["batch"],
                            grpo.GRPOStep.step_rng(state))
    adv = jnp.asarray([[1.0, -1.0], [-1.0, 1.0]])
    ro = dict(ro, advantages=adv)
    rows = jnp.arange(B * G)
    logp = jax.jit(lambda p: grpo.sequence_logprobs(e["models"], e["s"], p, e["batch"], ro, rows))
    before = np.asarray(jnp.sum(logp(state.params) * ro["mask"], axis=1))
    old_visual = jax.tree.map(np.asarray, state.params["visual"])
    new_state, metrics = e["split"].update(state, e["ref"], e["batch"], ro)
    after = np.asarray(jnp.sum(logp(new_state.params) * ro["mask"], axis=1))
    delta = (after - before).reshape(B, G)
    assert np.all(np.sign(delta) == np.asarray(adv)), delta
    assert float(metrics["grad_norm"]) > 0
    jax.tree.map(np.testing.assert_array_equal, old_visual, jax.tree.map(np.asarray, new_state.params["visual"]))


def test_shared_prompt_prefix_equals_full_teacher_forced_pass(env):
    """Prompt run once per group (KV cache) = the full prompt ++ completion pass: log-probs, entropy, grads."""
    e = env
    state = e["fresh_state"]()
    ro = e["split"].rollout(e["shapes"], state.params, e["ref"], e["sam_params"], e["batch"],
                            grpo.GRPOStep.step_rng(state))
    assert int(jnp.sum(ro["mask"])) > B * G  # real completions, not all stopped at once

    def value_and_grad(s, rows):
        def f(p):
            logp, ent = grpo.sequence_logprobs(e["models"], s, p, e["batch"], ro, rows, return_entropy=True,
                                               contiguous=True)
            w = jnp.arange(1, logp.shape[1] + 1, dtype=jnp.float32)  # weights: every position matters
            return jnp.sum(logp * w * ro["mask"][rows]), (logp, ent)
        return jax.jit(jax.value_and_grad(f, has_aux=True))(state.params)

    full = dataclasses.replace(e["s"], share_prompt_prefix=False)
    rows = jnp.arange(B * G)  # two prompts of G completions each
    (_, (lp_s, ent_s)), g_s = value_and_grad(e["s"], rows)
    (_, (lp_f, ent_f)), g_f = value_and_grad(full, rows)
    np.testing.assert_allclose(np.asarray(lp_s), np.asarray(lp_f), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent_s), np.asarray(ent_f), atol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 + 1e-5 * np.abs(b).max()),
                 g_s, g_f)
    assert sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(g_s)) > 0
    # A micro-batch smaller than the group (one completion): still its prompt once; = the sampler's log-probs.
    one = jnp.arange(G + 1, G + 2)
    lp1 = jax.jit(lambda p: grpo.sequence_logprobs(e["models"], e["s"], p, e["batch"], ro, one, contiguous=True))
    lp1 = np.asarray(lp1(state.params))[0]
    np.testing.assert_allclose(lp1, np.asarray(lp_f)[G + 1], atol=2e-5)
    m = np.asarray(ro["mask"])[G + 1].astype(bool)
    np.testing.assert_allclose(lp1[m], np.asarray(ro["sample_logprobs"])[G + 1][m], atol=1e-4)


def test_update_logprobs_are_those_of_the_sampling_temperature(env):
    """At T != 1 the update's teacher-forced log-probs are those of softmax(logits / T), the sampler's."""
    e = env
    hot = dataclasses.replace(e["s"], temperature=1.7)
    state = e["fresh_state"]()
    ro = grpo.GRPOStep(e["models"], hot, e["spec"], e["tx"], split=True).rollout(
        e["shapes"], state.params, e["ref"], e["sam_params"], e["batch"], grpo.GRPOStep.step_rng(state))
    rows = jnp.arange(B * G)
    m = np.asarray(ro["mask"]).astype(bool)
    assert m.sum() > B * G

    def logp(s):
        return np.asarray(jax.jit(lambda p: grpo.sequence_logprobs(e["models"], s, p, e["batch"], ro, rows,
                                                                   contiguous=True))(state.params))[m]

    sampled = np.asarray(ro["sample_logprobs"])[m]
    np.testing.assert_allclose(logp(hot), sampled, atol=1e-4)
    assert np.abs(logp(e["s"]) - sampled).max() > 1e-2  # the T = 1 log-probs are another distribution


def test_kl_anchor_replaces_the_reference_in_the_kl_term(env):
    """``anchor_params`` (rl.kl_anchor = "initial") is what the KL term compares with; ``ref_params`` still
    grounds. Anchored to the current policy the KL is exactly 0; to a perturbed reference it is not."""
    e = env
    assert e["s"].beta > 0
    far = jax.tree.map(lambda x: x * 1.5, e["ref"])
    state = e["fresh_state"]()
    anchor = jax.tree.map(jnp.copy, state.params)
    _, m_ref = e["split"](e["fresh_state"](), far, e["sam_params"], e["batch"], e["shapes"])
    _, m_anchor = e["split"](state, far, e["sam_params"], e["batch"], e["shapes"], anchor_params=anchor)
    assert float(m_ref["kl"]) > 1e-3
    assert abs(float(m_anchor["kl"])) < 1e-6
    # the rollout half is the same in both (same rng, same grounder): only the KL term differs
    np.testing.assert_allclose(float(m_anchor["reward_mean"]), float(m_ref["reward_mean"]), rtol=1e-5)


def test_nonfinite_update_is_skipped(env):
    e = env
    state = e["fresh_state"]()
    ro = e["split"].rollout(e["shapes"], state.params, e["ref"], e["sam_params"], e["batch"],
                            grpo.GRPOStep.step_rng(state))
    ro = dict(ro, advantages=jnp.full((B, G), jnp.nan))
    before = jax.tree.map(np.asarray, state.params)
    new_state, metrics = e["split"].update(state, e["ref"], e["batch"], ro)
    assert float(metrics["skipped_nonfinite"]) == 1.0 and int(new_state.step) == 1
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, new_state.params))


def test_rewards_from_forced_completions_and_boxes(env):
    """Hand-written completions and System-2 boxes through parse -> SAM2 -> hierarchical reward."""
    e = env
    tok, s = e["tok"], e["s"]
    good = ('<think>the red circle is clear</think><answer>{"start_time": "00:00.00", "end_time": "00:00.00", '
            '"description": "the red circle"}, {"start_time": "00:01.00", "end_time": "00:01.00", '
            '"description": "the red circle"}</answer>')
    texts = [good, "no answer here", good, "<think>x</think><answer>[]</answer>"]
    ids = [tok.encode(t) + [tok.eos_ids[0]] for t in texts]
    t = max(map(len, ids))
    tokens = np.full((B * G, t), tok.pad_id, np.int32)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = row
    lengths = jnp.asarray([len(r) for r in ids], jnp.int32)

    class _Out:  # the fields of SampleOutput that parse() reads
        pass

    out = _Out()
    out.tokens, out.lengths = jnp.asarray(tokens), lengths
    parsed = grpo_rollout.parse(e["spec"], s, e["batch"], out)
    assert list(np.asarray(parsed["format_ok"])) == [True, False, True, True]
    n, k, o = B * G, s.max_keyframes, s.max_objects
    boxes = np.zeros((n, k, o, 4), np.float32)
    valid = np.zeros((n, k, o), bool)
    boxes[[0, 2], :2, 0] = [16, 16, 47, 39]  # a perfect box on both keyframes for object 0
    valid[[0, 2], :2, 0] = True
    grounded = GroundingOutput(boxes=jnp.asarray(boxes), box_valid=jnp.asarray(valid),
                               num_boxes=jnp.asarray(valid.sum(-1), jnp.int32), slot_valid=parsed["key_valid"],
                               tokens=jnp.zeros((n, k, 1), jnp.int32), lengths=jnp.zeros((n, k), jnp.int32),
                               input_ids=jnp.zeros((n, k, 1), jnp.int32), approx=jnp.zeros((n, k), bool),
                               num_approx=jnp.int32(0))
    seg = lambda bx, fr, va: grpo_rollout.segment(e["models"], s, e["sam_params"], e["batch"], bx, fr, va)  # noqa: E731
    reward, adv, keep, terms = jax.jit(
        lambda p, g, ln: grpo_reward.rewards_and_advantages(s, e["batch"], p, g, ln, seg))(parsed, grounded, lengths)
    r = np.asarray(reward)
    acc = np.asarray(terms["acc"])
    assert np.all(np.asarray(terms["avg_iou"])[:, 0] == pytest.approx(1.0))  # perfect boxes, +1-pixel IoU
    assert np.all(np.asarray(terms["total_frame_reward"])[:, 0] == pytest.approx(0.8))  # 2 unique frames x 0.4
    sam_iou = np.asarray(terms["sam_iou"])
    assert np.all((sam_iou[:, 0] >= 0) & (sam_iou[:, 0] <= 1)) and np.all(sam_iou[:, 1] == 0)
    assert np.all(acc[:, 0] > acc[:, 1]) and np.all(r[:, 0] > r[:, 1])
    np.testing.assert_allclose(np.asarray(adv).sum(axis=1), 0.0, atol=1e-5)  # group-centred
    assert np.asarray(terms["pred_masks"]).shape == (B, G, F, M, M)
    # one prompted track per clip (completions 0 and 2, object 0), within the C = G slots
    assert np.asarray(terms["sam_tracks_prompted"]).tolist() == [1, 1]
    assert np.asarray(terms["sam_tracks_dropped"]).tolist() == [0, 0]


def test_sharded_update_equals_single_device(env):
    """The update half on a data x fsdp x tensor = 2 x 2 x 2 mesh (train rules) equals the 1-device update."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from omnir1_jax.rl.state import state_shardings

    e = env
    state = e["fresh_state"]()
    ro = e["split"].rollout(e["shapes"], state.params, e["ref"], e["sam_params"], e["batch"],
                            grpo.GRPOStep.step_rng(state))
    ro = dict(ro, advantages=jnp.asarray([[1.0, -0.5], [-1.0, 0.5]]))
    single, m1 = e["split"].update(e["fresh_state"](), e["ref"], e["batch"], ro)

    mesh = parallel.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = parallel.get_rules("train")
    boxed = jax.eval_shape(lambda: init_params(e["models"].thinker, jax.random.key(0)))
    p_sh = parallel.param_shardings(boxed, mesh, rules)
    s_sh = state_shardings(jax.eval_shape(e["fresh_state"]), p_sh, mesh)
    lead = lambda x: NamedSharding(mesh, P("data", *([None] * (x.ndim - 1))) if x.ndim and x.shape[0] % 2 == 0  # noqa: E731
                                   else P())
    st = jax.device_put(e["fresh_state"](), s_sh)
    assert parallel.sharded_fraction(st.params) > 0.5
    ref = jax.device_put(e["ref"], p_sh)
    batch = {k: jax.device_put(v, lead(v)) for k, v in e["batch"].items()}
    ro_s = jax.tree.map(lambda x: jax.device_put(x, lead(x)), ro)
    upd = grpo.GRPOStep(e["models"], e["s"], e["spec"], e["tx"], split=True, state_shardings=s_sh).update
    with parallel.mesh_rules(mesh, rules):
        sharded, m2 = upd(st, ref, batch, ro_s)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
                 single.params, sharded.params)
    assert sharded.params["decoder"] is not None and int(sharded.step) == 1


def test_full_step_on_mesh_equals_single_device(env):
    """The whole fused step (sampling, grounding, SAM2, rewards, update) on data x fsdp x tensor = 2 x 2 x 2."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from omnir1_jax.rl.state import state_shardings

    e = env
    single, m1 = e["split"](e["fresh_state"](), e["ref"], e["sam_params"], e["batch"], e["shapes"])

    mesh = parallel.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = parallel.get_rules("train")
    boxed = jax.eval_shape(lambda: init_params(e["models"].thinker, jax.random.key(0)))
    p_sh = parallel.param_shardings(boxed, mesh, rules)
    s_sh = state_shardings(jax.eval_shape(e["fresh_state"]), p_sh, mesh)
    lead = lambda x: NamedSharding(mesh, P("data", *([None] * (x.ndim - 1))))  # noqa: E731
    st = jax.device_put(e["fresh_state"](), s_sh)
    ref = jax.device_put(e["ref"], p_sh)
    sam = jax.device_put(e["sam_params"], NamedSharding(mesh, P()))
    batch = {k: jax.device_put(v, lead(v)) for k, v in e["batch"].items()}
    step = grpo.GRPOStep(e["models"], e["s"], e["spec"], e["tx"], state_shardings=s_sh)
    with parallel.mesh_rules(mesh, rules):
        sharded, m2 = step(st, ref, sam, batch, e["shapes"])
    assert sharded.params["lm_head"]["kernel"].sharding.spec != P()  # really sharded
    for k in ("reward_mean", "completion_len", "format_rate", "reward/sam_iou", "entropy", "loss", "grad_norm"):
        np.testing.assert_allclose(float(m1[k]), float(m2[k]), rtol=1e-4, atol=1e-6, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
                 jax.device_get(single.params), jax.device_get(sharded.params))


def test_grounder_of_another_architecture_grounds_in_the_step(env):
    """StepModels.grounder: a frozen System-2 thinker of another architecture (here 3 layers, rotary base 10)
    boxes the policy's descriptions inside the jitted rollout, exactly as a direct call of the grounding stage
    with that module; the policy's own module is not used for it."""
    from omnir1_jax.rollout import grounding as grounding_lib

    e = env
    gcfg = dataclasses.replace(e["models"].thinker.config, num_hidden_layers=3, rope_theta=10.0)
    gmodel = Thinker(gcfg)
    gparams = parallel.unbox(jax.jit(init_params, static_argnums=0)(gmodel, jax.random.key(7)))
    models = dataclasses.replace(e["models"], grounder=gmodel)
    s = dataclasses.replace(e["s"], beta=0.0)  # a grounder of another architecture is no KL anchor
    step = grpo.GRPOStep(models, s, e["spec"], e["tx"], split=True)
    state = e["fresh_state"]()
    ro = step.rollout(e["shapes"], state.params, gparams, e["sam_params"], e["batch"], grpo.GRPOStep.step_rng(state))
    out = grpo_rollout.rollout(models, e["s"], e["shapes"], state.params, e["batch"], grpo.GRPOStep.step_rng(state))[2]
    parsed = grpo_rollout.parse(e["spec"], e["s"], e["batch"], out)
    cfg = grounding_lib.GroundingConfig(max_new_tokens=e["s"].grounding_max_new_tokens, num_objects=e["s"].max_objects,
                                        cache_dtype=e["s"].cache_dtype, encode_chunk=e["s"].ground_encode_chunk)
    direct = jax.jit(lambda p: grounding_lib.ground(gmodel, p, e["spec"], out.tokens, parsed,
                                                    e["batch"]["hires_patches"], e["batch"]["ground_ratio"], cfg))(gparams)
    np.testing.assert_allclose(np.asarray(ro["grounder_boxes"]), np.asarray(direct.boxes), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ro["grounder_valid"]), np.asarray(direct.box_valid))
    new_state, metrics = step.update(state, gparams, e["batch"], ro)
    assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
