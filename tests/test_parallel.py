"""Mesh construction, strict logical-axis rules, and sharded == unsharded on 8 simulated devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax import parallel
from omnir1_jax.parallel import rules as rules_lib


class _MLP(nn.Module):
    """A two-layer block annotated with the decoder's logical names."""

    @nn.compact
    def __call__(self, x):
        w1 = self.param("w1", nn.with_logical_partitioning(nn.initializers.normal(0.2), ("embed", "mlp")), (16, 32))
        w2 = self.param("w2", nn.with_logical_partitioning(nn.initializers.normal(0.2), ("mlp", "embed")), (32, 16))
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (16,))
        h = nn.with_logical_constraint(jnp.tanh(x @ w1), ("act_batch", "act_mlp"))
        return (h @ w2) * scale


class _Unknown(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.with_logical_partitioning(nn.initializers.ones, ("embed", "not_a_rule")), (16, 4))
        return x @ w


def test_device_count_is_simulated():
    assert jax.device_count() == 8


@pytest.mark.parametrize(
    "spec, expected",
    [
        ([("data", -1)], {"data": 8, "fsdp": 1, "tensor": 1}),
        ([("data", 2), ("fsdp", -1), ("tensor", 2)], {"data": 2, "fsdp": 2, "tensor": 2}),
        ([("data", 1), ("fsdp", 4), ("tensor", 2)], {"data": 1, "fsdp": 4, "tensor": 2}),
    ],
)
def test_make_mesh_fills_minus_one(spec, expected):
    mesh = parallel.make_mesh(spec)
    assert dict(mesh.shape) == expected
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize(
    "spec, message",
    [
        ([("data", 3), ("fsdp", -1)], "does not divide 8"),
        ([("data", 2), ("fsdp", 2)], "needs 4 devices but 8"),
        ([("data", -1), ("fsdp", -1)], "at most one mesh axis"),
        ([("pipeline", -1)], "unknown mesh axes"),
        ([("data", 0), ("fsdp", -1)], "positive or -1"),
    ],
)
def test_mesh_that_does_not_fit_is_a_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        parallel.make_mesh(spec)


def test_every_logical_name_has_a_rule_in_every_table():
    for role, table in rules_lib.RULE_TABLES.items():
        rules_lib.check_rules_cover(table)
        assert len({n for n, _ in table}) == len(table), role


def test_unknown_logical_name_is_an_error():
    boxed = jax.eval_shape(lambda: _Unknown().init(jax.random.key(0), jnp.ones((2, 16))))["params"]
    mesh = parallel.make_mesh([("fsdp", -1)])
    with pytest.raises(parallel.ShardingRuleError, match="not_a_rule"):
        parallel.param_shardings(boxed, mesh, parallel.get_rules("train"))


def test_unannotated_parameter_is_an_error():
    boxed = jax.eval_shape(lambda: nn.Dense(4).init(jax.random.key(0), jnp.ones((2, 16))))["params"]
    mesh = parallel.make_mesh([("fsdp", -1)])
    with pytest.raises(parallel.ShardingRuleError, match="no logical axis annotation"):
        parallel.param_shardings(boxed, mesh, parallel.get_rules("train"))


def test_sharded_forward_equals_unsharded():
    model = _MLP()
    x = jax.random.normal(jax.random.key(1), (8, 16))
    boxed = model.init(jax.random.key(0), x)["params"]
    expected = model.apply({"params": parallel.unbox(boxed)}, x)

    mesh = parallel.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = parallel.get_rules("train")
    params, shardings = parallel.init_sharded(lambda r: model.init(r, x)["params"], mesh, rules, jax.random.key(0))
    assert params["w1"].sharding.spec == jax.P("fsdp", "tensor")
    assert params["w2"].sharding.spec == jax.P("tensor", "fsdp")
    assert parallel.sharded_fraction(params) > 0.9
    xs = jax.device_put(x, parallel.batch_sharding(mesh, 2))
    with parallel.mesh_rules(mesh, rules):
        out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, xs)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_sample_rules_drop_fsdp_from_weights():
    mesh = parallel.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    boxed = jax.eval_shape(lambda: _MLP().init(jax.random.key(0), jnp.ones((2, 16))))["params"]
    train = parallel.param_shardings(boxed, mesh, parallel.get_rules("train"))
    sample = parallel.param_shardings(boxed, mesh, parallel.get_rules("sample"))
    assert train["w1"].spec == jax.P("fsdp", "tensor")
    assert sample["w1"].spec == jax.P(None, "tensor")
