"""SAM2 config and HF <-> Flax conversion: round trips, errors, local-dir loading, orbax checkpoints."""

import json

import jax
import numpy as np
import pytest

from omnir1_jax.models.sam2 import Sam2Config, load_checkpoint, load_hf, save_checkpoint
from omnir1_jax.models.sam2.convert import (flax_path_to_hf, flax_to_hf_state_dict, hf_key_to_flax,
                                            hf_state_dict_to_flax, init_template, main)


@pytest.fixture(scope="module")
def hf_video():
    import torch
    from transformers import Sam2VideoModel as HfVideo

    torch.manual_seed(0)
    hf = HfVideo(Sam2Config.tiny().to_hf()).eval()
    with torch.no_grad():
        for t in hf.parameters():
            t.add_(torch.randn(t.shape))  # no all-zero tensors: makes the bit-exact checks meaningful
    return hf


def test_config_roundtrips_and_presets():
    tiny = Sam2Config.tiny()
    assert Sam2Config.from_hf(tiny.to_hf()) == tiny
    assert Sam2Config.from_json(tiny.to_json()) == tiny and hash(tiny) == hash(Sam2Config.from_json(tiny.to_json()))
    large = Sam2Config.preset("sam2.1_hiera_large")
    assert len(large.block_specs()) == 48 and large.embed_dim_per_stage[-1] == 1152
    assert Sam2Config.preset("hiera-base-plus").window_pos_embed_bkg_size == (14, 14)
    assert Sam2Config.preset("hiera_small").blocks_per_stage == (1, 2, 11, 2)
    assert Sam2Config.hiera_tiny() == Sam2Config.from_hf(Sam2Config().to_hf())  # HF defaults = sam2.1 tiny
    with pytest.raises(ValueError, match="unknown SAM2 preset"):
        Sam2Config.preset("hiera_huge")
    with pytest.raises(ValueError, match="unknown Sam2Config fields"):
        Sam2Config.from_dict({"bogus": 1})


def test_key_mapping_per_tensor():
    assert hf_key_to_flax("mask_decoder.transformer.layers.0.self_attn.q_proj.weight", 2) == (
        ("mask_decoder", "transformer", "layers_0", "self_attn", "q_proj", "kernel"), "linear")
    assert hf_key_to_flax("vision_encoder.neck.convs.2.weight", 4)[1] == "conv"
    assert hf_key_to_flax("mask_decoder.upscale_conv1.weight", 4)[1] == "conv_transpose"
    assert hf_key_to_flax("memory_encoder.memory_fuser.layers.1.scale", 1)[0][-2:] == ("layers_1", "scale")
    assert hf_key_to_flax("memory_attention.layer_norm.weight", 1)[0][-1] == "scale"
    assert hf_key_to_flax("prompt_encoder.point_embed.weight", 2)[0][-1] == "embedding"
    assert flax_path_to_hf(("memory_encoder", "memory_fuser", "layers_1", "layer_norm", "scale"))[0] == \
        "memory_encoder.memory_fuser.layers.1.layer_norm.weight"
    with pytest.raises(ValueError, match="unknown SAM2 parameter"):
        hf_key_to_flax("mask_decoder.iou_token.running_mean", 1)


def test_roundtrip_bit_identical_and_errors(hf_video):
    state = {k: v.numpy() for k, v in hf_video.state_dict().items()}
    template = init_template(Sam2Config.tiny(), video=True)
    params = hf_state_dict_to_flax(state, template)
    assert jax.tree.structure(params) == jax.tree.structure(template)  # every param covered, nothing extra
    back = flax_to_hf_state_dict(params)
    assert set(back) == set(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    with pytest.raises(ValueError, match="unknown Flax path"):
        hf_state_dict_to_flax({**state, "memory_encoder.extra_conv.weight": np.zeros((2, 2, 1, 1))}, template)
    with pytest.raises(ValueError, match="shape"):
        hf_state_dict_to_flax({"no_object_pointer": np.zeros((1, 3))}, template)


def test_load_local_dir_and_orbax_checkpoint(hf_video, tmp_path):
    hf_dir = tmp_path / "hf"
    hf_video.save_pretrained(hf_dir)  # safetensors + config.json
    assert any(p.suffix == ".safetensors" for p in hf_dir.iterdir())
    model, params = load_hf(str(hf_dir))
    _, params_mem = load_hf(hf_video)
    assert model.cfg == Sam2Config.tiny()
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_mem)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    out = tmp_path / "ckpt"
    main(["--hf_dir", str(hf_dir), "--out", str(out)])
    assert json.loads((out / "sam2_config.json").read_text())["image_size"] == 64
    model2, params2 = load_checkpoint(str(out))
    assert model2.cfg == model.cfg and type(model2) is type(model)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    save_checkpoint(str(tmp_path / "again"), model.cfg, params2)  # overwriting-safe second save
    assert (tmp_path / "again" / "params").exists()
