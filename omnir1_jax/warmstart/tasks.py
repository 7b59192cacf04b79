"""Generic synthetic tasks that warm-start the Base thinker (never the keyframe task), drawn procedurally.

Every example is a fresh clip of the synthetic world (``data_pipelines.synthetic``), preprocessed by the same
code the pipelines use (``to_example`` / ``keyframe_patches``), so the Base thinker sees exactly the inputs it
will see in GRPO and evaluation:

* ``ground``  — one high-resolution frame + the System-2 grounding prompt (``default`` or ``refavs`` variant,
  built by ``rollout.grounding_spec.host_prompt_ids``, the grounder's own prompt) for a short description
  (``the red circle``, sometimes with its size) -> ``[{"bbox_2d": [x1, y1, x2, y2]}]`` in the resized image's
  pixels, or ``[]`` when nothing matches.  This is what makes the frozen reference thinker a grounder.
* ``caption`` — the low-resolution 2 fps video -> ``<think>…</think><answer>the red circle, the blue square
  </answer>`` (the objects that appear, in order of appearance): formatted captioning / QA.
* ``when``    — the video + an object's description -> ``<think>…</think><answer>{"start_time": …, "end_time": …}
  </answer>`` (first and last sampled frame where it is visible, ``00:SS.ff`` at 2 fps): formatted temporal QA.
* ``hear``    — audio + frame 0 (the RefAVS layout) -> ``<think>…</think><answer>N</answer>``, the number of
  distinct tones that sound: formatted audio QA.
* ``ground_crowd`` — not in the default mix: ``ground`` on frame 0 of a clip whose objects are all visible
  there (the RefAVS layout), so every distractor is in view; trains the grounder to read the description.
* ``ground_solo`` — not in the default mix: ``ground`` on frame 0 of a one-object clip: the coordinates alone,
  no description to read (15% ask for an absent object and want ``[]``); a localisation probe and curriculum.
* ``ground_pair`` — not in the default mix: ``ground`` on frame 0 of a two-object clip whose colours differ, so
  the colour word alone decides which box is right.
* ``ground_all`` — not in the default mix: frame 0 with every object in view -> every object's label and box in
  random order (``[{"label": "the red circle", "bbox_2d": [...]}, …]``): each box right after its own label.
* ``ground_label`` / ``ground_crowd_label`` — not in the default mix: ``ground`` / ``ground_crowd`` whose answer
  first copies the description as the box's label (``[{"label": "the red circle", "bbox_2d": [...]}]``).
* ``count``   — not in the default mix: frame 0 with every object in view + a colour -> how many objects have
  it (half the colours asked for are absent): a one-token binding probe / curriculum for ``ground``.
* ``where``   — not in the default mix: one frame + a description -> ``"C, R"``, the 16-px cell (one per merged
  image token) of the object's centre; a coarse-localisation probe and curriculum for ``ground``.

The grounding examples and ``count`` also carry ``fetch_word``, the described / asked colour, the target of the
warm-start's auxiliary fetch loss (``warmstart.thinker.grounding_aux_loss``, ``--fetch``).

None of them asks to resolve a referring query, pick keyframes or rewrite a query: that is what SFT and GRPO
teach.  Each task has ONE static layout (fixed frame count and pixel grid), so a warm-start run compiles once
per task.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from data_pipelines import preprocess as pp
from data_pipelines.pipeline_transforms import PreprocessConfig, to_example
from data_pipelines.synthetic import audio as audio_lib
from data_pipelines.synthetic import render, words
from data_pipelines.synthetic.world import make_clip

TASKS = ("ground", "caption", "when", "hear")
FORMAT = "Put your reasoning in <think>...</think> and the final result in <answer>...</answer>."
CAPTION_PROMPT = "You are given a {duration} seconds video. Find every object in the video. " + FORMAT
WHEN_PROMPT = ("You are given a {duration} seconds video. Find the start_time and end_time of the moments where "
               "[{desc}] can be seen in the video. " + FORMAT)
HEAR_PROMPT = "You hear a 10-second audio clip. How many objects make a sound? " + FORMAT


@dataclasses.dataclass(frozen=True)
class TaskShapes:
    """Static layout of the warm-start inputs (match the run's config so the Base thinker sees its real inputs)."""

    num_frames: int = 12  # sampled frames of the video tasks (= data.max_frames)
    height: int = 96
    width: int = 128
    video_min_pixels: int = 4 * 28 * 28
    video_max_pixels: int = 8 * 28 * 28
    ground_min_pixels: int = 8 * 28 * 28
    ground_max_pixels: int = 16 * 28 * 28
    patch_size: int = 8
    merge_size: int = 2
    temporal_patch_size: int = 2
    n_mels: int = 16

    @classmethod
    def from_config(cls, config, model) -> "TaskShapes":
        d, v = config.data, model.config.vision
        h, w = (int(x) for x in d.ground_hw)
        return cls(num_frames=int(d.max_frames), height=h, width=w, video_min_pixels=int(d.video_min_pixels),
                   video_max_pixels=int(d.video_max_pixels), ground_min_pixels=int(d.ground_min_pixels),
                   ground_max_pixels=int(d.ground_max_pixels), patch_size=v.patch_size,
                   merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size,
                   n_mels=model.config.audio.num_mel_bins)

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(train=True, min_frames=self.num_frames, max_frames=self.num_frames,
                                video_min_pixels=self.video_min_pixels, video_max_pixels=self.video_max_pixels,
                                image_min_pixels=self.video_min_pixels, image_max_pixels=self.video_max_pixels,
                                patch_size=self.patch_size, merge_size=self.merge_size,
                                temporal_patch_size=self.temporal_patch_size, max_objects=4, mask_size=8,
                                n_mels=self.n_mels)

    @property
    def ground_resized(self) -> tuple[int, int]:
        return pp.smart_resize(self.height, self.width, self.patch_size * self.merge_size, self.ground_min_pixels,
                               self.ground_max_pixels)


def _clip(rng: np.random.Generator, shapes: TaskShapes, num_frames: int, refavs: bool = False,
          num_objects: tuple = (2, 4)):
    clip = make_clip(rng, "warm", num_frames=num_frames, height=shapes.height, width=shapes.width,
                     fps=num_frames / 10.0 if refavs else 2.0, shapes=words.SHAPES, all_visible_at_start=refavs,
                     num_objects=num_objects)
    frames, masks = render.render_clip(clip)
    return clip, frames, masks, render.mask_facts(masks)


def _desc(obj, rng: np.random.Generator) -> str:
    return f"the {obj.size} {obj.colour} {obj.shape}" if rng.random() < 0.3 else f"the {obj.colour} {obj.shape}"


def colour_of(desc: str) -> str:
    """The colour word of a description (``the big red circle`` -> ``red``)."""
    return next(w for w in desc.split() if w in words.COLOURS)


def _video_example(shapes: TaskShapes, frames: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> dict:
    rec = {"task": "revos", "uid": "warm", "video": "warm", "expression": "", "frames": frames, "masks": masks,
           "frame_indices": np.arange(len(frames)), "clip_length": len(frames)}
    return to_example(rec, rng, shapes.preprocess(), "warmstart")


def _think_answer(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def _frame_patches(shapes: TaskShapes, frames: np.ndarray, t: int) -> tuple[np.ndarray, tuple]:
    """Frame ``t`` at the grounding resolution as the grounder sees it: (patch rows, image grid (1, h, w))."""
    from omnir1_jax.eval_pipeline import keyframe_patches

    rh, rw = shapes.ground_resized
    grid = (1, rh // shapes.patch_size, rw // shapes.patch_size)
    return keyframe_patches(frames, np.asarray([t]), (rh, rw), shapes.preprocess())[0], grid


def _resized_box(shapes: TaskShapes, fact: dict, t: int) -> list:
    """An object's box at frame ``t`` (``mask_facts``: ``[x0, y0, x1, y1)`` pixel edges) in the grounding frame."""
    rh, rw = shapes.ground_resized
    x0, y0, x1, y1 = fact["boxes"][t]
    return [x0 * rw / shapes.width, y0 * rh / shapes.height, x1 * rw / shapes.width, y1 * rh / shapes.height]


def token_owners(shapes: TaskShapes, masks: np.ndarray, t: int) -> np.ndarray:
    """Per merged image token of frame ``t`` at the grounding resolution (row-major, the order of the image tokens):
    the index of the object covering more than a quarter of its cell, or -1 (background)."""
    import cv2

    rh, rw = shapes.ground_resized
    m = shapes.patch_size * shapes.merge_size
    cover = np.stack([cv2.resize(np.asarray(k[t], np.float32), (rw, rh), interpolation=cv2.INTER_AREA)
                      for k in masks]).reshape(len(masks), rh // m, m, rw // m, m).mean((2, 4))
    return np.where(cover.max(0) > 0.25, cover.argmax(0), -1).reshape(-1)


def box_answer(boxes: list, label: str | None = None) -> str:
    """The grounder's answer: ``[{"bbox_2d": [x1, y1, x2, y2]}, …]`` (integers), ``[]`` for no match.  With
    ``label``, each object is ``{"label": label, "bbox_2d": [...]}``: the description is written right before its
    box (Qwen2.5-VL grounders emit a ``label`` too; System 2's parser reads any object holding a ``bbox_2d``)."""
    lab = {} if label is None else {"label": label}
    return json.dumps([{**lab, "bbox_2d": [int(round(v)) for v in b]} for b in boxes])


def ground_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any, crowd: bool = False,
                   solo: bool = False, pair: bool = False, label: bool = False) -> dict:
    """A high-resolution frame, a description and its box (or ``[]``) in the grounder's prompt format.

    ``crowd``: frame 0 of a clip whose 2-4 objects are all visible there (the RefAVS layout), so the description
    must pick its object among every distractor; otherwise a random frame of a clip whose objects come and go
    (often one or two visible). ``solo``: a clip of one object, so the box needs no reading of the words.
    ``pair``: ``crowd`` with two objects of distinct colours (clips are redrawn until they differ). ``label``: the
    answer copies the description as the box's ``label`` first (:func:`box_answer`), as ``ground_all`` does."""
    from omnir1_jax.rollout.grounding_spec import host_prompt_ids

    nf = 4
    while True:
        clip, frames, masks, facts = _clip(rng, shapes, nf, refavs=crowd or solo or pair,
                                           num_objects=(1, 1) if solo else (2, 2) if pair else (2, 4))
        if not pair or len({o.colour for o in clip.objects}) == len(clip.objects):
            break
    crowd = crowd or pair
    t = 0 if crowd or solo else int(rng.integers(nf))
    vis = [j for j, f in enumerate(facts) if t in f["visible_frames"]]
    absent = rng.random() < 0.15 or not vis
    box = lambda k: _resized_box(shapes, facts[k], t)  # noqa: E731

    if absent:
        present = {(o.colour, o.shape) for o in clip.objects}
        choices = [(c, s) for c in words.COLOURS for s in words.SHAPES if (c, s) not in present]
        c, s = choices[int(rng.integers(len(choices)))]
        desc, boxes, j = f"the {c} {s}", [], -1
    else:
        j = vis[int(rng.integers(len(vis)))]
        desc = _desc(clip.objects[j], rng)
        boxes = [box(j)]
    patches, grid = _frame_patches(shapes, frames, t)
    n_img = int(np.prod(grid)) // shapes.merge_size**2
    variant = "refavs" if rng.random() < 0.3 else "default"
    answer = box_answer(boxes, desc if label else None)
    return {"prompt_ids": host_prompt_ids(tokenizer, desc, variant, n_img), "answer": answer,
            "arrays": {"pixel_values": patches}, "image_grid_thw": grid, "fetch_word": colour_of(desc),
            "token_owners": token_owners(shapes, masks, t), "target": j,  # for the select loss (-1: absent)
            "distractor_boxes": [box(k) for k in vis if k != j]}  # the other objects in view (for scoring)


WHERE_PROMPT = "Which cell of the {cols} x {rows} grid holds the centre of {desc}? Answer: column, row."


def where_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """A frame + a description -> the grid cell (one per merged image token) holding the object's centre.

    A coarse-localisation probe and curriculum for ``ground``: the answer is two single-character tokens
    (``"3, 1"``), a classification over image-token columns and rows instead of pixel coordinates.
    """
    from omnir1_jax.text import make_messages

    clip, frames, masks, facts = _clip(rng, shapes, 4)
    t = int(rng.choice(sorted({u for f in facts for u in f["visible_frames"]})))  # a frame showing something
    vis = [j for j, f in enumerate(facts) if t in f["visible_frames"]]
    j = vis[int(rng.integers(len(vis)))]
    rh, rw = shapes.ground_resized
    cell = shapes.patch_size * shapes.merge_size
    cx, cy = facts[j]["centroids"][t]
    col = min(int(cx * rw / shapes.width) // cell, rw // cell - 1)
    row = min(int(cy * rh / shapes.height) // cell, rh // cell - 1)
    patches, grid = _frame_patches(shapes, frames, t)
    text = tokenizer.apply_chat_template(make_messages(
        WHERE_PROMPT.format(cols=rw // cell, rows=rh // cell, desc=_desc(clip.objects[j], rng)), ("image",)))
    ex = {"pixel_values": patches, "image_grid_thw": np.asarray(grid)}
    return _finish(tokenizer, ex, text, f"{col}, {row}")


COUNT_PROMPT = "How many {colour} shapes are in the image? Answer with a number."


def count_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """Frame 0 of a clip whose objects are all visible there + a colour -> how many visible objects have it.

    Half the colours asked for are in view, half are not, so the one-token answer (``0``-``4``) depends only on
    whether the colour word finds its image tokens: a dense binding signal (word -> image feature) for the
    grounder, which ``ground`` trains only through its 12 coordinate digits."""
    from omnir1_jax.text import make_messages

    clip, frames, masks, facts = _clip(rng, shapes, 4, refavs=True)
    in_view = [clip.objects[j].colour for j, f in enumerate(facts) if 0 in f["visible_frames"]]
    if rng.random() < 0.5 and in_view:
        colour = in_view[int(rng.integers(len(in_view)))]
    else:
        others = [c for c in words.COLOURS if c not in in_view]
        colour = others[int(rng.integers(len(others)))]
    patches, grid = _frame_patches(shapes, frames, 0)
    text = tokenizer.apply_chat_template(make_messages(COUNT_PROMPT.format(colour=colour), ("image",)))
    ex = {"pixel_values": patches, "image_grid_thw": np.asarray(grid)}
    return {**_finish(tokenizer, ex, text, str(in_view.count(colour))), "fetch_word": colour}


def caption_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """The video -> the objects that appear, in order of first appearance."""
    clip, frames, masks, facts = _clip(rng, shapes, shapes.num_frames)
    order = sorted((f["first_visible"], j) for j, f in enumerate(facts) if f["visible_frames"])
    names = [clip.objects[j].description for _, j in order]
    think = f"{len(names)} objects appear."
    return _video_task(shapes, tokenizer, rng, frames, masks,
                       CAPTION_PROMPT.format(duration=shapes.num_frames / 2),
                       _think_answer(think, ", ".join(names) or "none"))


def when_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """The video + a description -> when that object is visible (first/last sampled frame, 2 fps timestamps)."""
    from omnir1_jax.text.templates import format_timestamp

    clip, frames, masks, facts = _clip(rng, shapes, shapes.num_frames)
    vis = [j for j, f in enumerate(facts) if f["visible_frames"]]
    j = vis[int(rng.integers(len(vis)))]
    f = facts[j]
    desc = clip.objects[j].description
    ans = json.dumps({"start_time": format_timestamp(f["first_visible"] / pp.SAMPLE_FPS),
                      "end_time": format_timestamp(f["last_visible"] / pp.SAMPLE_FPS)})
    think = f"[{desc}] is seen in {len(f['visible_frames'])} frames."
    return _video_task(shapes, tokenizer, rng, frames, masks,
                       WHEN_PROMPT.format(duration=shapes.num_frames / 2, desc=desc), _think_answer(think, ans))


def hear_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """Audio + frame 0 (RefAVS layout) -> how many objects sound."""
    from omnir1_jax.text import make_messages

    nf = 10
    clip, frames, masks, facts = _clip(rng, shapes, nf, refavs=True)
    sound = audio_lib.synth_audio(clip, sample_rate=16000, channels=1, duration_s=10.0)[:, 0]
    rec = {"task": "refavs", "uid": "warm", "video": "warm", "expression": "", "frames": frames[:1],
           "masks": masks[:, :1], "frame_indices": np.arange(1), "clip_length": nf, "audio": sound}
    ex = to_example(rec, rng, shapes.preprocess(), "warmstart")
    n = sum(1 for o in clip.objects if o.sound_intervals)
    text = tokenizer.apply_chat_template(make_messages(HEAR_PROMPT, ("audio", "image")))
    return _finish(tokenizer, ex, text, _think_answer(f"I hear {n} tones.", str(n)))


def _video_task(shapes, tokenizer, rng, frames, masks, prompt: str, answer: str) -> dict:
    from omnir1_jax.text import make_messages

    ex = _video_example(shapes, frames, masks, rng)
    text = tokenizer.apply_chat_template(make_messages(prompt, ("video",)))
    return _finish(tokenizer, ex, text, answer)


def _finish(tokenizer, ex: dict, text: str, answer: str) -> dict:
    from omnir1_jax.prompts import example_prompt_ids

    arrays = {k: ex[k] for k in ("pixel_values_videos", "pixel_values", "input_features") if k in ex}
    out = {"prompt_ids": example_prompt_ids(tokenizer, text, ex), "answer": answer, "arrays": arrays}
    for k in ("video_grid_thw", "image_grid_thw"):
        if k in ex:
            out[k] = tuple(int(v) for v in ex[k])
    if "video_second_per_grid" in ex:
        out["video_second_per_grid"] = float(ex["video_second_per_grid"])
    if "feature_attention_mask" in ex:
        out["audio_len"] = int(np.asarray(ex["feature_attention_mask"]).sum())
    return out


def ground_crowd_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """``ground`` on a frame showing every object of the clip (see :func:`ground_example`)."""
    return ground_example(rng, shapes, tokenizer, crowd=True)


def ground_solo_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """``ground`` on frame 0 of a one-object clip (see :func:`ground_example`)."""
    return ground_example(rng, shapes, tokenizer, solo=True)


def ground_pair_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """``ground`` on frame 0 of a two-object clip whose objects differ in colour (see :func:`ground_example`)."""
    return ground_example(rng, shapes, tokenizer, pair=True)


def ground_label_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """``ground`` whose answer writes the description as the box's label first (see :func:`ground_example`)."""
    return ground_example(rng, shapes, tokenizer, label=True)


def ground_crowd_label_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """``ground_crowd`` whose answer writes the description as the box's label first."""
    return ground_example(rng, shapes, tokenizer, crowd=True, label=True)


GROUND_ALL_PROMPT = "Locate every object and output their label and bboxes as JSON."


def ground_all_example(rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """Frame 0 of a clip whose 2-4 objects are all visible there -> every object's label and box, in random order:
    ``[{"label": "the red circle", "bbox_2d": [x1, y1, x2, y2]}, …]``.

    Each box comes right after its own label, and the order is random, so no box can be produced
    without reading the label just written (no "most visible object" or "leftmost first" shortcut): the densest
    word -> image-position signal for the grounder, 2-4 bindings per example."""
    from omnir1_jax.text import make_messages

    clip, frames, masks, facts = _clip(rng, shapes, 4, refavs=True)
    vis = [j for j, f in enumerate(facts) if 0 in f["visible_frames"]]
    items = [{"label": clip.objects[int(j)].description,
              "bbox_2d": [int(round(v)) for v in _resized_box(shapes, facts[int(j)], 0)]} for j in rng.permutation(vis)]
    patches, grid = _frame_patches(shapes, frames, 0)
    text = tokenizer.apply_chat_template(make_messages(GROUND_ALL_PROMPT, ("image",)))
    ex = {"pixel_values": patches, "image_grid_thw": np.asarray(grid)}
    return _finish(tokenizer, ex, text, json.dumps(items))


MAKERS = {"ground": ground_example, "ground_crowd": ground_crowd_example, "ground_solo": ground_solo_example,
          "ground_pair": ground_pair_example, "ground_all": ground_all_example, "ground_label": ground_label_example,
          "ground_crowd_label": ground_crowd_label_example, "caption": caption_example,
          "when": when_example, "hear": hear_example, "where": where_example, "count": count_example}


def make_example(task: str, rng: np.random.Generator, shapes: TaskShapes, tokenizer: Any) -> dict:
    """One example of ``task`` (see the module docstring): prompt ids, answer text, tower inputs, grids."""
    if task not in MAKERS:
        raise ValueError(f"unknown warm-start task {task!r}; expected one of {tuple(MAKERS)}")
    return MAKERS[task](rng, shapes, tokenizer)
