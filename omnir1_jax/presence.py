"""Where a VOS score comes from: per-frame J split by whether the referred target is in the frame.

ReVOS-style J averages the per-frame region similarity over every frame of an expression, and an empty
prediction scores 1 on a frame without the target, so "predict nothing" can outscore a model that segments the
target well but leaves masks on frames after the object has gone (omnir1_jax/assets/synthetic_tiny/README.md).
This report separates the two:

    python -m omnir1_jax.presence WORKDIR [WORKDIR ...] [--split revos_test] [--json PATH] [--by_kind]

reads the end-of-run table's saved predictions (``<workdir>/table/<row>/<split>/``, written by
``omnir1_jax.embedded``) and the split's ground truth (the dataset root and split named in each row's
``metrics.json``) and prints, per row: J on frames with the target, J on frames without it, the share of
target-free frames that got a mask, and the frame counts.

``--by_kind`` (synthetic world only: it reads the query kinds from the root's ``world.json``) adds, per row and
query kind, the expressions' mean J next to what "predict nothing" (the Base row when no answer keeps the format)
scores on the same expressions, and ``vs_nothing``: the points of the split's mean J this kind wins (+) or loses
(-) against predicting nothing, so the kinds' entries add up to the row's whole gap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Sequence

import numpy as np

from omnir1_jax import predictions
from omnir1_jax.metrics.davis import jaccard

ROWS = ("base", "sft", "grpo", "passthrough", "random_keyframes")


def presence_split(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Pools ``(pred, gt)`` ``[T, H, W]`` pairs: J (%) on frames with / without the target, and the share of
    target-free frames with a non-empty prediction."""
    j_on, j_off, masked_off = [], [], []
    for pred, gt in pairs:
        pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        j = jaccard(pred, gt)  # [T], 1 where both are empty (DAVIS)
        present = gt.any(axis=(1, 2))
        j_on.extend(j[present])
        j_off.extend(j[~present])
        masked_off.extend(pred[~present].any(axis=(1, 2)))
    mean = lambda v: float(100 * np.mean(v)) if v else None  # noqa: E731
    return {"J_present": mean(j_on), "J_absent": mean(j_off), "frames_present": len(j_on),
            "frames_absent": len(j_off), "absent_frames_with_mask": float(np.mean(masked_off)) if masked_off else None}


def _row_meta(out_dir: str) -> dict:
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path) as fh:
        meta = json.load(fh)
    if meta.get("dataset") != "revos":
        raise ValueError(f"{metrics_path}: dataset {meta.get('dataset')!r}; the presence split reads ReVOS only")
    return meta


def row_pairs(out_dir: str) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """``(pred, gt)`` per saved expression of one table row; the reader comes from its ``metrics.json``."""
    for _, pred, gt in row_items(out_dir):
        yield pred, gt


def row_items(out_dir: str) -> Iterable[tuple[tuple[str, str], np.ndarray, np.ndarray]]:
    """``((video, exp_id), pred, gt)`` per saved expression of one table row."""
    from data_pipelines.formats.revos import ReVOSReader

    meta = _row_meta(out_dir)
    reader = ReVOSReader(meta["root"], meta["split"])
    index = {e["uid"]: i for i, e in enumerate(reader.entries)}
    for rec in predictions.iter_records(out_dir):
        uid = f"{rec['video']}/{rec['exp_id']}"
        if uid not in index:
            raise ValueError(f"{out_dir}: prediction for {uid} has no expression in {reader.meta_path}")
        item = reader.load(index[uid])
        if item is None:
            continue  # a counted bad example of the reader
        gt = item["masks"].astype(bool).any(axis=0)  # [T, H, W] union of the referred objects
        yield (rec["video"], rec["exp_id"]), predictions.decode_masks(rec["prediction_masks"]), gt


def _pairs_by_kind(out_dir: str) -> dict[str, list]:
    """``{query kind: [(pred, gt), ...]}`` of one synthetic-world table row (kinds from its root's world.json)."""
    from omnir1_jax.stages import world_queries

    queries = world_queries(_row_meta(out_dir)["root"])
    by_kind: dict[str, list] = {}
    for key, pred, gt in row_items(out_dir):
        if key not in queries:
            raise ValueError(f"{out_dir}: expression {key} is not in the world.json of its dataset root")
        by_kind.setdefault(queries[key][0]["kind"], []).append((pred, gt))
    return by_kind


def kind_split(out_dir: str, by_kind: dict[str, list] | None = None) -> dict[str, dict]:
    """Per query kind of one synthetic-world table row: ``expressions``, ``J`` (mean over expressions of the
    per-frame J, %), ``J_nothing`` (the same for an empty prediction), ``vs_nothing`` (``(J - J_nothing)`` times
    the kind's share of the row's expressions: its part of the row's gap to predicting nothing), and
    :func:`presence_split`'s ``J_present`` / ``absent_frames_with_mask`` over the kind's frames. ``by_kind``:
    the row's pairs already grouped (:func:`_pairs_by_kind`), so they are not read again."""
    by_kind = _pairs_by_kind(out_dir) if by_kind is None else by_kind
    total = sum(len(v) for v in by_kind.values())
    out = {}
    for kind, pairs in sorted(by_kind.items()):
        j = [100 * float(jaccard(np.asarray(p, bool), g).mean()) for p, g in pairs]
        j0 = [100 * float((~g.any(axis=(1, 2))).mean()) for _, g in pairs]
        split = presence_split(pairs)
        out[kind] = {"expressions": len(pairs), "J": float(np.mean(j)), "J_nothing": float(np.mean(j0)),
                     "vs_nothing": float((np.sum(j) - np.sum(j0)) / total), "J_present": split["J_present"],
                     "absent_frames_with_mask": split["absent_frames_with_mask"]}
    return out


def table_report(workdir: str, split: str = "revos_test", rows: Sequence[str] = ROWS,
                 by_kind: bool = False) -> dict[str, dict]:
    """``{row: presence_split(...)}`` for every row of ``<workdir>/table`` that has ``split`` (with ``by_kind``,
    plus ``"by_kind": kind_split(...)``, from one read of the row)."""
    out = {}
    for row in rows:
        d = os.path.join(workdir, "table", row, split)
        if not os.path.isfile(os.path.join(d, "metrics.json")):
            continue
        if by_kind:
            groups = _pairs_by_kind(d)
            out[row] = {**presence_split(pair for v in groups.values() for pair in v),
                        "by_kind": kind_split(d, groups)}
        else:
            out[row] = presence_split(row_pairs(d))
    if not out:
        raise FileNotFoundError(f"{workdir}/table/*/{split}/metrics.json: no table row to read "
                                "(run omnir1-train with eval.final_table = True first)")
    return out


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m omnir1_jax.presence", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--split", default="revos_test")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--by_kind", action="store_true", help="also split each row by query kind (synthetic world)")
    args = p.parse_args(argv)
    report = {wd: table_report(wd, args.split, by_kind=args.by_kind) for wd in args.workdirs}
    cols = ("J_present", "J_absent", "absent_frames_with_mask", "frames_present", "frames_absent")
    for wd, rows in report.items():
        print(f"{wd} ({args.split})")
        print("| row | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
        for row, r in rows.items():
            cells = (_fmt(r[c], 2 if c == "absent_frames_with_mask" else 1) for c in cols)
            print(f"| {row} | " + " | ".join(cells) + " |")
            for kind, k in r.get("by_kind", {}).items():
                print(f"|  | {kind} ({k['expressions']}): J {k['J']:.1f} vs {k['J_nothing']:.1f} for nothing "
                      f"({k['vs_nothing']:+.1f}), J_present {_fmt(k['J_present'])}, target-free masked "
                      f"{_fmt(k['absent_frames_with_mask'], 2)} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
