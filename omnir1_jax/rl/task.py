"""The step protocol the trainer runs: a :class:`Task` per ``config.mode`` (``sft`` or ``grpo``).

``train.py`` knows nothing about what a step does; it calls ``task.init_state``, pulls host batches from
``task.train_iterator``, moves them with ``task.prepare`` and runs ``task.train_step`` (one ``jax.jit``).
Modes plug in through ``omnir1_jax.rl.<mode>.build(config, mesh, workdir) -> Task``, imported lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from omnir1_jax.rl.state import TrainState

PyTree = Any


@dataclasses.dataclass
class Task:
    """What a training mode hands the loop.

    init_state(rng) -> TrainState           sharded on the mesh (jitted init with out_shardings)
    train_step(state, batch) -> (state, m)  ONE jax.jit, donate_argnums=0; m: dict of scalar arrays, must
                                            hold "loss" and "skipped_nonfinite" (0./1.)
    train_iterator(state_json | None)       grain iterator with get_state()/set_state(); None = fresh start
    prepare(host_batch) -> device batch     host NumPy -> global jax.Arrays (batch_sharding)
    evaluate(state) -> dict | None          optional periodic evaluation (scalars)
    total_steps                             steps in one epoch (used when train.num_steps == -1)
    """

    init_state: Callable[[jax.Array], TrainState]
    train_step: Callable[[TrainState, Any], tuple[TrainState, Mapping[str, Any]]]
    train_iterator: Callable[[str | None], Iterator]
    prepare: Callable[[Any], Any]
    total_steps: int
    evaluate: Callable[[TrainState], Mapping[str, Any]] | None = None
    name: str = ""


def build_task(config, mesh: Mesh, workdir: str) -> Task:
    """Task for ``config.mode``: ``omnir1_jax.rl.sft.build`` or ``omnir1_jax.rl.grpo.build``."""
    mode = config.mode
    if mode not in ("sft", "grpo"):
        raise ValueError(f"config.mode: unknown mode {mode!r}; expected 'sft' or 'grpo'")
    try:
        module = importlib.import_module(f"omnir1_jax.rl.{mode}")
    except ModuleNotFoundError as err:
        if err.name == f"omnir1_jax.rl.{mode}":
            raise NotImplementedError(
                f"config.mode={mode!r} needs omnir1_jax/rl/{mode}.py with build(config, mesh, workdir) -> Task, "
                "which does not exist yet in this checkout") from err
        raise
    if not hasattr(module, "build"):
        raise NotImplementedError(f"omnir1_jax.rl.{mode} has no build(config, mesh, workdir) -> Task yet")
    task = module.build(config, mesh, workdir)
    if not isinstance(task, Task):
        raise TypeError(f"omnir1_jax.rl.{mode}.build returned {type(task).__name__}, expected a Task")
    return task


def device_put_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
    """Host batch (this process's rows, NumPy) -> global arrays sharded over (data, fsdp) on dim 0."""
    from omnir1_jax.parallel import batch_sharding

    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, max(v.ndim, 1)), v)
    return out


# ----------------------------------------------------------------------------- shared model setup
def build_tokenizer(config):
    """The tokenizer of ``config.model``: the synthetic word-level one for ``preset=tiny``, else the HF one
    from ``model.tokenizer_dir`` (or ``model.hf_dir`` / ``model.checkpoint``)."""
    from omnir1_jax.text import HFTokenizer, SyntheticTokenizer

    if config.model.preset == "tiny" and not config.model.tokenizer_dir:
        return SyntheticTokenizer()
    path = config.model.tokenizer_dir or config.model.hf_dir or config.model.checkpoint
    if not path:
        raise ValueError("config.model.tokenizer_dir (or model.hf_dir / model.checkpoint) must name a local "
                         "directory holding the tokenizer files")
    return HFTokenizer.from_dir(path)


def tiny_thinker_config(tokenizer, hidden: int = 64, layers: int = 2, rope_theta: float = 1_000_000.0):
    """The tiny thinker (real architecture, towers included) sized to ``tokenizer`` with its special ids;
    ``hidden`` / ``layers`` scale the language model (``model.tiny_hidden_size`` / ``model.tiny_num_layers``),
    with 16-wide heads and a 2x MLP."""
    from omnir1_jax.models.qwen_omni import tiny
    from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
    from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

    m = tokenizer.mm_ids
    vocab = -(-tokenizer.vocab_size // 64) * 64  # padded so the vocab dim shards over any tensor axis <= 64
    heads = max(hidden // 16, 1)
    return tiny(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1), rope_theta=rope_theta,
                vision=dataclasses.replace(VisionConfig.tiny(), out_hidden_size=hidden),
                audio=dataclasses.replace(AudioConfig.tiny(), output_dim=hidden),
                image_token_id=m["<|IMAGE|>"], video_token_id=m["<|VIDEO|>"], audio_token_id=m["<|AUDIO|>"],
                vision_start_token_id=m["<|vision_bos|>"], vision_end_token_id=m["<|vision_eos|>"],
                audio_start_token_id=m["<|audio_bos|>"], audio_end_token_id=m["<|audio_eos|>"],
                eos_token_id=tokenizer.eos_ids[0], pad_token_id=tokenizer.pad_id)


def build_thinker(config, tokenizer) -> tuple[Any, Callable[[jax.Array], PyTree], Callable[[], PyTree] | None]:
    """``(model, init_fn, load_fn)``: ``init_fn(rng)`` returns boxed random params (for shapes / shardings);
    ``load_fn()`` returns pretrained host params from ``model.checkpoint`` / ``model.hf_dir`` (None if none)."""
    import jax.numpy as jnp

    from omnir1_jax.models.qwen_omni import Thinker, init_params, load_checkpoint, load_hf, qwen2_5_omni_3b, \
        qwen2_5_omni_7b

    m = config.model
    dtype, pdtype = jnp.dtype(m.dtype), jnp.dtype(m.param_dtype)
    load_fn = None
    if m.checkpoint:
        load_fn = lambda: load_checkpoint(m.checkpoint, dtype, pdtype, m.remat)  # noqa: E731
    elif m.hf_dir:
        load_fn = lambda: load_hf(m.hf_dir, dtype, pdtype, m.remat)  # noqa: E731
    presets = {"tiny": lambda: tiny_thinker_config(tokenizer, m.tiny_hidden_size, m.tiny_num_layers, m.tiny_rope_theta), "qwen2_5_omni_7b": qwen2_5_omni_7b,
               "qwen2_5_omni_3b": qwen2_5_omni_3b}
    if m.preset not in presets:
        raise ValueError(f"config.model.preset: unknown preset {m.preset!r}; expected one of {sorted(presets)}")
    model = Thinker(presets[m.preset](), dtype=dtype, param_dtype=pdtype, remat=m.remat)
    loader = None
    if load_fn is not None:
        def loader():
            loaded_model, params = load_fn()
            if loaded_model.config != model.config:
                raise ValueError(f"model.preset={m.preset!r} does not match the loaded checkpoint's config")
            return params
    return model, (lambda rng: init_params(model, rng)), loader


def _with_gate(model: Any, seg) -> Any:
    """``model`` with ``segmenter.object_score_threshold`` as its object-score gate (0 keeps SAM2's rule)."""
    thr = float(seg.get("object_score_threshold", 0.0))
    if thr == model.cfg.object_score_threshold:
        return model
    return type(model)(dataclasses.replace(model.cfg, object_score_threshold=thr))


def build_segmenter(config) -> tuple[Any, PyTree]:
    """``(Sam2VideoModel, params)``: ``segmenter.checkpoint``, ``segmenter.hf_dir``, or (``preset=tiny`` only)
    random tiny weights seeded by ``config.seed`` — the same weights in training and evaluation."""
    import jax.numpy as jnp

    from omnir1_jax.models.sam2 import Sam2Config, Sam2VideoModel, load_checkpoint, load_hf
    from omnir1_jax.parallel import unbox

    seg = config.segmenter
    if seg.checkpoint or seg.hf_dir:
        model, params = load_checkpoint(seg.checkpoint) if seg.checkpoint else load_hf(seg.hf_dir, video=True)
        return _with_gate(model, seg), params
    if seg.preset != "tiny":
        raise ValueError(f"segmenter.preset={seg.preset!r} needs segmenter.checkpoint or segmenter.hf_dir "
                         "(a local SAM2 checkpoint); only the tiny preset may start from random weights")
    import logging

    logging.getLogger(__name__).warning("segmenter: no checkpoint given; using RANDOM tiny SAM2 weights (seed %d)",
                                        config.seed)
    model = _with_gate(Sam2VideoModel(Sam2Config.tiny()), seg)
    size = model.cfg.image_size
    init = jax.jit(lambda k: unbox(model.init(k, jnp.zeros((1, 3, size, size)), method=Sam2VideoModel.init_all)))
    return model, init(jax.random.PRNGKey(config.seed))["params"]


@dataclasses.dataclass
class PolicySetup:
    """The policy's optimizer and shardings, and a sharded ``init_state`` (shared by every mode)."""

    tx: Any
    lr_schedule: Callable[[Any], Any]
    param_shardings: PyTree
    state_shardings: Any
    init_state: Callable[[jax.Array], TrainState]


def setup_policy(config, mesh: Mesh, init_fn, load_fn, schedule_steps: int, rules) -> PolicySetup:
    """Optimizer + shardings from abstract shapes (no full copy on one device), and the state initialiser:
    pretrained params from ``load_fn`` when given, else a jitted random init with ``out_shardings``."""
    import jax.numpy as jnp

    from omnir1_jax.parallel import mesh_rules, param_shardings, unbox
    from omnir1_jax.rl.optim import make_optimizer_from_config
    from omnir1_jax.rl.state import state_shardings

    abstract_boxed = jax.eval_shape(init_fn, jax.random.key(0))
    p_shardings = param_shardings(abstract_boxed, mesh, rules)
    abstract_params = unbox(abstract_boxed)
    tx, lr_schedule = make_optimizer_from_config(abstract_params, config, schedule_steps)
    abstract_state = jax.eval_shape(
        lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                             rng=jax.random.key_data(jax.random.key(0))), abstract_params)
    s_shardings = state_shardings(abstract_state, p_shardings, mesh)

    def init_state(rng: jax.Array) -> TrainState:
        with mesh_rules(mesh, rules):
            if load_fn is not None:
                params = jax.device_put(load_fn(), p_shardings)
            else:
                params = jax.jit(lambda r: unbox(init_fn(r)), out_shardings=p_shardings)(rng)
            opt_state = jax.jit(tx.init, out_shardings=s_shardings.opt_state)(params)
        rng_data = jax.device_put(jax.random.key_data(jax.random.fold_in(rng, 1)), s_shardings.rng)
        step = jax.device_put(jnp.zeros((), jnp.int32), s_shardings.step)
        return TrainState(step=step, params=params, opt_state=opt_state, rng=rng_data)

    return PolicySetup(tx, lr_schedule, p_shardings, s_shardings, init_state)


def iterator_factory(specs, host_batch: int, pp_cfg, config) -> Callable[[str | None], Iterator]:
    """``train_iterator(state_json | None)`` for a Task: the grain mixture, restored exactly when given a state."""
    from data_pipelines.pipeline import make_dataset, state_from_json

    def train_iterator(state_json: str | None):
        it = iter(make_dataset(specs, host_batch, preprocess=pp_cfg, seed=config.data.shuffle_seed,
                               num_workers=config.data.num_workers))
        if state_json:
            it.set_state(state_from_json(state_json))
        return it

    return train_iterator
