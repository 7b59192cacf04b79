"""Prompt templates (paraphrased from Omni-R1, not verbatim) and their renderers.

Placeholders: `{duration}` = n_frames / 2 (seconds at the assumed 2 fps), `{ref}` = the expression in square
brackets, `{answer}` = the answer example. Multimodal items are added by the message layer (`make_messages`).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

REFAVS = (
    "You hear a 10-second audio clip and get a reference instruction: {ref}, which may depend on sound and time. "
    "First look at the objects in the image that make sound, such as people speaking or musical instruments. "
    "Then use the audio to decide which object in the image is exactly {ref}. "
    "Next, rewrite that object as a short, clear visual grounding description that identifies it in a single "
    "image without any audio. "
    "Do not use temporal words (for example 'playing' or 'moving'); use visible cues such as clothing, pose, "
    "position or grouping instead. "
    "Put your reasoning in <think>...</think> and the final result in <answer>...</answer>."
)

_VOS_BODY = (
    "You are given a {duration} seconds video and a reference instruction: {ref}, which may describe behaviour "
    "over time. Find the exact object(s) {ref} in the video that match the instruction. "
    "Pick {moments} most relevant moments where the referred object(s) can be seen best. "
    "Then rewrite the object(s) as a short, clear visual grounding description that works on a single image at "
    "each moment. "
    "Do not use temporal or comparative words such as 'walking', 'moving', 'approaching', 'bigger' or 'smaller'; "
    "describe visible cues such as clothing, pose, position or grouping instead. "
    "Choose moments that are spread across the whole video, not clustered in one part of the timeline. "
    "Do not pick timestamps that are adjacent or overlapping; prefer clearly different moments that each add "
    "new visual information. "
    "Cover the entire video with representative moments instead of taking them all from the beginning. "
)

VOS_FORCE = (
    _VOS_BODY.replace("{moments}", "about 4")
    + "Put your reasoning in <think>...</think> and the final result in <answer>...</answer>. "
    "The answer must be JSON objects in this format, here with 4 moments:\n"
    "<think> your analysis of the video and the reference instruction </think>\n"
    "<answer>\n{answer}</answer>\n"
)

VOS_NO_HINT = (
    _VOS_BODY.replace("{moments}", "about 1-4")
    + "Put your reasoning in <think>...</think> and the final result in <answer>...</answer> as JSON, writing "
    "times as 'mm:ss.ff'."
)

_MOMENT = (
    "{{\n"
    '  "start_time": "{start}",\n'
    '  "end_time": "{end}",\n'
    '  "description": "short description of the referred object(s) at this moment"\n'
    "}}\n"
)

_NO_HINT_EXAMPLE = (
    "For example,\n"
    "<think> your analysis of the video and the reference instruction; you choose {count} </think>\n"
    "<answer>\n{body}</answer>\n"
)

GROUNDING_DEFAULT = "Given the expression '{q}', locate every referred object and output their bboxes as JSON."
GROUNDING_VISIONREASONER = (
    'Find "{q}" with bboxes and points. '
    "Compare the candidate objects and pick the one(s) that match best. "
    "Write the thinking process in <think> </think> and the final answer in <answer> </answer>. "
    "Output the bbox(es) and point(s) inside the referred object(s) as JSON, "
    "e.g. <think> thinking process here </think>"
    '<answer>[{{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}}, '
    '{{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}}]</answer>'
)
GROUNDING_SEGZERO = (
    "Find '{q}' with a bbox and points. "
    "Compare the candidate objects and pick the one that matches best. "
    "Write the thinking process in <think> </think> and the final answer in <answer> </answer>. "
    "Output one bbox and the centres of the two largest inscribed circles of the object as JSON, "
    "e.g. <think> thinking process here </think>"
    '<answer>{{"bbox_2d": [x1, y1, x2, y2], "points_1": [x3, y3], "points_2": [x4, y4]}}</answer>'
)
GROUNDING_REFAVS = "Find the bounding box of '{q}' and answer in JSON."

GROUNDING_VARIANTS = ("default", "visionreasoner", "segzero", "refavs")


def format_timestamp(seconds: float) -> str:
    """`00:SS.ff` as in the reference (`%05.2f` of the seconds after a literal `00:`)."""
    return f"00:{seconds:05.2f}"


def render_vos_prompt(
    expression: str,
    n_frames: int,
    rng: np.random.Generator,
    variant: str = "force",
    with_example: bool = False,
) -> str:
    """VOS prompt; `force` randomises the 4 example timestamps, `no_hint` optionally appends an example.

    `with_example` replaces the reference's "first 50 calls of the dataset object" counter: the caller decides.
    """
    ref = f"[{expression}]"
    duration = str(n_frames / 2)
    if variant == "force":
        moments = []
        for _ in range(4):
            start = int(rng.integers(0, max(n_frames - 1, 1))) * 0.5  # random frame index in [0, n-2]
            moments.append(_MOMENT.format(start=format_timestamp(start), end=format_timestamp(start)))
        return VOS_FORCE.format(duration=duration, ref=ref, answer="".join(moments))
    if variant == "no_hint":
        text = VOS_NO_HINT.format(duration=duration, ref=ref)
        if with_example:
            two = bool(rng.integers(0, 2))
            moment = _MOMENT.format(start="mm:ss.ff", end="mm:ss.ff")
            body = moment.replace("}\n", "},\n") + moment if two else moment
            text += _NO_HINT_EXAMPLE.format(count="two timestamps" if two else "one timestamp", body=body)
        return text
    raise ValueError(f"unknown VOS prompt variant {variant!r}")


def render_refavs_prompt(expression: str) -> str:
    """RefAVS prompt (audio + frame 0 are added by the message layer)."""
    return REFAVS.format(ref=f"[{expression}]")


def render_grounding_prompt(description: str, variant: str = "default") -> str:
    """System-2 grounding prompt for one keyframe description (normalised as in the reference)."""
    if variant == "default":
        return GROUNDING_DEFAULT.format(q=description.lower().strip())
    if variant == "visionreasoner":
        return GROUNDING_VISIONREASONER.format(q=description.lower().strip("."))
    if variant == "segzero":
        return GROUNDING_SEGZERO.format(q=description.lower().strip("."))
    if variant == "refavs":
        return GROUNDING_REFAVS.format(q=description.lower().strip())
    raise ValueError(f"unknown grounding prompt variant {variant!r}")


def make_messages(text: str, modalities: Sequence[str] = ()) -> list[dict]:
    """One user turn: the multimodal items (e.g. ("audio", "image") or ("video",)) first, then the text."""
    content = [{"type": m} for m in modalities] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def template_words() -> list[str]:
    """All letter-only words used by the templates (vocabulary of the synthetic tokenizer)."""
    texts = [REFAVS, VOS_FORCE, VOS_NO_HINT, _MOMENT, _NO_HINT_EXAMPLE, GROUNDING_DEFAULT,
             GROUNDING_VISIONREASONER, GROUNDING_SEGZERO, GROUNDING_REFAVS,
             "think answer start_time end_time description bbox_2d point_2d points_1 points_2 label "
             "user assistant system You are a helpful assistant"]
    words = set()
    for t in texts:
        words.update(re.findall(r"[A-Za-z]+", t))
    return sorted(words)
