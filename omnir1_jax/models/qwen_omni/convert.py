"""HF <-> Flax weights for the thinker: per-tensor mapping, in-memory load/export, streaming to orbax.

HF keys are accepted in every layout seen in the wild: full Qwen2.5-Omni (``thinker.`` prefix; ``talker.`` and
``token2wav.`` skipped), thinker-only legacy (``model.layers…``, ``visual…``, ``audio_tower…``) and
transformers-5 in-memory (``model.language_model…``, ``model.visual…``).  Export writes the legacy thinker
layout, which every transformers version loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from omnir1_jax.models.qwen_omni.config import ThinkerConfig

SKIP_PREFIXES = ("talker.", "token2wav.")
_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
CONFIG_NAME = "thinker_config.json"
PARAMS_DIR = "params"


def split_key(key: str) -> tuple[str, str] | None:
    """``(part, rest)`` with part in {text, visual, audio, lm_head}; None for talker/token2wav/unknown."""
    if key.startswith(SKIP_PREFIXES):
        return None
    if key.startswith("thinker."):
        key = key[len("thinker."):]
    for part in ("visual", "audio_tower"):
        for pre in (f"model.{part}.", f"{part}."):
            if key.startswith(pre):
                return ("visual" if part == "visual" else "audio"), key[len(pre):]
    if key == "lm_head.weight":
        return "lm_head", key
    for pre in ("model.language_model.", "model."):
        if key.startswith(pre):
            return "text", key[len(pre):]
    return None


# ---------------------------------------------------------------- text decoder: one tensor at a time
def text_target(rest: str, c: ThinkerConfig) -> tuple[tuple[str, ...], int | None, Callable[[np.ndarray], np.ndarray]]:
    """Flax path, layer index (None if unstacked) and layout transform for one HF text tensor."""
    D, H, KV, hd = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    ident = lambda w: w  # noqa: E731
    if rest == "embed_tokens.weight":
        return ("token_embedding", "embedding"), None, ident
    if rest == "norm.weight":
        return ("decoder", "norm", "scale"), None, ident
    m = _LAYER.fullmatch(rest)
    if not m:
        raise KeyError(f"unknown Qwen2.5-Omni text weight {rest!r}")
    i, sub = int(m.group(1)), m.group(2)
    base = ("decoder", "layers")
    heads = {"q_proj": H, "k_proj": KV, "v_proj": KV}
    for norm in ("input_layernorm", "post_attention_layernorm"):
        if sub == f"{norm}.weight":
            return base + (norm, "scale"), i, ident
    pm = re.fullmatch(r"self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)", sub)
    if pm:
        n = heads[pm.group(1)]
        if pm.group(2) == "weight":
            return base + ("self_attn", pm.group(1), "kernel"), i, lambda w: w.T.reshape(D, n, hd)
        return base + ("self_attn", pm.group(1), "bias"), i, lambda w: w.reshape(n, hd)
    if sub == "self_attn.o_proj.weight":
        return base + ("self_attn", "o_proj", "kernel"), i, lambda w: w.T.reshape(H, hd, D)
    mm = re.fullmatch(r"mlp\.(gate_proj|up_proj|down_proj)\.weight", sub)
    if mm:
        return base + ("mlp", mm.group(1), "kernel"), i, lambda w: w.T
    raise KeyError(f"unknown Qwen2.5-Omni text weight {rest!r}")


def text_to_hf(path: tuple[str, ...], value: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """HF (legacy layout) keys and tensors for one Flax text param (stacked layers are unstacked)."""
    if path == ("token_embedding", "embedding"):
        yield "model.embed_tokens.weight", value
    elif path == ("decoder", "norm", "scale"):
        yield "model.norm.weight", value
    elif path == ("lm_head", "kernel"):
        yield "lm_head.weight", np.ascontiguousarray(value.T)
    elif path[:2] == ("decoder", "layers"):
        sub, leaf = path[2:-1], path[-1]
        name = ".".join(sub)
        for i in range(value.shape[0]):
            w = value[i]
            if leaf == "scale":
                out = w
            elif leaf == "bias":
                out = w.reshape(-1)
            elif sub[-1] in ("q_proj", "k_proj", "v_proj"):
                out = w.reshape(w.shape[0], -1).T
            elif sub[-1] == "o_proj":
                out = w.reshape(-1, w.shape[-1]).T
            else:
                out = w.T
            suffix = "weight" if leaf in ("scale", "kernel") else "bias"
            yield f"model.layers.{i}.{name}.{suffix}", np.ascontiguousarray(out)
    else:
        raise KeyError(f"unknown thinker param path {path!r}")


# ---------------------------------------------------------------- whole trees
def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def hf_to_flax(tensors: Iterable[tuple[str, Any]], config: ThinkerConfig,
               to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> dict:
    """Flax params from ``(hf_key, tensor)`` pairs, consumed one at a time (stacked layers preallocated)."""
    from omnir1_jax.models.qwen_omni.audio_config import audio_hf_to_flax
    from omnir1_jax.models.qwen_omni.vision_config import vision_hf_to_flax

    params: dict = {}
    stacks: dict[tuple[str, ...], np.ndarray] = {}
    seen: dict[tuple[str, ...], set] = {}
    for key, tensor in tensors:
        where = split_key(key)
        if where is None:
            continue
        part, rest = where
        if rest.endswith("rotary_emb.inv_freq"):  # non-persistent buffer some old exports contain
            continue
        if part == "visual":
            if config.vision is None:
                continue
            path, value = vision_hf_to_flax(rest, to_numpy(tensor))
            _set(params, ("visual",) + tuple(path), value)
        elif part == "audio":
            if config.audio is None:
                continue
            path, value = audio_hf_to_flax(rest, to_numpy(tensor))
            _set(params, ("audio_tower",) + tuple(path), value)
        elif part == "lm_head":
            if not config.tie_word_embeddings:
                _set(params, ("lm_head", "kernel"), np.ascontiguousarray(to_numpy(tensor).T))
        else:
            path, layer, fn = text_target(rest, config)
            value = np.ascontiguousarray(fn(to_numpy(tensor)))
            if layer is None:
                _set(params, path, value)
                continue
            if path not in stacks:
                stacks[path] = np.empty((config.num_hidden_layers,) + value.shape, value.dtype)
                seen[path] = set()
            stacks[path][layer] = value
            seen[path].add(layer)
    for path, arr in stacks.items():
        if len(seen[path]) != config.num_hidden_layers:
            raise ValueError(f"{'/'.join(path)}: found layers {sorted(seen[path])}, "
                             f"expected {config.num_hidden_layers}")
        _set(params, path, arr)
    if "token_embedding" not in params:
        raise ValueError("no thinker text weights found (expected model.embed_tokens.weight)")
    return params


def flax_to_hf(params: dict) -> Iterator[tuple[str, np.ndarray]]:
    """Legacy-layout HF ``(key, tensor)`` pairs for a Flax param tree."""
    from flax import traverse_util
    from omnir1_jax.models.qwen_omni.audio_config import audio_flax_to_hf
    from omnir1_jax.models.qwen_omni.vision_config import vision_flax_to_hf

    flat = traverse_util.flatten_dict(_unbox(params))
    for path, value in flat.items():
        value = np.asarray(value)
        if path[0] == "visual":
            k, v = vision_flax_to_hf(path[1:], value)
            yield "visual." + k, v
        elif path[0] == "audio_tower":
            k, v = audio_flax_to_hf(path[1:], value)
            yield "audio_tower." + k, v
        else:
            yield from text_to_hf(path, value)


def _unbox(params: Any) -> Any:
    import flax.linen as nn

    params = nn.unbox(params)
    return params.get("params", params) if isinstance(params, dict) and "params" in params else params


# ---------------------------------------------------------------- public entry points
def _safetensor_files(hf_dir: str) -> list[str]:
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"HF checkpoint directory not found: {hf_dir}")
    files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {hf_dir} (only safetensors checkpoints are read)")
    return [os.path.join(hf_dir, f) for f in files]


def iter_safetensors(hf_dir: str) -> Iterator[tuple[str, np.ndarray]]:
    """Streams ``(key, numpy tensor)`` shard by shard, tensor by tensor, in the stored dtype; skips talker."""
    from safetensors import safe_open

    for path in _safetensor_files(hf_dir):
        with safe_open(path, framework="flax") as f:  # flax/jax reads bf16 (numpy cannot); no torch needed
            for key in f.keys():
                if key.startswith(SKIP_PREFIXES):
                    continue
                yield key, np.asarray(f.get_tensor(key))


def read_hf_config(hf_dir: str) -> ThinkerConfig:
    """ThinkerConfig from ``config.json`` of a full Qwen2.5-Omni or thinker-only checkpoint."""
    from transformers import AutoConfig

    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"HF checkpoint directory not found: {hf_dir}")
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise FileNotFoundError(f"no config.json in {hf_dir}")
    return ThinkerConfig.from_hf(AutoConfig.from_pretrained(hf_dir))


def load_hf(source: Any, dtype: Any = None, param_dtype: Any = None, remat: bool = False) -> tuple[Any, dict]:
    """``(Thinker, params)`` from a local HF checkpoint dir or an in-memory transformers thinker model."""
    import jax.numpy as jnp

    from omnir1_jax.models.qwen_omni.thinker import Thinker

    if isinstance(source, (str, os.PathLike)):
        config = read_hf_config(str(source))
        params = hf_to_flax(iter_safetensors(str(source)), config)
    else:
        model = getattr(source, "thinker", source)
        config = ThinkerConfig.from_hf(model.config)
        params = hf_to_flax(((k, v) for k, v in model.state_dict().items()), config,
                            to_numpy=lambda t: t.detach().float().cpu().numpy())
    pd = param_dtype or jnp.float32
    params = _cast(params, pd)
    return Thinker(config, dtype=dtype or pd, param_dtype=pd, remat=remat), params


def _cast(params: dict, dtype: Any) -> dict:
    """Casts leaves in place, one at a time, so at most one extra leaf exists at any moment."""
    for k, v in params.items():
        if isinstance(v, dict):
            _cast(v, dtype)
        else:
            params[k] = np.asarray(v).astype(dtype, copy=False)
    return params


def export_hf(params: dict, config: ThinkerConfig, out_dir: str, dtype: Any = None) -> None:
    """Writes ``model.safetensors`` + ``config.json`` loadable by ``Qwen2_5OmniThinkerForConditionalGeneration``."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for k, v in flax_to_hf(params):
        v = np.asarray(v)
        tensors[k] = np.ascontiguousarray(v.astype(dtype) if dtype is not None else v)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    hf = config.to_hf()
    hf.architectures = ["Qwen2_5OmniThinkerForConditionalGeneration"]
    hf.save_pretrained(out_dir)


# ---------------------------------------------------------------- orbax
def config_to_json(config: ThinkerConfig) -> dict:
    d = dataclasses.asdict(config)
    d["vision"] = None if config.vision is None else dataclasses.asdict(config.vision)
    d["audio"] = None if config.audio is None else dataclasses.asdict(config.audio)
    return d


def config_from_json(d: dict) -> ThinkerConfig:
    from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
    from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

    def tuples(sub: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}

    d = dict(d)
    d["vision"] = None if d.get("vision") is None else VisionConfig(**tuples(d["vision"]))
    d["audio"] = None if d.get("audio") is None else AudioConfig(**tuples(d["audio"]))
    return ThinkerConfig(**tuples(d))


def save_checkpoint(params: dict, config: ThinkerConfig, ckpt_dir: str) -> None:
    """Orbax checkpoint of ``params`` under ``ckpt_dir/params`` plus ``thinker_config.json``."""
    import orbax.checkpoint as ocp

    ckpt_dir = os.path.abspath(ckpt_dir)
    os.makedirs(ckpt_dir, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(ckpt_dir, PARAMS_DIR), params, force=True)
    with open(os.path.join(ckpt_dir, CONFIG_NAME), "w") as f:
        json.dump(config_to_json(config), f, indent=2)


def load_checkpoint(ckpt_dir: str, dtype: Any = None, param_dtype: Any = None, remat: bool = False
                    ) -> tuple[Any, dict]:
    """``(Thinker, params)`` from a checkpoint written by :func:`save_checkpoint` / ``omnir1-convert``."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from omnir1_jax.models.qwen_omni.thinker import Thinker

    ckpt_dir = os.path.abspath(ckpt_dir)
    cfg_path = os.path.join(ckpt_dir, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path} not found: not a thinker checkpoint written by omnir1-convert")
    with open(cfg_path) as f:
        config = config_from_json(json.load(f))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(ckpt_dir, PARAMS_DIR))
    pd = param_dtype or jnp.float32
    return Thinker(config, dtype=dtype or pd, param_dtype=pd, remat=remat), _cast(params, pd)


TOKENIZER_FILES = re.compile(
    r"(tokenizer.*\.json|vocab\.json|merges\.txt|chat_template.*|preprocessor_config\.json|"
    r"processor_config\.json|special_tokens_map\.json|added_tokens\.json|generation_config\.json|config\.json|"
    r"spk_dict\.pt\.json)"
)


def convert_hf_dir(hf_dir: str, out: str) -> ThinkerConfig:
    """Streams an HF thinker (or full Omni) checkpoint into an orbax checkpoint; copies tokenizer files."""
    import shutil

    _safetensor_files(hf_dir)  # fail early and clearly on a missing dir / no safetensors
    config = read_hf_config(hf_dir)
    params = hf_to_flax(iter_safetensors(hf_dir), config)
    save_checkpoint(params, config, out)
    del params
    for name in sorted(os.listdir(hf_dir)):
        if TOKENIZER_FILES.fullmatch(name) and os.path.isfile(os.path.join(hf_dir, name)):
            shutil.copy2(os.path.join(hf_dir, name), os.path.join(out, name))
    return config
