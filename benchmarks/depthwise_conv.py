"""Depthwise 7x7 'same' conv, three ways, forward and forward + backward, side by side in one process.

Why SAM2's fuser builds its depthwise conv as ``common.DepthwiseConv`` (issue 9, "Hotspots fixed" §5): XLA's
grouped convolution (``feature_group_count = C``, what ``nn.Conv(groups=C)`` lowers to), the model's 49 shifted
multiply-adds, and patches + einsum (im2col: the 49 shifted views stacked, then one contraction).  Shapes: the
tiny fuser in the GRPO step's tracking step [16, 4, 4, 128], a mid size [16, 16, 16, 128], and SAM2-L's fuser on
one 1024-px frame pair [2, 64, 64, 256].  All three are checked equal (outputs and gradients).  ``ratio`` = the
smallest grouped / shifted forward ratio over the shapes.

    python -m benchmarks.depthwise_conv --json benchmarks/results/depthwise_conv.json
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.sam2_stage_profile import depthwise_grouped, depthwise_shifted

SHAPES = [(16, 4, 4, 128), (16, 16, 16, 128), (2, 64, 64, 256)]


def depthwise_patches(x: jax.Array, w: jax.Array) -> jax.Array:
    """im2col form: the k*k shifted views stacked [N, H, W, k*k, C], contracted with the taps [k*k, C]."""
    k = w.shape[0]
    h, wd = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    pt = jnp.stack([xp[:, i:i + h, j:j + wd, :] for i in range(k) for j in range(k)], axis=-2)
    return jnp.einsum("nhwtc,tc->nhwc", pt, w.reshape(k * k, -1))


FORMS: dict[str, Callable] = {"grouped": depthwise_grouped, "shifted": depthwise_shifted, "patches": depthwise_patches}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Times every form at every shape (interleaved per shape); prints a table and returns / writes the JSON."""
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    shapes = [(2, 5, 7, 8)] if args.smoke else SHAPES
    repeats = args.repeats or (1 if args.smoke else 7)
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        w = jnp.asarray(rng.normal(size=(7, 7, 1, shape[-1])).astype(np.float32))
        fns: dict[str, Callable[[], Any]] = {}
        ref = None
        for name, f in FORMS.items():
            fwd = jax.jit(f)
            grad = jax.jit(jax.grad(lambda x_, w_, f=f: jnp.sum(jnp.sin(f(x_, w_))), argnums=(0, 1)))
            out, g = fwd(x, w), grad(x, w)
            if ref is None:
                ref = (out, g)
            np.testing.assert_allclose(np.asarray(out), np.asarray(ref[0]), rtol=1e-4, atol=1e-4)
            for a, b in zip(g, ref[1]):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-3)
            fns[f"{name} fwd"] = lambda fwd=fwd: fwd(x, w)
            fns[f"{name} fwd+bwd"] = lambda grad=grad: grad(x, w)
        times = common.interleaved(fns, repeats, warmup=1)
        med = {k: common.summary(v)["median_s"] for k, v in times.items()}
        rows.append({"shape": list(shape), **{f"{k} ms": 1e3 * v for k, v in med.items()},
                     "grouped/shifted fwd": med["grouped fwd"] / med["shifted fwd"],
                     "grouped/shifted fwd+bwd": med["grouped fwd+bwd"] / med["shifted fwd+bwd"],
                     "samples": {k: common.summary(v) for k, v in times.items()}})
    cols = ["shape"] + [f"{n} {m} ms" for n in FORMS for m in ("fwd", "fwd+bwd")]
    print(common.table(rows, cols + ["grouped/shifted fwd", "grouped/shifted fwd+bwd"]), file=sys.stderr)
    ratio = min(r["grouped/shifted fwd"] for r in rows)
    return common.finish({"benchmark": "depthwise_conv", "settings": {"smoke": args.smoke, "repeats": repeats,
                                                                      "kernel": 7}, "rows": rows,
                          "ratio": float(ratio)}, args.json)


if __name__ == "__main__":
    main()
