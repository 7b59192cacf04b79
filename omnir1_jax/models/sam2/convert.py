"""Hugging Face <-> Flax conversion for SAM2 (per tensor, bit-exact both ways), loading and orbax checkpoints.

A HF key maps to a Flax path by turning ``name.<i>`` list indices into ``name_<i>`` module names and renaming the
leaf: Linear ``weight`` -> ``kernel`` (transposed), Conv ``weight`` [O,I,kh,kw] -> ``kernel`` [kh,kw,I,O],
ConvTranspose ``weight`` [I,O,kh,kw] -> ``kernel`` [kh,kw,I,O], LayerNorm ``weight`` -> ``scale``, Embedding
``weight`` -> ``embedding``; raw parameters keep their name and layout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np

from omnir1_jax.models.sam2.config import Sam2Config

Path = tuple[str, ...]

_EMBEDDINGS = {"iou_token", "mask_tokens", "obj_score_token", "point_embed", "not_a_point_embed", "no_mask_embed"}
_CONV_TRANSPOSE = {"upscale_conv1", "upscale_conv2"}
_RAW = {"pos_embed", "pos_embed_window", "positional_embedding", "no_memory_embedding",
        "no_memory_positional_encoding", "memory_temporal_positional_encoding", "no_object_pointer",
        "occlusion_spatial_embedding_parameter", "scale"}


def _is_norm(module: str) -> bool:
    return "layer_norm" in module or module == "norm"


def hf_key_to_flax(key: str, ndim: int) -> tuple[Path, str]:
    """Maps a HF state-dict key and its rank to (Flax param path, transform name)."""
    parts = key.split(".")
    mods: list[str] = []
    for p in parts[:-1]:
        if p.isdigit():
            if not mods:
                raise ValueError(f"cannot map HF key {key!r}")
            mods[-1] = f"{mods[-1]}_{p}"
        else:
            mods.append(p)
    leaf = parts[-1]
    owner = mods[-1] if mods else ""
    if leaf in _RAW:
        return tuple(mods + [leaf]), "identity"
    if leaf == "bias":
        return tuple(mods + ["bias"]), "identity"
    if leaf != "weight":
        raise ValueError(f"unknown SAM2 parameter {key!r}")
    if owner in _EMBEDDINGS:
        return tuple(mods + ["embedding"]), "identity"
    if _is_norm(owner):
        return tuple(mods + ["scale"]), "identity"
    if ndim == 2:
        return tuple(mods + ["kernel"]), "linear"
    if ndim == 4:
        return tuple(mods + ["kernel"]), "conv_transpose" if owner in _CONV_TRANSPOSE else "conv"
    raise ValueError(f"cannot map HF key {key!r} of rank {ndim}")


def flax_path_to_hf(path: Path) -> tuple[str, str]:
    """Inverse of :func:`hf_key_to_flax`: (HF key, transform name)."""
    mods = []
    for p in path[:-1]:
        m = re.fullmatch(r"(.*)_(\d+)", p)
        mods.append(f"{m.group(1)}.{m.group(2)}" if m else p)
    leaf, owner = path[-1], path[-2] if len(path) > 1 else ""
    if leaf == "scale" and _is_norm(owner):
        return ".".join(mods + ["weight"]), "identity"
    if leaf in _RAW:
        return ".".join(mods + [leaf]), "identity"
    if leaf in ("bias", "embedding", "scale"):
        return ".".join(mods + ["bias" if leaf == "bias" else "weight"]), "identity"
    if leaf == "kernel":
        # rank decides linear vs conv; the caller passes it through `to_hf_tensor`
        return ".".join(mods + ["weight"]), "conv_transpose" if owner in _CONV_TRANSPOSE else "kernel"
    raise ValueError(f"unknown Flax parameter path {'/'.join(path)!r}")


def to_flax_tensor(x: np.ndarray, transform: str) -> np.ndarray:
    """Applies a HF -> Flax layout transform."""
    if transform == "identity":
        return x
    if transform == "linear":
        return np.ascontiguousarray(x.T)
    if transform == "conv":
        return np.ascontiguousarray(x.transpose(2, 3, 1, 0))
    if transform == "conv_transpose":
        return np.ascontiguousarray(x.transpose(2, 3, 0, 1))
    raise ValueError(f"unknown transform {transform!r}")


def to_hf_tensor(x: np.ndarray, transform: str) -> np.ndarray:
    """Applies the Flax -> HF layout transform (inverse of :func:`to_flax_tensor`)."""
    if transform == "identity":
        return x
    if transform == "conv_transpose":
        return np.ascontiguousarray(x.transpose(2, 3, 0, 1))
    if transform in ("kernel", "linear", "conv"):
        return np.ascontiguousarray(x.T if x.ndim == 2 else x.transpose(3, 2, 0, 1))
    raise ValueError(f"unknown transform {transform!r}")


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    out: dict[Path, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def hf_state_dict_to_flax(state: Mapping[str, Any], template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """HF state dict (numpy/torch tensors) -> Flax param tree; with ``template`` every key must land on a param."""
    known = _flatten(template) if template is not None else None
    flat: dict[Path, np.ndarray] = {}
    for key, value in state.items():
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        path, tf = hf_key_to_flax(key, arr.ndim)
        out = to_flax_tensor(arr, tf)
        if known is not None:
            if path not in known:
                raise ValueError(f"HF key {key!r} maps to unknown Flax path {'/'.join(path)!r}")
            if tuple(known[path].shape) != out.shape:
                raise ValueError(f"HF key {key!r}: shape {out.shape} != expected {tuple(known[path].shape)}")
        flat[path] = out
    return _unflatten(flat)


def flax_to_hf_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax param tree -> HF state dict of numpy arrays."""
    out = {}
    for path, v in _flatten(params).items():
        key, tf = flax_path_to_hf(path)
        out[key] = to_hf_tensor(np.asarray(v), tf)
    return out


# ----------------------------------------------------------------------------- loading
def init_template(cfg: Sam2Config, video: bool = True) -> dict[str, Any]:
    """Abstract (shape-only) param tree of the model, without allocating weights."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from omnir1_jax.models.sam2.model import Sam2Model, Sam2VideoModel

    s = cfg.image_size
    x = jnp.zeros((1, 3, s, s), jnp.float32)
    model = Sam2VideoModel(cfg) if video else Sam2Model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, method=type(model).init_all))
    return nn.unbox(shapes)["params"]


def _read_safetensors_dir(hf_dir: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {hf_dir}")
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(load_file(os.path.join(hf_dir, f)))
    return state


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drops a leading ``sam2.`` / ``model.`` wrapper prefix if every key has it."""
    for pre in ("sam2.", "model."):
        if state and all(k.startswith(pre) for k in state):
            return {k[len(pre):]: v for k, v in state.items()}
    return dict(state)


def load_hf(source: Any, video: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Loads (model, params) from a local HF directory (config.json + safetensors) or an in-memory HF model."""
    import jax.numpy as jnp

    from omnir1_jax.models.sam2.model import Sam2Model, Sam2VideoModel

    if isinstance(source, (str, os.PathLike)):
        from transformers import AutoConfig

        hf_cfg = AutoConfig.from_pretrained(str(source))
        state = _read_safetensors_dir(str(source))
    else:
        hf_cfg, state = source.config, source.state_dict()
    cfg = Sam2Config.from_hf(hf_cfg)
    state = _strip_prefix(state)
    if video is None:
        video = any(k.startswith("memory_attention.") for k in state)
    template = init_template(cfg, video)
    params = hf_state_dict_to_flax(state, template)
    missing = set(_flatten(template)) - set(_flatten(params))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {'/'.join(sorted(missing)[0])}")
    params = _unflatten({p: jnp.asarray(v) for p, v in _flatten(params).items()})
    return (Sam2VideoModel(cfg) if video else Sam2Model(cfg)), params


# ----------------------------------------------------------------------------- orbax checkpoints
def save_checkpoint(ckpt_dir: str, cfg: Sam2Config, params: Mapping[str, Any]) -> None:
    """Writes ``params`` (orbax) and ``sam2_config.json`` under ``ckpt_dir``."""
    import orbax.checkpoint as ocp

    ckpt_dir = os.path.abspath(ckpt_dir)
    os.makedirs(ckpt_dir, exist_ok=True)
    with open(os.path.join(ckpt_dir, "sam2_config.json"), "w") as f:
        f.write(cfg.to_json())
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(ckpt_dir, "params"), dict(params), force=True)


def load_checkpoint(ckpt_dir: str) -> tuple[Any, dict[str, Any]]:
    """Reads what :func:`save_checkpoint` wrote: (model, params); video model if memory params are present."""
    import orbax.checkpoint as ocp

    from omnir1_jax.models.sam2.model import Sam2Model, Sam2VideoModel

    ckpt_dir = os.path.abspath(ckpt_dir)
    with open(os.path.join(ckpt_dir, "sam2_config.json")) as f:
        cfg = Sam2Config.from_json(f.read())
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(ckpt_dir, "params"))
    video = "memory_attention" in params
    return (Sam2VideoModel(cfg) if video else Sam2Model(cfg)), params


def main(args: Iterable[str] | None = None) -> None:
    """``omnir1-convert sam2 --hf_dir DIR --out CKPT``: HF safetensors -> orbax params + config JSON."""
    p = argparse.ArgumentParser(prog="omnir1-convert sam2", description=main.__doc__)
    p.add_argument("--hf_dir", required=True, help="local HF SAM2 / SAM2-video checkpoint directory")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    a = p.parse_args(list(args) if args is not None else None)
    model, params = load_hf(a.hf_dir)
    save_checkpoint(a.out, model.cfg, params)
    n = sum(int(np.prod(v.shape)) for v in _flatten(params).values())
    print(json.dumps({"out": os.path.abspath(a.out), "params": n, "video": "memory_attention" in params}))


if __name__ == "__main__":
    main()
