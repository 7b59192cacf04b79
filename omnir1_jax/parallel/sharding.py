"""Sharding helpers: logical annotations -> NamedShardings, strictly.

Flax silently replicates a dimension whose logical name has no rule; here that is an error, so a new
layer cannot quietly end up replicated on every device of a pod.  Typical use::

    abstract = jax.eval_shape(lambda: model.init(rng, *dummy))          # boxed, no memory used
    shardings = param_shardings(abstract["params"], mesh, get_rules("train"))
    params = jax.jit(lambda r: unbox(model.init(r, *dummy)["params"]), out_shardings=shardings)(rng)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import flax.linen as nn
import jax
import numpy as np
from flax.core import meta
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from omnir1_jax.parallel.rules import Rules

PyTree = Any


class ShardingRuleError(ValueError):
    """A logical axis name that no rule of the active table covers."""


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def logical_spec_to_mesh(names: tuple[str | None, ...], rules: Rules, where: str = "") -> P:
    """Maps one tuple of logical names to a mesh ``PartitionSpec``; unknown names raise."""
    known = {name for name, _ in rules}
    for name in names:
        if name is not None and not isinstance(name, str):
            continue  # PartitionSpec.UNCONSTRAINED and friends
        if name is not None and name not in known:
            raise ShardingRuleError(
                f"logical axis {name!r}{' of ' + where if where else ''} matches no sharding rule; "
                f"add it to omnir1_jax/parallel/rules.py (known: {sorted(known)})"
            )
    return nn.logical_to_mesh_axes(names, rules)


def logical_specs(boxed: PyTree) -> PyTree:
    """Tree of logical ``PartitionSpec``s of a boxed (``nn.Partitioned``) param tree.

    Every leaf must be annotated: an unannotated array leaf is an error (it would be replicated
    without anyone having decided so).
    """

    def spec(path, leaf):
        if isinstance(leaf, meta.AxisMetadata):
            return P(*leaf.names) if isinstance(leaf, nn.Partitioned) else nn.get_partition_spec(leaf)
        if hasattr(leaf, "shape") and len(getattr(leaf, "shape", ())) == 0:
            return P()  # scalars are replicated by definition
        raise ShardingRuleError(f"parameter {_path_str(path)} has no logical axis annotation")

    return jax.tree_util.tree_map_with_path(spec, boxed, is_leaf=lambda x: isinstance(x, meta.AxisMetadata))


def param_shardings(boxed: PyTree, mesh: Mesh, rules: Rules) -> PyTree:
    """NamedShardings (on ``mesh``) for every leaf of a boxed param tree, under ``rules``."""
    specs = logical_specs(boxed)

    def to_sharding(path, spec):
        return NamedSharding(mesh, logical_spec_to_mesh(tuple(spec), rules, _path_str(path)))

    return jax.tree_util.tree_map_with_path(to_sharding, specs, is_leaf=lambda x: isinstance(x, P))


def unbox(tree: PyTree) -> PyTree:
    """Strips Flax partitioning boxes, leaving plain arrays."""
    return meta.unbox(tree)


def shard_params(boxed: PyTree, mesh: Mesh, rules: Rules) -> PyTree:
    """Places a (boxed, host or device) param tree onto ``mesh`` by its logical annotations."""
    shardings = param_shardings(boxed, mesh, rules)
    return jax.device_put(unbox(boxed), shardings)


def init_sharded(init_fn, mesh: Mesh, rules: Rules, *args) -> tuple[PyTree, PyTree]:
    """Initialises params directly in their sharded layout (no full copy on one device).

    ``init_fn(*args)`` must return a boxed tree.  Returns ``(params, shardings)``.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh, rules)
    params = jax.jit(lambda *a: unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return params, shardings


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Sharding of a batch-major array: dim 0 over ``(data, fsdp)``, the rest replicated."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@contextlib.contextmanager
def mesh_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Activates ``mesh`` and the logical ``rules`` (for ``nn.with_logical_constraint`` in model code)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def sharded_fraction(params: PyTree) -> float:
    """Fraction of parameter bytes that are split across devices (MaxText's sufficiency check)."""
    total = sharded = 0
    for leaf in jax.tree_util.tree_leaves(params):
        nbytes = leaf.size * leaf.dtype.itemsize
        total += nbytes
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None and not sharding.is_fully_replicated:
            sharded += nbytes
    return sharded / max(total, 1)


def per_device_bytes(params: PyTree) -> int:
    """Bytes of ``params`` resident on the most loaded device."""
    usage: dict[Any, int] = {}
    for leaf in jax.tree_util.tree_leaves(params):
        for shard in leaf.addressable_shards:
            usage[shard.device] = usage.get(shard.device, 0) + int(np.prod(shard.data.shape)) * leaf.dtype.itemsize
    return max(usage.values()) if usage else 0
