"""The GRPO step: one ``jax.jit`` from a batch of prompts to an optax update (DESIGN §1).

    rollout (encode once, prefill once, repeat the KV cache G times, sample)      grpo_rollout.rollout
      -> parse completions in-graph (format, keyframes, description spans)       grpo_rollout.parse
      -> frozen grounder boxes the descriptions on high-res keyframes (greedy)   grpo_rollout.ground
      -> SAM2 masks + propagation over the clip (lax.scan)                      grpo_rollout.segment
      -> hierarchical rewards, group advantages                                 grpo_reward
      -> policy / reference log-probs (vocab-chunked), loss, grads, AdamW       this file

No host round trip and no server.  ``split=True`` compiles the rollout+reward half and the update half as two
jits (a memory option); both paths compute the same thing.  Omni-R1's setting is on-policy (mu = 1), so the
importance ratio is exp(logp - stop_grad(logp)) = 1; mu > 1 reuses the rollout with stored old log-probs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from omnir1_jax.models.qwen_omni import init_cache
from omnir1_jax.rl import grpo_reward, grpo_rollout
from omnir1_jax.rl.aggregation import aggregate, finalize
from omnir1_jax.rl.grpo_rollout import StepModels
from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings
from omnir1_jax.rl.losses import grpo_token_loss
from omnir1_jax.rl.state import TrainState, guarded_apply

Batch = dict[str, jax.Array]
MM_TOKEN_FIELDS = ("image_token_id", "video_token_id", "audio_token_id")
SUMMED_TERMS = ("sam_tracks_prompted", "sam_tracks_dropped")  # logged as step totals, not reward/ means


# ------------------------------------------------------------------------------------------ rollout half
def rollout_and_score(models: StepModels, s: GRPOSettings, spec, shapes: BatchShapes, params: Any,
                      ref_params: Any, sam_params: Any, batch: Batch, rng: jax.Array) -> dict:
    """Everything up to the advantages; no gradients flow through this half."""
    params = jax.lax.stop_gradient(params)
    embeds, pos, out = grpo_rollout.rollout(models, s, shapes, params, batch, rng)
    parsed = grpo_rollout.parse(spec, s, batch, out)
    use_ref = s.use_reference_grounder and ref_params is not None
    grounder = ref_params if use_ref else params
    g_models = models if use_ref else dataclasses.replace(models, grounder=None)  # self-grounding: the policy's module
    grounded = grpo_rollout.ground(g_models, s, spec, grounder, batch, out, parsed)
    seg = None
    if s.use_sam:
        seg = functools.partial(grpo_rollout.segment, models, s, sam_params, batch)
    reward, adv, keep, terms = grpo_reward.rewards_and_advantages(s, batch, parsed, grounded, out.lengths, seg)
    return {"prompt_embeds": embeds, "prompt_pos": pos, "tokens": out.tokens, "mask": out.mask,
            "lengths": out.lengths, "truncated": out.truncated, "sample_logprobs": out.logprobs,
            "reward": reward, "advantages": adv, "keep": keep, "terms": terms,
            "format_ok": parsed["format_ok"], "num_approx": grounded.num_approx,
            "grounder_boxes": grounded.boxes, "grounder_valid": grounded.box_valid,
            "key_frames": parsed["key_frames"], "key_valid": parsed["key_valid"]}


# ------------------------------------------------------------------------------------------ update half
def _mm_mask(models: StepModels, ids: jax.Array) -> jax.Array:
    c = models.thinker.config
    mm = jnp.zeros(ids.shape, bool)
    for name in MM_TOKEN_FIELDS:
        tok = getattr(c, name, None)
        if tok is not None:
            mm = mm | (ids == tok)
    return mm


def _prompt_embeds(models: StepModels, params: Any, batch: Batch, ro: dict, prompt: jax.Array) -> jax.Array:
    """Prompt embeddings ``[M, P, D]``: text ids embedded with ``params``, media slots from the rollout."""
    ids = batch["input_ids"][prompt]  # [M, P]
    x_text = models.thinker.apply({"params": params}, ids, method="embed_tokens")
    return jnp.where(_mm_mask(models, ids)[..., None], jax.lax.stop_gradient(ro["prompt_embeds"][prompt]), x_text)


def _completion_positions(ro: dict, pmask: jax.Array, prompt: jax.Array, t: int) -> tuple[jax.Array, jax.Array]:
    """Prompt positions ``[3, M, P]`` and completion positions ``[3, M, T]`` (text: equal components)."""
    ppos = ro["prompt_pos"][:, prompt]  # [3, M, P]
    start = jnp.max(jnp.where(pmask[None] > 0, ppos, -1), axis=(0, 2)) + 1  # [M]
    cpos = jnp.broadcast_to((start[:, None] + jnp.arange(t)[None])[None], (3, start.shape[0], t))
    return ppos, cpos


def sequence_logprobs(models: StepModels, s: GRPOSettings, params: Any, batch: Batch, ro: dict,
                      rows: jax.Array, return_entropy: bool = False, contiguous: bool = False):
    """Teacher-forced log p of completion rows ``rows [M]`` under ``params``: ``[M, T]`` (+ entropy).

    Log-probs (and entropy) are those of the distribution the rollout sampled from, ``softmax(logits /
    rl.temperature)`` (as TRL and verl do), so at any temperature they equal the sampler's recorded ones (before
    top-p / top-k truncation) and the policy gradient is that of the sampling policy.

    Text-token embeddings are recomputed from ``params`` (so they get gradients); the frozen towers' features
    are taken from the rollout (identical for policy and reference, never trained).  ``contiguous=True``
    promises that ``rows`` are consecutive completions starting at a multiple of ``min(M, G)`` (the
    micro-batches of :func:`loss_and_grads`); then, with ``s.share_prompt_prefix``, each distinct prompt runs
    once into a KV cache and its G completions attend to it (:func:`_shared_prefix_hidden`).
    """
    thinker = models.thinker
    g, m, t = s.num_generations, rows.shape[0], ro["tokens"].shape[1]
    toks = ro["tokens"][rows]  # [M, T]
    if contiguous and s.share_prompt_prefix and (m % g == 0 or g % m == 0):
        h = _shared_prefix_hidden(models, s, params, batch, ro, rows)
    else:
        prompt = rows // g
        pmask = batch["attention_mask"][prompt]
        x_prompt = _prompt_embeds(models, params, batch, ro, prompt)
        x_comp = thinker.apply({"params": params}, toks, method="embed_tokens")
        ppos, cpos = _completion_positions(ro, pmask, prompt, t)
        x = jnp.concatenate([x_prompt, x_comp.astype(x_prompt.dtype)], axis=1)
        pos = jnp.concatenate([ppos, cpos], axis=2)
        mask = jnp.concatenate([pmask, ro["mask"][rows]], axis=1)
        hidden, _ = thinker.apply({"params": params}, x, pos, mask, method="decode")
        p = x_prompt.shape[1]
        h = hidden[:, p - 1:p + t - 1]  # position p-1+i predicts completion token i
    if s.temperature != 1.0:  # the sampled distribution: softmax(logits / T) (the LM head has no bias)
        h = h / jnp.asarray(s.temperature, h.dtype)
    return thinker.apply({"params": params}, h, toks, s.logprob_chunk_size, return_entropy,
                         method="token_logprobs")


def _shared_prefix_hidden(models: StepModels, s: GRPOSettings, params: Any, batch: Batch, ro: dict,
                          rows: jax.Array) -> jax.Array:
    """Hidden states ``[M, T, D]`` predicting each completion token, the prompt run once per group.

    The U = max(M // G, 1) distinct prompts are prefilled into a KV cache (``[layers, U, KV, P+T, hd]``), the
    cache is gathered per completion, and the completions run as one cached block at slot P: the same
    attention as the full ``prompt ++ completion`` pass, with U * P + M * T tokens instead of M * (P + T).
    Gradients reach the prompt through the cached keys/values (summed over the group by autodiff).
    """
    thinker = models.thinker
    g, m, t = s.num_generations, rows.shape[0], ro["tokens"].shape[1]
    u = max(m // g, 1)
    prompt = rows[0] // g + jnp.arange(u)  # [U] the micro-batch's prompts
    local = jnp.arange(m) // g if m >= g else jnp.zeros((m,), jnp.int32)  # [M] completion -> its prompt in U
    pmask = batch["attention_mask"][prompt]  # [U, P]
    x_prompt = _prompt_embeds(models, params, batch, ro, prompt)  # [U, P, D]
    p = x_prompt.shape[1]
    ppos, cpos = _completion_positions(ro, pmask, prompt, t)  # [3, U, P], [3, U, T]
    cache = init_cache(thinker.config, u, p + t, x_prompt.dtype)
    kmask = jnp.concatenate([pmask, jnp.zeros((u, t), pmask.dtype)], axis=1)  # [U, P+T]
    h_prompt, cache = thinker.apply({"params": params}, x_prompt, ppos, kmask, cache=cache,
                                    cache_index=jnp.int32(0), method="decode")  # [U, P, D]
    cache = jax.tree.map(lambda c: c[:, local], cache)  # [layers, M, KV, P+T, hd]
    x_comp = thinker.apply({"params": params}, ro["tokens"][rows], method="embed_tokens")  # [M, T, D]
    kmask = jnp.concatenate([pmask[local], ro["mask"][rows].astype(pmask.dtype)], axis=1)  # [M, P+T]
    h_comp, _ = thinker.apply({"params": params}, x_comp.astype(x_prompt.dtype), cpos[:, local], kmask,
                              cache=cache, cache_index=jnp.int32(p), method="decode")  # [M, T, D]
    # Left padding: the prompt's last position is real and predicts completion token 0.
    return jnp.concatenate([h_prompt[local, p - 1:], h_comp[:, :t - 1]], axis=1)


def _micro_batches(s: GRPOSettings, n: int) -> jax.Array:
    mb = min(s.micro_batch_completions, n)
    if n % mb:
        raise ValueError(f"rl.micro_batch_completions={mb} must divide the {n} completions of a step")
    return jnp.arange(n).reshape(n // mb, mb)


def loss_and_grads(models: StepModels, s: GRPOSettings, params: Any, ref_params: Any, batch: Batch, ro: dict,
                   old_logp: jax.Array | None) -> tuple[Any, dict]:
    """Gradients of the aggregated GRPO loss, accumulated over micro-batches of completions.

    Every aggregation mode is a (numerator, denominator) pair; the denominator depends only on masks, so it
    is computed for the whole step first and the micro-batch gradients simply add up (exact token-mean).
    """
    n, t = ro["tokens"].shape
    adv = ro["advantages"].reshape(n)
    keep = ro["keep"].reshape(n)
    mask = ro["mask"].astype(jnp.float32)
    _, den = aggregate(jnp.zeros_like(mask), mask, s.loss_agg, seq_mask=keep, max_len=t)
    use_kl = s.beta > 0 and ref_params is not None

    def micro(carry, rows):
        grads_acc, stats = carry

        def loss_fn(p):
            logp, ent = sequence_logprobs(models, s, p, batch, ro, rows, return_entropy=True, contiguous=True)
            ref_logp = None
            if use_kl:
                ref_logp = jax.lax.stop_gradient(sequence_logprobs(models, s, ref_params, batch, ro, rows,
                                                                   contiguous=True))
            old = None if old_logp is None else old_logp[rows]
            per_tok, m = grpo_token_loss(logp, adv[rows], mask[rows], old, ref_logp, beta=s.beta,
                                         kl_estimator=s.kl_estimator, name=s.policy_loss, cfg=s.loss_cfg)
            num, _ = aggregate(per_tok, mask[rows], s.loss_agg, seq_mask=keep[rows], max_len=t)
            m["entropy"] = (jnp.sum(jax.lax.stop_gradient(ent) * mask[rows]), jnp.sum(mask[rows]))
            m["logp_gap"] = (jnp.sum(jnp.abs(jax.lax.stop_gradient(logp) - ro["sample_logprobs"][rows])
                                     * mask[rows]), jnp.sum(mask[rows]))
            return num / jnp.maximum(den, 1e-9), m

        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grads_acc = jax.tree_util.tree_map(jnp.add, grads_acc, grads)
        stats = {k: (stats[k][0] + v[0], stats[k][1] + v[1]) for k, v in m.items()} | {"loss": stats["loss"] + loss}
        return (grads_acc, stats), None

    zero_g = jax.tree_util.tree_map(jnp.zeros_like, params)
    keys = ["pg_clipfrac", "pg_clipfrac_high", "pg_clipfrac_low", "pg_clipfrac_dual", "ppo_kl", "is_ratio",
            "entropy", "logp_gap"] + (["kl"] if use_kl else [])
    zero_s = {k: (jnp.float32(0), jnp.float32(0)) for k in keys} | {"loss": jnp.float32(0)}
    (grads, stats), _ = jax.lax.scan(micro, (zero_g, zero_s), _micro_batches(s, n))
    metrics = {k: finalize(*v) for k, v in stats.items() if k != "loss"}
    metrics["loss"] = jnp.where(den > 0, stats["loss"], 0.0)
    return grads, metrics


def update(models: StepModels, s: GRPOSettings, tx: optax.GradientTransformation, state: TrainState,
           ref_params: Any, batch: Batch, ro: dict) -> tuple[TrainState, dict]:
    """mu optimizer updates on one rollout batch (Omni-R1: mu = 1)."""
    old_logp = None
    if s.num_iterations > 1:  # the ratio needs the log-probs of the policy that sampled
        rows = jnp.arange(ro["tokens"].shape[0])
        old_logp = jax.lax.stop_gradient(sequence_logprobs(models, s, state.params, batch, ro, rows,
                                                           contiguous=True))
    metrics = {}
    for _ in range(s.num_iterations):
        grads, metrics = loss_and_grads(models, s, state.params, ref_params, batch, ro, old_logp)
        state, guard = guarded_apply(state, grads, tx, metrics["loss"])
        metrics = metrics | guard
    return state, metrics


# ------------------------------------------------------------------------------------------ metrics
def step_metrics(s: GRPOSettings, ro: dict, upd: dict) -> dict:
    """The scalars users watch (omni_r1.md §7 logging + jax_design_notes §7.9)."""
    terms, r = ro["terms"], ro["reward"]
    lengths = ro["lengths"].astype(jnp.float32)
    out = {"reward_mean": jnp.mean(r), "reward_std": jnp.std(r), "reward_min": jnp.min(r),
           "reward_max": jnp.max(r), "format_rate": jnp.mean(ro["format_ok"].astype(jnp.float32)),
           "completion_len": jnp.mean(lengths), "completion_len_max": jnp.max(lengths),
           "truncated_frac": jnp.mean(ro["truncated"].astype(jnp.float32)),
           "all_wrong_frac": jnp.mean(jnp.all(r <= 1.0, axis=-1)),
           "all_correct_frac": jnp.mean(jnp.all(r >= 2.0, axis=-1)),
           "completion_tokens": jnp.sum(lengths), "grounding_approx": ro["num_approx"].astype(jnp.float32)}
    for k, v in terms.items():
        if k in SUMMED_TERMS:  # counts over the whole step (e.g. SAM2 tracks dropped by the slot capacity)
            out[k] = jnp.sum(v).astype(jnp.float32)
        elif isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        elif k in ("grounding_frames", "grounding_valid", "match_perm", "pred_masks"):
            continue
        else:
            out[f"reward/{k}"] = jnp.mean(jnp.asarray(v, jnp.float32))
    return out | upd


# ------------------------------------------------------------------------------------------ the step
def train_step(models: StepModels, s: GRPOSettings, spec, tx: optax.GradientTransformation, shapes: BatchShapes,
               state: TrainState, ref_params: Any, sam_params: Any, batch: Batch,
               anchor_params: Any = None) -> tuple[TrainState, dict]:
    """One GRPO step (sample groups, ground, segment, reward, update).

    ``ref_params``: the frozen reference, System 2's grounder and (unless ``anchor_params`` is given) the KL
    anchor; ``anchor_params``: a separate KL anchor (``rl.kl_anchor = "initial"``: the initial policy).
    """
    rng = GRPOStep.step_rng(state)
    ro = rollout_and_score(models, s, spec, shapes, state.params, ref_params, sam_params, batch, rng)
    state, upd = update(models, s, tx, state, ref_params if anchor_params is None else anchor_params, batch, ro)
    return state, step_metrics(s, ro, upd)


class GRPOStep:
    """``step(state, ref_params, sam_params, batch, shapes[, anchor_params]) -> (state, metrics)``, jitted, state
    donated (``anchor_params``: a KL anchor other than ``ref_params``, see :func:`train_step`).

    ``split=False`` (default): ONE jit for the whole step.  ``split=True``: the rollout/reward half
    (:attr:`rollout`) and the update half (:attr:`update`) are two jits — same results, lower peak memory.
    """

    def __init__(self, models: StepModels, s: GRPOSettings, spec, tx: optax.GradientTransformation, *,
                 split: bool = False, state_shardings: Any = None):
        self.split = split
        out = {} if state_shardings is None else {"out_shardings": (state_shardings, None)}
        fused = functools.partial(train_step, models, s, spec, tx)
        self._fused = jax.jit(lambda shapes, st, ref, sam, b, anchor: fused(shapes, st, ref, sam, b, anchor),
                              static_argnums=0, donate_argnums=1, **out)
        self.rollout = jax.jit(lambda shapes, p, ref, sam, b, rng: rollout_and_score(
            models, s, spec, shapes, p, ref, sam, b, rng), static_argnums=0)
        self.update = jax.jit(lambda st, ref, b, ro: update(models, s, tx, st, ref, b, ro), donate_argnums=0, **out)
        self.metrics = jax.jit(lambda ro, u: step_metrics(s, ro, u))

    @staticmethod
    def step_rng(state: TrainState) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def __call__(self, state: TrainState, ref_params: Any, sam_params: Any, batch: Batch, shapes: BatchShapes,
                 anchor_params: Any = None):
        if not self.split:
            return self._fused(shapes, state, ref_params, sam_params, batch, anchor_params)
        ro = self.rollout(shapes, state.params, ref_params, sam_params, batch, self.step_rng(state))
        state, upd = self.update(state, ref_params if anchor_params is None else anchor_params, batch, ro)
        return state, self.metrics(ro, upd)


def build(config, mesh, workdir):
    """The GRPO :class:`~omnir1_jax.rl.task.Task` for ``omnir1-train`` (see :mod:`omnir1_jax.rl.grpo_build`)."""
    from omnir1_jax.rl.grpo_build import build as _build

    return _build(config, mesh, workdir)
