"""SAM2 image model: parity with transformers' Sam2Model, shared-feature decoding, axis names, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from omnir1_jax.models.sam2 import Sam2Config, Sam2Model, load_hf
from omnir1_jax.parallel.rules import LOGICAL_AXES, get_rules


def randomize(hf_model: torch.nn.Module, seed: int) -> None:
    """Fan-in scaled random weights (HF's init leaves logits ~0, which would make parity trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in hf_model.named_parameters():
            if t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(np.prod(t.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module")
def hf_and_jax():
    from transformers import Sam2Model as HfSam2Model

    hf = HfSam2Model(Sam2Config.tiny().to_hf(video=False)).eval()
    randomize(hf, 0)
    model, params = load_hf(hf)
    assert isinstance(model, Sam2Model)
    return hf, model, params


@pytest.fixture(scope="module")
def pixels():
    return np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)


def test_points_and_mask_prompt_parity_single_mask(hf_and_jax, pixels):
    hf, model, params = hf_and_jax
    pts = np.array([[[[10, 20], [30, 30]]], [[[50, 5], [0, 0]]]], np.float32)
    labels = np.array([[[1, 0]], [[1, -10]]], np.int32)
    masks = np.random.RandomState(3).randn(2, 1, 16, 16).astype(np.float32)  # dense mask prompt
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixels), input_points=torch.from_numpy(pts),
                 input_labels=torch.from_numpy(labels), input_masks=torch.from_numpy(masks), multimask_output=False)
    fn = lambda p, x, q, lab, m: model.apply({"params": p}, x, input_points=q, input_labels=lab,  # noqa: E731
                                             input_masks=m, multimask_output=False)
    out = jax.jit(fn)(params, pixels, pts, labels, masks)
    for key in ("pred_masks", "iou_scores", "object_score_logits"):
        np.testing.assert_allclose(np.asarray(out[key]), getattr(ref, key).numpy(), atol=1e-4, rtol=0)


def test_shared_features_vmapped_decode(hf_and_jax, pixels):
    """Box parity (2 objects, multimask): features once, G prompt sets decoded with vmap == HF per set."""
    hf, model, params = hf_and_jax
    boxes = np.random.RandomState(1).uniform(0, 32, (2, 2, 2, 4)).astype(np.float32)  # [G, B, O, 4]
    boxes[..., 2:] += 20

    def run(p, x, b):
        feats = model.apply({"params": p}, x, method=Sam2Model.image_features)
        dec = lambda bb: model.apply({"params": p}, feats, input_boxes=bb, method=Sam2Model.decode)  # noqa
        return jax.vmap(dec)(b)

    out = jax.jit(run)(params, pixels, boxes)
    shared = np.asarray(out["pred_masks"])
    assert shared.shape == (2, 2, 2, 3, 16, 16)
    assert out["iou_scores"].shape == (2, 2, 2, 3) and out["object_score_logits"].shape == (2, 2, 2, 1)
    for g in range(2):
        with torch.no_grad():
            ref = hf(pixel_values=torch.from_numpy(pixels), input_boxes=torch.from_numpy(boxes[g]))
        assert np.abs(ref.pred_masks.numpy()).max() > 1.0  # non-trivial logits
        for key in ("pred_masks", "iou_scores", "object_score_logits"):
            np.testing.assert_allclose(np.asarray(out[key][g]), getattr(ref, key).numpy(), atol=1e-4, rtol=0)
    assert np.abs(shared[0] - shared[1]).max() > 1e-2  # different prompts, different masks


def test_every_param_has_logical_names():
    cfg = Sam2Config.tiny()
    from omnir1_jax.models.sam2 import Sam2VideoModel

    model = Sam2VideoModel(cfg)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 64, 64)),
                                              method=Sam2VideoModel.init_all))["params"]
    leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) > 100
    rules = dict(get_rules("segmenter"))
    for path, leaf in leaves:
        assert isinstance(leaf, nn.Partitioned), jax.tree_util.keystr(path)
        assert len(leaf.names) == leaf.value.ndim, jax.tree_util.keystr(path)
        for name in leaf.names:
            assert name in LOGICAL_AXES and name in rules, (jax.tree_util.keystr(path), name)


def test_sharded_image_model_matches(hf_and_jax):
    """Batch over (data, fsdp) on the 8-device mesh, params replicated by the segmenter rules: same outputs."""
    from omnir1_jax.parallel.mesh import make_mesh
    from omnir1_jax.parallel.sharding import mesh_rules, param_shardings

    model, params = hf_and_jax[1:]
    mesh = make_mesh([("data", 2), ("fsdp", 4)])
    rules = get_rules("segmenter")
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 64, 64)),
                                              method=Sam2Model.init_all))["params"]
    p_shard = param_shardings(boxed, mesh, rules)
    x = np.random.RandomState(2).randn(8, 3, 64, 64).astype(np.float32)
    b = np.tile(np.array([[[4, 4, 40, 44]]], np.float32), (8, 1, 1))
    fn = lambda p, x, b: model.apply({"params": p}, x, input_boxes=b)["pred_masks"]  # noqa: E731
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    with mesh_rules(mesh, rules):
        sharded = jax.jit(fn, in_shardings=(p_shard, batch, batch), out_shardings=batch)(
            jax.device_put(params, p_shard), jax.device_put(x, batch), jax.device_put(b, batch))
    assert len(sharded.sharding.device_set) == 8 and not sharded.sharding.is_fully_replicated
    hf = hf_and_jax[0]
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x), input_boxes=torch.from_numpy(b)).pred_masks.numpy()
    np.testing.assert_allclose(np.asarray(sharded), ref, atol=1e-4, rtol=0)


def test_tiny_at_128_pixels_matches_hf_and_shares_the_64_pixel_parameter_shapes():
    """``Sam2Config.tiny(128)``: box parity with transformers at 128x128 input (8x8 lowest features), and the
    same parameter shapes as the 64-pixel preset, so a 64-pixel checkpoint initialises it (warmstart --init)."""
    from transformers import Sam2Model as HfSam2Model

    cfg = Sam2Config.tiny(128)
    assert cfg.image_size == 128 and cfg.mask_size == 32 and cfg.memory_attention_rope_feat_sizes == (8, 8)
    hf = HfSam2Model(cfg.to_hf(video=False)).eval()
    randomize(hf, 1)
    model, params = load_hf(hf)
    assert model.cfg.image_size == 128 and model.cfg.backbone_feature_sizes == cfg.backbone_feature_sizes
    x = np.random.RandomState(2).randn(1, 3, 128, 128).astype(np.float32)
    boxes = np.array([[[20.0, 30.0, 90.0, 100.0]]], np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x), input_boxes=torch.from_numpy(boxes))
    out = jax.jit(lambda p, a, b: model.apply({"params": p}, a, input_boxes=b))(params, x, boxes)
    assert out["pred_masks"].shape[-2:] == (32, 32)
    for key in ("pred_masks", "iou_scores", "object_score_logits"):
        np.testing.assert_allclose(np.asarray(out[key]), getattr(ref, key).numpy(), atol=1e-4, rtol=0)

    small = HfSam2Model(Sam2Config.tiny().to_hf(video=False)).eval()
    _, small_params = load_hf(small)
    shapes = lambda t: jax.tree.map(np.shape, t)  # noqa: E731
    assert shapes(small_params) == shapes(params)
    with pytest.raises(ValueError, match="multiple of 64"):
        Sam2Config.tiny(96)
