"""Makes the shipped SFT checkpoint: the Base thinker fine-tuned on the synthetic task's reference answers.

    python -m omnir1_jax.warmstart.sft --config experiments/synthetic_tiny.py \
        --base omnir1_jax/assets/synthetic_tiny/base --out omnir1_jax/assets/synthetic_tiny/sft --steps 400

Runs ``omnir1-train`` in ``--config.mode=sft`` (teacher-forced cross-entropy on the reference completions of
``data_pipelines.synthetic.answers``; towers frozen as in the paper) from the Base checkpoint on the
synthetic world's TRAINING splits (RefAVS and ReVOS formats), then exports the final params as a thinker
checkpoint (``thinker_config.json`` + orbax params) with ``warmstart.json`` (command, steps, loss curve).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence


def sft_config(config_path: str, base: str, steps: int, seed: int, overrides: dict | None = None):
    """The SFT variant of ``config_path``: mode=sft from ``base``, no table, no periodic evaluation."""
    from omnir1_jax.config import load_config

    o = {"mode": "sft", "model.checkpoint": base, "model.reference_checkpoint": "", "train.num_steps": steps,
         "train.eval_every": 0, "eval.final_table": False, "seed": seed, "checkpoint.every_steps": steps,
         **(overrides or {})}
    return load_config(config_path, overrides=o)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/synthetic_tiny.py")
    ap.add_argument("--base", required=True, help="Base thinker checkpoint directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="trainer workdir (default: a temporary directory)")
    ap.add_argument("--override", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    import jax

    from omnir1_jax import train
    from omnir1_jax.config import parse_overrides
    from omnir1_jax.models.qwen_omni import save_checkpoint
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    overrides = parse_overrides(args.override)
    config = sft_config(args.config, args.base, args.steps, args.seed, overrides)
    workdir = args.workdir or tempfile.mkdtemp(prefix="omnir1_sft_")
    t0 = time.time()
    summary = train.main(config, workdir)
    model, _, _ = build_thinker(config, build_tokenizer(config))
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    save_checkpoint(jax.device_get(summary["state"].params), model.config, args.out)
    curve = []
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if r["step"] % 25 == 0 or r["step"] == args.steps:
                curve.append({"step": r["step"], "loss": r.get("loss"), "answer_logprob": r.get("answer_logprob")})
    info = {"command": " ".join(["python -m omnir1_jax.warmstart.sft"] + sys.argv[1:]), "steps": args.steps,
            "seed": args.seed, "base": args.base, "overrides": overrides, "curve": curve,
            "wall_s": round(time.time() - t0, 1)}
    with open(os.path.join(args.out, "warmstart.json"), "w") as fh:
        json.dump(info, fh, indent=1)
    print(json.dumps({"out": args.out, "final_loss": curve[-1]["loss"] if curve else None, "wall_s": info["wall_s"]}))


if __name__ == "__main__":
    main()
