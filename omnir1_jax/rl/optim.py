"""The optimizer: AdamW + schedule + global-norm clipping, with frozen towers (omni_r1.md §2.1, §7).

Frozen parameters (the thinker's ``visual`` and ``audio_tower``) get no optimizer state and no update:
``optax.multi_transform`` routes them to ``set_to_zero`` (big_vision's "schedule None" idea).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax

PyTree = Any


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def trainable_mask(params: PyTree, freeze: Sequence[str]) -> PyTree:
    """``True`` for trainable leaves; a leaf is frozen when any ``freeze`` regex matches its path."""
    patterns = [re.compile(p) for p in freeze]

    def leaf(path, _):
        s = _path_str(path)
        return not any(p.search(s) for p in patterns)

    return jax.tree_util.tree_map_with_path(leaf, params)


def learning_rate_schedule(lr: float, total_steps: int, schedule: str = "cosine", warmup_ratio: float = 0.0):
    """HF-style schedules: linear warmup then cosine to 0 / linear to 0 / constant."""
    total_steps = max(int(total_steps), 1)
    warmup = int(round(warmup_ratio * total_steps))
    if schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    elif schedule == "linear":
        main = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    elif schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(f"optim.schedule: unknown schedule {schedule!r}")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(params: PyTree, *, learning_rate: float, total_steps: int, weight_decay: float = 0.01,
                   schedule: str = "cosine", warmup_ratio: float = 0.0, grad_clip: float = 5.0,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   freeze: Sequence[str] = ()) -> tuple[optax.GradientTransformation, Any]:
    """Builds the optimizer for ``params``; returns ``(tx, lr_schedule)``.

    Clipping is by the global norm of the *trainable* gradients (frozen ones are zeroed first).
    """
    lr = learning_rate_schedule(learning_rate, total_steps, schedule, warmup_ratio)
    chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    chain.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    inner = optax.chain(*chain)
    if not freeze:
        return inner, lr
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "frozen", trainable_mask(params, freeze))
    return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels), lr


def make_optimizer_from_config(params: PyTree, config, total_steps: int):
    """:func:`make_optimizer` with ``config.optim`` and ``config.model.freeze``."""
    o = config.optim
    return make_optimizer(params, learning_rate=o.learning_rate, total_steps=total_steps,
                          weight_decay=o.weight_decay, schedule=o.schedule, warmup_ratio=o.warmup_ratio,
                          grad_clip=o.grad_clip, b1=o.b1, b2=o.b2, eps=o.eps, freeze=tuple(config.model.freeze))
