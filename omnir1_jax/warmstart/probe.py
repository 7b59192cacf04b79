"""Where does the grounder look?  Attention of the language model's answer position over the image tokens.

    python -m omnir1_jax.warmstart.probe --task ground_crowd CHECKPOINT [CHECKPOINT ...]

A grounder that reads the description must, at the position that predicts the box's first coordinate (or the
``count`` answer), attend to the image tokens of the described colour more than to the other objects.  For every
layer and head this prints the share of the attention on object tokens that goes to the asked colour's tokens
(``colour``) next to the share uniform attention would give (``colour_unif``), the share of the attention on the
image that goes to object tokens at all (``object`` / ``object_unif``), and the attention mass on the image
(``image``).  A head that binds the word has ``colour`` well above ``colour_unif``; the held-out box scores of
:mod:`omnir1_jax.warmstart.thinker` take thousands of steps to show it.

The probes read the ``[B, KV, G, L, S]`` attention probabilities of the decoder (``models.layers.Attention``) by
wrapping ``jax.nn.softmax`` while one forward pass is traced (the vision tower's attention has another rank and is
left out); nothing in the model changes.  Examples are frame 0 of the synthetic world at the grounding
resolution; a merged image token belongs to the object covering more than a quarter of its cell
(:func:`omnir1_jax.warmstart.tasks.token_owners`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.warmstart import tasks as T
from omnir1_jax.warmstart import thinker as W

PROBE_TASKS = ("count", "ground_crowd", "ground_crowd_label", "ground_pair")


@contextlib.contextmanager
def recorded_attention(out: list):
    """Appends the decoder's attention probabilities ``[B, H, L, S]`` (one array per layer, in order) to ``out``."""
    real = jax.nn.softmax

    def softmax(x, axis=-1, **kw):
        p = real(x, axis=axis, **kw)
        if p.ndim == 5:  # the decoder's grouped-query layout [B, KV, G, L, S]
            jax.debug.callback(lambda a: out.append(np.asarray(a).reshape(a.shape[0], -1, *a.shape[3:])), p)
        return p

    jax.nn.softmax = softmax
    try:
        yield out
    finally:
        jax.nn.softmax = real


def probe_examples(task: str, shapes: T.TaskShapes, tokenizer: Any, n: int = 64, seed: int = 7):
    """``n`` examples of ``task`` whose asked / described colour has image tokens and another object is in view,
    with ``(colour [cells] bool, object [cells] bool)`` over the merged-token grid of frame 0 (row-major)."""
    if task not in PROBE_TASKS:
        raise ValueError(f"probe: unknown task {task!r}; expected one of {PROBE_TASKS}")
    last: dict = {}
    real = T._clip

    def capture(*a, **k):
        last["clip"] = real(*a, **k)
        return last["clip"]

    rng = np.random.default_rng(seed)
    exs, infos = [], []
    T._clip = capture
    try:
        for _ in range(50 * n):
            if len(exs) == n:
                break
            ex = T.make_example(task, rng, shapes, tokenizer)
            clip, _, masks, _ = last["clip"]
            text = tokenizer.decode(ex["prompt_ids"])
            if task == "count":
                if ex["answer"].strip() == "0":
                    continue
                phrase = text
            else:
                if not json.loads(ex["answer"]) or not ex["distractor_boxes"]:
                    continue
                phrase = text.split("'")[1]  # "Given the expression '<description>', ..."
            colour = next(c for c in T.words.COLOURS if f" {c} " in f" {phrase} ")
            owner = T.token_owners(shapes, masks, 0)
            obj = owner >= 0
            col = obj & np.asarray([clip.objects[o].colour == colour for o in owner])
            if col.any() and (obj & ~col).any():
                exs.append(ex)
                infos.append((col, obj))
    finally:
        T._clip = real
    if len(exs) < n:
        raise RuntimeError(f"probe: only {len(exs)} usable {task} examples in {50 * n} draws")
    return exs, infos


def query_positions(task: str, exs: Sequence[dict], tokenizer: Any, prompt_len: int) -> list[int]:
    """The position whose next-token prediction is the answer (``count``) or the box's first coordinate."""
    if task == "count":
        return [prompt_len - 1] * len(exs)
    out = []
    for e in exs:
        a = tokenizer.encode(e["answer"])
        out.append(prompt_len + next(j for j, t in enumerate(a) if tokenizer.decode([t]).strip().isdigit()) - 1)
    return out


def shares(probs: Sequence[np.ndarray], image: np.ndarray, qpos: Sequence[int], infos: Sequence[tuple]) -> list:
    """Per layer, per head: the mean colour / object / image shares (see the module docstring).

    ``probs``: per layer ``[B, H, L, S]``; ``image`` ``[B, S]`` bool (image-token slots, in cell order)."""
    out = []
    for p in probs:
        heads = []
        for h in range(p.shape[1]):
            rows = {"colour": [], "colour_unif": [], "object": [], "object_unif": [], "image": []}
            for i, (col, obj) in enumerate(infos):
                a = p[i, h, qpos[i], image[i]]
                rows["colour"].append(a[col].sum() / max(a[obj].sum(), 1e-12))
                rows["colour_unif"].append(col.sum() / obj.sum())
                rows["object"].append(a[obj].sum() / max(a.sum(), 1e-12))
                rows["object_unif"].append(obj.mean())
                rows["image"].append(a.sum())
            heads.append({k: float(np.mean(v)) for k, v in rows.items()})
        out.append(heads)
    return out


def probe(model, params, task: str, shapes: T.TaskShapes, tokenizer: Any, n: int = 64, seed: int = 7) -> list:
    """:func:`shares` of ``params`` on ``n`` teacher-forced examples of ``task``."""
    from omnir1_jax.rl.sft import sft_loss

    exs, infos = probe_examples(task, shapes, tokenizer, n, seed)
    plen = W.prompt_length(task, shapes, tokenizer)
    layout, arrays = W.make_batch(exs, tokenizer, plen, W.answer_tokens(task))
    image = arrays["input_ids"] == model.config.image_token_id
    if not all(image[i].sum() == len(c) for i, (c, _) in enumerate(infos)):
        raise RuntimeError("probe: the image tokens do not match the frame's merged-token grid")
    probs: list = []
    with recorded_attention(probs):  # traced afresh (no jit cache), so the wrapper is seen
        jax.block_until_ready(sft_loss(model, params, {k: jnp.asarray(v) for k, v in arrays.items()}, layout, 256))
        jax.effects_barrier()
    if len(probs) != model.config.num_hidden_layers:
        raise RuntimeError(f"probe: recorded {len(probs)} attention maps for {model.config.num_hidden_layers} layers")
    return shares(probs, image, query_positions(task, exs, tokenizer, plen), infos)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--config", default="experiments/synthetic_tiny.py")
    ap.add_argument("--task", default="ground_crowd", choices=PROBE_TASKS)
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args(argv)
    from omnir1_jax.config import load_config
    from omnir1_jax.models.qwen_omni import load_checkpoint
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    config = load_config(args.config)
    tokenizer = build_tokenizer(config)
    model, _, _ = build_thinker(config, tokenizer)
    shapes = T.TaskShapes.from_config(config, model)
    for path in args.checkpoints:
        for li, heads in enumerate(probe(model, load_checkpoint(path)[1], args.task, shapes, tokenizer, args.n)):
            print(f"{path} layer {li}: " + "; ".join(
                f"h{h} colour {r['colour']:.2f} ({r['colour_unif']:.2f}) object {r['object']:.2f} "
                f"({r['object_unif']:.2f}) image {r['image']:.2f}" for h, r in enumerate(heads)))


if __name__ == "__main__":
    main()
