"""Queries over a clip (audio, temporal, relational, referring, no-target) and a resolver that checks them.

A query is kept only if `resolve` (evaluated on the clip's generative audio facts and on facts measured
from the rendered masks) finds exactly one object, so every emitted query is answerable by its target's
short description ("the red circle").
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic import words
from data_pipelines.synthetic.world import Clip

ONSET_MARGIN_S = 0.25  # audio onsets closer than this count as ties
POS_MARGIN_PX = 2.0  # relational comparisons need this much separation in every shared frame
AUDIO_TEXT = {"highest": "the object making the highest sound", "lowest": "the object making the lowest sound",
              "first": "the object that sounds first", "last": "the object that sounds last"}
TEMPORAL_TEXT = {"appears_first": "the shape that appears first", "appears_last": "the shape that appears last",
                 "leaves_first": "the shape that leaves first", "leaves_last": "the shape that leaves last"}
REL_TEXT = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
TYPE_ID = {"referring": 0, "audio": 1, "temporal": 1, "relational": 1, "no_target": 2}
NULL_TEXTS = ("the sounding object", "the object making a sound", "the object that sounds first",
              "the object making the highest sound")


def _extreme(values: dict, largest: bool, margin: float) -> list[int]:
    if not values:
        return []
    best = max(values.values()) if largest else min(values.values())
    return sorted(j for j, v in values.items() if abs(v - best) <= margin)


def resolve(kind: str, params: dict, clip: Clip, facts: list[dict]) -> list[int]:
    """Object ids satisfying a query (an answerable query has exactly one)."""
    objs = clip.objects
    visible = [j for j in range(len(objs)) if facts[j]["visible_frames"]]
    if kind == "audio":
        which = params["which"]
        if which in ("highest", "lowest"):
            return _extreme({j: objs[j].pitch_hz for j in range(len(objs))}, which == "highest", 0.0)
        onsets = {j: objs[j].sound_intervals[0][0] for j in range(len(objs)) if objs[j].sound_intervals}
        return _extreme(onsets, which == "last", ONSET_MARGIN_S)
    if kind == "temporal":
        key = "first_visible" if params["which"].startswith("appears") else "last_visible"
        return _extreme({j: facts[j][key] for j in visible}, params["which"].endswith("last"), 0.0)
    if kind == "relational":
        ref, rel = params["ref"], params["rel"]
        out = []
        for j in visible:
            shared = sorted(set(facts[j]["visible_frames"]) & set(facts[ref]["visible_frames"]))
            if j == ref or not shared:
                continue
            ok = True
            for t in shared:
                (xj, yj), (xr, yr) = facts[j]["centroids"][t], facts[ref]["centroids"][t]
                d = {"left": xr - xj, "right": xj - xr, "above": yr - yj, "below": yj - yr}[rel]
                ok &= d > POS_MARGIN_PX
            if ok:
                out.append(j)
        return out
    if kind in ("referring", "no_target"):
        return [j for j in visible if objs[j].colour == params["colour"] and objs[j].shape == params["shape"]
                and (kind == "no_target" or objs[j].size == params["size"])]
    raise ValueError(f"unknown query kind {kind!r}")


def query_text(kind: str, params: dict, clip: Clip) -> str:
    """The natural-language query, using only `words.WORDS`."""
    if kind == "audio":
        return AUDIO_TEXT[params["which"]]
    if kind == "temporal":
        return TEMPORAL_TEXT[params["which"]]
    if kind == "relational":
        return f"the shape {REL_TEXT[params['rel']]} {clip.objects[params['ref']].description}"
    return f"the {params['size']} {params['colour']} {params['shape']}"


def _candidates(kind: str, clip: Clip) -> list[dict]:
    if kind == "audio":
        return [{"which": w} for w in AUDIO_TEXT]
    if kind == "temporal":
        return [{"which": w} for w in TEMPORAL_TEXT]
    if kind == "relational":
        return [{"rel": r, "ref": j} for j in range(len(clip.objects)) for r in REL_TEXT]
    if kind == "referring":
        return [{"colour": o.colour, "shape": o.shape, "size": o.size} for o in clip.objects]
    if kind == "no_target":
        present = {(o.colour, o.shape) for o in clip.objects}
        return [{"colour": c, "shape": s, "size": "small"} for c in words.COLOURS for s in words.SEEN_SHAPES
                if (c, s) not in present]
    raise ValueError(kind)


def make_queries(rng: np.random.Generator, clip: Clip, facts: list[dict], *, kinds: tuple, max_queries: int,
                 target_shapes: tuple | None = None, visible_at: int | None = None) -> list[dict]:
    """Up to `max_queries` answerable queries, at most one per kind (in a random kind order).

    `target_shapes` restricts targets to those shapes; `visible_at` to objects visible in that frame.
    """
    out = []
    for k in rng.permutation(len(kinds)):
        kind = kinds[int(k)]
        ok = []
        for params in _candidates(kind, clip):
            hits = resolve(kind, params, clip, facts)
            if kind == "no_target":
                if not hits:
                    ok.append((params, None))
            elif (len(hits) == 1 and (target_shapes is None or clip.objects[hits[0]].shape in target_shapes)
                  and (visible_at is None or visible_at in facts[hits[0]]["visible_frames"])):
                ok.append((params, hits[0]))
        if not ok:
            continue
        params, target = ok[int(rng.integers(len(ok)))]
        if kind == "no_target":
            params = {**params, "size": words.SIZES[int(rng.integers(2))]}
        out.append({"kind": kind, "params": params, "text": query_text(kind, params, clip), "target": target,
                    "answer": clip.objects[target].description if target is not None else "none",
                    "type_id": TYPE_ID[kind]})
        if len(out) >= max_queries:
            break
    return out
