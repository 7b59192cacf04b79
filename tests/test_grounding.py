"""In-graph System-2 grounding (omnir1_jax.rollout.grounding*): prompts, positions, greedy run, boxes."""

from __future__ import annotations

import dataclasses
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from omnir1_jax.models.qwen_omni import Thinker, init_params, tiny
from omnir1_jax.models.qwen_omni.vision_config import VisionConfig
from omnir1_jax.rollout import parse_ref
from omnir1_jax.rollout.grounding import (
    GroundingConfig, assemble, build_spec, ground_jit, grounding_positions, host_prompt_ids, parse_slot_boxes,
    slot_frame_rows,
)
from omnir1_jax.rollout.grounding_spec import DUMMY_DESCRIPTION
from omnir1_jax.rollout.parse import parse_completions
from omnir1_jax.text import SyntheticTokenizer

GRID = (1, 4, 4)  # 8-px patches, merge 2 -> 4 image tokens
K = 2
assemble_jit = jax.jit(assemble)


@pytest.fixture(scope="module")
def tok():
    return SyntheticTokenizer()


@pytest.fixture(scope="module")
def spec(tok):
    return build_spec(tok, GRID, max_desc_tokens=24, max_prompt_desc_tokens=40)


@pytest.fixture(scope="module")
def thinker(tok):
    m = tok.mm_ids
    vision = dataclasses.replace(VisionConfig.tiny(), out_hidden_size=64, depth=2, fullatt_block_indexes=(1,))
    cfg = tiny(vocab_size=tok.vocab_size, vision=vision,
               image_token_id=m["<|IMAGE|>"], video_token_id=m["<|VIDEO|>"], audio_token_id=m["<|AUDIO|>"],
               vision_start_token_id=m["<|vision_bos|>"], vision_end_token_id=m["<|vision_eos|>"],
               audio_start_token_id=m["<|audio_bos|>"], audio_end_token_id=m["<|audio_eos|>"],
               eos_token_id=tok.eos_ids[0], pad_token_id=tok.pad_id, bos_token_id=2, user_token_id=11)
    model = Thinker(cfg)
    params = nn.unbox(jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(0)))
    return model, params


def _random_desc(rng: np.random.RandomState, tok) -> str:
    words = tok.words + ["Xyzzy", "RED", "Left", "qux", "a", "I"]
    parts = [words[rng.randint(len(words))] for _ in range(rng.randint(0, 5))]
    parts = [p.upper() if rng.rand() < 0.2 else p.capitalize() if rng.rand() < 0.2 else p for p in parts]
    seps = [" ", " ", "  ", ", ", "-", "("]
    text = "".join(p + seps[rng.randint(len(seps))] for p in parts)
    if rng.rand() < 0.3:
        text = " " + text
    if rng.rand() < 0.3:
        text = text + rng.choice([".", "!", "\\t", " 2"])
    return text


def _completion(rng, tok, descs: list[str]) -> str:
    objs = []
    for i, d in enumerate(descs):
        t = f"00:0{i}.{rng.randint(0, 2) * 50:02d}"
        objs.append('{"start_time": "%s", "end_time": "%s", "description": "%s"}' % (t, t, d))
    return "<think>look</think><answer>" + ",\n".join(objs) + "</answer>"


def _encode(rng, tok, text: str, split_words: bool) -> list[int]:
    """Canonical ids, or (split_words) with some word tokens broken into characters (non-canonical)."""
    ids = []
    for i in tok.encode(text):
        w = tok.token_bytes(i)
        if split_words and len(w) > 1 and rng.rand() < 0.5:
            ids += [tok.encode(chr(c))[0] for c in w]
        else:
            ids.append(i)
    return ids


def _batch(tok, n: int, seed: int, T: int = 200):
    rng = np.random.RandomState(seed)
    ids = np.full((n, T), tok.pad_id, np.int32)
    lens = np.zeros((n,), np.int32)
    for r in range(n):
        kind = r % 4
        descs = [_random_desc(rng, tok) for _ in range(rng.randint(0, 3) if r % 5 == 4 else 2)]
        if kind == 3 and descs:
            descs[0] = "Caf\u00e9 Bar"  # non-ASCII: flagged as approximate
        if r % 8 == 7 and len(descs) > 1:
            descs[1] = "a <|im_end b"  # could spell a special token: flagged (conservatively)
        text = _completion(rng, tok, descs) if kind != 2 else "no answer here"
        t = _encode(rng, tok, text, split_words=kind == 1)[:T]
        ids[r, : len(t)] = t
        lens[r] = len(t)
    return ids, lens


def _parse(spec, ids, lens):
    table, tl = np.asarray(spec.byte_table), np.asarray(spec.tok_lens)
    n_frames = np.full((ids.shape[0],), 8, np.int32)
    got = jax.tree.map(np.asarray, parse_completions(ids, lens, table, tl, n_frames, K=K, F=8))
    ref = parse_ref.parse_completions_ref(ids, lens, table, tl, n_frames, K=K, F=8)
    return got, ref


@pytest.fixture(scope="module")
def parsed(tok, spec):
    ids, lens = _batch(tok, 32, seed=1)
    got, ref = _parse(spec, ids, lens)
    return ids, lens, got, ref


def test_prompts_match_host_path(tok, spec, parsed):
    ids, lens, got, ref = parsed
    assert np.array_equal(got["key_desc_bytes"], ref["key_desc_bytes"])
    pr = assemble_jit(spec, ids, got["key_desc_tokens"][..., 0], got["key_desc_tokens"][..., 1],
                           got["key_valid"], got["key_desc_tok_exact"])
    pids, mask = np.asarray(pr.input_ids), np.asarray(pr.attention_mask)
    Lg = spec.prompt_length
    assert pids.shape == (32 * K, Lg) and mask[:, -1].all()
    table, tl = np.asarray(spec.byte_table), np.asarray(spec.tok_lens)
    n_checked = n_invalid = 0
    n_flag_kinds = np.zeros(3, int)
    for r in range(32):
        data = b"".join(table[i, : tl[i]].tobytes() for i in ids[r, : lens[r]])
        for k in range(K):
            s = r * K + k
            row = pids[s][mask[s] == 1].tolist()
            assert np.all(mask[s][: Lg - len(row)] == 0)  # left padded
            if not ref["key_valid"][r, k]:
                assert not pr.slot_valid[s] and not pr.approx[s]
                assert row == host_prompt_ids(tok, DUMMY_DESCRIPTION, "default", spec.n_image_tokens)
                n_invalid += 1
                continue
            a, b = ref["key_desc_bytes"][r, k]
            desc = data[a:b].decode("utf-8")
            want = host_prompt_ids(tok, desc, "default", spec.n_image_tokens)
            too_long = got["key_desc_tokens"][r, k, 1] - got["key_desc_tokens"][r, k, 0] > spec.max_desc_tokens
            assert bool(pr.approx[s]) == (not desc.isascii() or too_long or "<|" in desc)
            n_flag_kinds += np.array([not desc.isascii(), too_long, "<|" in desc])
            if not pr.approx[s]:
                assert row == want, (desc, tok.decode(row, False), tok.decode(want, False))
                assert tok.decode(row, False) == tok.decode(want, False)
                n_checked += 1
    assert n_checked >= 20 and n_invalid >= 5 and np.all(n_flag_kinds >= 1), n_flag_kinds


@pytest.mark.parametrize("variant", ["visionreasoner"])
def test_prompt_variants(tok, variant):
    sp = build_spec(tok, GRID, max_desc_tokens=24, variant=variant)
    text = _completion(np.random.RandomState(0), tok, ["The RED box.. ", ". big Xyzzy on the left."])
    e = tok.encode(text)
    ids = np.full((32, 200), tok.pad_id, np.int32)
    ids[:, : len(e)] = e
    got, ref = _parse(sp, ids, np.full((32,), len(e), np.int32))
    pr = assemble_jit(sp, ids, got["key_desc_tokens"][..., 0], got["key_desc_tokens"][..., 1], got["key_valid"])
    data = tok.decode(ids[0]).encode()
    for k in range(K):
        a, b = ref["key_desc_bytes"][0, k]
        row = np.asarray(pr.input_ids[k])[np.asarray(pr.attention_mask[k]) == 1].tolist()
        assert row == host_prompt_ids(tok, data[a:b].decode(), variant, sp.n_image_tokens)


def _prompts_and_frames(parsed, thinker, seed=3):
    """Two clips x G=2 rollouts x K=2 keyframes (rows 0-3 of the shared batch); random frame patches."""
    model, _ = thinker
    rng = np.random.RandomState(seed)
    ids, _, got, _ = parsed
    ids, got = ids[:4], {k: v[:4] for k, v in got.items()}
    assert got["key_valid"].any() and not got["key_valid"].all()
    pd = model.config.vision.patch_dim
    frames = rng.randn(2, 3, 16, pd).astype(np.float32)  # [B, F, Np, Pd]
    return ids, got, frames


def test_positions_match_transformers(spec, thinker, parsed):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as HF

    model, _ = thinker
    ids, _, got, _ = parsed
    pr = assemble_jit(spec, ids, got["key_desc_tokens"][..., 0], got["key_desc_tokens"][..., 1], got["key_valid"])
    pos = jax.jit(grounding_positions, static_argnums=0)(model.config, spec, pr)
    # transformers' get_rope_index needs only the config and the merge size: call it without building weights.
    hf = types.SimpleNamespace(config=model.config.to_hf(), spatial_merge_size=2)
    hf.get_llm_pos_ids_for_vision = types.MethodType(HF.get_llm_pos_ids_for_vision, hf)
    S = 8
    want, _ = HF.get_rope_index(hf, torch.tensor(np.asarray(pr.input_ids[:S]), dtype=torch.long),
                                torch.tensor([GRID] * S), None, torch.tensor(np.asarray(pr.attention_mask[:S])))
    assert np.array_equal(np.asarray(pos)[:, :S], want.numpy())
    assert int(np.asarray(pr.attention_mask[:S]).sum(1).min()) < int(np.asarray(pr.attention_mask[:S]).sum(1).max())


def test_greedy_ground_matches_full_forward_loop(tok, spec, thinker, parsed):
    model, params = thinker
    ids, got, frames = _prompts_and_frames(parsed, thinker)
    cfg = GroundingConfig(max_new_tokens=5, num_objects=3)
    ratios = jnp.asarray([[0.5, 0.25], [2.0, 1.0]], jnp.float32)
    out = ground_jit(model, params, spec, jnp.asarray(ids), got, jnp.asarray(frames), ratios, cfg)
    pr = assemble_jit(spec, ids, got["key_desc_tokens"][..., 0], got["key_desc_tokens"][..., 1],
                      got["key_valid"])
    rows = np.asarray(slot_frame_rows(jnp.asarray(got["key_frames"] * got["key_valid"]), 2, 3))
    S = rows.shape[0]
    pix = frames.reshape(6, 16, -1)[rows].reshape(S * 16, -1)
    fwd = jax.jit(lambda p, i, m, x: model.apply({"params": p}, i, m, x, ((GRID),) * S))
    Lg, Tg = pr.input_ids.shape[1], cfg.max_new_tokens
    # Fixed-shape full forwards: prompt + tokens so far, right-padded (masked) to Lg + Tg; one compile.
    cur = np.concatenate([np.asarray(pr.input_ids), np.zeros((S, Tg), np.int32)], 1)
    mask = np.concatenate([np.asarray(pr.attention_mask), np.zeros((S, Tg), np.int32)], 1)
    toks = []
    for t in range(Tg):
        logits = fwd(params, cur, mask, pix)
        nxt = np.asarray(jnp.argmax(logits[:, Lg - 1 + t], -1)).astype(np.int32)
        toks.append(nxt)
        cur[:, Lg + t], mask[:, Lg + t] = nxt, 1
    want = np.stack(toks, 1)
    stopped = np.cumsum(np.isin(want, tok.eos_ids), 1) - np.isin(want, tok.eos_ids) > 0
    want = np.where(stopped, tok.pad_id, want)
    assert np.array_equal(np.asarray(out.tokens).reshape(S, -1), want)
    assert np.array_equal(np.asarray(out.input_ids).reshape(S, -1), np.asarray(pr.input_ids))
    assert np.array_equal(np.asarray(out.slot_valid), got["key_valid"])
    assert not np.asarray(out.box_valid)[~got["key_valid"]].any()
    assert np.all(np.asarray(out.num_boxes)[~got["key_valid"]] == 0)


def test_boxes_match_reference_parser(tok, spec):
    texts = [
        '[{"bbox_2d": [10, 20, 30, 40]}, {"bbox_2d": [1.5, 2, 3e1, 4]}]',
        '{"bbox_2d": [1, 2, 3]} {"label": "x"} {"bbox_2d": [5, 6, 7, 8], "point_2d": [1, 2]} {"bbox_2d": [0,0,1,1]}',
        "no boxes",
        '```json\n[{"bbox_2d": [100, 200, 300, 400], "label": "cat"}]\n```',
    ] * 2
    T = 120
    ids = np.full((len(texts), T), tok.pad_id, np.int32)
    lens = np.zeros((len(texts),), np.int32)
    for r, t in enumerate(texts):
        e = tok.encode(t) + [tok.eos_ids[0]]
        ids[r, : len(e)], lens[r] = e, len(e)
    valid = np.array([1, 1, 1, 1, 0, 1, 0, 1], bool)  # rows n*K+k of B=2 clips x G=2 x K=2
    ratios = np.array([[0.5, 0.25], [2.0, 1.0]], np.float32)
    boxes, bv, nb = jax.jit(parse_slot_boxes, static_argnums=5)(spec, ids, lens, valid, ratios, 3)
    ref = parse_ref.parse_boxes_ref(ids, lens, np.asarray(spec.byte_table), np.asarray(spec.tok_lens),
                                    np.repeat(ratios, 4, 0), O=3)
    assert np.array_equal(np.asarray(bv), ref["box_valid"] & valid[:, None])
    np.testing.assert_array_equal(np.asarray(boxes), np.where((ref["box_valid"] & valid[:, None])[..., None],
                                                              ref["boxes"], 0))
    assert np.array_equal(np.asarray(nb), np.where(valid, ref["n_json"], 0))
    assert np.asarray(bv)[0].tolist() == [True, True, False]
    np.testing.assert_allclose(np.asarray(boxes)[0, 0], [20, 80, 60, 160])
    np.testing.assert_allclose(np.asarray(boxes)[7, 0], [50, 200, 150, 400])  # clip 1 ratios (2, 1)
    assert int(nb[1]) == 4 and not np.asarray(bv)[4].any()


# ---------------------------------------------------------------------------------------- byte-level BPE
QWEN2_PRETOKENIZE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def bpe(tok):
    """A Qwen2-style byte-level BPE (same pre-tokenizer regex) trained in memory, wrapped as HFTokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from omnir1_jax.text import HFTokenizer
    from omnir1_jax.text.templates import GROUNDING_DEFAULT
    from omnir1_jax.text.tokenizer import MM_TOKENS

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *MM_TOKENS]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    rng = np.random.RandomState(0)
    corpus = [GROUNDING_DEFAULT, _completion(rng, tok, ["the red car", "a Big Dog"])]
    corpus += [" ".join(rng.choice(tok.words, 12)) for _ in range(200)]
    corpus += [" ".join(rng.choice(tok.words, 12)).lower() for _ in range(200)]
    corpus += ["The red car. The Red car, The RED car"] * 20
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=special[3:])
    hf.chat_template = CHAT
    return HFTokenizer(hf)


def test_bpe_tokens_mode(tok, bpe):
    sp = build_spec(bpe, GRID, max_desc_tokens=24, max_prompt_desc_tokens=40)
    assert sp.mode == "tokens"
    rng = np.random.RandomState(5)
    descs = []
    for i in range(32):
        words = [str(w) for w in rng.choice(tok.words, rng.randint(1, 5))]
        if i % 4 != 3:
            words = [w.lower() for w in words]  # exact class: lower-case, alphanumeric edges
        else:
            words = [w.capitalize() if rng.rand() < 0.5 else w.upper() for w in words]
        text = " ".join(words)
        if i % 8 == 5:
            text = rng.choice(["(", " ", "'"]) + text  # non-alphanumeric first byte: flagged
        if i % 8 == 6:
            text = text + rng.choice([".", "!", " 2"])
        descs.append(text)
    # upper-case words this BPE keeps whole (exact) and one it splits into characters (flagged)
    descs[3], descs[7], descs[11] = "The red car", "the RED car", "Assistant Cover"
    ids = np.full((32, 200), bpe.pad_id, np.int32)
    lens = np.zeros((32,), np.int32)
    for r in range(32):
        e = bpe.encode(_completion(rng, tok, [descs[r]]))
        ids[r, : len(e)], lens[r] = e, len(e)
    got = parse_ref.parse_completions_ref(ids, lens, np.asarray(sp.byte_table), np.asarray(sp.tok_lens),
                                          np.full((32,), 8, np.int32), K=K, F=8)
    pr = assemble_jit(sp, ids, got["key_desc_tokens"][..., 0], got["key_desc_tokens"][..., 1], got["key_valid"],
                      got["key_desc_tok_exact"])
    approx, n_exact, n_upper = np.asarray(pr.approx), 0, 0
    for r in range(32):
        assert got["key_valid"][r, 0] and not got["key_valid"][r, 1]
        d = descs[r]
        row = np.asarray(pr.input_ids[r * K])[np.asarray(pr.attention_mask[r * K]) == 1].tolist()
        want = host_prompt_ids(bpe, d, "default", sp.n_image_tokens)
        stripped = d.lower().strip()
        if not (stripped[:1].isalnum() and stripped[-1:].isalnum()):
            assert approx[r * K], d  # the template quote would join the description's edge
        if not approx[r * K]:  # every slot not counted as approximate is exact
            assert row == want, (d, bpe.decode(row, False), bpe.decode(want, False))
            n_exact += 1
            n_upper += d != d.lower()
        assert not approx[r * K + 1]
        assert row[-len(sp.suffix_ids):] == np.asarray(sp.suffix_ids).tolist()
    assert n_exact >= 16 and n_upper >= 2 and approx.sum() >= 4
    assert not approx[3 * K] and not approx[7 * K] and approx[11 * K]


def test_chunked_frame_encoding_equals_one_call(spec, thinker, parsed):
    """`encode_chunk` (lax.map over chunks of candidate frames, last chunk zero-padded) changes only memory."""
    from omnir1_jax.rollout.grounding import encode_candidate_frames

    model, params = thinker
    _, _, frames = _prompts_and_frames(parsed, thinker)  # [2, 3, 16, Pd]: 6 candidate frames
    enc = jax.jit(encode_candidate_frames, static_argnums=(0, 4))
    whole = np.asarray(enc(model, params, spec, jnp.asarray(frames), 0))
    assert whole.shape[:2] == (6, spec.n_image_tokens) and np.abs(whole).max() > 0
    for chunk in (1, 4):  # 6 = 6 x 1 and 4 + (2 real + 2 padding)
        got = np.asarray(enc(model, params, spec, jnp.asarray(frames), chunk))
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5, err_msg=f"chunk={chunk}")
    # Frame order is kept: swapping two clips' frames swaps their features.
    swapped = np.asarray(enc(model, params, spec, jnp.asarray(frames[::-1]), 4))
    np.testing.assert_allclose(swapped.reshape(2, 3, *whole.shape[1:])[::-1].reshape(whole.shape), whole,
                               rtol=1e-5, atol=1e-5)
