"""RL core: advantages, clipped surrogate (signs, dual clip, μ = 1), KL, aggregation, dynamic sampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax.rl.advantages import ADVANTAGES, compute_advantages, group_stats
from omnir1_jax.rl.aggregation import AGGREGATIONS, aggregate, finalize, sum_pairs
from omnir1_jax.rl.dynamic_sampling import dynamic_sampling_mask
from omnir1_jax.rl.kl import KL_ESTIMATORS, kl_penalty
from omnir1_jax.rl.losses import PolicyLossConfig, grpo_token_loss, policy_loss

R = jnp.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], [3.0, -1.0, 0.0, 2.0]])


@functools.partial(jax.jit, static_argnames=("name", "ddof", "eps"))
def _adv(r, name, ddof=1, eps=1e-4):
    return compute_advantages(name, r, ddof=ddof, eps=eps)


def test_grpo_advantages_mean_ddof_and_zero_std():
    a1 = np.asarray(_adv(R, "grpo"))
    np.testing.assert_allclose(a1.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(a1[0], (np.array([1, 2, 3, 4]) - 2.5) / (np.sqrt(5 / 3) + 1e-4), rtol=1e-6)
    a0 = np.asarray(_adv(R, "grpo", ddof=0, eps=0.0))
    np.testing.assert_allclose(a0[0], (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25), rtol=1e-6)
    assert np.all(a1[1] == 0.0) and np.all(a0[1] == 0.0)  # zero-std group -> exactly 0
    stats = group_stats(R, a1)
    np.testing.assert_allclose(float(stats["frac_reward_zero_std"]), 1 / 3)


def test_rloo_drgrpo_batch_std():
    r = np.asarray(R)
    g = r.shape[1]
    loo = np.stack([r[:, i] - (r.sum(1) - r[:, i]) / (g - 1) for i in range(g)], axis=1)
    np.testing.assert_allclose(np.asarray(_adv(R, "rloo")), loo, rtol=1e-6)
    np.testing.assert_allclose(loo, g / (g - 1) * (r - r.mean(1, keepdims=True)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(_adv(R, "drgrpo")), r - r.mean(1, keepdims=True), rtol=1e-6)
    bs = (r - r.mean(1, keepdims=True)) / (r.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(np.asarray(_adv(R, "batch_std")), bs, rtol=1e-6)
    assert set(ADVANTAGES) == {"grpo", "drgrpo", "rloo", "batch_std"}
    with pytest.raises(KeyError):
        compute_advantages("ppo", R)


CFG = PolicyLossConfig(eps_low=0.2, eps_high=0.28)


def _loss_and_grad(logp, old, adv, cfg=CFG, name="grpo"):
    mask = jnp.ones_like(logp)

    def f(lp):
        loss, m = policy_loss(lp, adv, mask, old, name=name, cfg=cfg)
        return jnp.sum(loss), (loss, m)

    (_, (loss, m)), g = jax.jit(jax.value_and_grad(f, has_aux=True))(logp)
    return np.asarray(loss), np.asarray(g), m


def test_clipping_signs_for_both_advantage_signs():
    rho = jnp.array([1.5, 0.5, 1.5, 0.5, 1.1])  # ratios vs old policy
    old = jnp.zeros((1, 5))
    logp = jnp.log(rho)[None]
    for a in [-2.0, 2.0]:
        loss, g, m = _loss_and_grad(logp, old, jnp.array([a]))
        loss, g = loss[0], g[0]
        if a < 0:
            # A < 0, ρ > 1 + ε: unclipped term is the max -> keeps gradient -Aρ
            np.testing.assert_allclose([loss[0], g[0]], [-a * 1.5, -a * 1.5], rtol=1e-6)
            # A < 0, ρ < 1 - ε: clipped at 1 - ε_low -> no gradient
            np.testing.assert_allclose([loss[1], g[1]], [-a * 0.8, 0.0], atol=1e-7)
            assert float(m["pg_clipfrac_low"][0]) == 2.0 and float(m["pg_clipfrac_high"][0]) == 0.0
        else:
            np.testing.assert_allclose([loss[2], g[2]], [-a * 1.28, 0.0], atol=1e-6)  # clipped high
            np.testing.assert_allclose([loss[3], g[3]], [-a * 0.5, -a * 0.5], rtol=1e-6)  # unclipped
            assert float(m["pg_clipfrac_high"][0]) == 2.0 and float(m["pg_clipfrac_low"][0]) == 0.0
        np.testing.assert_allclose([loss[4], g[4]], [-a * 1.1, -a * 1.1], rtol=1e-6)  # inside range
        # (sum, count) metrics: two of the five tokens are clipped for either sign
        np.testing.assert_allclose([float(m["pg_clipfrac"][0]), float(m["pg_clipfrac"][1])], [2.0, 5.0])


def test_dual_clip():
    cfg = PolicyLossConfig(eps_low=0.2, eps_high=0.2, dual_clip_c=3.0)
    logp = jnp.log(jnp.array([[5.0, 2.0]]))
    loss, g, m = _loss_and_grad(logp, jnp.zeros((1, 2)), jnp.array([-1.0]), cfg)
    # ρ = 5: PPO loss 5 > c·|A| = 3 -> capped at 3, no gradient; ρ = 2: 2 < 3 -> unchanged
    np.testing.assert_allclose(loss[0], [3.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(g[0], [0.0, 2.0], atol=1e-6)
    assert float(m["pg_clipfrac_dual"][0]) == 1.0
    # positive advantages are never dual-clipped
    loss_pos, _, _ = _loss_and_grad(logp, jnp.zeros((1, 2)), jnp.array([1.0]), cfg)
    np.testing.assert_allclose(loss_pos[0], [-1.2, -1.2], rtol=1e-6)


def test_on_policy_ratio_is_one_and_gradient_is_minus_a():
    rng = np.random.default_rng(0)
    logp = jnp.asarray(-rng.random((3, 5)) * 3, jnp.float32)
    adv = jnp.array([1.5, -0.5, 0.0])
    mask = jnp.asarray(rng.random((3, 5)) > 0.3, jnp.float32)
    for name in ["grpo", "gspo"]:
        loss, g, m = _loss_and_grad(logp, None, adv, name=name)
        np.testing.assert_allclose(loss, -np.asarray(adv)[:, None] * np.ones((3, 5)), rtol=1e-6)
        np.testing.assert_allclose(g, -np.asarray(adv)[:, None] * np.ones((3, 5)), rtol=1e-6)
        np.testing.assert_allclose(float(m["is_ratio"][0] / m["is_ratio"][1]), 1.0, rtol=1e-6)
    # Omni-R1's full token loss: -(ρA - β·k3), then seq-mean-token-mean
    ref = logp + 0.3

    def omni(lp):
        per_tok, _ = grpo_token_loss(lp, adv, mask, None, ref, beta=0.04)
        return finalize(*aggregate(per_tok, mask, "seq-mean-token-mean"))

    val = jax.jit(omni)(logp)
    k3 = np.exp(0.3) - 0.3 - 1
    m = np.asarray(mask)
    per_seq = ((-np.asarray(adv)[:, None] + 0.04 * k3) * m).sum(1) / np.maximum(m.sum(1), 1)
    np.testing.assert_allclose(float(val), per_seq.mean(), rtol=1e-5)


def test_gspo_sequence_ratio_value():
    logp = jnp.array([[0.2, 0.4, 9.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    loss, _ = jax.jit(lambda lp: policy_loss(lp, jnp.array([1.0]), mask, jnp.zeros((1, 3)), name="gspo",
                                              cfg=PolicyLossConfig(eps_low=1.0, eps_high=1.0)))(logp)
    np.testing.assert_allclose(np.asarray(loss)[0, :2], -np.exp(0.3), rtol=1e-6)  # exp(mean of masked)


def test_kl_estimators():
    rng = np.random.default_rng(1)
    lp = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    ref = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    k3 = jax.jit(kl_penalty, static_argnums=2)
    assert float(jnp.min(k3(lp, ref, "k3"))) >= 0.0
    assert float(jnp.max(jnp.abs(k3(lp, lp, "k3")))) == 0.0
    d = np.asarray(ref - lp)
    np.testing.assert_allclose(np.asarray(k3(lp, ref, "k1")), -d, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(k3(lp, ref, "k2")), 0.5 * d * d, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(k3(lp, ref, "k3")), np.exp(d) - d - 1, rtol=1e-5, atol=1e-6)
    # clamps: the log-ratio at ±20 and the value at ±10
    big = kl_penalty(jnp.zeros(1), jnp.full(1, 100.0), "k3")
    np.testing.assert_allclose(float(big[0]), np.exp(20.0) - 21.0, rtol=1e-5)
    assert float(kl_penalty(jnp.zeros(1), jnp.full(1, 100.0), "k3", value_clip=10.0)[0]) == 10.0
    # k3+: value of k3, gradient of k2
    g_plus = jax.grad(lambda x: jnp.sum(kl_penalty(x, ref, "k3+")))(lp)
    g_k2 = jax.grad(lambda x: jnp.sum(kl_penalty(x, ref, "k2")))(lp)
    np.testing.assert_allclose(np.asarray(g_plus), np.asarray(g_k2), rtol=1e-6)
    assert {"k1", "k2", "k3"} <= set(KL_ESTIMATORS)


def test_aggregation_hand_values_and_micro_batches():
    per_tok = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    expected = {
        "seq-mean-token-mean": (2.0 + 4.0) / 2,
        "token-mean": 10.0 / 4,
        "seq-mean-token-sum-norm": 10.0 / (2 * 3),
        "seq-mean-token-sum": 10.0 / 2,
    }
    for mode, val in expected.items():
        np.testing.assert_allclose(float(finalize(*aggregate(per_tok, mask, mode))), val, rtol=1e-6)
    # seq_mask drops a whole sequence from numerator and denominator
    np.testing.assert_allclose(
        float(finalize(*aggregate(per_tok, mask, "token-mean", seq_mask=jnp.array([0.0, 1.0])))), 4.0
    )
    # M micro-batches reduce to exactly the full-batch value, for every mode
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(8, 7)), jnp.float32)
    m = jnp.asarray(rng.random((8, 7)) > 0.4, jnp.float32).at[:, 0].set(1.0)
    agg = jax.jit(aggregate, static_argnums=2, static_argnames="max_len")
    for mode in AGGREGATIONS:
        full = finalize(*agg(x, m, mode, max_len=7))
        parts = [agg(x[i : i + 2], m[i : i + 2], mode, max_len=7) for i in range(0, 8, 2)]
        np.testing.assert_allclose(float(finalize(*sum_pairs(parts))), float(full), rtol=1e-6, err_msg=mode)
    # whereas averaging per-micro-batch token-means is NOT the global token-mean
    naive = np.mean([float(finalize(*agg(x[i : i + 2], m[i : i + 2], "token-mean"))) for i in range(0, 8, 2)])
    assert abs(naive - float(finalize(*agg(x, m, "token-mean")))) > 1e-4


def test_dynamic_sampling_uses_raw_score():
    raw = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5 + 1e-9, 0.5], [0.0, 0.0, 0.0]])
    shaped = raw + jnp.array([[0.0, 1.0, 2.0]])  # format/length bonuses make every group non-constant
    out = jax.jit(dynamic_sampling_mask, static_argnums=(1, 2))(raw, "constant_score", 1e-6)
    np.testing.assert_array_equal(np.asarray(out["group_keep"]), [False, True, False, False])
    assert out["seq_mask"].shape == (4, 3) and np.asarray(out["seq_mask"])[1].all()
    np.testing.assert_allclose(float(out["kept_frac"]), 0.25)
    assert bool(dynamic_sampling_mask(shaped)["group_keep"].all())  # why the raw score matters
    np.testing.assert_allclose(float(dynamic_sampling_mask(raw, "none")["kept_frac"]), 1.0)
