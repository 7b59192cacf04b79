"""Two-system inference for evaluation: System 1 (greedy) -> parse -> System 2 grounder -> SAM2 over the full video.

``shared/reference/omni_r1.md`` §2.2, §4, §5, §10: the policy sees <= ``eval.max_frames`` resampled frames at the
video resolution (RefAVS: audio + frame 0, as it was trained); the reference parser gives keyframes and their
descriptions (RefAVS: the whole answer, keyframe = frame 0); the grounder (the policy's own params by default,
the paper's †) boxes each description on its keyframe at the grounding resolution; SAM2 propagates every box
(one track per (keyframe, box)) over ALL frames of the video, bidirectionally, at the original resolution, and
the expression's mask is the union of the tracks.  Each stage is a jitted function with static shapes; the host
glue between them groups expressions of the same layout into one batch.

Modes (ablations, issue #7): ``policy`` (the above); ``passthrough`` (the grounder gets the ORIGINAL expression,
normalised as ``render_grounding_prompt`` does, on the policy's keyframes); ``random_keyframes`` (the policy's
descriptions on keyframes drawn uniformly from the sampled frames, seeded by ``config.seed`` and the uid).

Mesh (issue #8): with ``mesh``, the batch of System 1 and of the grounder is sharded over the mesh's
(data, fsdp) axes (each layout group is padded to a multiple of that size; padding rows are dropped) under the
``sample`` rule table; params are replicated (leaves already placed on the same mesh, e.g. the trainer's
sharded state, are used as they are).  SAM2 stays per record on one device (one video per call, its length
varies), so only the two thinker stages scale with the mesh.  Single host only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import preprocess as pp
from data_pipelines.pipeline_transforms import PreprocessConfig, to_example
from data_pipelines.preprocess_sam2 import postprocess_masks, sam2_preprocess

log = logging.getLogger("omnir1-eval")

MODES = ("policy", "passthrough", "random_keyframes")


def check_mode(mode: str) -> str:
    """Returns ``mode`` if it is one of :data:`MODES`, else raises ValueError naming them."""
    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


@dataclasses.dataclass
class ParamsBundle:
    """Everything the two systems need: policy thinker + params, tokenizer, SAM2 + params, optional grounder."""

    thinker: Any
    params: Any
    tokenizer: Any
    sam2: Any
    sam2_params: Any
    grounder_params: Any = None  # None: the policy grounds its own descriptions (†)
    grounder: Any = None  # the grounder's module when its architecture differs from the policy's (else None)


# ----------------------------------------------------------------------------- loading
def _unbox(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, tree, is_leaf=lambda x: hasattr(x, "unbox"))


def _check_tree(name: str, got: Any, want: Any) -> None:
    """Raises a config/checkpoint mismatch naming the first differing parameter."""
    g = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(got)}
    w = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(want)}
    for k in sorted(set(g) | set(w)):
        if g.get(k) != w.get(k):
            raise ValueError(f"config/checkpoint mismatch: {name} parameter {k} is {g.get(k)} in the checkpoint "
                             f"but {w.get(k)} for the config's model")


def _restore_trainer_params(path: str) -> Any:
    """Params from the newest readable step of a trainer (``omnir1_jax.checkpoint``) directory."""
    import orbax.checkpoint as ocp

    steps = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
    errors = []
    for s in steps:
        try:
            with ocp.CheckpointManager(path, item_names=("state", "extra")) as mgr:
                state = mgr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
            return state["params"] if "params" in state else state
        except Exception as exc:  # noqa: BLE001 - try an older step
            errors.append(f"step {s}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    raise ValueError(f"cannot read a checkpoint from {path}: " + ("; ".join(errors) or "no step directories"))


def check_checkpoint(checkpoint: str) -> None:
    """Fails fast (before any model is built) on a checkpoint path that cannot be one."""
    if checkpoint.split(":")[0] == "init":
        return
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    if not os.path.isdir(checkpoint):
        raise ValueError(f"checkpoint {checkpoint} is not a directory")
    names = set(os.listdir(checkpoint))
    if not ({"thinker_config.json", "config.json"} & names or any(n.isdigit() for n in names)):
        raise ValueError(f"checkpoint {checkpoint} is neither a thinker checkpoint (thinker_config.json), an HF "
                         "directory (config.json) nor a trainer checkpoint (step directories)")


def load_thinker_params(config, model, init_fn, checkpoint: str) -> Any:
    """Policy params from ``checkpoint`` (thinker/HF/trainer dir or ``init[:SEED]``), checked against ``model``."""
    from omnir1_jax.models.qwen_omni import load_checkpoint, load_hf

    if checkpoint.split(":")[0] == "init":
        if config.model.preset != "tiny":
            raise ValueError("--checkpoint=init (random weights) is only allowed with model.preset=tiny")
        seed = int(checkpoint.split(":")[1]) if ":" in checkpoint else int(config.seed)
        return jax.jit(lambda k: _unbox(init_fn(k)))(jax.random.PRNGKey(seed))
    check_checkpoint(checkpoint)
    want = jax.eval_shape(lambda: _unbox(init_fn(jax.random.PRNGKey(0))))
    try:
        if os.path.isfile(os.path.join(checkpoint, "thinker_config.json")):
            loaded, params = load_checkpoint(checkpoint)
        elif os.path.isfile(os.path.join(checkpoint, "config.json")):
            loaded, params = load_hf(checkpoint)
        else:
            loaded, params = None, _restore_trainer_params(checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read checkpoint {checkpoint}: {exc}") from None
    if loaded is not None and loaded.config != model.config:
        a, b = dataclasses.asdict(loaded.config), dataclasses.asdict(model.config)
        diff = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in sorted(a) if a[k] != b.get(k))[:400]
        raise ValueError(f"config/checkpoint mismatch: {checkpoint} holds a different thinker than "
                         f"model.preset={config.model.preset!r} (checkpoint vs config: {diff})")
    _check_tree("thinker", params, want)
    return jax.tree.map(lambda x: jnp.asarray(x, model.param_dtype), params)


# The fields a grounder of another architecture must share with the policy: the tokenizer's vocabulary and
# special ids (it reads the policy's tokens) and the vision patching (the grounding grid is the policy's).
_SHARED_THINKER_FIELDS = ("vocab_size", "image_token_id", "video_token_id", "audio_token_id",
                          "vision_start_token_id", "vision_end_token_id", "audio_start_token_id",
                          "audio_end_token_id", "eos_token_id", "pad_token_id")
_SHARED_VISION_FIELDS = ("patch_size", "spatial_merge_size", "temporal_patch_size", "in_channels")


def grounder_module(model, checkpoint: str) -> Any:
    """The module of the frozen grounder stored at ``checkpoint``: ``model`` itself when the checkpoint holds the
    policy's architecture (or is no thinker checkpoint), else a :class:`Thinker` of the checkpoint's config.

    System 2 only reads the policy's tokens and the high-resolution keyframes, so it may be another thinker (a
    wider or deeper grounder warm-started on grounding, say) as long as it shares the tokenizer's vocabulary and
    special ids and the vision patching; anything else is a clear error naming the field.
    """
    import json

    from omnir1_jax.models.qwen_omni import Thinker
    from omnir1_jax.models.qwen_omni.convert import CONFIG_NAME, config_from_json

    path = os.path.join(checkpoint, CONFIG_NAME)
    if checkpoint.split(":")[0] == "init" or not os.path.isfile(path):
        return model
    with open(path) as fh:
        cfg = config_from_json(json.load(fh))
    if cfg == model.config:
        return model
    pol = model.config
    for name in _SHARED_THINKER_FIELDS:
        if getattr(cfg, name) != getattr(pol, name):
            raise ValueError(f"grounder checkpoint {checkpoint}: {name} is {getattr(cfg, name)!r} but the policy's "
                             f"is {getattr(pol, name)!r}; a grounder must share the policy's tokenizer")
    if (cfg.vision is None) != (pol.vision is None):
        raise ValueError(f"grounder checkpoint {checkpoint}: it has {'no' if cfg.vision is None else 'a'} vision "
                         "tower but the policy has the other; the grounder needs one like the policy's")
    for name in _SHARED_VISION_FIELDS if cfg.vision is not None else ():
        if getattr(cfg.vision, name) != getattr(pol.vision, name):
            raise ValueError(f"grounder checkpoint {checkpoint}: vision.{name} is {getattr(cfg.vision, name)!r} "
                             f"but the policy's is {getattr(pol.vision, name)!r} (the grounding grid is shared)")
    return Thinker(cfg, dtype=model.dtype, param_dtype=model.param_dtype, remat=model.remat)


def load_grounder(config, model, init_fn, checkpoint: str) -> tuple[Any, Any]:
    """``(module, params)`` of the frozen grounder at ``checkpoint`` (see :func:`grounder_module`); the module
    is ``model`` itself, and the params are checked like the policy's, when the architectures agree."""
    from omnir1_jax.models.qwen_omni import init_params

    module = grounder_module(model, checkpoint)
    if module is model:
        return model, load_thinker_params(config, model, init_fn, checkpoint)
    return module, load_thinker_params(config, module, lambda k: init_params(module, k), checkpoint)


def load_sam2(config) -> tuple[Any, Any]:
    """SAM2 video model + params (see :func:`omnir1_jax.rl.task.build_segmenter`)."""
    from omnir1_jax.rl.task import build_segmenter

    return build_segmenter(config)


def make_params_bundle(config, params: Any, grounder_params: Any = None, tokenizer: Any = None,
                       grounder: Any = None) -> ParamsBundle:
    """Bundle around in-memory policy params (e.g. the trainer's ``state.params``) for ``evaluate_split``."""
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    tokenizer = tokenizer or build_tokenizer(config)
    model, _, _ = build_thinker(config, tokenizer)
    sam, sam_params = load_sam2(config)
    return ParamsBundle(model, params, tokenizer, sam, sam_params, grounder_params, grounder)


def load_params_bundle(config, checkpoint: str, grounder_checkpoint: str | None = None) -> ParamsBundle:
    """Builds the tokenizer and models of ``config`` and loads the weights (clear errors on mismatch)."""
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    tok_cfg = config
    if not (config.model.preset == "tiny" or config.model.tokenizer_dir or config.model.hf_dir
            or config.model.checkpoint):
        tok_cfg = config.copy_and_resolve_references()
        with tok_cfg.unlocked():
            tok_cfg.model.tokenizer_dir = checkpoint
    tokenizer = build_tokenizer(tok_cfg)
    model, init_fn, _ = build_thinker(config, tokenizer)
    params = load_thinker_params(config, model, init_fn, checkpoint)
    gmodel, gparams = (load_grounder(config, model, init_fn, grounder_checkpoint) if grounder_checkpoint
                       else (model, None))
    sam, sam_params = load_sam2(config)
    return ParamsBundle(model, params, tokenizer, sam, sam_params, gparams, None if gmodel is model else gmodel)


# ----------------------------------------------------------------------------- System 1
def preprocess_config(config, model) -> PreprocessConfig:
    """Inference preprocessing: all frames up to ``eval.max_frames`` (else linspace), the config's pixel budget."""
    vis, aud, d = model.config.vision, model.config.audio, config.data
    n = int(config.eval.max_frames)
    return PreprocessConfig(train=False, min_frames=n, max_frames=n, video_min_pixels=d.video_min_pixels,
                            video_max_pixels=d.video_max_pixels, image_min_pixels=d.video_min_pixels,
                            image_max_pixels=d.video_max_pixels, patch_size=vis.patch_size,
                            merge_size=vis.spatial_merge_size, temporal_patch_size=vis.temporal_patch_size,
                            max_objects=d.max_objects, mask_size=8, n_mels=aud.num_mel_bins if aud else 128)


def system1_example(rec: dict, pcfg: PreprocessConfig) -> dict:
    """Full-video record -> fixed-shape System-1 example on the resampled frames (adds ``frame_indices``)."""
    n = rec["frames"].shape[0]
    rng = np.random.default_rng(0)  # unused at inference (deterministic linspace)
    idx = pp.sample_frame_indices(n, rng, pcfg.min_frames, pcfg.max_frames, train=False)
    sub = {**rec, "frames": rec["frames"][idx], "masks": rec["masks"][:, idx], "frame_indices": idx, "clip_length": n}
    return to_example(sub, rng, pcfg, "eval")


def layout_key(ex: dict) -> tuple:
    """Examples with equal keys share one compiled System-1 / grounding program."""
    grid = lambda k: tuple(int(v) for v in ex[k]) if k in ex else ()  # noqa: E731
    audio = int(np.asarray(ex["feature_attention_mask"]).sum()) if "feature_attention_mask" in ex else 0
    return (ex["task"], grid("video_grid_thw"), grid("image_grid_thw"), audio, tuple(int(v) for v in ex["orig_hw"]))


def system1_inputs(tokenizer, exs: Sequence[dict], template: str, pad_to: int = 32) -> dict:
    """Batched thinker inputs of same-layout examples (left-padded prompt ids, valid patch rows only)."""
    from omnir1_jax.prompts import example_prompt_ids, left_pad, render_prompt

    ids = [example_prompt_ids(tokenizer, render_prompt(tokenizer, e["task"], e["expression"], int(e["num_frames"]),
                                                       template, e["uid"]), e) for e in exs]
    length = -(-max(len(i) for i in ids) // pad_to) * pad_to
    rows = [left_pad(i, length, tokenizer.pad_id) for i in ids]
    out = {"input_ids": np.stack([r[0] for r in rows]), "attention_mask": np.stack([r[1] for r in rows])}
    e0 = exs[0]
    if "video_grid_thw" in e0:
        n = int(np.prod(e0["video_grid_thw"]))
        out.update(pixel_values_videos=np.concatenate([e["pixel_values_videos"][:n] for e in exs]),
                   video_grid_thw=np.stack([e["video_grid_thw"] for e in exs]),
                   video_second_per_grid=np.asarray([e["video_second_per_grid"] for e in exs], np.float32))
    if "image_grid_thw" in e0:
        n = int(np.prod(e0["image_grid_thw"]))
        out.update(pixel_values=np.concatenate([e["pixel_values"][:n] for e in exs]),
                   image_grid_thw=np.stack([e["image_grid_thw"] for e in exs]))
    if "input_features" in e0:
        out.update(input_features=np.stack([e["input_features"] for e in exs]),
                   feature_attention_mask=np.stack([e["feature_attention_mask"] for e in exs]).astype(np.int32))
    return out


# ----------------------------------------------------------------------------- System 2
@functools.lru_cache(maxsize=16)
def _grounding_grid(h: int, w: int, min_pixels: int, max_pixels: int, patch: int, merge: int) -> tuple:
    rh, rw = pp.smart_resize(h, w, patch * merge, min_pixels, max_pixels)
    return (rh, rw), (1, rh // patch, rw // patch)


def keyframe_patches(frames: np.ndarray, keyframes: np.ndarray, resized_hw: tuple, pcfg: PreprocessConfig
                     ) -> np.ndarray:
    """High-resolution keyframes ``[K, Np, patch_dim]`` (Qwen image preprocessing at the grounding size)."""
    out = [pp.preprocess_video(frames[int(t)][None], patch_size=pcfg.patch_size, merge_size=pcfg.merge_size,
                               temporal_patch_size=pcfg.temporal_patch_size, resized_hw=resized_hw)[0]
           for t in keyframes]
    return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------- SAM2
@functools.partial(jax.jit, static_argnames=("model", "direction", "per_frame_features"))
def _propagate(model, params, pixels, boxes, valid, direction, per_frame_features):
    from omnir1_jax.models.sam2 import video as sam_video

    return sam_video.propagate(model, params, pixels, boxes, valid, direction, per_frame_features=per_frame_features)


def _propagate_streamed(sam2, sam2_params, pixels: np.ndarray, prompts: np.ndarray, valid: np.ndarray,
                        chunk_size: int, direction: str = "bidirectional") -> np.ndarray:
    """Long videos: bidirectional propagation as two chunk-streamed forward passes from the first prompted frame s
    (frames s..T-1 forward, frames s..0 time-reversed); device memory stays flat in T.  Unlike the in-memory
    bidirectional pass, the backward half does not see the forward half's memories (documented approximation).
    """
    from omnir1_jax.models.sam2.streaming import propagate_chunked

    s = 0 if direction == "forward" else int(np.min(np.nonzero(valid.any(axis=0))[0]))
    fwd = propagate_chunked(sam2, sam2_params, pixels[s:], prompts[:, s:], valid[:, s:], chunk_size)
    if s == 0:
        return fwd
    rev = propagate_chunked(sam2, sam2_params, pixels[s::-1], prompts[:, s::-1], valid[:, s::-1], chunk_size)
    return np.concatenate([rev[:, :0:-1], fwd], axis=1)  # rev[:, j] is frame s - j; keep frames 0..s-1


def segment_video(sam2, sam2_params, frames: np.ndarray, boxes: np.ndarray, frame_ids: np.ndarray,
                  direction: str = "bidirectional", bucket: int = 8, stream_above: int = 96,
                  chunk_size: int = 16) -> np.ndarray:
    """SAM2 over the FULL video: ``frames [T, H, W, 3]`` uint8, one track per box ``boxes [N, 4]`` (original
    pixels) prompted on frame ``frame_ids [N]``; returns the union mask ``[T, H, W]`` uint8 at the original size.

    T is padded to a multiple of ``bucket`` (padded frames come last and are never prompted, so they do not
    change the real frames).  Videos longer than ``stream_above`` frames are streamed ``chunk_size`` frames at a
    time (:func:`_propagate_streamed`).
    """
    t_len, h, w = frames.shape[:3]
    if len(boxes) == 0:
        return np.zeros((t_len, h, w), np.uint8)
    s = sam2.cfg.image_size
    n = len(boxes)
    scale = np.asarray([s / w, s / h, s / w, s / h], np.float32)
    stream = t_len > stream_above
    t_pad = t_len if stream else -(-t_len // bucket) * bucket
    prompts = np.zeros((n, t_pad, 4), np.float32)
    valid = np.zeros((n, t_pad), bool)
    prompts[np.arange(n), frame_ids] = np.asarray(boxes, np.float32) * scale
    valid[np.arange(n), frame_ids] = True
    pixels = sam2_preprocess(frames, s)  # [T, 3, S, S]
    if stream:
        logits = _propagate_streamed(sam2, sam2_params, pixels, prompts, valid, chunk_size, direction)
    else:
        if t_pad > t_len:
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], t_pad - t_len, axis=0)])
        logits = np.asarray(_propagate(sam2, sam2_params, jnp.asarray(pixels), jnp.asarray(prompts),
                                       jnp.asarray(valid), direction, False))  # [N, T', h', w']
    return np.any(postprocess_masks(logits[:, :t_len], (h, w)), axis=0).astype(np.uint8)


# ----------------------------------------------------------------------------- the two systems
@functools.lru_cache(maxsize=8)
def _byte_table(tokenizer, vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Byte table padded to the model's vocabulary (padded ids, e.g. a vocab rounded up to 64, decode to b"")."""
    from omnir1_jax.text import byte_table

    return byte_table(tokenizer, vocab_size=max(vocab_size or 0, tokenizer.vocab_size))


@functools.lru_cache(maxsize=8)
def _spec(tokenizer, grid: tuple, variant: str, max_desc_tokens: int, vocab_size: int | None = None):
    from omnir1_jax.rollout.grounding import build_spec

    return build_spec(tokenizer, grid, max_desc_tokens=max_desc_tokens, variant=variant,
                      max_prompt_desc_tokens=2 * max_desc_tokens,
                      vocab_size=max(vocab_size or 0, tokenizer.vocab_size))


def _text(table: np.ndarray, tl: np.ndarray, ids: np.ndarray, n: int) -> bytes:
    return b"".join(table[i, : tl[i]].tobytes() for i in ids[:n])


def parse_system1(tokenizer, tokens: np.ndarray, lengths: np.ndarray, num_frames: np.ndarray, task: str, K: int,
                  F: int) -> dict:
    """Reference parse of greedy completions: keyframes (into the sampled frames) and description spans.

    RefAVS: one keyframe (frame 0) whose description is the whole ``<answer>`` text.
    """
    from omnir1_jax.rollout.parse_ref import parse_completions_ref

    table, tl = _byte_table(tokenizer, int(np.max(tokens, initial=0)) + 1)
    p = parse_completions_ref(tokens, lengths, table, tl, num_frames, J=8, K=K, F=F)
    if task == "refavs":
        ok = p["answer_found"] & (p["answer_bytes"][:, 1] > p["answer_bytes"][:, 0])
        p = dict(p, key_frames=np.zeros((len(ok), 1), np.int32), key_valid=ok[:, None],
                 key_desc_tokens=p["answer_tokens"][:, None], key_desc_tok_exact=p["answer_tok_exact"][:, None],
                 key_desc_bytes=p["answer_bytes"][:, None])
    return p


# ----------------------------------------------------------------------------- modes and the mesh
def data_parallel_size(mesh: Any) -> int:
    """Devices the batch is split over: the mesh's data x fsdp sizes (1 without a mesh)."""
    if mesh is None:
        return 1
    shape = dict(mesh.shape)
    return int(shape.get("data", 1) * shape.get("fsdp", 1))


def _mesh_context(mesh: Any):
    """The mesh and the ``sample`` rules for the thinker stages (nothing without a mesh)."""
    if mesh is None:
        return contextlib.nullcontext()
    from omnir1_jax.parallel import get_rules, mesh_rules

    return mesh_rules(mesh, get_rules("sample"))


def _to_mesh(mesh: Any, tree: Any) -> Any:
    """Batch-major host arrays onto ``mesh``: dim 0 over (data, fsdp) where it divides, else replicated."""
    if mesh is None:
        return tree
    from omnir1_jax.parallel import batch_sharding, replicated

    d = data_parallel_size(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.device_put(x, batch_sharding(mesh, x.ndim) if x.ndim and x.shape[0] % d == 0
                              else replicated(mesh))

    return jax.tree.map(put, tree)


def place_params(tree: Any, mesh: Any) -> Any:
    """Params replicated over ``mesh``; leaves already placed on this mesh (e.g. a trainer's sharded state) stay."""
    if mesh is None or tree is None:
        return tree
    from jax.sharding import NamedSharding

    from omnir1_jax.parallel import replicated

    rep = replicated(mesh)
    keep = lambda x: isinstance(getattr(x, "sharding", None), NamedSharding) and x.sharding.mesh == mesh  # noqa: E731
    return jax.tree.map(lambda x: x if keep(x) else jax.device_put(x, rep), tree)


def place_bundle(bundle: ParamsBundle, mesh: Any) -> ParamsBundle:
    """The bundle with both thinker param trees placed for ``mesh`` (SAM2 stays on one device)."""
    if mesh is None:
        return bundle
    return dataclasses.replace(bundle, params=place_params(bundle.params, mesh),
                               grounder_params=place_params(bundle.grounder_params, mesh))


def random_keyframes(seed: int, uids: Sequence[str], num_frames: Sequence[int], K: int) -> np.ndarray:
    """``[B, K]`` indices into each row's sampled frames, uniform; Generator seeded by (seed, crc32(uid))."""
    out = np.zeros((len(uids), K), np.int32)
    for b, (uid, n) in enumerate(zip(uids, num_frames)):
        rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(str(uid).encode("utf-8"))])
        out[b] = rng.integers(0, max(int(n), 1), size=K)
    return out


def passthrough_tokens(tokenizer, expressions: Sequence[str], variant: str, K: int, pad_to: int = 32
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """Grounder input of ``passthrough``: tokens ``[B, L]`` of each normalised expression (what
    ``render_grounding_prompt`` puts in the prompt) and spans ``[B, K, 2]`` covering it in every slot; L is a
    multiple of ``pad_to`` (also the grounding spec's description window, so nothing is truncated)."""
    from omnir1_jax.rollout.grounding_spec import normalize_description

    ids = [tokenizer.encode(normalize_description(e, variant)) for e in expressions]
    L = max(pad_to, -(-max(len(i) for i in ids) // pad_to) * pad_to)
    tokens = np.full((len(ids), L), int(tokenizer.pad_id), np.int32)
    spans = np.zeros((len(ids), K, 2), np.int32)
    for b, i in enumerate(ids):
        tokens[b, : len(i)] = i
        spans[b, :, 1] = len(i)
    return tokens, spans, L


def _prompt_description(spec, row: np.ndarray, table: np.ndarray, tl: np.ndarray) -> str:
    """The description inside one left-padded grounding prompt (between the template's prefix and suffix)."""
    start = int(np.argmax(row != spec.pad_id)) + int(spec.prefix_ids.shape[0])
    desc = row[start: len(row) - int(spec.suffix_ids.shape[0])]
    return _text(table, tl, desc, len(desc)).decode("utf-8", "replace")


# ----------------------------------------------------------------------------- the two systems
def _predict_group(bundle: ParamsBundle, config, pcfg: PreprocessConfig, recs: list[dict], exs: list[dict],
                   task: str, n_real: int | None = None, mode: str = "policy", mesh: Any = None) -> list[dict]:
    """Both systems on expressions that share one layout (one compile per stage); rows from ``n_real`` on are
    batch padding (no SAM2, no result)."""
    from omnir1_jax.rollout.grounding import GroundingConfig, ground_jit
    from omnir1_jax.rollout.sampler import STATIC_INPUTS, SamplerConfig, generate_jit

    tok, model = bundle.tokenizer, bundle.thinker
    # System 1: greedy completion on the resampled frames (batch sharded over the mesh).
    inputs = system1_inputs(tok, exs, config.data.prompt_template)
    inputs = {k: v if k in STATIC_INPUTS else _to_mesh(mesh, v) for k, v in inputs.items()}
    scfg = SamplerConfig(max_new_tokens=int(config.rl.max_new_tokens), greedy=True, stop_ids=tuple(tok.eos_ids),
                         pad_id=int(tok.pad_id))
    with _mesh_context(mesh):
        out = generate_jit(model, bundle.params, inputs, jax.random.PRNGKey(0), scfg)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    K = int(config.rl.max_keyframes) if task != "refavs" else 1
    num_frames = np.asarray([int(e["num_frames"]) for e in exs], np.int32)
    parsed = parse_system1(tok, tokens, lengths, num_frames, task, K, pcfg.max_frames_padded)
    B = len(exs)
    key_valid = parsed["key_valid"]
    kf = np.where(key_valid, parsed["key_frames"], 0)  # [B, K] into the sampled frames
    if mode == "random_keyframes":
        kf = np.where(key_valid, random_keyframes(config.seed, [e["uid"] for e in exs], num_frames, K), kf)
    kf_full = np.stack([np.asarray(e["frame_indices"])[kf[b]] for b, e in enumerate(exs)])  # [B, K] video frames
    # System 2: grounder on the high-resolution keyframes (slot k of row b reads keyframe patch row k).
    h, w = (int(v) for v in exs[0]["orig_hw"])
    d = config.data
    resized, grid = _grounding_grid(h, w, int(d.ground_min_pixels), int(d.ground_max_pixels), pcfg.patch_size,
                                    pcfg.merge_size)
    variant = "refavs" if task == "refavs" else "default"
    if mode == "passthrough":  # the original query, on the policy's keyframes
        g_in, spans, ld = passthrough_tokens(tok, [e["expression"] for e in exs], variant, K)
        exact = np.ones((B, K), bool)
    else:
        g_in, spans, exact, ld = tokens, parsed["key_desc_tokens"], parsed["key_desc_tok_exact"], 32
    spec = _spec(tok, grid, variant, ld, model.config.vocab_size)
    patches = np.stack([keyframe_patches(r["frames"], kf_full[b], resized, pcfg) for b, r in enumerate(recs)])
    ratios = np.tile(np.asarray([[resized[1] / w, resized[0] / h]], np.float32), (B, 1))
    gparsed = {"key_frames": np.tile(np.arange(K, dtype=np.int32)[None], (B, 1)), "key_valid": key_valid,
               "key_desc_tokens": np.asarray(spans, np.int32), "key_desc_tok_exact": np.asarray(exact, bool)}
    gcfg = GroundingConfig(max_new_tokens=int(config.rl.grounding_max_new_tokens), num_objects=int(d.max_objects),
                           encode_chunk=int(config.rl.ground_encode_chunk))
    gparams = bundle.params if bundle.grounder_params is None else bundle.grounder_params
    gmodel = model if bundle.grounder is None or bundle.grounder_params is None else bundle.grounder
    g_in, gparsed, patches, ratios = _to_mesh(mesh, (np.asarray(g_in, np.int32), gparsed, patches, ratios))
    with _mesh_context(mesh):
        g = ground_jit(gmodel, gparams, spec, g_in, gparsed, patches, ratios, gcfg)
    boxes, box_valid = np.asarray(g.boxes), np.asarray(g.box_valid)  # [B, K, O, 4] original pixels, [B, K, O]
    g_tokens, g_len = np.asarray(g.tokens), np.asarray(g.lengths)
    g_ids = getattr(g, "input_ids", None)  # [B, K, Lg] the prompts the grounder saw (stubs may omit them)
    g_ids = None if g_ids is None else np.asarray(g_ids)
    # SAM2 over the full video, one track per valid (keyframe, box); per record, on one device.
    table, tl = _byte_table(tok, model.config.vocab_size)
    results = []
    for b, rec in enumerate(recs[: len(recs) if n_real is None else n_real]):
        kk, oo = np.nonzero(box_valid[b])
        masks = segment_video(bundle.sam2, bundle.sam2_params, rec["frames"], boxes[b, kk, oo], kf_full[b, kk],
                              config.segmenter.eval_propagation, stream_above=int(config.eval.sam2_stream_above))
        data = _text(table, tl, tokens[b], int(lengths[b]))
        ks = [k for k in range(K) if key_valid[b, k]]
        info = {"mode": mode, "completion": data.decode("utf-8", "replace"), "format_ok": bool(parsed["format_ok"][b]),
                "sampled_frames": [int(t) for t in exs[b]["frame_indices"][: int(exs[b]["num_frames"])]],
                "keyframes": [int(kf_full[b, k]) for k in ks],
                "keyframe_names": [rec["frame_names"][int(kf_full[b, k])] for k in ks],
                "descriptions": [data[parsed["key_desc_bytes"][b, k, 0]:parsed["key_desc_bytes"][b, k, 1]]
                                 .decode("utf-8", "replace") for k in ks],
                "grounder_descriptions": [] if g_ids is None else [_prompt_description(spec, g_ids[b, k], table, tl)
                                                                    for k in ks],
                "boxes": [[boxes[b, k, o].tolist() for o in range(boxes.shape[2]) if box_valid[b, k, o]] for k in ks],
                "grounder_outputs": [_text(table, tl, g_tokens[b, k], int(g_len[b, k])).decode("utf-8", "replace")
                                     for k in ks]}
        results.append({"masks": masks, "info": info})
    return results


def two_system_predict(bundle: ParamsBundle, config, records: Sequence[dict], task: str, *, mode: str = "policy",
                       mesh: Any = None) -> list[dict]:
    """Masks ``[T, H, W]`` uint8 over every frame of each record, plus what the two systems said (``info``).

    ``mode``: one of :data:`MODES`; ``mesh``: a ``jax.sharding.Mesh`` to shard the thinker stages' batch over.
    """
    check_mode(mode)
    bundle = place_bundle(bundle, mesh)
    pcfg = preprocess_config(config, bundle.thinker)
    exs = [system1_example(r, pcfg) for r in records]
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(exs):
        groups.setdefault(layout_key(e), []).append(i)
    out: list[dict | None] = [None] * len(records)
    dp = data_parallel_size(mesh)
    for idx in groups.values():
        size = -(-max(len(idx), int(config.eval.batch_size)) // dp) * dp  # fixed B (one compile), mesh multiple
        rows = idx + [idx[-1]] * (size - len(idx))
        res = _predict_group(bundle, config, pcfg, [records[i] for i in rows], [exs[i] for i in rows], task, len(idx),
                             mode, mesh)
        for i, r in zip(idx, res):
            out[i] = r
    return out  # type: ignore[return-value]


class TwoSystemPredictor:
    """``records -> predictions`` callable used by :func:`omnir1_jax.evaluate.evaluate_split`."""

    def __init__(self, config, bundle: ParamsBundle, task: str, mode: str = "policy", mesh: Any = None):
        self.config, self.task, self.mode, self.mesh = config, task, check_mode(mode), mesh
        self.bundle = place_bundle(bundle, mesh)  # once: later calls find the params already placed

    def __call__(self, records: list[dict]) -> list[dict]:
        return two_system_predict(self.bundle, self.config, records, self.task, mode=self.mode, mesh=self.mesh)
