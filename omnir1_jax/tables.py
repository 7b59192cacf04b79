"""Paper-shaped results tables: our evaluator outputs next to Omni-R1's published rows.

Every one of our numbers carries a footnote marker naming the evaluation protocol that produced it
(RefAVS "official@256/batch4" and "davis@native" differ by several points, so an unmarked number is a
trap).  Markdown for READMEs and terminals, LaTeX (a plain ``tabular``, no extra packages) for papers.
CLI: ``python -m omnir1_jax.tables --results DIR_OR_JSON --table refavs --format markdown``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

from omnir1_jax import paper_results as pr

TABLES = ("refavs", "revos", "mevis", "ablation", "s2swap", "synthetic")
MISSING = "–"
UNKNOWN_PROTOCOL = "protocol not recorded"
_STAGE_ORDER = ("base", "sft", "grpo")
_STAGE_NAMES = {"base": "Base", "sft": "SFT", "grpo": "GRPO"}
_VOS_LIKE = ("revos", "ablation", "s2swap")

Cell = tuple[Any, "str | None"]  # (value or None, protocol or None)


def _num(v: Any) -> float | None:
    """A finite float, or None for missing / null / NaN entries."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _is_single(table: str, obj: Mapping) -> bool:
    """Whether ``obj`` is one evaluator output (rather than a ``{label: output}`` mapping)."""
    keys = set(obj)
    if table == "refavs":
        return bool(keys & {"test_s", "test_u", "test_n"})
    if table in _VOS_LIKE:
        return bool(keys & {"overall", "referring", "reasoning"})
    if table == "mevis":
        return "JF" in keys
    return False


def normalise_ours(table: str, ours: Mapping | None) -> dict[str, Mapping]:
    """``{label: evaluator output}``; a bare evaluator output becomes ``{"Ours": output}``."""
    if not ours:
        return {}
    if table != "synthetic" and _is_single(table, ours):
        return {"Ours": ours}
    return dict(ours)


def _lookup(protocol: Mapping[str, str], row: str, group: str | None, embedded: Any) -> str | None:
    """Explicit ``protocol`` entries win: ``row/group``, ``row``, ``group``; then the result's own, then ``*``."""
    for key in ([f"{row}/{group}"] if group else []) + [row] + ([group] if group else []):
        if key in protocol:
            return protocol[key]
    if isinstance(embedded, str) and embedded:
        return embedded
    return protocol.get("*")


def _our_cells(table: str, label: str, res: Mapping, protocol: Mapping[str, str]) -> dict[str, Cell]:
    """Column key -> (value, protocol) for one of our rows."""
    cells: dict[str, Cell] = {}
    if table == "refavs":
        for split, prefix in (("test_s", "seen"), ("test_u", "unseen")):
            sub = res.get(split) or {}
            proto = _lookup(protocol, label, split, sub.get("protocol", res.get("protocol")))
            for m in ("JF", "J", "F"):
                cells[f"{prefix}_{m}"] = (_num(sub.get(m)), proto)
        null = res.get("test_n") or {}
        cells["null_S"] = (_num(null.get("S")), _lookup(protocol, label, "test_n", null.get("protocol")))
    elif table in _VOS_LIKE:
        proto = _lookup(protocol, label, None, res.get("protocol"))
        for key, _ in pr.COLUMNS[table]:
            cells[key] = (_num((res.get(key) or {}).get("JF")), proto)
    elif table == "mevis":
        proto = _lookup(protocol, label, None, res.get("protocol"))
        for m in ("JF", "J", "F"):
            cells[m] = (_num(res.get(m)), proto)
    return cells


def _columns(table: str, our_rows: list[dict[str, Cell]]) -> list[tuple[str, str, int]]:
    """(key, header, decimals); extra columns only we report appear when any of our rows fills them."""
    cols = [(k, h, 1) for k, h in pr.COLUMNS[table]]
    extra = {"refavs": [("null_S", "Null S", 3)], "mevis": [("J", "J", 1), ("F", "F", 1)]}.get(table, [])
    for key, head, dec in extra:
        if table == "mevis" or any(r.get(key, (None,))[0] is not None for r in our_rows):
            cols.append((key, head, dec))
    return cols


def _synthetic_rows(ours: Mapping, protocol: Mapping[str, str]) -> tuple[list[tuple[str, str, int]], list[tuple[str, dict[str, Cell]]]]:
    """``{split: {stage: {J, F, JF}}}`` -> columns per split and one row per stage (Base, SFT, GRPO, ...)."""
    splits = [s for s, v in ours.items() if isinstance(v, Mapping)]
    stages: list[str] = []
    for s in splits:
        stages += [k for k, v in ours[s].items() if isinstance(v, Mapping) and k not in stages]
    stages.sort(key=lambda k: (_STAGE_ORDER.index(k) if k in _STAGE_ORDER else len(_STAGE_ORDER)))
    cols = [(f"{s}_{m}", f"{s} {'J&F' if m == 'JF' else m}", 1) for s in splits for m in ("JF", "J", "F")]
    rows = []
    for st in stages:
        cells: dict[str, Cell] = {}
        for s in splits:
            res = ours[s].get(st) or {}
            emb = res.get("protocol") or (ours[s].get("protocol") if isinstance(ours[s].get("protocol"), str) else None)
            proto = _lookup(protocol, st, s, emb)
            for m in ("JF", "J", "F"):
                cells[f"{s}_{m}"] = (_num(res.get(m)), proto)
        rows.append((_STAGE_NAMES.get(st, st), cells))
    return cols, rows


def _fmt(v: float | None, dec: int) -> str:
    return MISSING if v is None else f"{v:.{dec}f}"


_LATEX_SUBS = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
               ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
               ("†", r"$^{\dagger}$"), ("‡", r"$^{\ddagger}$"), ("Δ", r"$\Delta$"), ("–", "--"), ("×", r"$\times$"))


def latex_escape(text: str) -> str:
    """Escapes LaTeX specials and maps the paper's symbols (†, ‡, Δ, –) to plain-LaTeX spellings."""
    out = []
    for ch in text:
        for a, b in _LATEX_SUBS:
            if ch == a:
                out.append(b)
                break
        else:
            out.append(ch)
    return "".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _assemble(title: str, cols: list[tuple[str, str, int]], paper_rows: Sequence[Mapping],
              our_rows: list[tuple[str, dict[str, Cell]]], notes: Sequence[str], fmt: str) -> str:
    """Lays out the header, paper rows, our rows with protocol markers, and the footnotes."""
    markers: dict[str, str] = {}

    def mark(proto: str | None) -> str:
        proto = proto or UNKNOWN_PROTOCOL
        if proto not in markers:
            markers[proto] = chr(ord("a") + len(markers)) if len(markers) < 26 else f"z{len(markers)}"
        return markers[proto]

    has_paper = bool(paper_rows)
    header = ["Model"] + [h for _, h, _ in cols] + (["Source"] if has_paper else [])
    body_paper = [[r["model"]] + [_fmt(_num(r["values"].get(k)), d) for k, _, d in cols] + [r["source"]]
                  for r in paper_rows]
    body_ours: list[list[tuple[str, str | None]]] = []
    for label, cells in our_rows:
        row = [(label, None)]
        for k, _, d in cols:
            v, proto = cells.get(k, (None, None))
            row.append((_fmt(v, d), None if v is None else mark(proto)))
        body_ours.append(row + ([("ours", None)] if has_paper else []))
    foot = [(m, p) for p, m in markers.items()]

    if fmt == "markdown":
        lines = [f"**{_md_escape(title)}**", "", "| " + " | ".join(_md_escape(h) for h in header) + " |",
                 "|" + "|".join([":---"] + ["---:"] * len(cols) + ([":---"] if has_paper else [])) + "|"]
        lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in body_paper]
        lines += ["| " + " | ".join(_md_escape(t) + (f"[{m}]" if m else "") for t, m in r) + " |" for r in body_ours]
        if foot or notes:
            lines.append("")
        lines += [f"[{m}] {p}  " for m, p in foot] + [f"{n}  " for n in notes]
        return "\n".join(lines).rstrip() + "\n"
    if fmt != "latex":
        raise ValueError(f"unknown format {fmt!r}; expected 'markdown' or 'latex'")
    spec = "l" + "r" * len(cols) + ("l" if has_paper else "")
    lines = [f"% {title}", f"\\begin{{tabular}}{{{spec}}}", "\\hline",
             " & ".join(latex_escape(h) for h in header) + " \\\\", "\\hline"]
    lines += [" & ".join(latex_escape(c) for c in r) + " \\\\" for r in body_paper]
    if body_paper and body_ours:
        lines.append("\\hline")
    lines += [" & ".join(latex_escape(t) + (f"$^{{{m}}}$" if m else "") for t, m in r) + " \\\\" for r in body_ours]
    lines += ["\\hline", "\\end{tabular}"]
    if foot or notes:
        items = [f"$^{{{m}}}$ {latex_escape(p)}" for m, p in foot] + [latex_escape(n) for n in notes]
        lines.append("\\par{\\footnotesize " + " \\\\\n".join(items) + "\\par}")
    return "\n".join(lines) + "\n"


def render(table: str, ours: Mapping[str, Mapping[str, Any]] | None = None, fmt: str = "markdown",
           protocol: Mapping[str, str] | None = None) -> str:
    """Renders ``table`` with the paper's rows first and ``ours`` (``{label: evaluator output}``) below.

    ``protocol`` maps ``"label/split"``, ``"label"``, ``"split"`` or ``"*"`` to a protocol name and
    overrides the ``"protocol"`` field the evaluators write.  For ``synthetic``, ``ours`` is
    ``{split: {stage: {J, F, JF}}}`` and the table has no paper rows.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")
    protocol = dict(protocol or {})
    if table == "synthetic":
        cols, rows = _synthetic_rows(ours or {}, protocol)
        return _assemble(pr.TITLES[table], cols, (), rows, (), fmt)
    labelled = normalise_ours(table, ours)
    rows = [(label, _our_cells(table, label, res, protocol)) for label, res in labelled.items()]
    cols = _columns(table, [c for _, c in rows])
    return _assemble(pr.TITLES[table], cols, pr.PAPER[table], rows, pr.NOTES.get(table, ()), fmt)


def load_results(path: str, table: str) -> dict:
    """Our results for ``table`` from a JSON file, or a directory holding ``<table>.json`` or one JSON per run."""
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no results file or directory at {path!r}")
    own = os.path.join(path, f"{table}.json")
    if os.path.isfile(own):
        return load_results(own, table)
    if table == "synthetic":
        raise FileNotFoundError(f"{path!r} has no synthetic.json")
    runs: dict[str, Any] = {}
    for f in sorted(glob.glob(os.path.join(path, "*.json"))):
        with open(f) as fh:
            obj = json.load(fh)
        if not isinstance(obj, dict):
            continue
        if _is_single(table, obj):
            runs[os.path.splitext(os.path.basename(f))[0]] = obj
        else:
            runs.update({k: v for k, v in obj.items() if isinstance(v, dict) and _is_single(table, v)})
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m omnir1_jax.tables --results R --table T --format F [--protocol KEY=NAME ...] [--out FILE]``."""
    ap = argparse.ArgumentParser(prog="omnir1_jax.tables", description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=None, help="JSON file or directory of evaluator outputs (omit: paper rows only)")
    ap.add_argument("--table", required=True, choices=TABLES)
    ap.add_argument("--format", default="markdown", choices=("markdown", "latex"))
    ap.add_argument("--protocol", action="append", default=[], metavar="KEY=NAME",
                    help="override the protocol of a row ('label'), a split ('test_s'), 'label/split' or '*'")
    ap.add_argument("--out", default=None, help="write here instead of stdout")
    args = ap.parse_args(argv)
    proto = {}
    for item in args.protocol:
        key, sep, name = item.partition("=")
        if not sep:
            ap.error(f"--protocol expects KEY=NAME, got {item!r}")
        proto[key] = name
    ours = load_results(args.results, args.table) if args.results else {}
    text = render(args.table, ours, args.format, proto)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
