"""Text layer: synthetic + HF tokenizers, byte table, prompt templates."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnir1_jax.rollout.parse_ref import parse_vos_one
from omnir1_jax.text import (
    HFTokenizer,
    SyntheticTokenizer,
    Tokenizer,
    byte_table,
    make_messages,
    render_grounding_prompt,
    render_refavs_prompt,
    render_vos_prompt,
)
from omnir1_jax.text.tokenizer import render_qwen_chat


@pytest.fixture(scope="module")
def synth():
    return SyntheticTokenizer()


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    from test_parse import train_bpe_tokenizer

    corpus = [render_vos_prompt("the dog on the left", n, np.random.default_rng(n)) for n in range(8, 24)]
    corpus += ['<think>a</think><answer>{"start_time": "00:01.50", "end_time": "00:02.00"}</answer>'] * 10
    return HFTokenizer.from_dir(train_bpe_tokenizer(str(tmp_path_factory.mktemp("hf")), corpus))


# ---------------------------------------------------------------------------------------- synthetic tokenizer
@settings(max_examples=60)
@given(text=st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126)), st.text(max_size=30)))
def test_synthetic_roundtrip(synth, text):
    text = text.replace("<", "(")  # keep special-token literals out of plain text
    ids = synth.encode(text)
    assert synth.decode(ids) == text
    assert b"".join(synth.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_synthetic_protocol_words_and_digits(synth):
    assert isinstance(synth, Tokenizer)
    ids = synth.encode("the red ball at 00:12.75 seconds")
    pieces = [synth.token_bytes(i) for i in ids]
    assert b"the" in pieces and b"seconds" in pieces  # whole words
    for p in pieces:
        assert not (any(chr(c).isdigit() for c in p) and len(p) > 1)  # digits always single tokens
    assert b"".join(pieces).count(b"1") == 1 and pieces.count(b"1") == 1


def test_synthetic_specials_and_chat(synth):
    msgs = make_messages("find it", ("audio", "image"))
    text = synth.apply_chat_template(msgs)
    assert text == ("<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|IMAGE|><|vision_eos|>"
                    "find it<|im_end|>\n<|im_start|>assistant\n")
    ids = synth.encode(text)
    assert ids[0] == synth.vocab["<|im_start|>"] and synth.mm_ids["<|AUDIO|>"] in ids
    assert synth.decode(ids, skip_special_tokens=False) == text
    assert synth.decode(ids) == "user\nfind it\nassistant\n"
    assert synth.token_bytes(synth.eos_ids[0]) == b"" and synth.pad_id == 0
    assert synth.apply_chat_template(msgs, add_generation_prompt=False).endswith("<|im_end|>\n")


def test_synthetic_deterministic_save_load(synth, tmp_path):
    assert SyntheticTokenizer().tokens == synth.tokens
    synth.save(tmp_path / "tok.json")
    loaded = SyntheticTokenizer.load(tmp_path / "tok.json")
    assert loaded.tokens == synth.tokens and loaded.vocab_size == synth.vocab_size
    (tmp_path / "bad.json").write_text('{"kind": "other"}')
    with pytest.raises(ValueError):
        SyntheticTokenizer.load(tmp_path / "bad.json")


def test_synthetic_uses_world_words(monkeypatch):
    mod = types.ModuleType("data_pipelines.synthetic.words")
    mod.WORDS = ["zebra", "purple triangle", "x"]
    monkeypatch.setitem(sys.modules, "data_pipelines.synthetic.words", mod)
    tok = SyntheticTokenizer()
    assert len(tok.encode("zebra")) == 1 and len(tok.encode("purple triangle")) == 3


# ---------------------------------------------------------------------------------------- byte table
def test_byte_table(synth):
    table, lens = byte_table(synth)
    assert table.dtype == np.uint8 and lens.dtype == np.int32 and table.shape == (synth.vocab_size, lens.max())
    for i in (0, 20, synth.vocab["description"], synth.vocab_size - 1):
        assert table[i, : lens[i]].tobytes() == synth.token_bytes(i)
    padded, plens = byte_table(synth, vocab_size=synth.vocab_size + 5)
    assert padded.shape[0] == synth.vocab_size + 5 and plens[-5:].sum() == 0
    longest = max(range(synth.vocab_size), key=lambda i: len(synth.token_bytes(i)))
    with pytest.raises(ValueError, match=f"token {longest} "):
        byte_table(synth, max_bytes=3)


# ---------------------------------------------------------------------------------------- HF tokenizer
def test_hf_tokenizer(hf_tok):
    assert isinstance(hf_tok, Tokenizer)
    text = 'Given the expression \'red cup\' {"bbox_2d": [12, 5.5, -3, 40]} caf\u00e9 \u2603'
    ids = hf_tok.encode(text)
    assert hf_tok.decode(ids) == text
    assert b"".join(hf_tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert any(len(hf_tok.token_bytes(i)) > 1 for i in ids)  # real merges happened
    assert hf_tok.eos_ids[0] == hf_tok.hf.convert_tokens_to_ids("<|im_end|>")
    assert set(hf_tok.mm_ids) == {"<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>"}
    assert hf_tok.token_bytes(hf_tok.eos_ids[0]) == b""
    msgs = [{"role": "user", "content": "hi there"}]
    assert hf_tok.apply_chat_template(msgs) == render_qwen_chat(msgs)
    table, lens = byte_table(hf_tok)
    assert table.shape[0] == hf_tok.vocab_size and lens[hf_tok.eos_ids[0]] == 0


# ---------------------------------------------------------------------------------------- templates
def _example_answer(prompt: str) -> bytes:
    data = prompt.encode()
    return data[data.rindex(b"<answer>") + 8 : data.rindex(b"</answer>")]


@pytest.mark.parametrize("n_frames", [2, 9, 24])
def test_vos_force_prompt_examples_parse(n_frames):
    seen = set()
    for seed in range(6):
        p = render_vos_prompt("the man in red", n_frames, np.random.default_rng(seed), variant="force")
        assert "[the man in red]" in p and f"{n_frames / 2} seconds" in p and "about 4" in p
        ans = _example_answer(p)
        times = re.findall(rb'"start_time": "00:(\d\d\.\d\d)",\n  "end_time": "00:(\d\d\.\d\d)"', ans)
        assert len(times) == 4 and all(s == e for s, e in times)
        for s, _ in times:
            idx = float(s) * 2
            assert idx == int(idx) and 0 <= idx <= max(n_frames - 2, 0)
        seen.add(tuple(times))
        r = parse_vos_one(ans, 0, len(ans), n_frames, J=8, K=4, F=32)
        assert r["n_objects"] == 4 and r["n_consistent"] == 4
    if n_frames > 2:
        assert len(seen) > 1  # example timestamps are randomised per sample


def test_vos_no_hint_prompt():
    rng = np.random.default_rng(0)
    plain = render_vos_prompt("a cat", 16, rng, variant="no_hint")
    assert "1-4" in plain and "mm:ss.ff" in plain and "example" not in plain
    counts = set()
    for _ in range(8):
        p = render_vos_prompt("a cat", 16, rng, variant="no_hint", with_example=True)
        assert p.startswith(plain)
        counts.add(p.count('"start_time"'))
    assert counts == {1, 2}
    with pytest.raises(ValueError):
        render_vos_prompt("a cat", 16, rng, variant="other")


def test_refavs_and_grounding_prompts():
    p = render_refavs_prompt("the violin playing loudly")
    assert "[the violin playing loudly]" in p and "10-second" in p and "<answer>" in p
    assert "'the red cup.'" in render_grounding_prompt("  The Red Cup. ")
    assert 'Find "the red cup" with' in render_grounding_prompt("The Red Cup.", variant="visionreasoner")
    assert '"bbox_2d": [10,100,200,210]' in render_grounding_prompt("x", variant="visionreasoner")
    assert '"points_1"' in render_grounding_prompt("x", variant="segzero")
    assert "'the cello'" in render_grounding_prompt("The cello", variant="refavs")
    with pytest.raises(ValueError):
        render_grounding_prompt("x", variant="nope")
    msgs = make_messages("q", ("video",))
    assert [c["type"] for c in msgs[0]["content"]] == ["video", "text"]
