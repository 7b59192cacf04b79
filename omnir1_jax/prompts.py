"""Pipeline examples -> token ids with the multimodal placeholders expanded as `Qwen2_5OmniProcessor` does.

The processor replaces each `<|VIDEO|>` by `prod(video_grid_thw) / merge**2` copies, each `<|IMAGE|>` likewise
with `image_grid_thw`, and each `<|AUDIO|>` by the audio encoder's output length for the valid mel frames
(`((L - 1) // 2 + 1 - 2) // 2 + 1`), in order of appearance.  Prompts are left-padded to a static length.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from omnir1_jax.text import make_messages, render_refavs_prompt, render_vos_prompt

VIDEO, IMAGE, AUDIO = "<|VIDEO|>", "<|IMAGE|>", "<|AUDIO|>"


def num_audio_tokens(feature_length: int) -> int:
    """Audio-encoder output tokens for `feature_length` valid mel frames (conv stride 2, then 2x pooling)."""
    n = (int(feature_length) - 1) // 2 + 1
    return (n - 2) // 2 + 1


def num_vision_tokens(grid_thw: Sequence[int], merge_size: int = 2) -> int:
    """Merged vision tokens of one image/video grid `(t, h, w)` in patches."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // merge_size**2


def expand_placeholders(text: str, *, video_grids: Sequence[Sequence[int]] = (),
                        image_grids: Sequence[Sequence[int]] = (), audio_lengths: Sequence[int] = (),
                        merge_size: int = 2) -> str:
    """Replaces the k-th `<|VIDEO|>` / `<|IMAGE|>` / `<|AUDIO|>` by its number of copies (k-th grid / length)."""
    counts = {VIDEO: [num_vision_tokens(g, merge_size) for g in video_grids],
              IMAGE: [num_vision_tokens(g, merge_size) for g in image_grids],
              AUDIO: [num_audio_tokens(n) for n in audio_lengths]}
    for tok, ns in counts.items():
        if text.count(tok) != len(ns):
            raise ValueError(f"{text.count(tok)} {tok} placeholders in the prompt but {len(ns)} inputs given")
    out, pos, used = [], 0, {k: 0 for k in counts}
    while True:
        hits = [(text.find(tok, pos), tok) for tok in counts if text.find(tok, pos) >= 0]
        if not hits:
            break
        at, tok = min(hits)
        out.append(text[pos:at])
        out.append(tok * counts[tok][used[tok]])
        used[tok] += 1
        pos = at + len(tok)
    out.append(text[pos:])
    return "".join(out)


def left_pad(ids: Sequence[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """`ids` left-padded to `length` -> (input_ids int32 [length], attention_mask int32 [length])."""
    if len(ids) > length:
        raise ValueError(f"prompt has {len(ids)} tokens, more than rl.max_prompt_length={length}; raise it "
                         "or lower data.video_max_pixels / data.max_frames")
    out = np.full(length, pad_id, np.int32)
    mask = np.zeros(length, np.int32)
    if len(ids):
        out[length - len(ids):] = ids
        mask[length - len(ids):] = 1
    return out, mask


def render_prompt(tokenizer: Any, task: str, expression: str, num_frames: int, template: str = "vos_force",
                  seed_key: str = "") -> str:
    """Chat-rendered user turn: RefAVS (audio + image) or VOS (video); the VOS example timestamps are drawn
    from an rng seeded by `seed_key` (e.g. the uid), so a prompt is a pure function of the example."""
    if task == "refavs":
        return tokenizer.apply_chat_template(make_messages(render_refavs_prompt(expression), ("audio", "image")))
    rng = np.random.default_rng(zlib.crc32(seed_key.encode()))
    variant = "force" if template == "vos_force" else "no_hint"
    text = render_vos_prompt(expression, int(num_frames), rng, variant=variant)
    return tokenizer.apply_chat_template(make_messages(text, ("video",)))


def example_prompt_ids(tokenizer: Any, text: str, example: Mapping[str, Any], merge_size: int = 2) -> list[int]:
    """Token ids of a rendered prompt with the placeholders expanded for one pipeline example (unbatched)."""
    video = [np.asarray(example["video_grid_thw"]).reshape(3)] if "video_grid_thw" in example else []
    image = [np.asarray(example["image_grid_thw"]).reshape(3)] if "image_grid_thw" in example else []
    audio = [int(np.asarray(example["feature_attention_mask"]).sum())] if "feature_attention_mask" in example else []
    video, image, audio = (v if text.count(tok) else [] for v, tok in ((video, VIDEO), (image, IMAGE), (audio, AUDIO)))
    return tokenizer.encode(expand_placeholders(text, video_grids=video, image_grids=image, audio_lengths=audio,
                                                merge_size=merge_size))


def batch_prompts(tokenizer: Any, batch: Mapping[str, Any], max_prompt_length: int, template: str = "vos_force",
                  merge_size: int = 2) -> dict[str, np.ndarray]:
    """A collated pipeline batch -> `input_ids`, `attention_mask` int32 [B, max_prompt_length] (left-padded)
    plus the rendered `prompt_text` (host-only list)."""
    n = len(batch["uid"])
    ids, masks, texts = [], [], []
    for i in range(n):
        ex = {k: v[i] for k, v in batch.items()}
        num_frames = int(ex.get("num_frames", 0))
        text = render_prompt(tokenizer, ex["task"], ex["expression"], num_frames, template, ex["uid"])
        row, mask = left_pad(example_prompt_ids(tokenizer, text, ex, merge_size), max_prompt_length,
                             tokenizer.pad_id)
        ids.append(row)
        masks.append(mask)
        texts.append(text)
    return {"input_ids": np.stack(ids), "attention_mask": np.stack(masks), "prompt_text": texts}
