"""Smoke tests of the benchmark scripts: each runs with ``--smoke`` and writes JSON with the expected fields.

No timing assertions (the CI machine is shared); the checks are on the structure and the sanity of the
figures (positive times, equal token counts on both sides, FLOP counts that agree).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _run(name: str, tmp_path) -> dict:
    """Runs ``benchmarks.<name>.main(["--smoke", "--json", path])`` in-process; returns the file's JSON."""
    mod = importlib.import_module(f"benchmarks.{name}")
    path = tmp_path / f"{name}.json"
    returned = mod.main(["--smoke", "--json", str(path)])
    with open(path) as f:
        written = json.load(f)
    assert written == returned
    env = written["environment"]
    assert env["cpu_cores"] >= 1 and env["jax"] and env["cpu_model"] and env["device_kind"]
    assert isinstance(written["ratio"], float) and written["ratio"] > 0
    assert written["settings"]["smoke"] is True
    return written


def test_common_helpers():
    from benchmarks import common

    assert common.loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warmup, then alternating order
    assert len(times["a"]) == len(times["b"]) == 3
    assert common.summary([3.0, 1.0, 2.0])["median_s"] == 2.0
    assert "x" in common.table([{"x": 1.5, "y": "z"}], ["x", "y"]).splitlines()[0]


def test_rollout_smoke(tmp_path):
    res = _run("rollout", tmp_path)
    assert res["benchmark"] == "rollout" and res["settings"]["G"] == 8
    row = res["rows"][0]
    assert row["generated_tokens"] == row["batch_prompts"] * 8 * row["max_new_tokens"]
    for k in ("ours_tokens_per_s", "theirs_tokens_per_s", "ours_compile_s", "ratio"):
        assert row[k] > 0 if k != "ours_compile_s" else row[k] >= 0
    assert row["ratio"] == pytest.approx(row["ours_tokens_per_s"] / row["theirs_tokens_per_s"])
    assert res["ratio"] == min(r["ratio"] for r in res["rows"])


def test_roofline_smoke(tmp_path):
    res = _run("roofline", tmp_path)
    peaks, upd, dec = res["peaks"], res["update"], res["decode"]
    assert peaks["peak_flops"] > 0 and peaks["read_bandwidth_Bps"] > 0
    # XLA's count (loop bodies corrected for the layer scan) agrees with the analytic matmul + attention count.
    assert upd["xla_flops"] == pytest.approx(upd["analytic_flops_6NT_matmul_plus_attention"], rel=0.15)
    assert upd["xla_flops"] > upd["xla_flops_loop_body_once"]
    assert res["ratio"] == pytest.approx(upd["achieved_flops_xla"] / peaks["peak_flops"])
    assert dec["bytes_per_step"] == dec["param_bytes_per_step"] + dec["kv_bytes_per_step"]
    assert dec["bytes_per_token"] == pytest.approx(dec["bytes_per_step"] / dec["rows"])


def test_sampler_scaling_smoke(tmp_path):
    res = _run("sampler_scaling", tmp_path)
    g_axis = res["axes"]["G"]
    assert [r["G"] for r in g_axis["rows"]] == [1, 2]
    assert isinstance(g_axis["steady_exponent"], float) and isinstance(g_axis["compile_exponent"], float)
    assert all(r["compile_s"] > 0 and r["steady_s"] > 0 for r in g_axis["rows"])
    pr = res["probes"]
    assert pr["recompiles_over_3_calls"] == 0
    assert pr["fallback_fraction_flat"] > pr["fallback_fraction_peaked"]
    assert res["ratio"] == pytest.approx(pr["top_p_0.95_flat_logits"] / pr["top_p_0.95_peaked_logits"])


def test_decode_loop_updates_the_cache_in_place_without_copies():
    """The compiled decode loop writes one slot per layer in place and never copies/transposes the KV cache
    (the pre-fix loop copied the whole stacked cache 3 times per step: ``benchmarks/README.md``)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from benchmarks.ab_revision import cache_ops
    from benchmarks.rollout import thinker_config
    from omnir1_jax.models.qwen_omni import Thinker, init_params
    from omnir1_jax.rollout.sampler import SamplerConfig, sample_jit

    c = thinker_config("tiny")
    model = Thinker(c)
    params = nn.unbox(jax.eval_shape(lambda r: init_params(model, r), jax.random.PRNGKey(0)))
    b, p, g, t = 1, 24, 4, 8
    emb = jax.ShapeDtypeStruct((b, p, c.hidden_size), jnp.float32)
    pos, mask = jax.ShapeDtypeStruct((3, b, p), jnp.int32), jax.ShapeDtypeStruct((b, p), jnp.int32)
    cfg = SamplerConfig(num_generations=g, max_new_tokens=t, top_p=0.9)
    hlo = sample_jit.lower(model, params, emb, pos, mask, jax.random.PRNGKey(0), cfg).compile().as_text()
    layer = (b * g, c.num_key_value_heads, p + t, c.head_dim)
    ops = cache_ops(hlo, layer, (c.num_hidden_layers,) + layer)
    assert ops.get("full:dynamic-update-slice") == 2, ops  # K and V: the new slot of every layer, in place
    assert not [k for k in ops if k.startswith("full:") and k != "full:dynamic-update-slice"], ops
    assert not [k for k in ops if k.endswith((":copy", ":transpose"))], ops


def test_sam2_stage_profile_depthwise_conv_forms_agree():
    """The profile's two depthwise 7x7 forms (XLA grouped conv, shifted multiply-adds) compute the same conv."""
    import jax
    import numpy as np

    from benchmarks.sam2_stage_profile import depthwise_grouped, depthwise_shifted

    x = jax.random.normal(jax.random.key(0), (2, 5, 4, 6))
    w = jax.random.normal(jax.random.key(1), (7, 7, 1, 6))
    got, want = np.asarray(depthwise_shifted(x, w)), np.asarray(depthwise_grouped(x, w))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # a direct sum at one output position (centre tap at (0, 0) sees rows/cols 0..3 of the 7x7 window)
    ref = sum(float(x[1, i, j, 2] * w[i + 3, j + 3, 0, 2]) for i in range(4) for j in range(4))
    assert abs(got[1, 0, 0, 2] - ref) < 1e-4


def test_depthwise_conv_smoke(tmp_path):
    """The three depthwise forms run, agree (the script asserts it) and report both passes for each."""
    res = _run("depthwise_conv", tmp_path)
    row = res["rows"][0]
    assert row["shape"] == [2, 5, 7, 8]
    for form in ("grouped", "shifted", "patches"):
        assert row[f"{form} fwd ms"] > 0 and row[f"{form} fwd+bwd ms"] > 0
    assert res["ratio"] == pytest.approx(row["grouped fwd ms"] / row["shifted fwd ms"])
