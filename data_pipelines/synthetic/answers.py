"""Reference answers for SFT on the synthetic world, built from the facts in `world.json`.

VOS: `<think>…</think><answer>[{"start_time": "00:SS.ff", "end_time": …, "description": …}, …]</answer>` with up
to K keyframes where the target is visible and large, spread over the sampled video (timestamps at 2 fps of the
*sampled* frames, as the policy sees them).  RefAVS: `<think>…</think><answer><description></answer>`.
Keyed by the readers' `uid` (`<video>/<exp_id>` for VOS, the CSV uid for RefAVS).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

SAMPLE_FPS = 2.0  # the sampled frames are read as a 2 fps video (Omni-R1)


def _timestamp(seconds: float) -> str:
    """`00:SS.ff` (the reference writes a literal `00:` then `%05.2f` seconds)."""
    return f"00:{seconds:05.2f}"


def load_world_index(root: str) -> dict[str, dict]:
    """uid -> {"query": …, "clip": …} over every split of `root/world.json` (a RefAVS or VOS dataset root)."""
    with open(os.path.join(root, "world.json")) as fh:
        world = json.load(fh)
    index: dict[str, dict] = {}
    for clips in world["splits"].values():
        for clip in clips:
            video = clip.get("video", clip.get("clip_id"))
            for q in clip["queries"]:
                uid = q.get("uid") or f"{video}/{q['exp_id']}"
                index[uid] = {"query": q, "clip": clip}
    return index


def _targets(query: dict) -> list[int]:
    t = query.get("target")
    if t is None:
        return []
    return [int(x) for x in t] if isinstance(t, (list, tuple)) else [int(t)]


def keyframe_positions(clip: dict, targets: Sequence[int], frame_indices: Sequence[int], max_keyframes: int = 4,
                       large_ratio: float = 0.5) -> list[int]:
    """Positions in the sampled video where a target is visible with a box area >= large_ratio * the best,
    deduplicated by clip frame, then up to `max_keyframes` of them evenly spread."""
    areas = []
    for pos, t in enumerate(frame_indices):
        area = 0.0
        for obj in targets:
            box = clip["objects"][obj]["boxes_xyxy"].get(str(int(t)))
            if box is not None:
                area += max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
        areas.append(area)
    best = max(areas, default=0.0)
    if best <= 0:
        return []
    seen, cand = set(), []
    for pos, (t, a) in enumerate(zip(frame_indices, areas)):
        if a >= large_ratio * best and int(t) not in seen:
            seen.add(int(t))
            cand.append(pos)
    if len(cand) <= max_keyframes:
        return cand
    pick = np.round(np.linspace(0, len(cand) - 1, max_keyframes)).astype(int)
    return [cand[i] for i in pick]


def vos_answer(entry: dict, frame_indices: Sequence[int], max_keyframes: int = 4) -> str:
    """Full VOS completion for the sampled `frame_indices` (clip frame per sampled position)."""
    query, clip = entry["query"], entry["clip"]
    desc = query.get("answer", "none")
    positions = keyframe_positions(clip, _targets(query), frame_indices, max_keyframes)
    if not positions:
        return f"<think>No object in the video matches [{query['text']}].</think><answer>[]</answer>"
    times = [_timestamp(p / SAMPLE_FPS) for p in positions]
    moments = [{"start_time": t, "end_time": t, "description": desc} for t in times]
    think = f"<think>[{query['text']}] is {desc}, seen best at {len(times)} moments.</think>"
    return f"{think}<answer>{json.dumps(moments)}</answer>"


def refavs_answer(entry: dict) -> str:
    """Full RefAVS completion: the description of the sounding target."""
    query = entry["query"]
    desc = query.get("answer", "none")
    return f"<think>The sound and [{query['text']}] point to {desc}.</think><answer>{desc}</answer>"


def reference_answer(index: dict[str, dict], task: str, uid: str, frame_indices: Sequence[int] = (),
                     max_keyframes: int = 4) -> str:
    """Reference completion of one pipeline example (`task` is "refavs" or a VOS task)."""
    if uid not in index:
        raise KeyError(f"uid {uid!r} not in world.json; was the dataset written by `omnir1-data synth`?")
    entry = index[uid]
    return refavs_answer(entry) if task == "refavs" else vos_answer(entry, frame_indices, max_keyframes)
