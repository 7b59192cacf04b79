"""TMRoPE / M-RoPE position ids for interleaved text, image, video and audio tokens: jittable, vectorised.

Same result as transformers' ``get_rope_index`` (Qwen2.5-Omni).  Idea: every valid token advances a running
counter ``D`` (text, specials and audio tokens by 1; a vision block by ``max offset + 1`` on its last token),
and a vision token sits at ``D(block start) + (t, h, w) offset``.  Offsets and advances depend only on the
static grids, so they are NumPy tables indexed by the token's global rank among the vision tokens of the
(flattened, row-major) batch -- the order in which transformers consumes ``image_grid_thw``.  No loop over
tokens: one cumsum and a few gathers.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.qwen_omni.config import ThinkerConfig

Grid = Sequence[Sequence[int]] | None


def vision_tables(grid_thw: Grid, merge: int, seconds_per_grid: Sequence[float], per_second: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per vision token (all items concatenated): ``offsets [N, 3]`` and block ``advance [N]``.

    Temporal index of grid step k: ``int((k * seconds_per_grid) * per_second)`` in float32, in transformers'
    order of operations (images use ``seconds_per_grid = 1``).
    """
    offs, adv = [np.zeros((0, 3), np.int64)], [np.zeros((0,), np.int64)]
    for (t, h, w), spg in zip(grid_thw or (), seconds_per_grid):
        gh, gw = int(h) // merge, int(w) // merge
        t_index = ((np.arange(int(t), dtype=np.float32) * np.float32(spg)) * np.float32(per_second)).astype(np.int64)
        tt = np.repeat(t_index, gh * gw)
        hh = np.tile(np.repeat(np.arange(gh), gw), int(t))
        ww = np.tile(np.arange(gw), int(t) * gh)
        o = np.stack([tt, hh, ww], axis=1)  # [t*gh*gw, 3]
        a = np.zeros(len(o), np.int64)
        a[-1] = o.max() + 1
        offs.append(o)
        adv.append(a)
    return np.concatenate(offs), np.concatenate(adv)


def _gather_table(is_tok: jax.Array, offsets: np.ndarray, advance: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Offsets ``[B, L, 3]`` and advances ``[B, L]`` of the tokens flagged by ``is_tok`` (zeros elsewhere)."""
    B, L = is_tok.shape
    if len(offsets) == 0:
        return jnp.zeros((B, L, 3), jnp.int32), jnp.zeros((B, L), jnp.int32)
    rank = jnp.cumsum(is_tok.reshape(-1).astype(jnp.int32)).reshape(B, L) - 1  # global row-major rank
    rank = jnp.clip(rank, 0, len(offsets) - 1)
    off = jnp.asarray(offsets.astype(np.int32))[rank] * is_tok[..., None]
    adv = jnp.asarray(advance.astype(np.int32))[rank] * is_tok
    return off, adv


def get_rope_index(
    config: ThinkerConfig,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    image_grid_thw: Grid = None,
    video_grid_thw: Grid = None,
    audio_seqlens: Sequence[int] | None = None,
    use_audio_in_video: bool = False,
    video_second_per_grid: Sequence[float] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """3-D positions ``[3, B, L]`` (int32) and ``rope_deltas [B]`` for ``input_ids [B, L]`` (traced).

    Grids, ``audio_seqlens`` (mel frames per audio; needed only with ``use_audio_in_video``, since standalone
    audio tokens advance like text), ``use_audio_in_video`` and ``video_second_per_grid`` are static.  Padding slots
    (``attention_mask == 0``) get position 1, as in transformers.
    """
    B, L = input_ids.shape
    mask = jnp.ones((B, L), bool) if attention_mask is None else (attention_mask == 1)
    n_valid = jnp.sum(mask, axis=-1).astype(jnp.int32)  # [B]

    if image_grid_thw is None and video_grid_thw is None:
        # transformers' text branch: cumsum over the mask; the delta's max includes the pad value 1.
        pos = jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1
        pos = jnp.where(mask, pos, 1)
        deltas = jnp.max(pos, axis=-1) + 1 - n_valid
        return jnp.broadcast_to(pos[None], (3, B, L)), deltas

    merge = config.spatial_merge_size
    pps = config.position_id_per_seconds
    n_img = len(image_grid_thw or ())
    n_vid = len(video_grid_thw or ())
    spg = tuple(video_second_per_grid) if video_second_per_grid is not None else (1.0,) * n_vid
    if len(spg) != n_vid:
        raise ValueError(f"video_second_per_grid has {len(spg)} entries for {n_vid} videos")
    img_off, img_adv = vision_tables(image_grid_thw, merge, (1.0,) * n_img, pps)
    vid_off, vid_adv = vision_tables(video_grid_thw, merge, spg, pps)

    is_img = mask & (input_ids == config.image_token_id)
    is_vid = mask & (input_ids == config.video_token_id)
    i_off, i_adv = _gather_table(is_img, img_off, img_adv)
    v_off, v_adv = _gather_table(is_vid, vid_off, vid_adv)
    is_text = mask & ~is_img & ~is_vid
    inc = i_adv + v_adv + is_text.astype(jnp.int32)  # [B, L]
    off = i_off + v_off  # [B, L, 3]
    if use_audio_in_video:
        if audio_seqlens is None:
            raise ValueError("use_audio_in_video=True needs the audio lengths (feature_attention_mask)")
        extra_off, inc = _audio_in_video(config, input_ids, mask, is_vid, video_grid_thw, vid_off,
                                          audio_seqlens, inc)
        off = off + extra_off
    start = jnp.cumsum(inc, axis=-1) - inc  # exclusive cumsum: counter before each token
    pos = start[..., None] + off  # [B, L, 3]
    pos = jnp.where(mask[..., None], pos, 1).transpose(2, 0, 1)  # [3, B, L]
    big = jnp.iinfo(jnp.int32).min
    max_pos = jnp.max(jnp.where(mask[None], pos, big), axis=(0, 2))  # [B]
    deltas = max_pos + 1 - n_valid
    return pos.astype(jnp.int32), deltas.astype(jnp.int32)


def _chunks(values: np.ndarray, per_chunk: int) -> list[tuple[int, int]]:
    """transformers' ``get_chunked_index``: slices of ``values`` by successive ``per_chunk`` value ranges."""
    out, start, current = [], 0, 1
    for i, v in enumerate(values):
        if v >= current * per_chunk:
            out.append((start, i))
            start, current = i, current + 1
    out.append((start, len(values)))
    return out


def _audio_in_video(config: ThinkerConfig, input_ids: jax.Array, mask: jax.Array, is_vid: jax.Array,
                    video_grid_thw: Grid, vid_off: np.ndarray, audio_seqlens: Sequence[int], inc: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    """Offsets ``[B, L, 3]`` and advances for ``<vision_bos><audio_bos> chunks <audio_eos><vision_eos>`` blocks.

    Both bos share one position, video and audio tokens start from the same base, and both eos sit one past
    the max of the *last appended chunk* (transformers' rule): a static function of the (video, audio) pair.
    """
    c = config
    B, L = input_ids.shape
    prev = jnp.pad(input_ids, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
    nxt = jnp.pad(input_ids, ((0, 0), (0, 1)), constant_values=-1)[:, 1:]
    vs_bos = mask & (input_ids == c.vision_start_token_id) & (nxt == c.audio_start_token_id)
    au_eos = mask & (input_ids == c.audio_end_token_id) & (nxt == c.vision_end_token_id)
    vs_eos = mask & (input_ids == c.vision_end_token_id) & (prev == c.audio_end_token_id)
    opened = jnp.cumsum((mask & (input_ids == c.vision_start_token_id)).astype(jnp.int32), -1)
    closed = jnp.cumsum((mask & (input_ids == c.vision_end_token_id)).astype(jnp.int32), -1)
    is_aud = mask & (input_ids == c.audio_token_id)
    av_aud = is_aud & (opened > closed)  # audio tokens inside a vision block

    # Static tables: audio token rank -> index in its clip / clip id; video token rank -> video id;
    # (video, audio) -> eos offset from the block base.
    alens = [((int(n) - 1) // 2 + 1 - 2) // 2 + 1 for n in audio_seqlens]
    per_chunk = int(c.position_id_per_seconds * c.seconds_per_chunk)
    merge = c.spatial_merge_size
    vsizes = [int(t) * (int(h) // merge) * (int(w) // merge) for t, h, w in (video_grid_thw or ())]
    vstarts = np.cumsum([0] + vsizes)
    eos_rel = np.zeros((max(len(vsizes), 1), max(len(alens), 1)), np.int64)
    for v, n in enumerate(vsizes):
        offs = vid_off[vstarts[v]:vstarts[v] + n]
        vchunks = _chunks(offs[:, 0], per_chunk)
        for a, alen in enumerate(alens):
            achunks = _chunks(np.arange(alen), per_chunk)
            if len(achunks) >= len(vchunks):
                eos_rel[v, a] = achunks[-1][1]  # last appended chunk is audio: its max is end - 1
            else:
                s, e = vchunks[-1]
                eos_rel[v, a] = offs[s:e].max() + 1

    def table(values: list[np.ndarray], flags: jax.Array) -> jax.Array:
        """Value of the latest flagged token so far (global row-major rank) looked up in a static table."""
        tab = np.concatenate(values + [np.zeros(1, np.int64)]).astype(np.int32)
        rank = jnp.cumsum(flags.reshape(-1).astype(jnp.int32)).reshape(B, L) - 1
        return jnp.asarray(tab)[jnp.clip(rank, 0, len(tab) - 1)]

    a_in = table([np.arange(n) for n in alens], is_aud)
    a_id = table([np.full(n, i) for i, n in enumerate(alens)], is_aud)
    v_id = table([np.full(n, i) for i, n in enumerate(vsizes)], is_vid)
    e_rel = jnp.asarray(eos_rel.astype(np.int32))[v_id, a_id]  # [B, L]
    off = jnp.where(av_aud, a_in, 0) + jnp.where(au_eos | vs_eos, e_rel, 0)  # same on t, h, w
    inc = jnp.where(vs_bos | av_aud | au_eos | is_vid, 0, inc)  # shared bos; chunks/first eos do not advance
    inc = jnp.where(vs_eos, e_rel + 1, inc)  # the closing eos carries the block's advance
    return jnp.broadcast_to(off[..., None], (B, L, 3)), inc


def decode_position_ids(rope_deltas: jax.Array, num_valid: jax.Array, length: int = 1) -> jax.Array:
    """Positions ``[3, B, length]`` of tokens appended after ``num_valid [B]`` valid tokens (generation)."""
    pos = num_valid[:, None] + rope_deltas[:, None] + jnp.arange(length, dtype=jnp.int32)[None]
    return jnp.broadcast_to(pos[None].astype(jnp.int32), (3,) + pos.shape)
