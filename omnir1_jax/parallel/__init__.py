"""Meshes, logical-axis rule tables and sharding helpers (DESIGN §3)."""

from omnir1_jax.parallel.mesh import MESH_AXES, make_mesh, maybe_initialize_distributed, resolve_mesh_shape
from omnir1_jax.parallel.rules import LOGICAL_AXES, RULE_TABLES, get_rules
from omnir1_jax.parallel.sharding import (
    ShardingRuleError,
    batch_sharding,
    init_sharded,
    logical_spec_to_mesh,
    mesh_rules,
    param_shardings,
    replicated,
    shard_params,
    sharded_fraction,
    unbox,
)

__all__ = [
    "LOGICAL_AXES", "MESH_AXES", "RULE_TABLES", "ShardingRuleError", "batch_sharding", "get_rules",
    "init_sharded", "logical_spec_to_mesh", "make_mesh", "maybe_initialize_distributed", "mesh_rules",
    "param_shardings", "replicated", "resolve_mesh_shape", "shard_params", "sharded_fraction", "unbox",
]
