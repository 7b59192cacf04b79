"""Optimizer: frozen towers get no update and no state; clipping; cosine schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from omnir1_jax.rl import optim


def _params():
    return {"visual": {"w": jnp.ones((3, 3))}, "audio_tower": {"w": jnp.ones((2,))},
            "model": {"layers": {"w": jnp.ones((4, 4))}}, "lm_head": {"w": jnp.ones((4, 5))}}


def test_frozen_towers_do_not_move():
    p = _params()
    tx, _ = optim.make_optimizer(p, learning_rate=0.1, total_steps=10, freeze=("visual", "audio_tower"))
    state = tx.init(p)
    g = jax.tree_util.tree_map(jnp.ones_like, p)
    upd, state = tx.update(g, state, p)
    new = optax.apply_updates(p, upd)
    np.testing.assert_array_equal(new["visual"]["w"], p["visual"]["w"])
    np.testing.assert_array_equal(new["audio_tower"]["w"], p["audio_tower"]["w"])
    assert not np.allclose(new["model"]["layers"]["w"], p["model"]["layers"]["w"])
    # no Adam moments for frozen leaves
    n_state = sum(x.size for x in jax.tree_util.tree_leaves(state) if hasattr(x, "size"))
    n_train = 16 + 20
    assert n_state < 3 * (n_train + 9 + 2)


def test_global_norm_clipping_applies():
    p = {"w": jnp.zeros((4,))}
    tx, _ = optim.make_optimizer(p, learning_rate=1.0, total_steps=1, weight_decay=0.0, grad_clip=1.0,
                                 schedule="constant")
    clip = optax.clip_by_global_norm(1.0)
    g = {"w": jnp.full((4,), 10.0)}
    clipped, _ = clip.update(g, clip.init(p))
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-6)
    upd, _ = tx.update(g, tx.init(p), p)
    assert np.all(np.isfinite(upd["w"]))


def test_cosine_schedule_with_warmup():
    s = optim.learning_rate_schedule(1.0, 100, "cosine", warmup_ratio=0.1)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0)
    assert float(s(55)) == pytest.approx(0.5, abs=1e-6) and float(s(100)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.learning_rate_schedule(1.0, 10, "exp")
