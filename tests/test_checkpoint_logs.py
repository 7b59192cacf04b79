"""Checkpoints restore exactly (into shardings), keep N, fall back past a corrupt latest step; logs."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax import parallel
from omnir1_jax.checkpoint import Checkpointer
from omnir1_jax.logs import MetricWriter, read_jsonl, truncate_jsonl_after


def _state(seed):
    k = jax.random.key(seed)
    return {"params": {"w": jax.random.normal(k, (8, 4)), "b": jnp.arange(4.0)},
            "step": jnp.asarray(seed, jnp.int32), "rng": jax.random.key_data(k)}


def test_save_restore_roundtrip_and_keep(tmp_path):
    ck = Checkpointer(str(tmp_path / "ckpt"), keep=2, every_steps=1)
    for s in (1, 2, 3):
        ck.save(s, _state(s), {"data_iter": {"pos": s}})
    ck.wait()
    assert ck.steps() == [2, 3]
    step, state, extra = ck.restore(_state(0))
    assert step == 3 and extra == {"data_iter": {"pos": 3}}
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, _state(3))
    ck.close()


def test_restore_into_sharded_target(tmp_path):
    mesh = parallel.make_mesh([("fsdp", -1)])
    sharding = jax.sharding.NamedSharding(mesh, jax.P("fsdp"))
    target = {"w": jax.device_put(jnp.zeros((8, 4)), sharding)}
    ck = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    ck.save(1, {"w": jnp.ones((8, 4))}, force=True)
    ck.wait()
    _, state, _ = ck.restore(target)
    assert state["w"].sharding == sharding
    np.testing.assert_array_equal(state["w"], np.ones((8, 4)))
    ck.close()


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
    d = str(tmp_path / "ckpt")
    ck = Checkpointer(d, keep=3)
    ck.save(1, _state(1), {"k": 1}, force=True)
    ck.save(2, _state(2), {"k": 2}, force=True)
    ck.wait()
    # Corrupt every data file of step 2's state.
    for f in glob.glob(os.path.join(d, "2", "state", "**", "*"), recursive=True):
        if os.path.isfile(f):
            with open(f, "wb") as fh:
                fh.write(b"garbage")
    with caplog.at_level("WARNING"):
        step, state, extra = ck.restore(_state(0))
    assert step == 1 and extra == {"k": 1}
    assert any("cannot be restored" in r.message for r in caplog.records)
    ck.close()


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
    w = MetricWriter(str(tmp_path))
    w.write(1, {"loss": 1.5, "reward_mean": jnp.asarray(0.25), "bad": float("nan")})
    w.write(2, {"loss": 1.0, "reward_mean": 0.5})
    w.close()
    rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 1.5 and rows[0]["reward_mean"] == 0.25 and rows[0]["bad"] is None
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    truncate_jsonl_after(str(tmp_path / "metrics.jsonl"), 1)
    assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [1]
