"""Supervised fine-tuning: teacher-forced cross-entropy on the reference answer tokens only.

Each example is (prompt with expanded multimodal placeholders, left-padded to ``rl.max_prompt_length``) +
(reference completion + ``<|im_end|>``, right-padded to ``train.sft_max_answer_tokens``).  The loss is the
token-mean negative log-likelihood of the answer tokens, from chunked log-probs (no full logits), with the
towers frozen (stop-gradient here, ``set_to_zero`` in the optimizer).  On the synthetic world the answers come
from ``world.json`` (``data_pipelines.synthetic.answers``); other datasets need an answer source (not yet).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from omnir1_jax import prompts
from omnir1_jax.parallel import batch_sharding, get_rules, mesh_rules
from omnir1_jax.rl.optim import trainable_mask
from omnir1_jax.rl.state import TrainState, guarded_apply
from omnir1_jax.rl.task import (Task, build_thinker, build_tokenizer, device_put_batch, iterator_factory,
                                setup_policy)

log = logging.getLogger(__name__)

PyTree = Any


# ----------------------------------------------------------------------------- data
def ensure_synthetic_data(root: str, seed: int = 0, num_train: int = 8, num_test: int = 2,
                          vos_min_visible: float = 0.25) -> str:
    """Writes the synthetic world under ``root`` (as ``omnir1-data synth`` does) unless it is there already; a
    world written with another ``vos_min_visible`` (share of its clip each ReVOS-format object is visible) is
    refused, naming the file, rather than silently reused."""
    import json

    from data_pipelines.synthetic import writer

    world = os.path.join(root, "revos", "world.json")
    if os.path.isfile(world):
        with open(world) as fh:
            have = json.load(fh).get("min_visible", 0.25)  # worlds written before the setting used 0.25
        if abs(have - vos_min_visible) > 1e-9:
            raise ValueError(f"{world} was written with min_visible={have} but data.synthetic_vos_min_visible="
                             f"{vos_min_visible}; point data.synthetic_root elsewhere or remove {root}")
    else:
        log.info("writing the synthetic world to %s (%d train / %d test clips per split)", root, num_train, num_test)
        writer.write_vos(os.path.join(root, "revos"), seed=seed, num_train=num_train, num_valid=num_test,
                         min_visible=vos_min_visible)
        writer.write_refavs(os.path.join(root, "refavs"), seed=seed, num_train=num_train, num_val=num_test,
                            num_test=num_test)
    return root


def _sources(config, workdir: str) -> list[tuple[str, str, str, float]]:
    """(name, format, root, weight) of the SFT mixture: reference answers exist for the synthetic world only."""
    if config.data.dataset != "synthetic":
        raise NotImplementedError("SFT reference answers exist only for the synthetic world (data.dataset=synthetic)")
    return data_sources(config, workdir)


def data_sources(config, workdir: str) -> list[tuple[str, str, str, float]]:
    """(name, format, root, weight) of the training mixture from ``config.data``.

    ``synthetic``: the world under ``data.synthetic_root`` (written to ``workdir/data`` when empty), its VOS part
    unless ``data.mixture`` says otherwise; ``refavs``/``revos``/``mevis``: that dataset's root; ``joint``:
    ``data.mixture`` (``"refavs:1600,revos:1300,mevis:1300"``) with each part's ``data.<name>_root``.
    """
    d = config.data
    if d.dataset == "synthetic":
        root = d.synthetic_root or os.path.join(workdir, "data")
        if jax.process_index() == 0:
            ensure_synthetic_data(root, d.synthetic_seed, d.synthetic_train_clips, d.synthetic_test_clips,
                                  d.synthetic_vos_min_visible)
        parts, roots = d.mixture or "revos:1", {n: os.path.join(root, n) for n in ("revos", "refavs")}
    else:
        parts = d.mixture if d.dataset == "joint" else f"{d.dataset}:1"
        roots = {"refavs": d.refavs_root, "revos": d.revos_root, "mevis": d.mevis_root}
    out = []
    for part in parts.split(","):
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in roots:
            raise ValueError(f"config.data.mixture: unknown dataset {name!r}; expected one of {sorted(roots)}")
        if not roots[name]:
            raise ValueError(f"config.data.{name}_root must name the local {name} directory")
        out.append((name, name, roots[name], float(weight or 1)))
    return out


def preprocess_config(config, model):
    """Host preprocessing matched to the model's towers; SFT samples a fixed frame count (one layout)."""
    from data_pipelines.pipeline import PreprocessConfig

    vis, aud, d = model.config.vision, model.config.audio, config.data
    return PreprocessConfig(train=True, min_frames=d.max_frames, max_frames=d.max_frames,
                            video_min_pixels=d.video_min_pixels, video_max_pixels=d.video_max_pixels,
                            image_min_pixels=d.video_min_pixels, image_max_pixels=d.video_max_pixels,
                            patch_size=vis.patch_size, merge_size=vis.spatial_merge_size,
                            temporal_patch_size=vis.temporal_patch_size, max_objects=d.max_objects,
                            mask_size=8, n_mels=aud.num_mel_bins)  # GT masks are unused by SFT: keep them small


# ----------------------------------------------------------------------------- loss
def _static_layout(host: Mapping[str, Any]) -> tuple:
    """Hashable per-batch layout the towers need statically: task, grids, seconds per grid, audio lengths."""
    def rows(key):
        return tuple(tuple(int(v) for v in r) for r in np.asarray(host[key]).reshape(-1, 3)) if key in host else ()
    spg = tuple(float(s) for s in np.asarray(host.get("video_second_per_grid", ())).reshape(-1))
    audio = tuple(int(n) for n in np.asarray(host["feature_attention_mask"]).sum(-1)) \
        if "feature_attention_mask" in host else ()
    return (host["task"][0], rows("video_grid_thw"), spg, rows("image_grid_thw"), audio)


def embed_batch(model, params: PyTree, batch: Mapping[str, jax.Array], layout: tuple) -> tuple:
    """The thinker's input embeddings and positions ``(x [B, L, D], positions)`` for a batch of ``layout``."""
    _, vgrid, spg, igrid, audio = layout
    kw: dict[str, Any] = {}
    if vgrid:
        rows = [batch["pixel_values_videos"][i, : t * h * w] for i, (t, h, w) in enumerate(vgrid)]
        kw.update(pixel_values_videos=jnp.concatenate(rows), video_grid_thw=np.asarray(vgrid),
                  video_second_per_grid=spg)
    if igrid:
        rows = [batch["pixel_values"][i, : t * h * w] for i, (t, h, w) in enumerate(igrid)]
        kw.update(pixel_values=jnp.concatenate(rows), image_grid_thw=np.asarray(igrid))
    if audio:
        T = batch["input_features"].shape[-1]
        kw.update(input_features=batch["input_features"],
                  feature_attention_mask=(np.arange(T)[None] < np.asarray(audio)[:, None]).astype(np.int32))
    x, pos, _ = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                            method=type(model).embed, **kw)
    return x, pos


def sft_loss(model, params: PyTree, batch: Mapping[str, jax.Array], layout: tuple, chunk_size: int,
             embedded: tuple | None = None) -> tuple:
    """Token-mean NLL of the answer tokens; returns ``(loss, (num_tokens, mean answer log-prob))``.

    ``embedded``: :func:`embed_batch`'s output when the caller already has it (the towers run once)."""
    x, pos = embed_batch(model, params, batch, layout) if embedded is None else embedded
    hidden, _ = model.apply({"params": params}, x, pos, batch["attention_mask"], method=type(model).decode)
    return answer_nll(model, params, batch, hidden, chunk_size)


def answer_nll(model, params: PyTree, batch: Mapping[str, jax.Array], hidden: jax.Array, chunk_size: int) -> tuple:
    """:func:`sft_loss` from the decoder's hidden states ``[B, L, D]``."""
    ids = batch["input_ids"]
    logp = model.apply({"params": params}, hidden[:, :-1], ids[:, 1:], chunk_size, method=type(model).token_logprobs)
    m = batch["loss_mask"][:, 1:].astype(jnp.float32)  # [B, L-1]: target token is an answer token
    n = jnp.sum(m)
    loss = -jnp.sum(logp * m) / jnp.maximum(n, 1.0)
    return loss, (n, -loss)


def make_train_step(model, tx, lr_schedule, freeze: tuple, chunk_size: int, loss: Callable = sft_loss):
    """The SFT update for one static layout: grads of :func:`sft_loss` -> guarded AdamW update.

    ``loss``: another objective with :func:`sft_loss`'s signature and result; it may return a third aux item, a
    dict of extra scalar metrics (the warm-start's auxiliary losses)."""

    def step(state: TrainState, batch: Mapping[str, jax.Array], layout: tuple):
        mask = trainable_mask(state.params, freeze)

        def loss_fn(params):
            params = jax.tree_util.tree_map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)
            return loss(model, params, batch, layout, chunk_size)

        (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state, guard = guarded_apply(state, grads, tx, value)
        metrics = {"loss": value, "num_answer_tokens": aux[0], "answer_logprob": aux[1],
                   "learning_rate": lr_schedule(state.step), **guard, **(aux[2] if len(aux) > 2 else {})}
        return new_state, metrics

    return step


# ----------------------------------------------------------------------------- the task
def build(config, mesh: Mesh, workdir: str) -> Task:
    """SFT Task on (prompt, reference answer) pairs; see :class:`omnir1_jax.rl.task.Task`."""
    from data_pipelines.pipeline import SourceSpec, make_source
    from data_pipelines.synthetic.answers import load_world_index, reference_answer

    rules = get_rules("train")
    tokenizer = build_tokenizer(config)
    model, init_fn, load_fn = build_thinker(config, tokenizer)
    sources = _sources(config, workdir)
    pp_cfg = preprocess_config(config, model)
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = config.rl.prompts_per_step
    if global_batch % n_data:
        raise ValueError(f"rl.prompts_per_step={global_batch} (the SFT batch) must be divisible by the "
                         f"data*fsdp mesh size {n_data}")
    host_batch = global_batch // jax.process_count()
    specs = [SourceSpec(name=n, format=f, root=r, split="train", weight=w) for n, f, r, w in sources]
    index = {}
    for _, _, root, _ in sources:
        index.update(load_world_index(root))
    epoch_len = sum(len(make_source(s)) for s in specs)
    total_steps = max(epoch_len // global_batch, 1)
    schedule_steps = config.train.num_steps if config.train.num_steps > 0 else total_steps

    # ---- shardings and init
    setup = setup_policy(config, mesh, init_fn, load_fn, schedule_steps, rules)
    tx, lr_schedule, s_shardings, init_state = setup.tx, setup.lr_schedule, setup.state_shardings, setup.init_state

    step_fn = make_train_step(model, tx, lr_schedule, tuple(config.model.freeze), config.rl.logprob_chunk_size)
    compiled: dict[tuple, Any] = {}
    rep = NamedSharding(mesh, P())

    def train_step(state: TrainState, batch: tuple) -> tuple[TrainState, dict]:
        layout, arrays = batch
        fn = compiled.get(layout)
        if fn is None:
            in_b = {k: batch_sharding(mesh, v.ndim) for k, v in arrays.items()}
            fn = jax.jit(functools.partial(step_fn, layout=layout), in_shardings=(s_shardings, in_b),
                         out_shardings=(s_shardings, rep), donate_argnums=0)
            compiled[layout] = fn
        with mesh_rules(mesh, rules):
            return fn(state, arrays)

    train_iterator = iterator_factory(specs, host_batch, pp_cfg, config)

    max_answer = config.train.sft_max_answer_tokens
    eos = tokenizer.eos_ids[0]

    def prepare(host: Mapping[str, Any]) -> tuple[tuple, dict]:
        p = prompts.batch_prompts(tokenizer, host, config.rl.max_prompt_length, config.data.prompt_template,
                                  pp_cfg.merge_size)
        B, Lp = p["input_ids"].shape
        ans = np.full((B, max_answer), tokenizer.pad_id, np.int32)
        amask = np.zeros((B, max_answer), np.int32)
        for i in range(B):
            frames = np.asarray(host["frame_indices"][i])[: int(host["num_frames"][i])]
            text = reference_answer(index, host["task"][i], host["uid"][i], frames, config.rl.max_keyframes)
            toks = (tokenizer.encode(text) + [eos])[:max_answer]
            ans[i, : len(toks)] = toks
            amask[i, : len(toks)] = 1
        arrays = {"input_ids": np.concatenate([p["input_ids"], ans], 1),
                  "attention_mask": np.concatenate([p["attention_mask"], amask], 1),
                  "loss_mask": np.concatenate([np.zeros((B, Lp), np.int32), amask], 1)}
        for k in ("pixel_values_videos", "pixel_values", "input_features"):
            if k in host:
                arrays[k] = np.asarray(host[k], np.float32)
        return _static_layout(host), device_put_batch(arrays, mesh)

    return Task(init_state=init_state, train_step=train_step, train_iterator=train_iterator, prepare=prepare,
                total_steps=total_steps, evaluate=None, name="sft")
