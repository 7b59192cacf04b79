"""omnir1-plan on the tiny config: abstract step -> compiled on a simulated CPU mesh -> table + JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import subprocess_xla_flags

from omnir1_jax import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ":released" (alpha_g = 0) keeps SAM2 out of the compiled graph: the same planner path, a faster compile.
TINY = os.path.join(ROOT, "experiments", "synthetic_tiny.py") + ":released"


def _plan(tmp_path, name: str, *args: str) -> tuple[str, dict]:
    """Runs the console entry in a fresh interpreter (it forces the CPU device count per mesh)."""
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags())
    proc = subprocess.run([sys.executable, "-m", "omnir1_jax.plan", "--config", TINY, "--json", str(out),
                           "--config.rl.prompts_per_step=4", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    compiled = _plan(tmp, "fsdp2", "--mesh", "data=1,fsdp=2,tensor=1")
    shardings_only = _plan(tmp, "fsdp4", "--mesh", "data=1,fsdp=4,tensor=1", "--no-compile")
    return compiled, shardings_only


def test_compiled_step_reports_positive_memory(runs):
    (stdout, data), _ = runs
    assert "| mesh |" in stdout and "fused" in stdout and "data=1,fsdp=2,tensor=1" in stdout
    assert data["failed"] == [] and len(data["results"]) == 1
    r = data["results"][0]
    assert r["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1} and r["devices"] == 2
    m = r["compiled"]["fused"]
    for k in ("argument", "output", "temp", "total"):  # generated_code is 0 on the CPU backend
        assert m[k] > 0, k
    # The donated state aliases the output; total = argument + output + temp + code - alias.
    assert m["alias"] > 0
    assert m["total"] == m["argument"] + m["output"] + m["temp"] + m["generated_code"] - m["alias"]
    sb = r["state_bytes_per_device"]
    assert all(sb[k] > 0 for k in ("params", "opt_state", "ref_params", "sam_params", "batch"))
    # Arguments hold (at least) the state and reference shards (jit prunes inputs the step never reads, like
    # SAM2's weights when alpha_g = 0).
    assert m["argument"] >= sb["params"] + sb["opt_state"] + sb["ref_params"]
    g = r["geometry"]
    assert g["prompts"] == 4 and g["frames"] == 12 and g["hires_grid"][0] == 1


def test_params_bytes_halve_when_fsdp_doubles(runs):
    (_, two), (stdout, four) = runs
    assert "(not compiled)" in stdout
    p2 = two["results"][0]["state_bytes_per_device"]
    p4 = four["results"][0]["state_bytes_per_device"]
    for k in ("params", "opt_state", "ref_params"):
        ratio = p4[k] / p2[k]
        assert 0.5 <= ratio < 0.55, (k, ratio)  # all but small replicated vectors are split over fsdp
    assert p4["sam_params"] == p2["sam_params"]  # SAM2 is replicated
    assert p4["batch"] * 2 == p2["batch"]


def test_cli_parsing():
    assert plan.parse_mesh("data=2,fsdp=4,tensor=1") == [("data", 2), ("fsdp", 4), ("tensor", 1)]
    assert plan.parse_overrides(["--config.rl.beta=0.0", "--config.data.ground_hw=(96,128)",
                                 "--config.model.preset=tiny"]) == {
        "rl.beta": 0.0, "data.ground_hw": (96, 128), "model.preset": "tiny"}
    with pytest.raises(ValueError):
        plan.parse_mesh("data=0")
    with pytest.raises(ValueError):
        plan.parse_overrides(["--bogus=1"])


def test_extrapolation_is_linear_in_layers():
    def res(layers, temp):
        return {"mesh": {"fsdp": 8}, "devices": 8, "geometry": {}, "layers": layers,
                "state_bytes_per_device": {"params": 10 * layers + 5, "opt_state": 20 * layers, "ref_params": 0,
                                           "sam_params": 7, "batch": 3},
                "compiled": {"fused": {"argument": 1, "output": 0, "temp": temp, "generated_code": 0, "alias": 0,
                                       "total": temp + 1}}}

    out = plan.extrapolate(res(2, 100), res(4, 160), 28)
    assert out["layers"] == 28 and out["extrapolated_from"] == [2, 4]
    assert out["state_bytes_per_device"]["params"] == 285 and out["state_bytes_per_device"]["sam_params"] == 7
    assert out["compiled"]["fused"]["temp"] == 100 + 30 * 26
    assert "extrapolated" in plan.format_table([out])
