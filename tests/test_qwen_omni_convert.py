"""HF <-> Flax conversion of the thinker: round trip, export, streaming CLI to orbax, config interop."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

from omnir1_jax.convert import run
from omnir1_jax.models.qwen_omni import (
    ThinkerConfig,
    export_hf,
    flax_to_hf,
    load_checkpoint,
    load_hf,
    qwen2_5_omni_3b,
    qwen2_5_omni_7b,
    tiny,
)
from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
from omnir1_jax.models.qwen_omni.convert import config_from_json, config_to_json, split_key
from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

D = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja",
                   "preprocessor_config.json")


@pytest.fixture(scope="module")
def hf_model():
    cfg = tiny(vocab_size=256, vision=dataclasses.replace(VisionConfig.tiny(), out_hidden_size=D),
               audio=dataclasses.replace(AudioConfig.tiny(), output_dim=D))
    torch.manual_seed(1)
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg.to_hf()).eval()


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_hf_to_flax_to_hf_round_trip_is_bit_identical(hf_model, tmp_path):
    model, params = load_hf(hf_model)
    export_hf(params, model.config, str(tmp_path))
    back = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    ref, got = hf_model.state_dict(), back.state_dict()
    assert set(ref) == set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    exported = dict(flax_to_hf(params))
    assert "model.layers.1.self_attn.q_proj.bias" in exported and "visual.merger.ln_q.weight" in exported
    assert len(exported) == len(ref)
    assert ThinkerConfig.from_hf(back.config) == model.config


def _write_tokenizer_files(d: str) -> None:
    for name in TOKENIZER_FILES:
        with open(os.path.join(d, name), "w") as f:
            f.write("{}" if name.endswith(".json") else "x")
    with open(os.path.join(d, "unrelated.bin"), "w") as f:
        f.write("junk")


def test_cli_converts_saved_thinker_checkpoint(hf_model, tmp_path):
    hf_dir, out = str(tmp_path / "hf"), str(tmp_path / "ckpt")
    hf_model.save_pretrained(hf_dir)
    _write_tokenizer_files(hf_dir)
    run(["qwen-omni", "--hf_dir", hf_dir, "--out", out])
    model, params = load_checkpoint(out)
    ref_model, ref_params = load_hf(hf_model)
    assert model.config == ref_model.config
    assert_trees_equal(params, ref_params)
    for name in TOKENIZER_FILES + ("config.json",):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "unrelated.bin"))


def test_full_omni_sharded_bf16_checkpoint_skips_talker(hf_model, tmp_path):
    ref_model, ref_params = load_hf(hf_model)
    tensors = {"thinker." + k: v.astype(ml_dtypes.bfloat16) for k, v in flax_to_hf(ref_params)}
    keys = sorted(tensors)
    half = len(keys) // 2
    save_file({k: tensors[k] for k in keys[:half]} | {"talker.codec_head.weight": np.zeros((3, 2), np.float32)},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in keys[half:]} | {"token2wav.x.weight": np.zeros((2,), np.float32)},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    Qwen2_5OmniConfig(thinker_config=hf_model.config.to_dict()).save_pretrained(str(tmp_path))
    model, params = load_hf(str(tmp_path))
    assert model.config == ref_model.config
    rounded = jax.tree_util.tree_map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32),
                                     ref_params)
    assert_trees_equal(params, rounded)
    run(["qwen-omni", "--hf_dir", str(tmp_path), "--out", str(tmp_path / "ckpt")])  # bf16 through orbax
    _, restored = load_checkpoint(str(tmp_path / "ckpt"))
    assert_trees_equal(restored, rounded)
    assert split_key("talker.codec_head.weight") is None
    assert split_key("thinker.model.layers.0.mlp.up_proj.weight") == ("text", "layers.0.mlp.up_proj.weight")
    assert split_key("model.language_model.norm.weight") == ("text", "norm.weight")
    assert split_key("model.visual.merger.ln_q.weight") == ("visual", "merger.ln_q.weight")


def test_cli_reports_missing_dir_and_missing_safetensors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(["qwen-omni", "--hf_dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    with open(tmp_path / "config.json", "w") as f:
        json.dump(tiny().to_hf().to_dict(), f)
    with pytest.raises(SystemExit) as e:
        run(["qwen-omni", "--hf_dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run(["bogus"])
    assert e.value.code == 2


def test_config_interop_presets_and_hashability(hf_model):
    cfg = ThinkerConfig.from_hf(hf_model.config)
    assert ThinkerConfig.from_hf(cfg.to_hf()) == cfg
    assert config_from_json(json.loads(json.dumps(config_to_json(cfg)))) == cfg
    assert hash(cfg) == hash(dataclasses.replace(cfg))
    c7, c3 = qwen2_5_omni_7b(), qwen2_5_omni_3b()
    assert (c7.hidden_size, c7.num_hidden_layers, c7.num_key_value_heads, c7.vocab_size) == (3584, 28, 4, 152064)
    assert (c3.hidden_size, c3.num_hidden_layers, c3.num_key_value_heads, c3.vocab_size) == (2048, 36, 2, 151936)
    assert c7.vision.out_hidden_size == 3584 and c3.audio.output_dim == 2048
    assert sum(c7.mrope_section) * 2 == c7.head_dim
    jax.jit(lambda x, c: x + c.hidden_size, static_argnums=1)(1, c3)  # usable as a static jit argument
