"""benchmarks/grpo_step.py + torch_recipe.py: the PyTorch recipe runs a real step; the JSON has its fields.

Our jitted step takes minutes to compile on the shared CI CPU, so the JSON test swaps OUR side for a cheap
stand-in (the real step is covered by tests/test_grpo_step.py); the torch recipe runs for real.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import grpo_step, torch_recipe  # noqa: E402

G, T, TG, K = 2, 4, 4, 2


@pytest.fixture(scope="module")
def recipe():
    """A TorchRecipe on random-weight transformers models built straight from our tiny configs."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Sam2VideoModel

    from omnir1_jax.models.sam2.config import Sam2Config
    from omnir1_jax.rl.task import tiny_thinker_config
    from omnir1_jax.rollout.grounding_spec import GroundingSpec
    from omnir1_jax.text import SyntheticTokenizer

    torch.manual_seed(0)
    tok = SyntheticTokenizer()
    cfg = tiny_thinker_config(tok)
    policy = Qwen2_5OmniThinkerForConditionalGeneration(cfg.to_hf())
    ref = Qwen2_5OmniThinkerForConditionalGeneration(cfg.to_hf())
    ref.load_state_dict(policy.state_dict())
    sam = Sam2VideoModel(Sam2Config.tiny().to_hf())
    host = grpo_step.host_batch(tok, cfg, 1)
    variant = GroundingSpec.__dataclass_fields__["variant"].default
    return torch_recipe.TorchRecipe(policy, ref, sam, tok, host, grpo_step.VGRID, grpo_step.HGRID, G=G, T=T, Tg=TG,
                                    K=K, query=grpo_step.QUERY, variant=variant, lr=1e-3)


def test_parse_regexes():
    text = ('<think>x</think><answer>{"start_time": "00:01.50", "end_time": "00:02.00", "description": "a dog"}, '
            '{"start_time": "bad"}</answer>')
    assert torch_recipe.parse_completion(text) == [(150, "a dog")]
    assert torch_recipe.parse_completion("no answer") == []
    m = torch_recipe.BOX_RE.search('[{"bbox_2d": [1, 2.5, 30, 40], "label": "x"}]')
    assert [float(v) for v in m.groups()] == [1.0, 2.5, 30.0, 40.0]
    assert torch_recipe.box_iou(np.array([0, 0, 9, 9.]), np.array([0, 0, 9, 9.])) == pytest.approx(1.0)
    assert torch_recipe.box_iou(np.array([0, 0, 9, 9.]), np.array([20, 20, 29, 29.])) == 0.0


def test_torch_recipe_step_runs_every_stage(recipe):
    before = {n: p.detach().clone() for n, p in recipe.policy.named_parameters()}
    ref_before = next(recipe.ref.parameters()).detach().clone()
    times = recipe.step()
    assert set(times) == {"generate", "parse", "ground", "sam2", "rewards", "update", "total"}
    assert all(v >= 0 for v in times.values())
    assert times["total"] == pytest.approx(sum(v for k, v in times.items() if k != "total"))
    assert recipe.last_tokens == (G, T)  # exactly T tokens per completion: no early EOS
    assert np.isfinite(recipe.last_loss)
    moved = [n for n, p in recipe.policy.named_parameters() if not torch.equal(p, before[n])]
    assert moved and not any(n.startswith(("visual", "audio_tower")) for n in moved)  # towers frozen
    assert torch.equal(next(recipe.ref.parameters()), ref_before)  # the reference never moves


def test_json_fields(recipe, tmp_path, monkeypatch):
    """main(--smoke --json) with our side stubbed: interleaving, breakdown, ratio and JSON plumbing."""
    import jax.numpy as jnp

    env = {"G": G, "T": T, "Tg": TG, "frames": 4, "prompt_len": 21,
           "s": types.SimpleNamespace(max_keyframes=K, max_objects=3, sam_tracks_per_clip=G)}
    monkeypatch.setattr(grpo_step, "build_env", lambda g, t, b, **kw: env)
    monkeypatch.setattr(grpo_step, "theirs_recipe", lambda e, tmp: recipe)
    stub = lambda: {"completion_len": jnp.float32(T), "sam_tracks_dropped": jnp.float32(0),  # noqa: E731
                    "sam_tracks_prompted": jnp.float32(1)}
    monkeypatch.setattr(grpo_step, "ours_fns", lambda e, split: {"rollout": stub, "update": stub} if split
                        else {"step": stub})
    monkeypatch.setattr(grpo_step, "smoke_shape", lambda: (G, T, 1))
    path = tmp_path / "grpo.json"
    out = grpo_step.main(["--smoke", "--json", str(path)])
    on_disk = json.loads(path.read_text())
    assert on_disk["ratio"] == pytest.approx(out["ratio"]) and out["ratio"] > 0
    row = on_disk["row"]
    for k in ("ours_step_s", "theirs_step_s", "ours_compile_s", "ours_rollout_half_s", "ours_update_half_s"):
        assert row[k] >= 0, k
    assert set(row["theirs_stages_s"]) >= {"generate", "ground", "sam2", "rewards", "update"}
    assert row["completions"] == G and row["max_new_tokens"] == T and row["micro_batch_completions"] == min(8, G)
    assert row["frames"] == 4 and row["prompt_len"] == 21
    assert row["sam_tracks_per_clip"] == G and row["sam_tracks_dropped"] == 0 and row["sam_tracks_prompted"] == 1
    assert on_disk["environment"]["jax_backend"] == "cpu"


def test_grpo_scaling_cases_and_slopes():
    """The axes through the base case, and log-log slopes fitted along each (prompt length by its real value)."""
    from benchmarks import grpo_scaling

    base = {"G": 4, "max_new_tokens": 16, "frames": 4, "prompt_extra": 0}
    values = {"G": [2, 4, 8], "max_new_tokens": [16, 32], "frames": [4, 8], "prompt_extra": [0, 256]}
    got = grpo_scaling.cases(values, base, list(grpo_scaling.AXES), "axes")
    assert got[0] == base and len(got) == 1 + 2 + 1 + 1 + 1  # no duplicate of the base case
    assert {c["G"] for c in got if c["max_new_tokens"] == 16 and c["frames"] == 4 and c["prompt_extra"] == 0} \
        == {2, 4, 8}
    full = grpo_scaling.cases(values, base, [], "full")
    assert len(full) == 6 and all(c["frames"] == 4 for c in full)
    # Step time ~ G (slope 1), ~ prompt_len**2 (slope 2), flat in T and frames; compile flat everywhere.
    rows = []
    for c in got:
        plen = 760 + c["prompt_extra"]
        rows.append({**c, "prompt_len": plen, "compile_s": 30.0, "step_s": 0.01 * c["G"] * (plen / 760) ** 2})
    fit = grpo_scaling.slopes(rows, base)
    assert fit["step_s_vs_G"] == pytest.approx(1.0) and fit["step_s_vs_prompt_len"] == pytest.approx(2.0)
    assert fit["step_s_vs_max_new_tokens"] == pytest.approx(0.0, abs=1e-9)
    assert fit["compile_s_vs_frames"] == pytest.approx(0.0, abs=1e-9)
