"""SAM2's depthwise conv as shifted multiply-adds (``common.DepthwiseConv``) against XLA's grouped convolution.

The fuser's params must stay exactly those of the grouped ``nn.Conv`` (names, shapes, logical axes, init values)
so shipped and converted checkpoints load unchanged; outputs and gradients must equal the grouped conv's.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax.models.sam2 import memory
from omnir1_jax.models.sam2.common import DepthwiseConv, conv
from omnir1_jax.models.sam2.config import Sam2Config


def _grouped(x: jax.Array, w: jax.Array, b: jax.Array, pad: int) -> jax.Array:
    """Reference: XLA's grouped convolution with feature_group_count = C."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1], precision="highest") + b


def _rand(key: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


@pytest.mark.parametrize("kernel,pad,shape", [(7, 3, (2, 9, 13, 6)), (3, 1, (1, 5, 7, 4)), (3, 0, (2, 7, 5, 3)),
                                              (3, 2, (1, 3, 4, 5))])
def test_depthwise_equals_grouped_conv(kernel, pad, shape):
    """Odd sizes, 'same', 'valid' and over-padded convs equal lax.conv_general_dilated(feature_group_count=C)."""
    c = shape[-1]
    x, w, b = _rand(0, shape), _rand(1, (kernel, kernel, 1, c)), _rand(2, (c,))
    got = jax.jit(DepthwiseConv(c, kernel, pad).apply)({"params": {"kernel": w, "bias": b}}, x)
    want = _grouped(x, w, b, pad)
    assert got.shape == want.shape == (shape[0], shape[1] + 2 * pad - kernel + 1, shape[2] + 2 * pad - kernel + 1, c)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # one output position by hand (7x7, padding 3): output (0, 0) sees input rows/cols 0..3 through taps 3..6
    if kernel == 7:
        ref = sum(float(x[1, i, j, 2] * w[i + 3, j + 3, 0, 2]) for i in range(4) for j in range(4)) + float(b[2])
        assert abs(float(got[1, 0, 0, 2]) - ref) < 1e-4


def test_depthwise_leading_dims_and_gradients_match():
    """Extra leading batch dims work, and grads w.r.t. input, kernel and bias equal the grouped conv's."""
    x, w, b = _rand(3, (2, 3, 6, 5, 4)), _rand(4, (7, 7, 1, 4)), _rand(5, (4,))
    mod = DepthwiseConv(4, 7, 3)
    got = jax.jit(mod.apply)({"params": {"kernel": w, "bias": b}}, x)
    want = _grouped(x.reshape(6, 6, 5, 4), w, b, 3).reshape(got.shape)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)

    def loss(fn, x_, w_, b_):
        return jnp.sum(jnp.sin(fn(x_, w_, b_)))

    ours = jax.jit(jax.grad(functools.partial(loss, lambda x_, w_, b_: mod.apply(
        {"params": {"kernel": w_, "bias": b_}}, x_)), argnums=(0, 1, 2)))(x[0], w, b)
    ref = jax.grad(functools.partial(loss, lambda x_, w_, b_: _grouped(x_, w_, b_, 3)), argnums=(0, 1, 2))(x[0], w, b)
    for g_ours, g_ref in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_ref), rtol=1e-4, atol=1e-4)


def test_conv_builds_depthwise_with_the_grouped_conv_param_tree():
    """conv(groups=C) gives DepthwiseConv with nn.Conv's exact params (names, shapes, axes, init values)."""
    x = _rand(6, (2, 7, 9, 8))
    fast, xla = conv(8, 7, 1, 3, groups=8, name="dw"), conv(8, 7, 1, 3, groups=8, name="dw", depthwise_impl="xla")
    assert isinstance(fast, DepthwiseConv) and isinstance(xla, nn.Conv)
    assert isinstance(conv(8, 7, 2, 3, groups=8), nn.Conv)  # strided depthwise: the general path
    assert isinstance(conv(8, 3, 1, 1, groups=2), nn.Conv)  # grouped but not depthwise
    pf, px = jax.jit(fast.init)(jax.random.key(7), x), xla.init(jax.random.key(7), x)
    axes = lambda t: jax.tree.map(lambda a: a.names, t, is_leaf=lambda a: isinstance(a, nn.Partitioned))  # noqa: E731
    assert axes(pf) == axes(px) == {"params": {"kernel": ("conv_spatial", "conv_spatial_2", "unsharded", "sam_mlp"),
                                               "bias": ("sam_mlp",)}}
    pf, px = nn.unbox(pf), nn.unbox(px)
    assert jax.tree.map(jnp.shape, pf) == jax.tree.map(jnp.shape, px)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), pf, px)
    p = jax.tree.map(lambda a: a + 0.1, px)
    np.testing.assert_allclose(np.asarray(jax.jit(fast.apply)(p, x)), np.asarray(xla.apply(p, x)), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="depthwise_impl"):
        conv(8, 7, 1, 3, groups=8, depthwise_impl="im2col")
    with pytest.raises(ValueError, match="input channels"):
        fast.apply(p, _rand(8, (1, 7, 9, 4)))


def test_memory_fuser_checkpoint_layout_and_output_unchanged(monkeypatch):
    """The tiny SAM2 fuser: same param tree as with the grouped conv (old checkpoints load) and the same output."""
    cfg = Sam2Config.tiny()
    x = _rand(9, (3, 4, 4, cfg.memory_encoder_hidden_size))
    init = nn.unbox(jax.jit(memory.MemoryFuser(cfg).init)(jax.random.key(10), x))
    params = jax.tree.map(lambda a: a + 0.05 * _rand(11, a.shape), init)  # non-trivial layer scale and bias
    got = jax.jit(memory.MemoryFuser(cfg).apply)(params, x)
    monkeypatch.setattr(memory, "conv", functools.partial(conv, depthwise_impl="xla"))
    old = nn.unbox(memory.MemoryFuser(cfg).init(jax.random.key(10), x))  # eager: no jit cache hit across the patch
    assert jax.tree.map(jnp.shape, old) == jax.tree.map(jnp.shape, init)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6), old, init)
    assert old["params"]["layers_0"]["depthwise_conv"]["kernel"].shape == (cfg.memory_fuser_kernel_size,) * 2 + (
        1, cfg.memory_fuser_embed_dim)
    want = memory.MemoryFuser(cfg).apply(params, x)
    assert isinstance(memory.conv(8, 7, 1, 3, groups=8), nn.Conv)  # the patch is live: the old grouped conv
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
