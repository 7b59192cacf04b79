"""``omnir1-convert``: local Hugging Face checkpoints -> orbax checkpoints this project loads.

    omnir1-convert qwen-omni --hf_dir DIR --out CKPT   # full Qwen2.5-Omni or thinker-only (talker skipped)
    omnir1-convert sam2 --hf_dir DIR --out CKPT        # SAM2 / SAM2-video (when its converter is installed)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence


def qwen_omni_main(args: Sequence[str]) -> None:
    """Streams a Qwen2.5-Omni (thinker) safetensors checkpoint shard by shard into an orbax checkpoint."""
    p = argparse.ArgumentParser(prog="omnir1-convert qwen-omni", description=qwen_omni_main.__doc__)
    p.add_argument("--hf_dir", required=True, help="local HF checkpoint directory (config.json + *.safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    a = p.parse_args(list(args))
    from omnir1_jax.models.qwen_omni.convert import convert_hf_dir

    t0 = time.time()
    try:
        cfg = convert_hf_dir(a.hf_dir, a.out)
    except FileNotFoundError as e:
        p.exit(2, f"omnir1-convert qwen-omni: error: {e}\n")
    print(f"converted thinker ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}) "
          f"from {a.hf_dir} to {a.out} in {time.time() - t0:.1f}s")


def _sam2_main() -> Callable[[Sequence[str]], None] | None:
    """The SAM2 converter's ``main(args)`` if that module is importable (another engineer's file)."""
    try:
        from omnir1_jax.models.sam2.convert import main
    except ImportError:
        return None
    return main


def subcommands() -> dict[str, Callable[[Sequence[str]], None]]:
    """Available subcommands; ``sam2`` is listed only when its converter imports."""
    cmds: dict[str, Callable[[Sequence[str]], None]] = {"qwen-omni": qwen_omni_main}
    sam2 = _sam2_main()
    if sam2 is not None:
        cmds["sam2"] = sam2
    return cmds


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: dispatches ``argv[0]`` to a subcommand with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmds = subcommands()
    usage = f"usage: omnir1-convert {{{','.join(cmds)}}} --hf_dir DIR --out CKPT"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n\n" + (__doc__ or "").strip())
        raise SystemExit(0 if argv else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd not in cmds:
        print(f"{usage}\nomnir1-convert: error: unknown subcommand {cmd!r}", file=sys.stderr)
        raise SystemExit(2)
    cmds[cmd](rest)


if __name__ == "__main__":
    run()
