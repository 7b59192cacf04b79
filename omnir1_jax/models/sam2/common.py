"""Shared SAM2 building blocks: annotated Dense/Conv/LayerNorm, MLP head, sine encodings, torch-exact resizes."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Names = tuple[str | None, ...]


def pinit(init: Callable, names: Names) -> Callable:
    """Initializer carrying logical axis names (every SAM2 parameter goes through this)."""
    return nn.with_logical_partitioning(init, names)


def dense(features: int, names: Names = ("sam_embed", "sam_mlp"), name: str | None = None) -> nn.Dense:
    """Linear layer with logical names on kernel [in, out] and bias [out]."""
    return nn.Dense(features, name=name, kernel_init=pinit(nn.initializers.lecun_normal(), names),
                    bias_init=pinit(nn.initializers.zeros, (names[1],)))


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1,
         name: str | None = None, depthwise_impl: str = "shifted") -> nn.Module:
    """NHWC conv (kernel [kh, kw, in/groups, out]) with PyTorch-style symmetric padding.

    A depthwise conv (``groups == features > 1``, stride 1) is built as :class:`DepthwiseConv` (shifted
    multiply-adds, same parameters) unless ``depthwise_impl="xla"`` asks for XLA's grouped convolution.
    """
    if depthwise_impl not in ("shifted", "xla"):
        raise ValueError(f"depthwise_impl must be 'shifted' or 'xla', got {depthwise_impl!r}")
    if groups == features > 1 and stride == 1 and depthwise_impl == "shifted":
        return DepthwiseConv(features, kernel, padding, name=name)
    names = ("conv_spatial", "conv_spatial_2", "sam_embed" if groups == 1 else "unsharded", "sam_mlp")
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   feature_group_count=groups, name=name,
                   kernel_init=pinit(nn.initializers.lecun_normal(), names),
                   bias_init=pinit(nn.initializers.zeros, ("sam_mlp",)))


class DepthwiseConv(nn.Module):
    """Depthwise stride-1 conv as a sum of k*k shifted multiply-adds, with ``nn.Conv``'s params and init.

    Why: XLA:CPU lowers ``feature_group_count = C`` to a generic grouped convolution that is 30x slower than
    this elementwise form on SAM2's fuser shapes (forward; ~2x to 10x in the backward), which dominated the
    memory encoder.  On GPU/TPU the form is one fused elementwise loop (k*k cached reads per output, no
    im2col buffer), so it stays the default everywhere; ``conv(..., depthwise_impl="xla")`` builds the
    grouped ``nn.Conv`` (identical param tree) for comparison.  Params: ``kernel`` [k, k, 1, C], ``bias`` [C].
    """

    features: int
    kernel: int
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., H, W, C] -> [..., H + 2p - k + 1, W + 2p - k + 1, C]
        c, k, p = self.features, self.kernel, self.padding
        if x.shape[-1] != c:
            raise ValueError(f"DepthwiseConv expects {c} input channels, got {x.shape[-1]}")
        w = self.param("kernel", pinit(nn.initializers.lecun_normal(),
                                       ("conv_spatial", "conv_spatial_2", "unsharded", "sam_mlp")), (k, k, 1, c))
        b = self.param("bias", pinit(nn.initializers.zeros, ("sam_mlp",)), (c,))
        x, w, b = nn.dtypes.promote_dtype(x, w, b)
        h, wd = x.shape[-3] + 2 * p - k + 1, x.shape[-2] + 2 * p - k + 1
        xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(p, p), (p, p), (0, 0)])
        out = None
        for i in range(k):  # XLA fuses the k*k slices, products and sums into one elementwise loop
            for j in range(k):
                t = xp[..., i:i + h, j:j + wd, :] * w[i, j, 0]
                out = t if out is None else out + t
        return out + b


def layer_norm(eps: float = 1e-5, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over the last (channel) axis with two-pass variance, like torch."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name,
                        scale_init=pinit(nn.initializers.ones, ("norm",)),
                        bias_init=pinit(nn.initializers.zeros, ("norm",)))


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as torch's default."""
    return jax.nn.gelu(x, approximate=False)


ACTS: dict[str, Callable] = {"gelu": gelu, "relu": jax.nn.relu}


class FeedForward(nn.Module):
    """SAM2 MLP: proj_in -> act -> (layers_i -> act)* -> proj_out [-> sigmoid]."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    activation: str = "relu"
    sigmoid_output: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTS[self.activation]
        x = act(dense(self.hidden_dim, name="proj_in")(x))
        for i in range(self.num_layers - 2):
            x = act(dense(self.hidden_dim, name=f"layers_{i}")(x))
        x = dense(self.output_dim, ("sam_mlp", "sam_embed"), name="proj_out")(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


class ConvTranspose2x2(nn.Module):
    """ConvTranspose2d(kernel=2, stride=2): non-overlapping 2x upsampling, kernel stored [2, 2, in, out]."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., H, W, Cin] -> [..., 2H, 2W, Cout]
        cin = x.shape[-1]
        k = self.param("kernel", pinit(nn.initializers.lecun_normal(in_axis=2, out_axis=3),
                                       ("conv_spatial", "conv_spatial_2", "sam_embed", "sam_mlp")),
                       (2, 2, cin, self.features))
        b = self.param("bias", pinit(nn.initializers.zeros, ("sam_mlp",)), (self.features,))
        y = jnp.einsum("...hwc,klco->...hkwlo", x, k)
        *lead, h, _, w, _, o = y.shape
        return y.reshape(*lead, 2 * h, 2 * w, o) + b


def sine_position_encoding(height: int, width: int, num_feats: int, temperature: float = 10000.0) -> np.ndarray:
    """Normalised 2-D sine encoding (DETR style, scale 2*pi) as [H, W, 2*num_feats], like Sam2SinePositionEmbedding."""
    f32 = np.float32
    scale, eps = f32(2 * math.pi), f32(1e-6)
    y = np.arange(1, height + 1, dtype=f32)[:, None] * np.ones((1, width), f32)
    x = np.ones((height, 1), f32) * np.arange(1, width + 1, dtype=f32)[None, :]
    y = y / (y[-1:, :] + eps) * scale
    x = x / (x[:, -1:] + eps) * scale
    dim_t = np.arange(num_feats, dtype=f32)
    dim_t = f32(temperature) ** (f32(2) * np.floor(dim_t / 2) / f32(num_feats))
    px, py = x[..., None] / dim_t, y[..., None] / dim_t

    def interleave(p: np.ndarray) -> np.ndarray:
        return np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], axis=-1).reshape(height, width, -1)

    return np.concatenate([interleave(py), interleave(px)], axis=-1).astype(f32)


def sine_1d(pos: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """1-D sine encoding [..., dim] = [sin(pos/t_i), cos(pos/t_i)] (object-pointer temporal encoding)."""
    pe_dim = dim // 2
    dim_t = jnp.arange(pe_dim, dtype=jnp.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    p = pos[..., None] / dim_t
    return jnp.concatenate([jnp.sin(p), jnp.cos(p)], axis=-1)


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution kernel with torch's a = -0.75."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix reproducing F.interpolate(mode='bicubic', align_corners=False) along one axis."""
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        src = (o + 0.5) * scale - 0.5
        i0 = math.floor(src)
        t = src - i0
        for k in range(-1, 3):
            m[o, min(max(i0 + k, 0), n_in - 1)] += _cubic(np.array(k - t))
    return m.astype(np.float32)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix reproducing F.interpolate(mode='bilinear', align_corners=False, antialias=False)."""
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        m[o, i0] += 1 - t
        m[o, i1] += t
    return m.astype(np.float32)


def resize_2d(x: jax.Array, mh: np.ndarray, mw: np.ndarray, axes: Sequence[int] = (-2, -1)) -> jax.Array:
    """Separable resize of the two axes ``axes`` of ``x`` ([..., H, W] by default) with matrices [H', H], [W', W]."""
    x = jnp.moveaxis(x, axes, (-2, -1))
    x = jnp.einsum("ph,...hw,qw->...pq", jnp.asarray(mh), x, jnp.asarray(mw), precision="highest")
    return jnp.moveaxis(x, (-2, -1), axes)
