"""Writes the synthetic world in the exact RefAVS, ReVOS and MeViS on-disk layouts (plus a world.json of facts)."""

from __future__ import annotations

import collections
import csv
import json
import os
import zlib

import numpy as np
from PIL import Image

from data_pipelines.formats import rle
from data_pipelines.synthetic import audio as audio_lib
from data_pipelines.synthetic import queries as q
from data_pipelines.synthetic import render, words
from data_pipelines.synthetic.world import Clip, make_clip

YT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"  # YouTube ids may hold _ and -
REFAVS_SPLITS = ("train", "val", "test_s", "test_u", "test_n")
FORMAT_IDS = {"refavs": 1, "revos": 2, "mevis": 3}


def clip_rng(seed: int, fmt: str, split: str, index: int) -> np.random.Generator:
    """Independent generator per clip, so each clip is a pure function of (seed, format, split, index)."""
    split_id = zlib.crc32(split.encode())
    return np.random.default_rng([seed, FORMAT_IDS[fmt], split_id, index])


def _write_jpeg(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def _write_png(path: str, mask: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L").save(path)


def _clip_record(clip: Clip, facts: list[dict], queries: list[dict], **extra) -> dict:
    objs = []
    for o, f in zip(clip.to_json()["objects"], facts):
        objs.append({**o, "description": f"the {o['colour']} {o['shape']}", "visible_frames": f["visible_frames"],
                     "first_visible": f["first_visible"], "last_visible": f["last_visible"],
                     "boxes_xyxy": {str(t): b for t, b in f["boxes"].items()}})
    return {**{k: v for k, v in clip.to_json().items() if k != "objects"}, "objects": objs, "queries": queries, **extra}


def _write_world(path: str, fmt: str, seed: int, splits: dict, **settings) -> None:
    with open(path, "w") as fh:
        json.dump({"format": fmt, "seed": seed, "words": list(words.WORDS), **settings, "splits": splits}, fh)


def write_refavs(out_dir: str, *, seed: int = 0, num_train: int = 8, num_val: int = 2, num_test: int = 2,
                 height: int = 96, width: int = 128, num_frames: int = 10, queries_per_clip: int = 2) -> dict:
    """RefAVS layout: metadata.csv (vid,uid,split,fid,exp), media/<id>/{frames/k.jpg, audio.wav 48 kHz stereo},
    gt_mask/<id>/fid_<fid>/0000k.png (0/255). test_u targets are unseen shapes; test_n rows are Null rows on
    muted `null_m-<vid>` media with all-zero masks. One TODO row is appended, as in the real CSV."""
    counts = {"train": num_train, "val": num_val, "test_s": num_test, "test_u": num_test, "test_n": num_test}
    rows, world = [], {}
    for split in REFAVS_SPLITS:
        world[split] = []
        for i in range(counts[split]):
            rng = clip_rng(seed, "refavs", split, i)
            vid_prefix = "".join(YT_ALPHABET[int(k)] for k in rng.integers(len(YT_ALPHABET), size=11))
            start_ms = int(rng.integers(0, 300)) * 1000
            vid = f"{vid_prefix}_{start_ms}_{start_ms + 10000}"
            unseen = split == "test_u"
            required = (words.UNSEEN_SHAPES[int(rng.integers(len(words.UNSEEN_SHAPES)))],) if unseen else ()
            clip = make_clip(rng, vid, num_frames=num_frames, height=height, width=width, fps=num_frames / 10.0,
                             shapes=words.SHAPES if unseen else words.SEEN_SHAPES, all_visible_at_start=True,
                             required_shapes=required)
            frames, masks = render.render_clip(clip)
            facts = render.mask_facts(masks)
            if split == "test_n":
                media_id = f"null_m-{vid}"
                sound = np.zeros((int(10 * 48000), 2), np.float32)
                qs = [{"kind": "null", "params": {}, "text": t, "target": None, "answer": "none", "type_id": 2,
                       "uid": f"{media_id}_null_{k + 1}", "fid": 0} for k, t in enumerate(q.NULL_TEXTS)]
                masks_out = {0: np.zeros_like(masks[0])}
            else:
                media_id = vid
                sound = audio_lib.synth_audio(clip, sample_rate=48000, channels=2, duration_s=10.0)
                qs = q.make_queries(rng, clip, facts, kinds=("audio", "referring", "relational"),
                                    max_queries=queries_per_clip, target_shapes=words.UNSEEN_SHAPES if unseen else None,
                                    visible_at=0)  # Omni-R1 trains RefAVS on frame 0 + audio
                per_cat = collections.Counter()
                for qq in qs:
                    shape = clip.objects[qq["target"]].shape
                    per_cat[shape] += 1
                    qq.update(uid=f"{vid}_{shape}_{per_cat[shape]}", fid=qq["target"])
                masks_out = dict(enumerate(masks))
            for k in range(num_frames):
                _write_jpeg(os.path.join(out_dir, "media", media_id, "frames", f"{k}.jpg"), frames[k])
            for fid, m in masks_out.items():
                for k in range(num_frames):
                    _write_png(os.path.join(out_dir, "gt_mask", media_id, f"fid_{fid}", f"{k:05d}.png"), m[k])
            audio_lib.write_wav(os.path.join(out_dir, "media", media_id, "audio.wav"), sound, 48000)
            rows += [{"vid": vid, "uid": qq["uid"], "split": split, "fid": str(qq["fid"]), "exp": qq["text"]}
                     for qq in qs]
            world[split].append(_clip_record(clip, facts, qs, media_id=media_id))
    if rows:
        rows.append({**rows[0], "uid": rows[0]["uid"].rsplit("_", 1)[0] + "_9", "split": "TODO"})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metadata.csv"), "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["vid", "uid", "split", "fid", "exp"])
        wr.writeheader()
        wr.writerows(rows)
    _write_world(os.path.join(out_dir, "world.json"), "refavs", seed, world)
    return {s: sum(r["split"] == s for r in rows) for s in REFAVS_SPLITS}


def write_vos(out_dir: str, *, layout: str = "revos", seed: int = 0, num_train: int = 6, num_valid: int = 2,
              frames_range: tuple = (16, 24), height: int = 96, width: int = 128, queries_per_clip: int = 3,
              flat: bool = False, no_target_prob: float = 0.3, min_visible: float = 0.25) -> dict:
    """ReVOS layout (`JPEGImages/` or Sa2VA-flat, meta_expressions_{train,valid}_.json, one mask_dict.json and
    mask_dict_foreground.json) or MeViS layout (`{train,valid_u,valid}/{JPEGImages, meta_expressions.json,
    mask_dict.json}`, no type_id, no masks for `valid`). Masks are COCO RLE per anno_id per frame, null = absent.
    Each object is visible in at least `min_visible` of its clip (recorded in world.json)."""
    if layout == "revos":
        splits = {"train": num_train, "valid": num_valid}
    elif layout == "mevis":
        splits = {"train": num_train, "valid_u": num_valid, "valid": num_valid}
    else:
        raise ValueError(f"unknown VOS layout {layout!r}")
    mask_dict, foreground, world, summary = {}, {}, {}, {}
    next_anno = 0
    for split, n in splits.items():
        videos, world[split] = {}, []
        split_masks = {} if layout == "mevis" else mask_dict
        if layout == "mevis":
            img_dir = os.path.join(out_dir, split, "JPEGImages")
        else:
            img_dir = out_dir if flat else os.path.join(out_dir, "JPEGImages")
        for i in range(n):
            rng = clip_rng(seed, layout, split, i)
            video = "".join("0123456789abcdef"[int(k)] for k in rng.integers(16, size=10))
            t_n = int(rng.integers(frames_range[0], frames_range[1] + 1))
            clip = make_clip(rng, video, num_frames=t_n, height=height, width=width, fps=2.0, min_visible=min_visible)
            frames, masks = render.render_clip(clip)
            facts = render.mask_facts(masks)
            kinds = ("referring", "temporal", "relational") + (("no_target",) if rng.random() < no_target_prob else ())
            qs = q.make_queries(rng, clip, facts, kinds=kinds, max_queries=queries_per_clip)
            names = [f"{t:05d}" for t in range(t_n)]
            for t in range(t_n):
                _write_jpeg(os.path.join(img_dir, video, f"{names[t]}.jpg"), frames[t])
            annos = {}
            for j in range(len(clip.objects)):
                annos[j] = str(next_anno)
                next_anno += 1
                split_masks[annos[j]] = [rle.encode(masks[j, t]) if masks[j, t].any() else None for t in range(t_n)]
            exps = {}
            for k, qq in enumerate(qs):
                if qq["target"] is None:  # no-target: an annotation that is absent in every frame
                    anno, obj = str(next_anno), len(clip.objects)
                    next_anno += 1
                    split_masks[anno] = [None] * t_n
                else:
                    anno, obj = annos[qq["target"]], qq["target"]
                e = {"exp": qq["text"], "obj_id": [obj], "anno_id": [int(anno)]}
                if layout == "revos":
                    e["type_id"] = qq["type_id"]
                exps[str(k)] = e
                qq.update(exp_id=str(k), anno_id=int(anno))
            videos[video] = {"vid_id": i, "frames": names, "height": height, "width": width, "expressions": exps}
            used = sorted({str(a) for e in exps.values() for a in e["anno_id"]})
            fg = np.zeros((t_n, height, width), np.uint8)
            for a in used:
                for t, r in enumerate(split_masks[a]):
                    if r:
                        fg[t] |= rle.decode(r)
            foreground[video] = {"masks_rle": [rle.encode(m) for m in fg],
                                 "foreground_ratio": [float(m.mean()) for m in fg]}
            world[split].append(_clip_record(clip, facts, qs, video=video))
        if layout == "mevis":
            d = os.path.join(out_dir, split)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "meta_expressions.json"), "w") as fh:
                json.dump({"videos": videos}, fh)
            if split != "valid":  # MeViS withholds valid masks
                with open(os.path.join(d, "mask_dict.json"), "w") as fh:
                    json.dump(split_masks, fh)
        else:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"meta_expressions_{split}_.json"), "w") as fh:
                json.dump({"videos": videos}, fh)
        summary[split] = sum(len(v["expressions"]) for v in videos.values())
    if layout == "revos":
        with open(os.path.join(out_dir, "mask_dict.json"), "w") as fh:
            json.dump(mask_dict, fh)
        with open(os.path.join(out_dir, "mask_dict_foreground.json"), "w") as fh:
            json.dump(foreground, fh)
    _write_world(os.path.join(out_dir, "world.json"), layout, seed, world, min_visible=min_visible)
    return summary
