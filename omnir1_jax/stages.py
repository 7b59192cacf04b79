"""Where the two-system pipeline loses the target on the synthetic world, stage by stage.

The synthetic world knows, for every query, the object it refers to, that object's description ("the red
circle") and its box in every frame (``world.json``).  A table row's saved predictions know what each stage
did (``expressions/<video>/<exp_id>.json``: the policy's completion, keyframes, descriptions, and the
grounder's boxes).  This report puts the two side by side:

    python -m omnir1_jax.stages WORKDIR [WORKDIR ...] [--splits refavs_test,revos_test] [--json PATH]

and prints, per table row and split:

* ``format``: share of completions that parse (System 1's answer format);
* ``rewrite``: share of expressions whose first description is the target's (``none`` / no description
  for a query without a target), also per query kind (``--by_kind``);
* ``kf_on_target``: share of keyframe slots of targeted queries where the target is visible;
* ``box_iou``: the grounder's best box IoU against the target's box, over keyframe slots where the target
  is visible (no box = 0), and ``box@0.5`` the share of those slots at IoU >= 0.5;
* ``box_iou_right_desc``: the same over the slots whose description is the target's: System 2's skill
  alone, with the rewrite taken out.

It reads ``<workdir>/table/<row>/<split>/`` (``omnir1_jax.embedded``) and the ``world.json`` of the dataset
root named in each row's ``metrics.json``; other datasets have no world to compare with (a clear error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Sequence

import numpy as np

from omnir1_jax import predictions

ROWS = ("base", "sft", "grpo", "passthrough", "random_keyframes")
SPLITS = ("refavs_test", "revos_test")
NO_TARGET = "none"


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (0 when either is degenerate)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def world_queries(root: str) -> dict:
    """Record key -> (query, clip) over every split of ``root/world.json``: the CSV uid (RefAVS) or
    ``(video, exp_id)`` (VOS)."""
    path = os.path.join(root, "world.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no world.json; the stage report needs the synthetic world's facts "
                                "(data.dataset=synthetic)")
    with open(path) as fh:
        world = json.load(fh)
    out = {}
    for clips in world["splits"].values():
        for clip in clips:
            for q in clip["queries"]:
                out[q["uid"] if "uid" in q else (clip.get("video", clip["clip_id"]), q["exp_id"])] = (q, clip)
    return out


def _targets(query: dict) -> list[int]:
    t = query.get("target")
    return [] if t is None else [int(x) for x in t] if isinstance(t, (list, tuple)) else [int(t)]


def record_stages(rec: dict, query: dict, clip: dict) -> dict:
    """One expression's stage outcomes: format, rewrite, and per keyframe slot (on target, box IoU)."""
    descs = [d.strip() for d in rec.get("descriptions") or []]
    targets = _targets(query)
    answer = query.get("answer", NO_TARGET)
    if not rec.get("format_ok"):
        right = False
    elif not targets:
        right = not descs or descs[0] == NO_TARGET
    else:
        right = bool(descs) and descs[0] == answer
    slots = []
    if targets:
        for k, frame in enumerate(rec.get("keyframes") or []):
            gt = [clip["objects"][t]["boxes_xyxy"].get(str(int(frame))) for t in targets]
            gt = [g for g in gt if g is not None]
            boxes = (rec.get("boxes") or [])[k] if k < len(rec.get("boxes") or []) else []
            iou = max((box_iou(b, g) for b in boxes for g in gt), default=0.0) if gt else None
            slots.append({"on_target": bool(gt), "iou": iou,
                          "right_desc": k < len(descs) and descs[k] == answer})
    return {"kind": query.get("kind", "?"), "format_ok": bool(rec.get("format_ok")), "rewrite_ok": right,
            "slots": slots}


def summarize(stages: Sequence[dict]) -> dict:
    """Pools :func:`record_stages` outputs (shares in [0, 1], ``None`` where nothing was counted)."""
    mean = lambda v: float(np.mean(v)) if len(v) else None  # noqa: E731
    slots = [s for st in stages for s in st["slots"]]
    seen = [s for s in slots if s["on_target"]]
    right = [s for s in seen if s["right_desc"]]
    by_kind: dict = defaultdict(list)
    for st in stages:
        by_kind[st["kind"]].append(st["rewrite_ok"])
    return {"expressions": len(stages), "format": mean([st["format_ok"] for st in stages]),
            "rewrite": mean([st["rewrite_ok"] for st in stages]),
            "rewrite_by_kind": {k: mean(v) for k, v in sorted(by_kind.items())},
            "kf_slots": len(slots), "kf_on_target": mean([s["on_target"] for s in slots]),
            "box_iou": mean([s["iou"] for s in seen]), "box@0.5": mean([s["iou"] >= 0.5 for s in seen]),
            "box_iou_right_desc": mean([s["iou"] for s in right]), "right_desc_slots": len(right)}


def row_report(out_dir: str) -> dict:
    """:func:`summarize` of one table row's saved predictions on one split."""
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path) as fh:
        meta = json.load(fh)
    index = world_queries(meta["root"])
    stages = []
    for rec in predictions.iter_records(out_dir):
        key = rec["uid"] if meta.get("dataset") == "refavs" else (rec["video"], rec["exp_id"])
        if key not in index:
            raise ValueError(f"{out_dir}: prediction {key} has no query in {meta['root']}/world.json")
        stages.append(record_stages(rec, *index[key]))
    return summarize(stages)


def table_report(workdir: str, splits: Sequence[str] = SPLITS, rows: Sequence[str] = ROWS) -> dict:
    """``{split: {row: row_report}}`` for the rows of ``<workdir>/table`` that have each split."""
    out: dict = {}
    for split in splits:
        for row in rows:
            d = os.path.join(workdir, "table", row, split)
            if os.path.isfile(os.path.join(d, "metrics.json")):
                out.setdefault(split, {})[row] = row_report(d)
    if not out:
        raise FileNotFoundError(f"{workdir}/table/*/{{{','.join(splits)}}}/metrics.json: no table row to read "
                                "(run omnir1-train with eval.final_table = True first)")
    return out


COLUMNS = ("expressions", "format", "rewrite", "kf_on_target", "box_iou", "box@0.5", "box_iou_right_desc")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m omnir1_jax.stages", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--by_kind", action="store_true", help="also print the rewrite share per query kind")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    report = {wd: table_report(wd, [s for s in args.splits.split(",") if s]) for wd in args.workdirs}
    for wd, splits in report.items():
        for split, rows in splits.items():
            print(f"{wd} ({split})")
            print("| row | " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS))
            for row, r in rows.items():
                print(f"| {row} | " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
                if args.by_kind:
                    print("|  | rewrite by kind: " + ", ".join(f"{k} {_fmt(v)}" for k, v in
                                                             r["rewrite_by_kind"].items()) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
