"""Long-video SAM2 propagation streamed in chunks: device memory stays flat in the number of frames.

Only the conditioning frames and one chunk of frames are ever on the device; the ``lax.scan`` carry is the fixed
memory bank (recent memories + object pointers), so a 10-minute video costs what a 10-second one does.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.sam2.model import Sam2VideoModel
from omnir1_jax.models.sam2.video import conditioning_outputs, encode_frames, init_carry, track_step


@functools.partial(jax.jit, static_argnums=(0, 4))
def _cond_fn(model, params, cond_pixels, boxes_valid, k):
    boxes, valid = boxes_valid
    return conditioning_outputs(model, params, lambda idx: encode_frames(model, params, cond_pixels), boxes, valid, k)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _chunk_fn(model, params, cond, carry, pixels, t0, num_frames, max_ptr):
    """One chunk of the forward scan; the video length is traced (only min(T, max pointers) is static)."""
    def body(c, i):
        t = t0 + i
        f = model.apply({"params": params}, pixels[i][None], method=Sam2VideoModel.image_features)
        frame = {n: v[0] for n, v in f.items() if n != "pos"}
        return track_step(model, params, cond, c, frame, t, max_ptr, False, t < num_frames)

    return jax.lax.scan(body, carry, jnp.arange(pixels.shape[0]))


def propagate_chunked(model: Sam2VideoModel, params: Any, frames: np.ndarray, box_prompts: np.ndarray,
                      box_valid: np.ndarray, chunk_size: int = 16, max_cond_frames: int | None = None) -> np.ndarray:
    """Forward propagation from frame 0 over a host-side video, ``chunk_size`` frames per device call.

    frames: [T, 3, S, S] host array (e.g. a memmap); boxes [O, T, 4]; valid [O, T]. Returns numpy logits
    [O, T, h, w], identical to :func:`omnir1_jax.models.sam2.video.propagate` with ``direction='forward'``.
    """
    t_len, o = frames.shape[0], box_prompts.shape[0]
    k = min(max_cond_frames or t_len, t_len)
    valid = np.asarray(box_valid, bool)
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
    cond_pixels = jnp.asarray(np.asarray(frames[order.reshape(-1)], np.float32))
    # pass only the K gathered prompts (already valid-first), so nothing here is shaped by T: one compile
    cond_boxes = np.take_along_axis(np.asarray(box_prompts, np.float32), order[..., None], axis=1)
    cond_valid = np.take_along_axis(valid, order, axis=1)
    cond = dict(_cond_fn(model, params, cond_pixels, (jnp.asarray(cond_boxes), jnp.asarray(cond_valid)), k))
    cond["idx"] = jnp.asarray(order, jnp.int32)
    max_ptr = min(t_len, model.cfg.max_object_pointers_in_encoder)  # all track_step needs of T statically
    carry = init_carry(model, o, max_ptr)
    outs = []
    for start in range(0, t_len, chunk_size):
        chunk = np.asarray(frames[start: start + chunk_size], np.float32)
        n = chunk.shape[0]
        if n < chunk_size:  # pad the tail so every call has the same shape (one compile)
            chunk = np.concatenate([chunk, np.zeros((chunk_size - n, *chunk.shape[1:]), np.float32)])
        carry, masks = _chunk_fn(model, params, cond, carry, jnp.asarray(chunk), jnp.int32(start),
                                   jnp.int32(t_len), max_ptr)
        outs.append(np.asarray(masks[:n]))
    return np.moveaxis(np.concatenate(outs, axis=0), 0, 1)
