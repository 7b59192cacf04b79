"""`omnir1-data`: synthesise the synthetic world in the real formats, inspect a dataset, validate a dataset.

    omnir1-data synth --out DIR [--seed 0 --num_train 8 --num_val 2 --num_test 2 ...]   -> DIR/refavs, DIR/revos
    omnir1-data inspect DIR --format refavs|revos|mevis    (counts per split, logged)
    omnir1-data validate DIR --format refavs|revos|mevis   (runs every check, reports all problems; rc 1 if any)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Sequence

from data_pipelines.formats import SPLITS, get_reader_cls
from data_pipelines.formats.errors import BadExampleError

log = logging.getLogger("omnir1-data")


def _split_exists(root: str, fmt: str, split: str) -> bool:
    if fmt == "refavs":
        return os.path.isfile(os.path.join(root, "metadata.csv"))
    if fmt == "revos":
        return os.path.isfile(os.path.join(root, f"meta_expressions_{split}_.json"))
    return os.path.isfile(os.path.join(root, split, "meta_expressions.json"))


def _open_readers(root: str, fmt: str) -> tuple[dict, list[str]]:
    readers, problems = {}, []
    cls = get_reader_cls(fmt)
    for split in SPLITS[fmt]:
        if not _split_exists(root, fmt, split):
            continue
        try:
            readers[split] = cls(root, split, skip_bad_examples=True)
        except BadExampleError as err:  # file-level problem: the whole split is unreadable
            problems.append(f"[{split}] {err}")
    if not readers and not problems:
        problems.append(f"{root}: no {fmt} split found")
    return readers, problems


def cmd_synth(args: argparse.Namespace) -> int:
    from data_pipelines.synthetic import writer

    t0 = time.time()
    ref = writer.write_refavs(os.path.join(args.out, "refavs"), seed=args.seed, num_train=args.num_train,
                              num_val=args.num_val, num_test=args.num_test, height=args.height, width=args.width)
    log.info("RefAVS-format rows per split: %s", ref)
    vos = writer.write_vos(os.path.join(args.out, "revos"), seed=args.seed, num_train=args.num_train,
                           num_valid=args.num_val, frames_range=(args.min_frames, args.max_frames),
                           height=args.height, width=args.width, flat=args.flat_revos, min_visible=args.min_visible)
    log.info("ReVOS-format expressions per split: %s", vos)
    if args.mevis:
        mev = writer.write_vos(os.path.join(args.out, "mevis"), layout="mevis", seed=args.seed,
                               num_train=args.num_train, num_valid=args.num_val,
                               frames_range=(args.min_frames, args.max_frames), height=args.height, width=args.width,
                               min_visible=args.min_visible)
        log.info("MeViS-format expressions per split: %s", mev)
    log.info("wrote synthetic datasets under %s in %.1fs", args.out, time.time() - t0)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    readers, problems = _open_readers(args.dir, args.format)
    for split, r in readers.items():
        videos = len({e["video"] for e in r.entries})
        extra = ""
        if args.format == "refavs":
            extra = f", duplicates dropped {r.num_duplicates}, TODO rows {r.num_todo}, reused uids {len(r.reused_uids)}"
        else:
            types = {t: sum(e["type_id"] == t for e in r.entries) for t in (0, 1, 2)}
            extra = f", type_id counts {types}"
        log.info("%s %s: %d expressions, %d videos%s, bad metadata %s", args.format, split, len(r), videos, extra,
                 dict(r.skipped))
        print(f"{split}\t{len(r)} expressions\t{videos} videos{extra}")
    for p in problems:
        log.error("%s", p)
    return 1 if problems else 0


def cmd_validate(args: argparse.Namespace) -> int:
    readers, problems = _open_readers(args.dir, args.format)
    fmt_log = logging.getLogger("data_pipelines.formats")
    old_level = fmt_log.level
    fmt_log.setLevel(logging.ERROR)  # collect here, print once below
    try:
        return _validate(args, readers, problems)
    finally:
        fmt_log.setLevel(old_level)


def _validate(args: argparse.Namespace, readers: dict, problems: list) -> int:
    for split, r in readers.items():
        for i in range(len(r) if args.limit <= 0 else min(len(r), args.limit)):
            r.load(i)
        if args.format == "revos":
            for video in sorted({e["video"] for e in r.entries}):
                try:
                    r.foreground(video)
                except BadExampleError as err:
                    r.problems.append(str(err))
                    r.skipped[err.reason] += 1
        problems += [f"[{split}] {p}" for p in r.problems]
        print(f"{split}\t{len(r)} items\t{sum(r.skipped.values())} problems\t{dict(r.skipped)}")
    for p in problems:
        print(f"PROBLEM {p}")
    print(f"{'OK' if not problems else 'FAILED'}: {len(problems)} problem(s) in {args.dir} ({args.format})")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnir1-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the synthetic world in the RefAVS and ReVOS formats")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num_train", type=int, default=8, help="clips in train")
    s.add_argument("--num_val", type=int, default=2, help="clips in val / valid")
    s.add_argument("--num_test", type=int, default=2, help="clips in each RefAVS test split")
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--width", type=int, default=128)
    s.add_argument("--min_frames", type=int, default=16, help="VOS clip length range")
    s.add_argument("--max_frames", type=int, default=24)
    s.add_argument("--min_visible", type=float, default=0.25,
                   help="VOS objects are visible in at least this share of their clip")
    s.add_argument("--flat_revos", action="store_true", help="Sa2VA flat layout (no JPEGImages/ level)")
    s.add_argument("--mevis", action="store_true", help="also write DIR/mevis in the MeViS layout")
    s.set_defaults(fn=cmd_synth)
    for name, fn in (("inspect", cmd_inspect), ("validate", cmd_validate)):
        c = sub.add_parser(name, help=f"{name} a dataset directory")
        c.add_argument("dir")
        c.add_argument("--format", required=True, choices=sorted(SPLITS))
        if name == "validate":
            c.add_argument("--limit", type=int, default=0, help="load only the first N items per split (0 = all)")
        c.set_defaults(fn=fn)
    return p


def run(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns (and exits with) the command's status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.fn(args)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
