"""Parity of the Flax vision / audio towers with transformers' Qwen2.5-Omni encoders (tiny random weights)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict, unflatten_dict
from transformers import Qwen2_5OmniAudioEncoderConfig, Qwen2_5OmniVisionEncoderConfig
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf
from transformers.vision_utils import get_vision_window_index

from omnir1_jax.models.qwen_omni.audio import (
    AudioConfig,
    AudioEncoder,
    audio_flax_to_hf,
    audio_hf_to_flax,
    audio_output_lengths,
    audio_plan,
    sinusoid_table,
)
from omnir1_jax.models.qwen_omni.encoder_blocks import segment_plan
from omnir1_jax.models.qwen_omni.vision import (
    VisionConfig,
    VisionEncoder,
    num_merged_tokens,
    num_patches,
    vision_flax_to_hf,
    vision_hf_to_flax,
    vision_plan,
)
from omnir1_jax.parallel.rules import LOGICAL_AXES

TOL = 1e-5
IMAGE = ((1, 6, 8),)  # 3x4 merged tokens -> four 2x2 windows, two of them partial
TWO_IMAGES = ((1, 4, 4), (1, 6, 10))
VIDEO = ((3, 4, 6),)
AUDIO_LENS = (37, 16)  # chunk = 16 frames: 37 = 16 + 16 + 5 (ragged tail); 16 = exactly one chunk


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Replaces HF's near-trivial init (zero biases, unit norms) with O(1)-output random weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * noise if ("norm" in name or "ln_" in name) else 0.1 * noise)
            else:
                p.copy_(noise / np.sqrt(p[0].numel()))


def _convert(state_dict, to_flax):
    flat = {}
    for key, value in state_dict.items():
        path, array = to_flax(key, value.detach().numpy())
        flat[path] = array
    return unflatten_dict(flat)


@pytest.fixture(scope="module")
def vision():
    cfg = VisionConfig.tiny()
    hcfg = Qwen2_5OmniVisionEncoderConfig(**cfg.to_hf_dict())
    hcfg._attn_implementation = "eager"
    model = hf.Qwen2_5OmniVisionEncoder(hcfg).eval()
    _randomize(model, 0)
    return cfg, model, _convert(model.state_dict(), vision_hf_to_flax)


@pytest.fixture(scope="module")
def audio():
    cfg = AudioConfig.tiny()
    hcfg = Qwen2_5OmniAudioEncoderConfig(**cfg.to_hf_dict())
    hcfg._attn_implementation = "eager"
    model = hf.Qwen2_5OmniAudioEncoder(hcfg).eval()
    _randomize(model, 1)
    return cfg, model, _convert(model.state_dict(), audio_hf_to_flax)


def _vision_inputs(cfg, grid, seed=0):
    return np.random.RandomState(seed).randn(num_patches(grid), cfg.patch_dim).astype(np.float32)


def _vision_ref(model, x, grid):
    with torch.no_grad():
        return model(torch.tensor(x), torch.tensor(grid)).pooler_output.numpy()


def _jitted(module, grid):
    """A jitted apply with the grid / lengths closed over as static Python values."""
    return jax.jit(lambda params, x: module.apply({"params": params}, x, grid))


# ---- configs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "qwen25_omni_7b", "qwen25_omni_3b"])
def test_configs_round_trip_through_hf(name):
    vcfg, acfg = getattr(VisionConfig, name)(), getattr(AudioConfig, name)()
    assert VisionConfig.from_hf(Qwen2_5OmniVisionEncoderConfig(**vcfg.to_hf_dict())) == vcfg
    assert AudioConfig.from_hf(Qwen2_5OmniAudioEncoderConfig(**acfg.to_hf_dict())) == acfg
    if name != "tiny":  # the released towers: 32-layer 1280-wide ViT and Whisper-large-v3 encoder
        assert (vcfg.depth, vcfg.hidden_size, vcfg.num_heads, vcfg.intermediate_size) == (32, 1280, 16, 3420)
        assert (acfg.encoder_layers, acfg.d_model, acfg.num_mel_bins, acfg.n_window) == (32, 1280, 128, 100)
        assert vcfg.out_hidden_size == acfg.output_dim == {"qwen25_omni_7b": 3584, "qwen25_omni_3b": 2048}[name]


# ---- host-side index plans against the HF helpers ------------------------------------------------------------


@pytest.mark.parametrize("grid", [IMAGE, TWO_IMAGES, VIDEO, ((2, 8, 8), (1, 2, 2))])
def test_vision_plan_matches_hf_window_index(grid):
    cfg = VisionConfig.tiny()
    plan = vision_plan(grid, cfg)
    idx, cu = get_vision_window_index(torch.tensor(grid), cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
    np.testing.assert_array_equal(plan.window_index, idx.numpy())
    np.testing.assert_array_equal(plan.window_cu, cu.numpy())
    assert plan.full_cu[-1] == num_patches(grid) and len(plan.full_cu) == 1 + sum(t for t, _, _ in grid)


def test_segment_plan_packs_and_unpacks():
    plan = segment_plan([0, 3, 3, 7, 8])  # the empty segment is dropped
    seq = np.arange(8) * 10
    packed = seq[plan.gather]  # [3, 4]
    assert packed.shape == (3, 4)
    np.testing.assert_array_equal(packed[plan.valid], seq)
    np.testing.assert_array_equal(packed.reshape(-1)[plan.back], seq)


def test_audio_plan_matches_hf_helpers():
    n_window, lens = 8, (37, 16, 5, 32)
    plan = audio_plan(lens, n_window)
    feats = torch.arange(sum(lens), dtype=torch.float32)[None, :] + 1.0
    padded, chunk_lens = hf.chunk_and_pad_features(feats, torch.tensor(lens), n_window)
    np.testing.assert_array_equal(np.where(plan.frame_mask, plan.frame_gather + 1.0, 0.0), padded[:, 0].numpy())
    np.testing.assert_array_equal(plan.valid_index, hf.get_valid_indices(chunk_lens).numpy())
    np.testing.assert_array_equal(plan.pool_index, hf.get_pool_indices(torch.tensor(lens)).numpy())
    assert len(plan.pool_index) == sum(audio_output_lengths(lens)[1])


def test_sinusoids_match_hf_within_float32_rounding():
    # libm exp/sin differ from torch's by an ulp; at position p an ulp of the angle is ~p * 1.2e-7.
    ref = hf.SinusoidsPositionEmbedding(128, 64).positional_embedding.numpy()
    np.testing.assert_allclose(sinusoid_table(128, 64)[:16], ref[:16], atol=1e-6, rtol=0)
    np.testing.assert_allclose(sinusoid_table(128, 64), ref, atol=1e-5, rtol=0)


# ---- weight mapping ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tower, to_flax, to_hf, module, args",
    [
        ("vision", vision_hf_to_flax, vision_flax_to_hf, lambda c: VisionEncoder(c), lambda c: (
            jnp.zeros((num_patches(IMAGE), c.patch_dim)), IMAGE)),
        ("audio", audio_hf_to_flax, audio_flax_to_hf, lambda c: AudioEncoder(c), lambda c: (
            jnp.zeros((c.num_mel_bins, sum(AUDIO_LENS))), AUDIO_LENS)),
    ],
    ids=["vision", "audio"],
)
def test_weight_mapping_round_trip_and_coverage(request, tower, to_flax, to_hf, module, args):
    cfg, model, params = request.getfixturevalue(tower)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for key, value in sd.items():  # HF -> Flax -> HF is bit-identical
        back_key, back = to_hf(*to_flax(key, value))
        assert back_key == key and back.dtype == value.dtype and np.array_equal(back, value), key
    # Every Flax param is produced by exactly one HF tensor, with the shape init creates, and vice versa.
    abstract = jax.eval_shape(lambda: module(cfg).init(jax.random.PRNGKey(0), *args(cfg)))
    init_flat = flatten_dict(nn.meta.unbox(abstract)["params"])
    conv_flat = flatten_dict(params)
    assert set(init_flat) == set(conv_flat) and len(conv_flat) == len(sd)
    for path, leaf in init_flat.items():
        assert leaf.shape == conv_flat[path].shape, path
    with pytest.raises(KeyError, match="blocks.0.attn.qkv.weight"):
        to_flax("blocks.0.attn.qkv.weight", np.zeros((3, 3)))
    with pytest.raises(KeyError):
        to_hf(("nonsense", "kernel"), np.zeros((3, 3)))


@pytest.mark.parametrize("tower", ["vision", "audio"])
def test_every_param_has_known_logical_axes(tower):
    cfg = VisionConfig.tiny() if tower == "vision" else AudioConfig.tiny()
    if tower == "vision":
        fn = lambda: VisionEncoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((16, cfg.patch_dim)), ((1, 4, 4),))
    else:
        fn = lambda: AudioEncoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((cfg.num_mel_bins, 20)), (20,))
    boxed = flatten_dict(jax.eval_shape(fn)["params"])
    assert boxed
    for path, leaf in boxed.items():
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == len(leaf.value.shape), path
        assert all(n in LOGICAL_AXES for n in leaf.names), (path, leaf.names)


# ---- numerical parity (fp32, jitted, static grids / lengths) -------------------------------------------------


@pytest.mark.parametrize("grid", [IMAGE, TWO_IMAGES, VIDEO], ids=["image", "two_images", "video"])
def test_vision_parity(vision, grid):
    cfg, model, params = vision
    x = _vision_inputs(cfg, grid)
    ref = _vision_ref(model, x, grid)
    out = np.asarray(_jitted(VisionEncoder(cfg), grid)(params, x))
    assert out.shape == (num_merged_tokens(grid), cfg.out_hidden_size) == ref.shape
    assert np.abs(ref).max() > 0.1  # non-trivial outputs
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("lens", [AUDIO_LENS, (5, 50, 9)], ids=["two_clips", "three_clips"])
def test_audio_parity(audio, lens):
    cfg, model, params = audio
    x = np.random.RandomState(2).randn(cfg.num_mel_bins, sum(lens)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.tensor(x), feature_lens=torch.tensor(lens)).last_hidden_state.numpy()
    out = np.asarray(_jitted(AudioEncoder(cfg), lens)(params, x))
    assert out.shape == (sum(audio_output_lengths(lens)[1]), cfg.output_dim) == ref.shape
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


# ---- bf16 compute with fp32 params, remat ----------------------------------------------------------------------


def test_vision_bf16_and_remat(vision):
    cfg, model, params = vision
    x = _vision_inputs(cfg, TWO_IMAGES)
    ref = _vision_ref(model, x, TWO_IMAGES)
    out = _jitted(VisionEncoder(cfg, dtype=jnp.bfloat16, remat=True), TWO_IMAGES)(params, x)
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out, np.float32) - ref).max()
    assert err < 0.05 * np.abs(ref).max(), err
    # remat changes memory, not values: its gradient matches the plain module's.
    loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, TWO_IMAGES) ** 2)))
    g_plain, g_remat = loss(VisionEncoder(cfg))(params), loss(VisionEncoder(cfg, remat=True))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_plain, g_remat)


def test_audio_bf16(audio):
    cfg, model, params = audio
    x = np.random.RandomState(3).randn(cfg.num_mel_bins, sum(AUDIO_LENS)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.tensor(x), feature_lens=torch.tensor(AUDIO_LENS)).last_hidden_state.numpy()
    out = _jitted(AudioEncoder(cfg, dtype=jnp.bfloat16, remat=True), AUDIO_LENS)(params, x)
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out, np.float32) - ref).max()
    assert err < 0.05 * np.abs(ref).max(), err


# ---- sharded over a (data, fsdp, tensor) mesh with the train rules ---------------------------------------------


@pytest.mark.parametrize("tower", ["vision", "audio"])
def test_sharded_forward_matches_reference(request, tower):
    from omnir1_jax import parallel

    cfg, model, params = request.getfixturevalue(tower)
    if tower == "vision":
        module, static, x = VisionEncoder(cfg), IMAGE, _vision_inputs(cfg, IMAGE)
        ref = _vision_ref(model, x, IMAGE)
    else:
        module, static = AudioEncoder(cfg), AUDIO_LENS
        x = np.random.RandomState(4).randn(cfg.num_mel_bins, sum(AUDIO_LENS)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.tensor(x), feature_lens=torch.tensor(AUDIO_LENS)).last_hidden_state.numpy()
    mesh = parallel.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = parallel.get_rules("train")
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.asarray(x), static)["params"])
    sharded = jax.device_put(params, parallel.param_shardings(abstract, mesh, rules))
    assert parallel.sharded_fraction(sharded) > 0.5
    with parallel.mesh_rules(mesh, rules):
        out = np.asarray(_jitted(module, static)(sharded, x))
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
