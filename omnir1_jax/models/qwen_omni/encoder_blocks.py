"""Building blocks shared by the thinker's vision and audio towers.

Segments (images, frames, windows, audio chunks) are contiguous runs of the packed token sequence whose
boundaries are known on the host. Attention within segments is computed by gathering every segment into a
padded ``[S, L, ...]`` block with NumPy-computed indices (static shapes, no data-dependent control flow) and
masking the padded keys, which matches Hugging Face's per-``cu_seqlens`` attention exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
    """Host-side gather indices that pack contiguous segments of a length-``n`` sequence into ``[S, L]``."""

    gather: np.ndarray  # [S, L] int32 source position of each padded slot (clamped inside its segment)
    valid: np.ndarray  # [S, L] bool   slot holds a real token
    back: np.ndarray  # [n] int32      flat slot (s * L + j) of every original position


def segment_plan(cu_seqlens: Sequence[int]) -> SegmentPlan:
    """Builds a :class:`SegmentPlan` from cumulative boundaries ``[0, c1, ..., n]`` (empty segments dropped)."""
    cu = np.asarray(cu_seqlens, dtype=np.int64)
    lens = np.diff(cu)
    if np.any(lens < 0) or cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0 and be non-decreasing, got {cu.tolist()}")
    keep = lens > 0
    starts, lens = cu[:-1][keep], lens[keep]
    n, max_len = int(cu[-1]), int(lens.max())
    j = np.arange(max_len)
    gather = starts[:, None] + np.minimum(j[None, :], lens[:, None] - 1)
    valid = j[None, :] < lens[:, None]
    seg = np.repeat(np.arange(len(lens)), lens)
    back = seg * max_len + (np.arange(n) - np.repeat(starts, lens))
    return SegmentPlan(gather.astype(np.int32), valid, back.astype(np.int32))


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array, dtype: Dtype) -> jax.Array:
    """Softmax attention over padded segments; q/k/v ``[S, L, H, Dh]``, key_valid ``[S, L]`` -> ``[S, L, H, Dh]``.

    Logits and softmax are float32 (as in the reference eager path); probabilities are cast to ``dtype``.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("sqhd,skhd->shqk", q, k, preferred_element_type=jnp.float32) * scale  # [S, H, L, L]
    logits = jnp.where(key_valid[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    return jnp.einsum("shqk,skhd->sqhd", probs, v.astype(dtype))


def packed_segment_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, gather: jax.Array, valid: jax.Array, back: jax.Array, dtype: Dtype
) -> jax.Array:
    """Attention restricted to segments of a packed sequence; q/k/v ``[N, H, Dh]`` -> ``[N, H, Dh]``."""
    qs, ks, vs = q[gather], k[gather], v[gather]  # [S, L, H, Dh]
    out = masked_attention(qs, ks, vs, valid, dtype)
    s, l, h, d = out.shape
    return out.reshape(s * l, h, d)[back]


def dense(
    features: int,
    names: tuple[str, str],
    dtype: Dtype,
    param_dtype: Dtype,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Dense:
    """A Dense layer whose kernel ``[in, out]`` and bias ``[out]`` carry logical axis names."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (names[1],)),
        name=name,
    )


def layer_norm(dtype: Dtype, param_dtype: Dtype, eps: float = 1e-5, name: str | None = None) -> nn.LayerNorm:
    """PyTorch-style LayerNorm (eps 1e-5, float32 statistics) with logically named scale/bias."""
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back to the compute dtype (Qwen2.5 convention)."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",))
        scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * y.astype(self.dtype)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by its Hugging Face name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
