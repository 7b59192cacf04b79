"""Peak memory of SAM2 video propagation vs video length (tiny config): chunked streaming stays flat.

Each (mode, T) runs in a fresh subprocess and reports its peak RSS (``resource.getrusage`` maxrss) and, where the
backend has them, JAX device memory stats. ``chunked`` streams frames from a lazy host source through
:func:`omnir1_jax.models.sam2.streaming.propagate_chunked` (the scan carries only the fixed memory bank);
``full`` materialises the clip and all per-frame features in one :func:`propagate` call, for contrast.
A warm-up run on a short clip compiles first; ``growth`` is the peak RSS added by the measured run.

    python benchmarks/sam2_long_video.py                 # T = 50 100 200 400, both modes
    python benchmarks/sam2_long_video.py --frames 50 400 --modes chunked
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


class LazyFrames:
    """A [T, 3, S, S] video whose frames are synthesised on access (never all in host memory)."""

    def __init__(self, num_frames: int, size: int):
        self.shape = (num_frames, 3, size, size)

    def _frame(self, t: int) -> np.ndarray:
        return np.random.RandomState(t).randn(*self.shape[1:]).astype(np.float32)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            idx = range(*idx.indices(self.shape[0]))
        return np.stack([self._frame(int(t)) for t in np.asarray(list(idx) if isinstance(idx, range) else idx)])


def child(num_frames: int, mode: str, chunk: int) -> dict:
    """Runs one propagation and returns its measurements."""
    import jax
    import jax.numpy as jnp

    from omnir1_jax.models.sam2 import Sam2Config, Sam2VideoModel
    from omnir1_jax.models.sam2.streaming import propagate_chunked
    from omnir1_jax.models.sam2.video import propagate

    cfg = Sam2Config.tiny()
    model = Sam2VideoModel(cfg)
    s = cfg.image_size
    params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 3, s, s)), method=Sam2VideoModel.init_all))(
        jax.random.PRNGKey(0))["params"]
    params = jax.tree.map(lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value"))
    boxes = np.zeros((2, num_frames, 4), np.float32)
    valid = np.zeros((2, num_frames), bool)
    boxes[0, 0], valid[0, 0] = (4, 4, 40, 40), True
    boxes[1, num_frames // 2], valid[1, num_frames // 2] = (20, 10, 60, 50), True
    def run(n: int) -> np.ndarray:
        f, b, v = LazyFrames(n, s), boxes[:, :n], valid[:, :n]
        if mode == "chunked":
            return propagate_chunked(model, params, f, b, v, chunk_size=chunk, max_cond_frames=2)
        fn = jax.jit(lambda p, x, bb, vv: propagate(model, p, x, bb, vv, max_cond_frames=2))
        return np.asarray(fn(params, jnp.asarray(f[np.arange(n)]), b, v))

    boxes[1, 1], valid[1, 1] = (20, 10, 60, 50), True  # a prompt inside the warm-up clip too
    run(2 * chunk)  # warm-up: compiles (chunked mode reuses the compile for any T >= max pointers)
    rss_warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    out = run(num_frames)
    elapsed = time.time() - t0
    stats = jax.devices()[0].memory_stats() or {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "frames": num_frames, "seconds": round(elapsed, 2),
            "peak_rss_mb": round(rss, 1), "rss_growth_after_warmup_mb": round(rss - rss_warm, 1),
            "device_peak_mb": round(stats.get("peak_bytes_in_use", 0) / 2**20, 1) or None,
            "finite": bool(np.isfinite(out).all()), "out_shape": list(out.shape)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[50, 100, 200, 400])
    p.add_argument("--modes", nargs="+", default=["chunked", "full"], choices=["chunked", "full"])
    p.add_argument("--chunk", type=int, default=25)
    p.add_argument("--child", nargs=2, metavar=("T", "MODE"))
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(int(a.child[0]), a.child[1], a.chunk)))
        return []
    rows = []
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    for mode in a.modes:
        for t in a.frames:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(t), mode, "--chunk", str(a.chunk)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'mode':8} {'frames':>6} {'peak RSS MB':>12} {'growth MB':>10} {'device peak MB':>15} {'s':>7}")
    for r in rows:
        print(f"{r['mode']:8} {r['frames']:6d} {r['peak_rss_mb']:12.1f} {r['rss_growth_after_warmup_mb']:10.1f} "
              f"{str(r['device_peak_mb']):>15} {r['seconds']:7.2f}")
    return rows


if __name__ == "__main__":
    main()
