"""The paper's table in miniature: Base / SFT / GRPO (+ two ablations) on the held-out synthetic test splits.

Run by ``omnir1-train`` at the end of a GRPO run when ``eval.final_table`` is set (the embedded default,
``experiments/synthetic_tiny.py``).  Rows (``omni_r1.md`` §6 tables; ablations of issue #7):

* ``base``  — the warm-started Base thinker (``eval.base_checkpoint``, default ``model.reference_checkpoint``
  when that holds the policy's architecture);
* ``sft``   — Base fine-tuned on the reference answers (``eval.sft_checkpoint``);
* ``grpo``  — the policy this run trained;
* ``passthrough``      — GRPO's keyframes, but the ORIGINAL query handed to the grounder (no rewriting);
* ``random_keyframes`` — GRPO's descriptions on frames drawn at random from the sampled ones.

Every row uses the same frozen Detail Understanding System: the frozen reference as grounder
(``model.reference_checkpoint``, as in GRPO training; the Base row's checkpoint when none is set) and the same
SAM2, so rows differ only in the Global Reasoning System.  Scores are the official J, F and J&F of
``omnir1_jax.evaluate.evaluate_split`` (in %); predictions and per-split ``metrics.json`` land under
``workdir/table/<row>/<split>``; the table goes to stdout, ``workdir/results.md`` and ``workdir/results.json``
(``{"<split>": {"<row>": {"J", "F", "JF"}}}``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

log = logging.getLogger("omnir1-train")

ROWS = ("base", "sft", "grpo", "passthrough", "random_keyframes")
ROW_MODES = {"base": "policy", "sft": "policy", "grpo": "policy", "passthrough": "passthrough",
             "random_keyframes": "random_keyframes"}


def row_params(config, model, init_fn, grpo_params: Any) -> dict[str, Any]:
    """Policy params per row (rows without a checkpoint are left out, with a warning)."""
    from omnir1_jax.eval_pipeline import load_thinker_params

    base = config.eval.base_checkpoint or config.model.reference_checkpoint
    if not config.eval.base_checkpoint and base:
        from omnir1_jax.eval_pipeline import grounder_module

        if grounder_module(model, base) is not model:
            raise ValueError(f"model.reference_checkpoint={base} is a grounder of another architecture, not the "
                             "Base policy: set eval.base_checkpoint to the Base thinker for the table's base row")
    out: dict[str, Any] = {}
    for row, path in (("base", base), ("sft", config.eval.sft_checkpoint)):
        if path:
            out[row] = load_thinker_params(config, model, init_fn, path)
        else:
            log.warning("table: no %s checkpoint configured (eval.%s_checkpoint); row left out", row, row)
    for row in ("grpo", "passthrough", "random_keyframes"):
        out[row] = grpo_params
    return out


def run_table(config, workdir: str, grpo_params: Any, mesh: Any = None, progress: bool = True) -> dict:
    """Evaluates every row on ``eval.table_splits``; returns ``{split: {row: {"J", "F", "JF"}}}`` in %."""
    import jax

    from omnir1_jax import evaluate as ev
    from omnir1_jax.eval_pipeline import ParamsBundle, load_sam2
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    cfg = copy.deepcopy(config)
    if cfg.data.dataset == "synthetic" and not cfg.data.synthetic_root:
        with cfg.unlocked():
            cfg.data.synthetic_root = os.path.join(os.path.abspath(workdir), "data")
    tokenizer = build_tokenizer(cfg)
    model, init_fn, _ = build_thinker(cfg, tokenizer)
    sam, sam_params = load_sam2(cfg)
    params = row_params(cfg, model, init_fn, jax.device_get(grpo_params))
    # The frozen reference grounds every row's descriptions (as in training); without one, Base does.
    gmodel, grounder = None, params.get("base")
    if cfg.model.reference_checkpoint:
        from omnir1_jax.eval_pipeline import load_grounder

        gmodel, grounder = load_grounder(cfg, model, init_fn, cfg.model.reference_checkpoint)
        gmodel = None if gmodel is model else gmodel
    limit = int(cfg.eval.table_limit) or None
    results: dict[str, dict] = {}
    for split in cfg.eval.table_splits:
        results[split] = {}
        for row in ROWS:
            if row not in params:
                continue
            bundle = ParamsBundle(model, params[row], tokenizer, sam, sam_params, grounder, gmodel)
            out_dir = os.path.join(workdir, "table", row, split)
            summary = ev.evaluate_split(cfg, bundle, split, out_dir, limit=limit, mode=ROW_MODES[row],
                                        progress=progress, mesh=mesh)
            results[split][row] = {k: _pct(summary.get(k)) for k in ("J", "F", "JF")}
            log.info("table %s %s: J&F %.1f", split, row, results[split][row]["JF"])
    return results


def _pct(v: Any) -> float:
    """A summary metric (``evaluate_split`` reports percent) rounded; NaN when the split scored nothing."""
    v = float("nan") if v is None else float(v)
    return round(v, 2) if math.isfinite(v) else float("nan")


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Markdown table: one row per system, J / F / J&F per split."""
    splits = list(results)
    rows = [r for r in ROWS if any(r in results[s] for s in splits)]
    head = "| row | " + " | ".join(f"{s} J | {s} F | {s} J&F" for s in splits) + " |"
    sep = "|---|" + "---:|" * (3 * len(splits))
    lines = [head, sep]
    for r in rows:
        cells = []
        for s in splits:
            m = results[s].get(r, {})
            cells += [f"{m.get(k, float('nan')):.1f}" for k in ("J", "F", "JF")]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(workdir: str, results: Mapping[str, Any]) -> str:
    """Writes ``results.json`` and ``results.md`` in ``workdir``; returns the Markdown table."""
    table = format_table(results)
    with open(os.path.join(workdir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, allow_nan=True)
    with open(os.path.join(workdir, "results.md"), "w") as fh:
        fh.write(table + "\n")
    return table


def write_stage_report(workdir: str, splits: Sequence[str]) -> str:
    """``workdir/stages.json``: :func:`omnir1_jax.stages.table_report` of the table just written (synthetic
    world only: it compares the saved predictions with ``world.json``); returns the path."""
    from omnir1_jax import stages

    report = stages.table_report(workdir, splits)
    path = os.path.join(workdir, "stages.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=1)
    for split, rows in report.items():
        log.info("stages %s: %s", split, "; ".join(
            f"{row} rewrite {r['rewrite'] or 0:.2f} box_iou {r['box_iou'] or 0:.2f}" for row, r in rows.items()))
    return path


def plot_curves(workdir: str) -> str | None:
    """``workdir/training_curves.png`` from ``metrics.jsonl`` (reward terms, format rate, validation J&F)."""
    from omnir1_jax.visualize import training_curves

    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    out = os.path.join(workdir, "training_curves.png")
    training_curves(path, out, keys=CURVE_KEYS)
    return out


CURVE_KEYS = ("reward_mean", "format_rate", "reward/format_reward", "reward/total_frame_reward",
              "reward/total_overlap_reward", "reward/acc", "reward/sam_iou", "reward/len_bonus", "kl",
              "completion_len", "eval/refavs_val/JF", "eval/refavs_val/J", "eval/refavs_val/F")


# ----------------------------------------------------------------------------- several seeds
def aggregate_seeds(results: list[Mapping[str, Any]]) -> dict:
    """``{split: {row: {metric: {"mean", "std", "n"}}}}`` over several runs' ``results.json`` (sample std)."""
    import numpy as np

    out: dict = {}
    for split in results[0]:
        out[split] = {}
        for row in ROWS:
            vals = {k: [r[split][row][k] for r in results if row in r.get(split, {})] for k in ("J", "F", "JF")}
            if not vals["JF"]:
                continue
            out[split][row] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1
                                   else float("nan"), "n": len(v)} for k, v in vals.items()}
    return out


def format_seed_table(agg: Mapping[str, Any]) -> str:
    """Markdown: J&F mean ± std over seeds, one row per system and one column per split."""
    splits = list(agg)
    lines = ["| row | " + " | ".join(f"{s} J&F" for s in splits) + " |", "|---|" + "---:|" * len(splits)]
    for r in ROWS:
        if any(r in agg[s] for s in splits):
            cells = [f"{agg[s][r]['JF']['mean']:.1f} ± {agg[s][r]['JF']['std']:.1f}" if r in agg[s] else "-"
                     for s in splits]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m omnir1_jax.embedded WORKDIR...``: the seed table over several runs' ``results.json``."""
    import argparse

    ap = argparse.ArgumentParser(description="mean ± std of the embedded default's table over several runs")
    ap.add_argument("workdirs", nargs="+", help="workdirs of omnir1-train runs (each has results.json)")
    ap.add_argument("--json", default="", help="also write the aggregate here")
    args = ap.parse_args(argv)
    runs = []
    for d in args.workdirs:
        path = os.path.join(d, "results.json")
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: missing (did the run finish with eval.final_table set?)")
        with open(path) as fh:
            runs.append(json.load(fh))
    agg = aggregate_seeds(runs)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(agg, fh, indent=1, allow_nan=True)
    print(format_seed_table(agg))


if __name__ == "__main__":
    main()
