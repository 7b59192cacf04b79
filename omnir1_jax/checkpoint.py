"""Orbax checkpoints of the whole training state, with keep-N and fall-back on a broken latest step.

A checkpoint holds ``state`` (params, optimizer state, step, rng — any pytree of arrays, restored into
the caller's shardings) and ``extra`` (JSON: the data-iterator state, counters, the config).  Saves are
asynchronous; :meth:`Checkpointer.close` waits for them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

PyTree = Any


def _abstract(tree: PyTree) -> PyTree:
    """ShapeDtypeStructs (with shardings) describing ``tree``, for sharded restores."""

    def leaf(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree_util.tree_map(leaf, tree)


class Checkpointer:
    """Saves every ``every_steps`` steps into ``directory``; keeps the newest ``keep``."""

    def __init__(self, directory: str, *, keep: int = 3, every_steps: int = 1, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "extra"))

    def should_save(self, step: int) -> bool:
        return step > 0 and step % self.every_steps == 0

    def save(self, step: int, state: PyTree, extra: dict | None = None, *, force: bool = False) -> bool:
        """Saves ``state`` (+ JSON ``extra``) at ``step``; returns whether a save was started."""
        if not (force or self.should_save(step)):
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {}))
        saved = self._manager.save(step, args=args, force=force)
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return bool(saved)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, target: PyTree, step: int | None = None) -> tuple[int, PyTree, dict] | None:
        """Restores the newest readable checkpoint into ``target``'s structure and shardings.

        Tries ``step`` (or the latest) first and falls back to older steps, with a warning, when a
        checkpoint is corrupt or partial.  Returns ``(step, state, extra)``, or ``None`` if nothing can
        be restored.
        """
        candidates = [s for s in reversed(self.steps()) if step is None or s <= step]
        abstract = _abstract(target)
        for s in candidates:
            try:
                out = self._manager.restore(
                    s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore())
                )
                return s, out["state"], dict(out["extra"] or {})
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                log.warning("checkpoint: step %d in %s cannot be restored (%s: %s); trying an older one",
                            s, self.directory, type(e).__name__, str(e).splitlines()[0][:300])
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
