"""GRPO as a trainer :class:`~omnir1_jax.rl.task.Task`: models, frozen reference + SAM2, data -> step batches.

The policy and the frozen reference thinker share one module (the reference is the initial policy's
params, or ``model.reference_checkpoint``, which may hold a grounder of another architecture when beta = 0);
SAM2 comes from ``segmenter.checkpoint`` / ``segmenter.hf_dir`` or, for
``segmenter.preset=tiny``, a seeded random init.  Host batches from the grain pipeline are turned into the
step's static-shape arrays by :func:`make_step_batch`; one compiled step per (task, batch geometry).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from data_pipelines import preprocess as pp
from omnir1_jax import prompts
from omnir1_jax.parallel import get_rules, mesh_rules
from omnir1_jax.rl import grpo
from omnir1_jax.rl.grpo_rollout import StepModels
from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings
from omnir1_jax.rl.state import TrainState
from omnir1_jax.rl.task import (Task, build_segmenter, build_thinker, build_tokenizer, device_put_batch,
                                iterator_factory, setup_policy)
from omnir1_jax.rollout.grounding import build_spec

log = logging.getLogger(__name__)


def _hires_hw(config, model) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """Static grounding resolution: the largest grid under ``data.ground_max_pixels`` for the clip shape."""
    vis = model.config.vision
    factor = vis.patch_size * vis.spatial_merge_size
    h, w = config.data.ground_hw
    out = pp.smart_resize(h, w, factor, config.data.ground_min_pixels, config.data.ground_max_pixels)
    return out, (1, out[0] // vis.patch_size, out[1] // vis.patch_size)


def make_step_batch(host: Mapping[str, Any], tokenizer, config, model, hires_grid) -> tuple[BatchShapes, dict]:
    """Host pipeline batch -> (static shapes, NumPy arrays named as the GRPO step reads them)."""
    vis = model.config.vision
    p = prompts.batch_prompts(tokenizer, host, config.rl.max_prompt_length, config.data.prompt_template,
                              vis.spatial_merge_size)
    b = p["input_ids"].shape[0]
    out = {"input_ids": p["input_ids"], "attention_mask": p["attention_mask"]}
    vgrid = igrid = fmask = None
    if "video_grid_thw" in host:
        grids = np.asarray(host["video_grid_thw"]).reshape(b, 3)
        if np.any(grids != grids[0]):
            raise ValueError(f"GRPO batches need one video grid per batch, got {grids.tolist()} (fix the frame "
                             "count and resolution per batch: data.min_frames == data.max_frames)")
        vgrid = [tuple(int(v) for v in g) for g in grids]
        n = int(np.prod(grids[0]))
        out["pixel_values_videos"] = np.asarray(host["pixel_values_videos"])[:, :n].reshape(b * n, -1)
    if "image_grid_thw" in host:
        grids = np.asarray(host["image_grid_thw"]).reshape(b, 3)
        igrid = [tuple(int(v) for v in g) for g in grids]
        n = int(np.prod(grids[0]))
        out["pixel_values"] = np.asarray(host["pixel_values"])[:, :n].reshape(b * n, -1)
    if "input_features" in host:
        out["input_features"] = np.asarray(host["input_features"], np.float32)
        fmask = np.asarray(host["feature_attention_mask"], np.int32)
    hi = np.asarray(host["hires_frames"])  # [B, F, h, w, 3] uint8
    f = hi.shape[1]
    x = pp.rescale_normalize(hi.reshape((b * f,) + hi.shape[2:]))[:, None]  # [B*F, 1, C, h, w]
    x = np.repeat(x, vis.temporal_patch_size, axis=1)
    patches = np.stack([pp.patchify(fr, vis.patch_size, vis.spatial_merge_size, vis.temporal_patch_size)[0]
                        for fr in x])
    out["hires_patches"] = patches.reshape(b, f, patches.shape[1], patches.shape[2])
    orig = np.asarray(host["orig_hw"], np.float32)  # [B, 2] (h, w)
    out["ground_ratio"] = np.stack([hi.shape[3] / orig[:, 1], hi.shape[2] / orig[:, 0]], -1).astype(np.float32)
    sam = np.asarray(host["sam2_pixels"], np.float32)
    out["sam_pixels"] = sam
    out["sam_scale"] = np.stack([sam.shape[-1] / orig[:, 1], sam.shape[-2] / orig[:, 0]], -1).astype(np.float32)
    out["gt_masks"] = np.transpose(np.asarray(host["gt_masks"]) > 0, (0, 2, 1, 3, 4))  # [B, O, F, m, m]
    out["gt_boxes"] = np.transpose(np.asarray(host["gt_boxes"], np.float32), (0, 2, 1, 3))  # [B, O, F, 4]
    out["obj_valid"] = np.asarray(host["object_mask"]).astype(bool)
    out["num_frames"] = np.asarray(host["num_frames"], np.int32)
    shapes = BatchShapes.from_host(video_grid_thw=vgrid, image_grid_thw=igrid, feature_attention_mask=fmask,
                                   hires_grid_thw=hires_grid,
                                   video_second_per_grid=host.get("video_second_per_grid") if vgrid else None)
    return shapes, out


def build(config, mesh: Mesh, workdir: str) -> Task:
    """GRPO Task; see :class:`omnir1_jax.rl.task.Task`."""
    from data_pipelines.pipeline import SourceSpec, make_source
    from omnir1_jax.rl import sft

    rules = get_rules("train")
    tokenizer = build_tokenizer(config)
    model, init_fn, load_fn = build_thinker(config, tokenizer)
    seg_model, seg_params = build_segmenter(config)
    sources = sft.data_sources(config, workdir)
    hires_hw, hires_grid = _hires_hw(config, model)
    pp_cfg = dataclasses.replace(sft.preprocess_config(config, model), sam2_size=seg_model.cfg.image_size,
                                 hires_hw=hires_hw, mask_size=config.segmenter.mask_size)
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = config.rl.prompts_per_step
    if global_batch % n_data:
        raise ValueError(f"rl.prompts_per_step={global_batch} must be divisible by the data*fsdp mesh size {n_data}")
    host_batch = global_batch // jax.process_count()
    specs = [SourceSpec(name=n, format=f, root=r, split="train", weight=w) for n, f, r, w in sources]
    epoch_len = sum(len(make_source(s)) for s in specs)
    total_steps = max(epoch_len // global_batch, 1)
    schedule_steps = config.train.num_steps if config.train.num_steps > 0 else total_steps

    setup = setup_policy(config, mesh, init_fn, load_fn, schedule_steps, rules)
    tx, lr_schedule, s_shardings = setup.tx, setup.lr_schedule, setup.state_shardings
    spec = build_spec(tokenizer, hires_grid, max_desc_tokens=32, vocab_size=model.config.vocab_size)
    # The frozen reference grounds (System 2) and, with rl.kl_anchor = "reference", anchors the KL term.
    needs_ref = config.rl.grounder == "reference" or (config.rl.beta > 0 and config.rl.kl_anchor == "reference")
    ref_model = model
    if needs_ref and config.model.reference_checkpoint:
        from omnir1_jax.eval_pipeline import grounder_module

        ref_model = grounder_module(model, config.model.reference_checkpoint)
        if ref_model is not model and config.rl.beta > 0 and config.rl.kl_anchor == "reference":
            raise ValueError(f"model.reference_checkpoint={config.model.reference_checkpoint} holds another "
                             "architecture than the policy: it can ground (System 2) but not anchor the KL term; "
                             "set rl.beta=0, rl.kl_anchor=initial, or use a reference of the policy's architecture")
    models = StepModels(model, seg_model, None if ref_model is model else ref_model)
    frozen: dict[str, Any] = {}

    def init_state(rng: jax.Array) -> TrainState:
        state = setup.init_state(rng)
        # The frozen reference (KL and System-2 grounder) is the initial policy, or model.reference_checkpoint
        # (e.g. GRPO started from an SFT checkpoint keeps the Base thinker as grounder and KL anchor, or a
        # grounder of its own architecture when beta = 0).
        if needs_ref and config.model.reference_checkpoint:
            from omnir1_jax.eval_pipeline import load_grounder
            from omnir1_jax.models.qwen_omni import init_params
            from omnir1_jax.parallel import param_shardings

            _, ref = load_grounder(config, model, init_fn, config.model.reference_checkpoint)
            shardings = setup.param_shardings if ref_model is model else param_shardings(
                jax.eval_shape(lambda k: init_params(ref_model, k), jax.random.key(0)), mesh, rules)
            frozen["ref"] = jax.device_put(ref, shardings)
        else:
            frozen["ref"] = jax.tree_util.tree_map(jnp.copy, state.params) if needs_ref else None
        # rl.kl_anchor = "initial": the KL term anchors to a frozen copy of the initial policy (the weights
        # model.checkpoint holds; on resume init_state runs before the restore, so it is still those weights).
        use_anchor = config.rl.beta > 0 and config.rl.kl_anchor == "initial"
        frozen["anchor"] = jax.tree_util.tree_map(jnp.copy, state.params) if use_anchor else None
        frozen["sam"] = jax.device_put(seg_params, jax.sharding.NamedSharding(mesh, jax.P()))
        return state

    steps: dict[str, grpo.GRPOStep] = {}

    def train_step(state: TrainState, batch: tuple) -> tuple[TrainState, dict]:
        task, shapes, arrays = batch
        if task not in steps:
            s = GRPOSettings.from_config(config, task=task, stop_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id)
            steps[task] = grpo.GRPOStep(models, s, spec, tx, split=config.rl.split_mode,
                                        state_shardings=s_shardings)
        with mesh_rules(mesh, rules):
            state, metrics = steps[task](state, frozen["ref"], frozen["sam"], arrays, shapes, frozen["anchor"])
        metrics = dict(metrics)
        metrics["learning_rate"] = lr_schedule(state.step - 1)
        return state, metrics

    train_iterator = iterator_factory(specs, host_batch, pp_cfg, config)

    def prepare(host: Mapping[str, Any]) -> tuple:
        task = "refavs" if host["task"][0] == "refavs" else "vos"
        shapes, arrays = make_step_batch(host, tokenizer, config, model, hires_grid)
        return task, shapes, device_put_batch(arrays, mesh)

    return Task(init_state=init_state, train_step=train_step, train_iterator=train_iterator, prepare=prepare,
                total_steps=total_steps, evaluate=None, name="grpo")
