"""Logical-axis rule tables: the one place where model axis names meet mesh axes.

Model code names every parameter dimension and key activation dimension with a *logical* name
(``nn.with_logical_partitioning`` / ``nn.with_logical_constraint``).  A rule table per *role*
(``train``, ``sample``, ``reference``, ``segmenter``) maps each logical name to a mesh axis, a tuple of
mesh axes, or ``None`` (replicated).  Rules are ordered; Flax picks, for each dimension, the first rule
whose mesh axes are not already used by another dimension of the same array (MaxText semantics).

Flax forbids the same name twice in one array, hence ``conv_spatial_2``/``unsharded_2``; ``None`` in a
name tuple also means "replicated" explicitly.  Every logical name used by a model must appear in
:data:`LOGICAL_AXES`; a name that no rule of the
role's table covers is an error (see :func:`omnir1_jax.parallel.sharding.logical_to_mesh_sharding`),
never a silent replication.
"""

from __future__ import annotations

from typing import Sequence

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# The logical vocabulary.  Add a name here (and to every table below) before using it in a model.
LOGICAL_AXES: dict[str, str] = {
    # ---- language-model weights -------------------------------------------------------------
    "vocab": "vocabulary dimension of embeddings / LM head",
    "embed": "model (hidden) dimension of the decoder",
    "heads": "query heads",
    "kv_heads": "key/value heads (GQA)",
    "head_dim": "per-head feature dimension",
    "mlp": "feed-forward hidden dimension",
    "norm": "scale/bias vectors of normalisation layers",
    "layers": "stacked-layer dimension (scan over layers)",
    # ---- encoder weights (vision / audio towers of the thinker) ------------------------------
    "vis_embed": "vision-tower hidden dimension",
    "vis_heads": "vision-tower attention heads",
    "vis_mlp": "vision-tower MLP hidden dimension",
    "vis_patch": "flattened patch (in_channels * t * p * p) dimension",
    "aud_embed": "audio-tower hidden dimension",
    "aud_heads": "audio-tower attention heads",
    "aud_mlp": "audio-tower MLP hidden dimension",
    "aud_mel": "mel-bin / conv-input channel dimension",
    # ---- segmenter (SAM2) weights ---------------------------------------------------------------
    "sam_embed": "SAM2 channel / hidden dimension",
    "sam_heads": "SAM2 attention heads",
    "sam_mlp": "SAM2 MLP hidden dimension",
    # ---- small dims that are never worth sharding -----------------------------------------------
    "conv_spatial": "spatial/temporal extent of a convolution kernel",
    "conv_spatial_2": "second spatial extent of a kernel (Flax forbids repeating a name in one array)",
    "conv_spatial_3": "third spatial/temporal extent of a kernel",
    "unsharded": "any small dimension that is always replicated (positional tables, tiny heads, scalars)",
    "unsharded_2": "a second always-replicated dimension of the same array",
    "unsharded_3": "a third always-replicated dimension of the same array",
    # ---- activations --------------------------------------------------------------------------
    "act_batch": "batch of sequences / completions",
    "act_length": "sequence (token) dimension",
    "act_embed": "hidden dimension of activations",
    "act_heads": "attention-head dimension of activations",
    "act_kv_heads": "kv-head dimension of activations",
    "act_mlp": "MLP hidden dimension of activations",
    "act_vocab": "vocabulary dimension of logits",
    "act_frames": "video frame dimension",
    "act_spatial": "image height/width dimensions",
    # ---- KV cache -----------------------------------------------------------------------------
    "cache_batch": "batch dimension of the KV cache",
    "cache_length": "time dimension of the KV cache",
    "cache_kv_heads": "kv-head dimension of the KV cache",
    "cache_head_dim": "head-dim of the KV cache",
}

_BATCH = ("data", "fsdp")

# Training layout: FSDP over the big model dimension, tensor parallelism over heads/mlp/vocab.
TRAIN_RULES: Rules = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("vis_embed", "fsdp"),
    ("vis_heads", "tensor"),
    ("vis_mlp", "tensor"),
    ("vis_patch", None),
    ("aud_embed", "fsdp"),
    ("aud_heads", "tensor"),
    ("aud_mlp", "tensor"),
    ("aud_mel", None),
    ("sam_embed", None),
    ("sam_heads", None),
    ("sam_mlp", None),
    ("conv_spatial", None),
    ("conv_spatial_2", None),
    ("conv_spatial_3", None),
    ("unsharded", None),
    ("unsharded_2", None),
    ("unsharded_3", None),
    ("act_batch", _BATCH),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_frames", None),
    ("act_spatial", None),
    ("cache_batch", _BATCH),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
)

# Sampling layout: weights replicated over data/fsdp (no all-gathers per decoded token), tensor-parallel.
SAMPLE_RULES: Rules = tuple(
    (name, None if axes == "fsdp" else axes) for name, axes in TRAIN_RULES
)

# The frozen reference thinker is stored like the policy (it is as large), so reuse the train table.
REFERENCE_RULES: Rules = TRAIN_RULES

# The segmenter is small next to the thinker (SAM2-L ~ 224M params): replicate weights, shard the batch.
SEGMENTER_RULES: Rules = tuple(
    (name, axes if name.startswith(("act_batch", "cache_batch")) else None) for name, axes in TRAIN_RULES
)

RULE_TABLES: dict[str, Rules] = {
    "train": TRAIN_RULES,
    "sample": SAMPLE_RULES,
    "reference": REFERENCE_RULES,
    "segmenter": SEGMENTER_RULES,
}


def get_rules(role: str) -> Rules:
    """Returns the rule table of ``role`` (one of :data:`RULE_TABLES`)."""
    try:
        return RULE_TABLES[role]
    except KeyError:
        raise ValueError(f"unknown sharding role {role!r}; expected one of {sorted(RULE_TABLES)}") from None


def check_rules_cover(rules: Rules, names: Sequence[str] = tuple(LOGICAL_AXES)) -> None:
    """Raises if a logical name has no rule (keeps the tables and the vocabulary in sync)."""
    covered = {name for name, _ in rules}
    missing = [n for n in names if n not in covered]
    if missing:
        raise ValueError(f"logical axis names without a rule: {missing}")
