"""In-graph parsers vs the plain-Python reference: property-based agreement and hand-written rule cases."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnir1_jax.rollout.parse import parse_boxes, parse_completions
from omnir1_jax.rollout.parse_ref import (
    parse_boxes_ref,
    parse_completions_ref,
    parse_flat_object,
    parse_number_f32,
)
from omnir1_jax.text import HFTokenizer, SyntheticTokenizer, byte_table

# ---------------------------------------------------------------------------------------- grammar / BPE helpers
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_digits = st.text("0123456789", min_size=1, max_size=3)
_good_time = st.builds(
    lambda m, sec, ff: f"{m}:{sec:0{len(m)}d}.{ff}", st.sampled_from(["00", "0"]), st.integers(0, 9),
    st.sampled_from(["00", "50", "00", "50", "5", "500", "25", "99"]),
)
_bad_time = st.one_of(
    st.builds(lambda a, b, c: f"{a}:{b}.{c}", _digits, _digits, _digits),
    st.builds(lambda a, b: f"{a}:{b}", _digits, _digits),
    st.sampled_from(["00:01.50", "0:7.5", "00:02.500", "mm:ss.ff", "", "1:2.3x", "99999999:1.0"]),
)
_word = st.sampled_from(["red", "ball", "the", "left", "dog", "x", "", "a{b", "q\\\"", "\\u0041", "\u00e9t\u00e9"])
_desc_val = st.one_of(
    st.builds(lambda ws: json.dumps(" ".join(ws), ensure_ascii=False), st.lists(_word, max_size=3)),
    st.builds(lambda ws: json.dumps(" ".join(ws), ensure_ascii=False), st.lists(_word, max_size=3)),
    st.sampled_from(
        ["null", "12", "-0.5e3", "true", "[1, \"a\"]", "[]", "[[1]]", "NaN", "-Infinity", "\"unterminated"]
    ),
)
_FIELDS = ["start_time", "end_time", "description"]


@st.composite
def vos_object(draw) -> str:
    """A moment object: usually the three fields (shuffled), sometimes missing/duplicated/extra/malformed ones."""
    keys = draw(st.permutations(_FIELDS))
    if draw(st.integers(0, 3)) == 0:
        keys = draw(st.lists(st.sampled_from(_FIELDS + ["label", "start"]), max_size=5))
    members = []
    for key in keys:
        if key in ("start_time", "end_time"):
            pick = draw(st.integers(0, 9))
            if pick < 9:
                val = json.dumps(draw(_good_time if pick < 7 else _bad_time))
            else:
                val = draw(st.sampled_from(["5", "null"]))
        else:
            val = draw(_desc_val)
        ws0, colon = draw(st.sampled_from(["", " ", "\n  "])), draw(st.sampled_from([":", ": ", " :"]))
        members.append(f'{ws0}"{key}"{colon}{val}')
    sep = draw(st.sampled_from([",", ", ", ",\n", ",", ", ", ",", ""]))
    return "{" + sep.join(members) + draw(st.sampled_from(["}", "\n}", "}", " }", "", "}}", ",}"]))


@st.composite
def box_object(draw) -> str:
    nums = st.one_of(
        st.integers(-50, 2000).map(str),
        st.floats(-1e4, 1e4, allow_nan=False).map(lambda f: f"{f:.{abs(hash(f)) % 5}f}"),
        st.sampled_from(
            ["0.0045", "1e2", "-3E-2", "007", "1.", "\"5\"", "true", "123456789.123", "0.000000001234567891"]
        ),
    )
    vals = draw(st.lists(nums, min_size=2, max_size=5))
    extra = draw(st.sampled_from(["", ', "label": "cup"', ', "point_2d": [3, 4]', ', "bbox_2d": [1, 2, 3, 4]']))
    return '{"bbox_2d": [' + ", ".join(vals) + "]" + extra + "}"


@st.composite
def completion(draw) -> str:
    """<think>...</think> <answer> objects </answer> with optional damage."""
    objs = draw(st.lists(st.one_of(vos_object(), vos_object(), box_object()), max_size=4))
    inner = draw(st.sampled_from(["\n", " ", "", " junk "])).join(objs)
    think = draw(st.sampled_from(
        ["<think>look</think>"] * 3 + ["<think></think>", "<think>a <answer> b</think>", "", "<think>x"]
    ))
    mid = draw(st.sampled_from(["\n", " ", "", "x", "\t\x0b"]))
    ans_open = draw(st.sampled_from(["<answer>", "<answer>\n"] * 2 + ["<answer>  ", "<answer", ""]))
    ans_close = draw(st.sampled_from(["</answer>", "\n</answer>"] * 2 + [" </answer>", "", "</answer></answer>"]))
    text = think + mid + ans_open + inner + ans_close + draw(st.sampled_from(["", "", "", " ", "tail"]))
    if draw(st.integers(0, 3)) == 0:  # delete or duplicate one character
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        text = text[:i] + text[i + 1 :] if draw(st.booleans()) else text[:i] + text[i : i + 1] * 2 + text[i + 1 :]
    return text


def train_bpe_tokenizer(tmpdir: str, corpus: list[str], vocab_size: int = 420) -> str:
    """Train a Qwen2-style byte-level BPE with `tokenizers`, save it as a transformers tokenizer dir."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    path = os.path.join(tmpdir, "bpe")
    fast.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------- fixtures / runners
B, T, F, J, K, O = 8, 256, 32, 8, 4, 3


class _Tok:
    """A tokenizer with its byte table and the parser configuration it is tested under (one compile each)."""

    def __init__(self, tok, mode: str, msb: int | None):
        self.tok, self.mode, self.msb = tok, mode, msb
        self.table, self.lens = byte_table(tok)


@pytest.fixture(scope="module")
def synth():
    return _Tok(SyntheticTokenizer(), "scan", None)


def bpe_corpus() -> list[str]:
    """Deterministic training text shaped like completions and grounder outputs."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(120):
        s, e = rng.integers(0, 60, 2)
        out.append('<think>the %s</think>\n<answer>{"start_time": "00:%02d.%02d", "end_time": "0:%d.%d", '
                   '"description": "red ball %d"}</answer>' % ("ab"[i % 2], s, e, e, s, i))
        out.append('[{"bbox_2d": [%d, %d, %d.5, %d], "label": "cup"}]' % tuple(rng.integers(-9, 999, 4)))
    return out


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """Byte-level BPE, tested with the associative-scan DFA and a byte stream capped at 400 bytes."""
    path = train_bpe_tokenizer(str(tmp_path_factory.mktemp("tok")), bpe_corpus())
    return _Tok(HFTokenizer.from_dir(path), "assoc", 400)


def _pack(tk: _Tok, rows: list[list[int]], cut: list[int] | None = None):
    ids = np.full((B, T), tk.tok.pad_id, np.int32)
    lens = np.zeros((B,), np.int32)
    for i, r in enumerate(rows):
        r = r[:T]
        ids[i, : len(r)] = r
        lens[i] = len(r) if cut is None else min(len(r), cut[i])
    return ids, lens


def _compare(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        g = np.asarray(got[k])
        assert g.dtype == want[k].dtype and g.shape == want[k].shape, k
        np.testing.assert_array_equal(g, want[k], err_msg=k)


def run_both(tk: _Tok, rows, n_frames, cut=None, ratios=None):
    """Run jitted + reference parsers on one padded batch; assert exact agreement; return the reference."""
    mode, msb = tk.mode, tk.msb
    ids, lens = _pack(tk, rows, cut)
    nf = np.asarray(n_frames, np.int32)
    got = jax.device_get(
        parse_completions(ids, lens, tk.table, tk.lens, nf, J=J, K=K, F=F, max_stream_bytes=msb, dfa_mode=mode)
    )
    want = parse_completions_ref(ids, lens, tk.table, tk.lens, nf, J=J, K=K, F=F, max_stream_bytes=msb)
    _compare(got, want)
    ratios = np.full((B, 2), [1.5, 0.75], np.float32) if ratios is None else ratios
    gb = jax.device_get(parse_boxes(ids, lens, tk.table, tk.lens, ratios, O=O, max_stream_bytes=msb, dfa_mode=mode))
    wb = parse_boxes_ref(ids, lens, tk.table, tk.lens, ratios, O=O, max_stream_bytes=msb)
    _compare(gb, wb)
    return want, wb


def _rows(tk: _Tok, texts):
    return [tk.tok.encode(t) for t in texts]


_cut = st.lists(st.integers(0, 4 * T).map(lambda c: T if c > T else c), min_size=B, max_size=B)  # mostly uncut
_n_frames = st.lists(st.one_of(st.integers(16, F), st.integers(16, F), st.integers(1, F)), min_size=B, max_size=B)
_batch = st.lists(
    st.one_of(completion(), completion(), completion(), completion(),
              st.lists(st.integers(0, 10**6), max_size=T).map(lambda x: ("soup", x))),
    min_size=B, max_size=B,
)


def _rows_mixed(tk: _Tok, items):
    return [[v % tk.tok.vocab_size for v in it[1]] if isinstance(it, tuple) else tk.tok.encode(it) for it in items]


# ---------------------------------------------------------------------------------------- property tests
@settings(max_examples=12)
@given(items=_batch, n_frames=_n_frames,
       cut=_cut)
def test_agree_synthetic(synth, items, n_frames, cut):
    run_both(synth, _rows_mixed(synth, items), n_frames, cut=cut)


@settings(max_examples=12)
@given(items=_batch, n_frames=_n_frames,
       cut=_cut)
def test_agree_bpe(bpe, items, n_frames, cut):
    run_both(bpe, _rows_mixed(bpe, items), n_frames, cut=cut)


def _valid_completion(rng: np.random.Generator, n_frames: int) -> str:
    """A fully valid completion with 1-4 moments (times inside the clip, some overlapping/duplicated)."""
    objs = []
    for _ in range(rng.integers(1, 5)):
        a, b = sorted(rng.integers(0, n_frames, 2))
        ff = rng.choice(["00", "50", "5", "49", "99"])
        objs.append(_obj("00:%02d.%s" % (a // 2, ff), "0:%d.%d" % (b // 2, rng.integers(0, 100)),
                         json.dumps("obj %d" % rng.integers(0, 99))))
    return _ans(*objs)


def test_agree_valid_completions(synth, bpe):
    """Deterministic fully valid completions so the segment/keyframe paths are always exercised."""
    rng = np.random.default_rng(1)
    for tk in (synth, bpe):
        nfs = [int(x) for x in rng.integers(8, F + 1, B)]
        want, _ = run_both(tk, _rows(tk, [_valid_completion(rng, n) for n in nfs]), nfs)
        assert want["key_valid"].sum() > B and (want["n_unique"] > K).any()
        if tk.msb is None:  # nothing cut: every row is a valid completion
            assert want["format_ok"].all() and (want["n_consistent"] > 0).all()


def test_bpe_merges_json_punctuation(bpe):
    """The trained BPE really merges quotes/colons/spaces, so spans can straddle token boundaries."""
    pieces = [bpe.tok.token_bytes(i) for i in bpe.tok.encode('{"start_time": "00:01.50", "end_time": "0:2.0"}')]
    assert any(len(p) > 1 and (b'"' in p or b":" in p) for p in pieces)


# ---------------------------------------------------------------------------------------- hand-written rules
def _obj(s, e, d='"red ball"'):
    return '{"start_time": "%s", "end_time": "%s", "description": %s}' % (s, e, d)


def _ans(*objs, pre="<think>ok</think>\n<answer>\n", post="\n</answer>"):
    return pre + "\n".join(objs) + post


CASES = [
    # (text, n_frames, expected subset of reference outputs for this row)
    (_ans(_obj("00:01.00", "00:01.00")), 16,
     dict(format_ok=True, n_objects=1, n_wellformed=1, n_consistent=1, key_frames=[2, 0, 0, 0], n_unique=1)),
    (_ans('{"start_time": "00:01.00", "end_time": "00:01.00", "description": {"a": 1}}'), 16,
     dict(n_objects=1, n_wellformed=0, n_unique=0)),  # nested braces: the match ends at the inner '}'
    (_ans('{"start_time": "00:01.00", "end_time": "00:01.00"}'), 16, dict(n_objects=1, n_wellformed=0)),
    (_ans(_obj("00:01.00", "00:01.00", "null")), 16, dict(n_wellformed=0)),
    (_ans(_obj("00:03.00", "00:01.00")), 16, dict(n_wellformed=1, n_consistent=0)),  # start > end
    (_ans(_obj("00:01.00", "00:04.50")), 8, dict(n_wellformed=1, n_consistent=0)),  # end > n/2
    (_ans(_obj("00:03.50", "00:04.00")), 8, dict(n_consistent=1, obj_frames=[[7, 7]] + [[0, 0]] * 7)),  # end == n/2
    (_ans(_obj("00:01.00", "00:01.00"), _obj("00:01.00", "00:01.40", '"blue"')), 16,
     dict(n_indices=2, n_unique=1, key_frames=[2, 0, 0, 0])),  # duplicate frame
    (_ans(_obj("00:00.00", "00:03.00")), 16,
     dict(n_indices=7, n_unique=7, key_frames=[0, 1, 2, 3], key_valid=[True] * 4)),  # > 4 frames
    (_ans(_obj("00:01.5", "00:01.500")), 16, dict(obj_frames=[[2, 12]] + [[0, 0]] * 7)),  # 1- and 3-digit ff
    (_ans('{"start_time": "00:01.00", "start_time": "00:02.00", "end_time": "00:02.00", "description": "x"}'), 16,
     dict(key_frames=[4, 0, 0, 0])),  # duplicate key: last wins
    (_ans(_obj("00:01.00abc", "00:01.00")), 16, dict(n_wellformed=1)),  # re.match: prefix is enough
    ('<think>a</think> <answer>b</answer> tail', 16, dict(format_ok=False, answer_found=True)),
    ('<answer>  a b \n </answer>', 16, dict(format_ok=False, answer_found=True)),
    ('<think>a</think><answer>x', 16, dict(format_ok=False, answer_found=False)),
]


def test_rules_hand_written(synth, bpe):
    texts = [c[0] for c in CASES]
    for tk in (synth, bpe):
        for start in range(0, len(CASES), B):
            chunk = CASES[start : start + B]
            rows = _rows(tk, [c[0] for c in chunk]) + [[]] * (B - len(chunk))
            nfs = [c[1] for c in chunk] + [1] * (B - len(chunk))
            want, _ = run_both(tk, rows, nfs)
            for i, (_, _, exp) in enumerate(chunk):
                for k, v in exp.items():
                    np.testing.assert_array_equal(want[k][i], np.asarray(v), err_msg=f"{texts[start + i]!r}: {k}")


def test_descriptions_and_spans(synth, bpe):
    text = _ans(_obj("00:02.00", "00:02.50", '"the red ball"'), _obj("00:01.00", "00:02.00", '"blue cube"'))
    for tk in (synth, bpe):
        ids = tk.tok.encode(text)
        want, _ = run_both(tk, [ids] + [[]] * (B - 1), [16] * B)
        data = b"".join(tk.tok.token_bytes(i) for i in ids)
        descs = [data[a:b] for a, b in want["key_desc_bytes"][0]]
        assert descs == [b"blue cube", b"blue cube", b"the red ball", b"the red ball"]  # frames 2,3,4,5
        assert list(want["key_frames"][0]) == [2, 3, 4, 5]
        for (a, b), (ta, tb), exact in zip(want["key_desc_bytes"][0], want["key_desc_tokens"][0],
                                           want["key_desc_tok_exact"][0]):
            covered = b"".join(tk.tok.token_bytes(i) for i in ids[ta:tb])
            assert data[a:b] in covered
            assert (covered == data[a:b]) == exact
        a, b = want["answer_bytes"][0]
        assert data[a:b].startswith(b"{") and data[a:b].endswith(b"}")
    # the synthetic tokenizer has quotes as their own tokens: spans are exact
    assert want is not None


def test_refavs_answer_span(synth):
    text = "<think>the cello sounds</think><answer> The cello </answer>"
    ids = synth.tok.encode(text)
    want, _ = run_both(synth, [ids] + [[]] * (B - 1), [1] * B)
    ta, tb = want["answer_tokens"][0]
    assert synth.tok.decode(ids[ta:tb]) == "The cello" and want["answer_tok_exact"][0]


def test_boxes_hand_written(synth, bpe):
    texts = [
        '```json\n[{"bbox_2d": [10.5, -2, 3e1, 0.25], "label": "cup"}, {"bbox_2d": [1, 2, 3]}, '
        '{"bbox_2d": [4, 5, 6, 7]}, {"bbox_2d": [8, 9, 10, 11]}]\n```',
        '{"bbox_2d": ["1", 2, 3, 4]} {"bbox_2d": [1, 2, 3, 4] {"bbox_2d": [0.0045, 1E2, -0, 7]}',
        'no json here',
    ]
    ratios = np.full((B, 2), [2.0, 0.5], np.float32)
    for tk in (synth, bpe):
        _, wb = run_both(tk, _rows(tk, texts) + [[]] * (B - 3), [4] * B, ratios=ratios)
        np.testing.assert_array_equal(wb["box_valid"][:3], [[True, False, True], [False, False, False], [False] * 3])
        np.testing.assert_array_equal(wb["boxes"][0, 0], np.float32([5.25, -4.0, 15.0, 0.5]))
        np.testing.assert_array_equal(wb["boxes"][0, 2], np.float32([2.0, 10.0, 3.0, 14.0]))
        np.testing.assert_array_equal(wb["n_json"][:3], [4, 2, 0])  # nested/unclosed objects still count


def test_boxes_after_a_label(synth, bpe):
    """The label-first grounder answer (``warmstart.tasks.box_answer(boxes, label)``) parses to its boxes."""
    from omnir1_jax.warmstart.tasks import box_answer

    texts = [box_answer([[10, 20, 30, 40]], "the small red circle"),
             box_answer([[1, 2, 3, 4], [5, 6, 7, 8]], "the blue square"), box_answer([], "the red circle")]
    assert texts[0] == '[{"label": "the small red circle", "bbox_2d": [10, 20, 30, 40]}]'
    ratios = np.full((B, 2), [2.0, 0.5], np.float32)
    for tk in (synth, bpe):
        _, wb = run_both(tk, _rows(tk, texts) + [[]] * (B - 3), [4] * B, ratios=ratios)
        np.testing.assert_array_equal(wb["box_valid"][:3], [[True, False, False], [True, True, False], [False] * 3])
        np.testing.assert_array_equal(wb["boxes"][0, 0], np.float32([5.0, 40.0, 15.0, 80.0]))
        np.testing.assert_array_equal(wb["boxes"][1, 1], np.float32([2.5, 12.0, 3.5, 16.0]))


def test_number_contract():
    for text, want in [(b"12", 12.0), (b"-3.25", -3.25), (b"1e2", 100.0), (b"0.0045", 0.0045),
                       (b"123456789.123", 123456789.0), (b"1234567891234", 1234567891000.0), (b"0", 0.0)]:
        assert np.float32(parse_number_f32(text)) == np.float32(want), text


@settings(max_examples=150)
@given(s=st.one_of(vos_object(), box_object()))
def test_flat_json_matches_json_loads_on_plain_objects(s):
    """Without escapes/nested arrays the flat reader accepts exactly what json.loads accepts as an object."""
    if "\\" in s or "[[" in s or not s.endswith("}") or s.count("}") != 1:
        return
    try:
        ok = isinstance(json.loads(s), dict)
    except ValueError:
        ok = False
    assert (parse_flat_object(s.encode()) is not None) == ok, s


def test_integer_time_semantics_match_float():
    """int(t*2) and t <= n/2 with the original's float64 t equal the exact hundredths rule (no ties here)."""
    ss, ff = np.meshgrid(np.arange(0, 200), np.arange(0, 1000), indexing="ij")
    t = ss + (ff * 10) / 1000  # float64, as in the reference
    hund = ss * 100 + ff
    np.testing.assert_array_equal(np.floor(t * 2).astype(np.int64), hund // 50)
    for n in range(1, 64):
        np.testing.assert_array_equal(t <= n / 2, hund <= 50 * n)
