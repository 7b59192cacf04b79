"""The config schema (defaults = the Omni-R1 paper's settings) and its validation.

Experiment files in ``experiments/`` start from :func:`default_config` and change what differs; they are
loaded with ``config_flags.DEFINE_config_file`` and overridden on the command line
(``--config.rl.beta=0.0``).  :func:`validate` rejects keys the schema does not know and inconsistent
values, naming the key.  Sources for the defaults: ``shared/reference/omni_r1.md`` §2.2, §5.3, §6.3, §7.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

PATCH = 28 * 28  # Qwen2.5-Omni counts pixels in 28x28 units (patch 14, 2x2 merge)

# The two published reward-weight settings (omni_r1.md §6.3).
REWARD_VARIANTS: dict[str, dict[str, float]] = {
    # src/scripts/omni_r1_run_training.sh (released): no SAM2 in the loop.
    "released": dict(alpha_k=1.0, alpha_k_ratio=1.0, alpha_a=1.0, alpha_g=0.0),
    # scripts/run_training.sh, run_improved_grpo_new.sh, improved_grpo_config.yaml (internal): SAM2 IoU x2.
    "internal": dict(alpha_k=1.0, alpha_k_ratio=0.0, alpha_a=1.0, alpha_g=2.0),
}

DATASETS = ("synthetic", "refavs", "revos", "mevis", "joint")
PROMPT_TEMPLATES = ("vos_force", "vos_no_hint")
ADV_ESTIMATORS = ("grpo", "drgrpo", "rloo", "batch_std")
LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum")
KL_ESTIMATORS = ("k1", "k2", "k3")
DTYPES = ("float32", "bfloat16", "float16")


def default_config() -> ml_collections.ConfigDict:
    """Every key the project knows, with the paper's values as defaults (7B, ReVOS-style VOS task)."""
    c = ml_collections.ConfigDict()
    c.name = "omni_r1"
    c.mode = "grpo"  # grpo | sft
    c.seed = 42  # improved_grpo_config.yaml

    c.model = ml_collections.ConfigDict()
    c.model.preset = "qwen2_5_omni_7b"  # qwen2_5_omni_7b | qwen2_5_omni_3b | tiny
    c.model.hf_dir = ""  # local Hugging Face checkpoint directory (safetensors)
    c.model.checkpoint = ""  # orbax checkpoint written by `omnir1-convert qwen-omni`
    c.model.reference_checkpoint = ""  # frozen reference (grounder, KL); "" = the initial policy
    c.model.tokenizer_dir = ""  # defaults to hf_dir / the checkpoint's copied tokenizer files
    c.model.dtype = "bfloat16"  # compute dtype
    c.model.param_dtype = "float32"  # master weights
    c.model.remat = True
    c.model.tiny_hidden_size = 64  # preset=tiny only: language-model width (16-wide heads) ...
    c.model.tiny_num_layers = 2  # ... and depth ...
    c.model.tiny_rope_theta = 1_000_000.0  # ... and rotary base (smaller: image rows/columns resolvable)
    c.model.freeze = ("visual", "audio_tower")  # frozen towers (omni_r1.md §2.1); everything else trains

    c.segmenter = ml_collections.ConfigDict()
    c.segmenter.preset = "sam2.1_hiera_large"
    c.segmenter.hf_dir = ""
    c.segmenter.checkpoint = ""
    c.segmenter.dtype = "bfloat16"
    c.segmenter.train_propagation = "forward"  # Omni-R1 training propagates forward from frame 0
    c.segmenter.eval_propagation = "bidirectional"
    c.segmenter.mask_size = 64  # reward-resolution masks (R_G), per side
    # Object-score gate: the object counts as present on a frame when its score logit exceeds this (SAM2's rule
    # is 0; a score head trained with a weighted BCE may want another point, chosen on validation clips).
    c.segmenter.object_score_threshold = 0.0

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "revos"
    c.data.refavs_root = ""
    c.data.revos_root = ""
    c.data.mevis_root = ""
    c.data.synthetic_root = ""  # "" = the world is written to <workdir>/data
    c.data.synthetic_seed = 0  # the synthetic world's seed (fixed across training seeds: same test splits)
    c.data.synthetic_train_clips = 8  # clips per training split of the written world (RefAVS and ReVOS)
    c.data.synthetic_test_clips = 2  # clips per held-out split (RefAVS val/test_*, ReVOS valid)
    c.data.synthetic_vos_min_visible = 0.25  # ReVOS-format objects are visible in at least this share of the clip
    c.data.refavs_num_samples = 1600  # --use_avs_sample_number 1600
    c.data.mixture = ""  # e.g. "refavs:1,revos:1" for joint runs; batches stay task-homogeneous
    c.data.min_frames = 16  # grpo.py; the paper says 8
    c.data.max_frames = 24
    c.data.eval_max_frames = 24
    c.data.fps = 2.0  # a list of frames is read as a 2 fps video
    c.data.video_min_pixels = 16 * PATCH
    c.data.video_max_pixels = 128 * PATCH
    c.data.ground_min_pixels = 64 * PATCH
    c.data.ground_max_pixels = 900 * PATCH  # the paper; the code default is 1600 * 28 * 28
    # Keyframes are grounded at one static grid per run: the smart_resize of this (h, w) under
    # ground_max_pixels (RefAVS / most ReVOS clips are 16:9).
    c.data.ground_hw = (720, 1280)
    c.data.max_objects = 3  # select_number
    c.data.prompt_template = "vos_force"
    c.data.skip_bad_examples = False
    c.data.num_workers = 4
    c.data.shuffle_seed = 0

    c.rl = ml_collections.ConfigDict()
    c.rl.prompts_per_step = 8  # 8 processes x 1 prompt
    c.rl.num_generations = 8  # G
    c.rl.micro_batch_completions = 8
    c.rl.max_prompt_length = 4096
    c.rl.max_new_tokens = 800  # run_training.sh; the released script uses 2048
    c.rl.max_keyframes = 4  # K
    c.rl.temperature = 1.0
    # RefAVS-task batches only (0 = rl.temperature): the released trainer's FUSE_TEMPERATURE / AVS_TEMPERATURE
    # option (0.45 when enabled; off by default there, omni_r1.md §7). The update's log-probs use the same T.
    c.rl.refavs_temperature = 0.0
    c.rl.top_p = 0.95
    c.rl.top_k = 0
    c.rl.beta = 0.04
    # The KL term's anchor: "reference" = the frozen reference (model.reference_checkpoint, else the initial
    # policy; the paper's setup, where GRPO starts from the reference thinker); "initial" = a frozen copy of the
    # policy's initial weights (model.checkpoint), e.g. an SFT start with a separate grounder as reference.
    c.rl.kl_anchor = "reference"
    c.rl.kl_estimator = "k3"
    c.rl.adv_estimator = "grpo"
    c.rl.adv_std_ddof = 1
    c.rl.adv_eps = 1e-4
    c.rl.loss_agg = "seq-mean-token-mean"
    c.rl.eps_low = 0.2
    c.rl.eps_high = 0.2
    c.rl.dual_clip_c = 0.0  # 0 disables the dual clip
    c.rl.num_iterations = 1  # mu; 1 = on-policy, ratio == 1 (Omni-R1)
    c.rl.dynamic_sampling = False
    c.rl.logprob_chunk_size = 4096
    # Teacher-forced pass (policy, reference, old log-probs): each prompt runs once into a KV cache and its G
    # completions attend to it (same result as the full prompt ++ completion pass; False = that full pass).
    c.rl.share_prompt_prefix = True
    # SAM2 track slots per clip (R_G): 0 = all G * O (completion, object) tracks at static shapes, unprompted
    # ones masked (exact, the most work).  C > 0 = the prompted tracks of a clip's group gathered into C slots
    # and propagated as one SAM2 pass (omni_r1.md §5.6); C >= G * O is exact; C = G (one object per
    # completion) matches the PyTorch recipe's work (benchmarks/torch_recipe.py).  Tracks beyond C (a
    # completion's extra objects first) are not segmented and are counted in the `sam_tracks_dropped` metric.
    # Needs segmenter.train_propagation forward or reverse.
    c.rl.sam_tracks_per_clip = 0
    c.rl.grounder = "reference"  # reference | policy (beta == 0 -> self-grounding)
    c.rl.grounding_max_new_tokens = 128
    # High-res candidate frames per call of the grounder's vision encoder (0 = all B * F at once).  Each
    # full-attention block of the ViT holds [frames, heads, patches, patches] scores: for the 7B run (B * F =
    # 192 frames of 3600 patches) the rollout half needs 209 GiB per device at 0 and 68 GiB at 8 on an fsdp=8
    # mesh (omnir1-plan, benchmarks/README.md "Memory planning").  Same features either way.
    c.rl.ground_encode_chunk = 8
    c.rl.split_mode = False  # rollout / reward / update as separate jits (memory option)

    c.reward = ml_collections.ConfigDict()
    c.reward.variant = "released"
    c.reward.update(REWARD_VARIANTS["released"])
    c.reward.clip_reward = False  # CLIP_REWARD=1
    # The released code adds avg_iou / avg_ratio / object-count terms only when SAM2 is actually called
    # (alpha_g > 0 and a valid System-2 box).  False: the formula of omni_r1.md §6.2 as written.
    c.reward.released_code_gating = False
    c.reward.len_bonus = True  # --len_control true
    c.reward.len_min = 320
    c.reward.len_max = 750
    c.reward.len_acc_threshold = 0.1

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-6
    c.optim.weight_decay = 0.01
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.0  # the scripts; the yaml has 0.1
    c.optim.grad_clip = 5.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = -1  # -1: one epoch over the training data
    c.train.log_every = 1
    c.train.eval_every = 200
    c.train.sft_max_answer_tokens = 320  # SFT: reference answer (+ <|im_end|>) right-padded/truncated to this
    c.train.progress_bar = True  # tqdm bar with ETA on process 0
    c.train.inject_nan_at_step = -1  # debug/test hook: NaN-poison the batch of this step (-1: never)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 3

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.tensor = 1

    c.eval = ml_collections.ConfigDict()
    c.eval.splits = ("valid",)
    c.eval.max_frames = 24
    c.eval.batch_size = 8
    # Videos with more frames are propagated in streamed chunks (memory flat in T; the backward half of the
    # bidirectional pass then does not see the forward half's memories); up to this many: the exact pass.
    c.eval.sam2_stream_above = 96
    c.eval.refavs_protocol = "official"  # official | per_expression | davis
    c.eval.limit = 64  # expressions per split in the trainer's periodic evaluation (0: all)
    # End-of-run table (omnir1_jax/embedded.py): Base / SFT / GRPO / passthrough / random_keyframes.
    c.eval.final_table = False  # GRPO runs only (an SFT run of the same config skips it)
    c.eval.table_splits = ("refavs_test", "revos_test")
    c.eval.table_limit = 0  # expressions per split (0: all)
    c.eval.base_checkpoint = ""  # "" = model.reference_checkpoint
    c.eval.sft_checkpoint = ""
    return c


def set_reward_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """Applies one of the published reward-weight settings (``released`` or ``internal``)."""
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"reward.variant: unknown variant {variant!r}; expected one of {sorted(REWARD_VARIANTS)}")
    config.reward.variant = variant
    config.reward.update(REWARD_VARIANTS[variant])
    return config


def _unknown_keys(cfg: Any, schema: Any, prefix: str = "") -> list[str]:
    out = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        if key not in schema:
            out.append(full)
        elif isinstance(cfg[key], ml_collections.ConfigDict) and isinstance(schema[key], ml_collections.ConfigDict):
            out += _unknown_keys(cfg[key], schema[key], full + ".")
    return out


class ConfigError(ValueError):
    """An invalid config; the message names the key."""


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config.{key}: {message}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Raises :class:`ConfigError` naming the key for unknown keys and inconsistent values."""
    unknown = _unknown_keys(config, default_config())
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join('config.' + k for k in unknown)}")
    c = config
    _check(c.mode in ("grpo", "sft"), "mode", f"must be 'grpo' or 'sft', got {c.mode!r}")
    _check(c.data.dataset in DATASETS, "data.dataset", f"must be one of {DATASETS}, got {c.data.dataset!r}")
    _check(1 <= c.data.min_frames <= c.data.max_frames, "data.min_frames",
           f"must satisfy 1 <= min_frames ({c.data.min_frames}) <= max_frames ({c.data.max_frames})")
    _check(c.data.eval_max_frames >= 1, "data.eval_max_frames", "must be >= 1")
    _check(0 < c.data.video_min_pixels <= c.data.video_max_pixels, "data.video_min_pixels",
           "must be positive and <= data.video_max_pixels")
    _check(0 < c.data.ground_min_pixels <= c.data.ground_max_pixels, "data.ground_min_pixels",
           "must be positive and <= data.ground_max_pixels")
    _check(c.data.max_objects >= 1, "data.max_objects", "must be >= 1")
    _check(c.data.prompt_template in PROMPT_TEMPLATES, "data.prompt_template",
           f"must be one of {PROMPT_TEMPLATES}, got {c.data.prompt_template!r}")
    _check(c.data.fps > 0, "data.fps", "must be positive")
    rl = c.rl
    _check(rl.num_generations >= 2, "rl.num_generations", "GRPO needs at least 2 generations per prompt")
    _check(rl.prompts_per_step >= 1, "rl.prompts_per_step", "must be >= 1")
    total = rl.prompts_per_step * rl.num_generations
    _check(rl.micro_batch_completions >= 1 and total % rl.micro_batch_completions == 0,
           "rl.micro_batch_completions",
           f"must divide prompts_per_step * num_generations = {total}, got {rl.micro_batch_completions}")
    _check(rl.max_new_tokens >= 1, "rl.max_new_tokens", "must be >= 1")
    _check(rl.temperature > 0, "rl.temperature", "must be > 0 (greedy decoding is a sampler mode, not T=0)")
    _check(rl.refavs_temperature >= 0, "rl.refavs_temperature", "must be >= 0 (0: use rl.temperature)")
    _check(0 < rl.top_p <= 1, "rl.top_p", f"must be in (0, 1], got {rl.top_p}")
    _check(rl.top_k >= 0, "rl.top_k", "must be >= 0 (0 disables top-k)")
    _check(rl.beta >= 0, "rl.beta", "must be >= 0")
    _check(rl.kl_estimator in KL_ESTIMATORS, "rl.kl_estimator", f"must be one of {KL_ESTIMATORS}")
    _check(rl.adv_estimator in ADV_ESTIMATORS, "rl.adv_estimator", f"must be one of {ADV_ESTIMATORS}")
    _check(rl.adv_std_ddof in (0, 1), "rl.adv_std_ddof", "must be 0 or 1")
    _check(rl.loss_agg in LOSS_AGGS, "rl.loss_agg", f"must be one of {LOSS_AGGS}")
    _check(rl.eps_low >= 0 and rl.eps_high >= 0, "rl.eps_low", "clip ranges must be >= 0")
    _check(rl.dual_clip_c == 0 or rl.dual_clip_c > 1, "rl.dual_clip_c", "must be 0 (off) or > 1")
    _check(rl.num_iterations >= 1, "rl.num_iterations", "must be >= 1")
    _check(1 <= rl.max_keyframes, "rl.max_keyframes", "must be >= 1")
    _check(rl.grounder in ("reference", "policy"), "rl.grounder", "must be 'reference' or 'policy'")
    _check(rl.kl_anchor in ("reference", "initial"), "rl.kl_anchor", "must be 'reference' or 'initial'")
    _check(isinstance(rl.share_prompt_prefix, bool), "rl.share_prompt_prefix", "must be True or False")
    _check(rl.ground_encode_chunk >= 0, "rl.ground_encode_chunk", "must be >= 0 (0: all frames in one call)")
    _check(rl.sam_tracks_per_clip >= 0, "rl.sam_tracks_per_clip", "must be >= 0 (0: all G * O tracks)")
    _check(rl.sam_tracks_per_clip == 0 or c.segmenter.train_propagation != "bidirectional",
           "rl.sam_tracks_per_clip", "track slots shared by a group need segmenter.train_propagation forward or "
           "reverse (a bidirectional pass starts at its session's first prompted frame)")
    _check(not (rl.grounder == "reference" and rl.beta == 0 and not c.model.hf_dir and not c.model.checkpoint
                and c.model.preset != "tiny"),
           "rl.grounder", "a reference grounder needs reference weights (model.hf_dir or model.checkpoint)")
    _check(c.reward.variant in REWARD_VARIANTS or c.reward.variant == "custom", "reward.variant",
           f"must be one of {sorted(REWARD_VARIANTS)} or 'custom'")
    if c.reward.variant in REWARD_VARIANTS:
        for k, v in REWARD_VARIANTS[c.reward.variant].items():
            _check(c.reward[k] == v, f"reward.{k}",
                   f"is {c.reward[k]} but reward.variant={c.reward.variant!r} sets {v}; "
                   "set reward.variant=custom to use your own weights")
    _check(c.reward.len_min <= c.reward.len_max, "reward.len_min", "must be <= reward.len_max")
    o = c.optim
    _check(o.learning_rate > 0, "optim.learning_rate", "must be > 0")
    _check(o.schedule in ("cosine", "constant", "linear"), "optim.schedule", "must be cosine, constant or linear")
    _check(0 <= o.warmup_ratio < 1, "optim.warmup_ratio", "must be in [0, 1)")
    _check(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)")
    _check(c.model.dtype in DTYPES and c.model.param_dtype in DTYPES, "model.dtype",
           f"dtype and param_dtype must be in {DTYPES}")
    _check(c.train.num_steps == -1 or c.train.num_steps >= 1, "train.num_steps", "must be -1 (one epoch) or >= 1")
    _check(c.train.log_every >= 1, "train.log_every", "must be >= 1")
    _check(c.train.sft_max_answer_tokens >= 1, "train.sft_max_answer_tokens", "must be >= 1")
    _check(c.checkpoint.every_steps >= 1, "checkpoint.every_steps", "must be >= 1")
    _check(c.checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1")
    for axis in ("data", "fsdp", "tensor"):
        size = c.mesh[axis]
        _check(size == -1 or size >= 1, f"mesh.{axis}", f"must be -1 or >= 1, got {size}")
    _check([c.mesh.data, c.mesh.fsdp, c.mesh.tensor].count(-1) <= 1, "mesh", "at most one axis may be -1")
    _check(c.eval.limit >= 0, "eval.limit", "must be >= 0 (0: every expression)")
    _check(c.eval.sam2_stream_above >= 1, "eval.sam2_stream_above", "must be >= 1")
    _check(c.eval.table_limit >= 0, "eval.table_limit", "must be >= 0 (0: every expression)")
    _check(0.0 < c.data.synthetic_vos_min_visible < 1.0, "data.synthetic_vos_min_visible", "must be in (0, 1)")
    _check(c.data.synthetic_train_clips >= 1 and c.data.synthetic_test_clips >= 1, "data.synthetic_train_clips",
           "the synthetic world needs >= 1 clip per split")
    _check(c.eval.refavs_protocol in ("official", "per_expression", "davis"), "eval.refavs_protocol",
           "must be official, per_expression or davis")
    return config


def mesh_spec(config: ml_collections.ConfigDict) -> list[tuple[str, int]]:
    """The mesh of a config as ``[(axis, size), ...]`` for :func:`omnir1_jax.parallel.make_mesh`."""
    return [("data", config.mesh.data), ("fsdp", config.mesh.fsdp), ("tensor", config.mesh.tensor)]


def parse_overrides(items) -> dict[str, Any]:
    """``["rl.beta=0.0", "data.ground_hw=(96,128)", "train.progress_bar=false"]`` -> dotted keys to values:
    Python literals or JSON scalars are decoded, anything else stays a string."""
    import ast
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
    return out


def load_config(path: str, arg: str | None = None, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """Loads ``experiments/<file>.py`` (``path`` or ``path:arg``) like ``config_flags`` does, then validates.

    ``overrides`` maps dotted keys to values (``{"rl.beta": 0.0}``); an unknown key raises.
    """
    if arg is None and ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location("_omnir1_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg is not None else module.get_config()
    config.lock()
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node:
                raise ConfigError(f"unknown config key config.{key}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key config.{key}")
        node[leaf] = value
    return validate(config)
