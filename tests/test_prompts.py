"""Placeholder expansion must give the same input_ids as transformers' Qwen2_5OmniProcessor.

Building the full processor offline needs torchvision (its image/video processors), which the project does
not install; the text side is what we must match, so the test builds a byte-level Qwen2 tokenizer in memory
and runs the processor's own `replace_image_token` / `replace_video_token` / `replace_audio_token` /
`get_text_with_replacements` (and its audio-length formula) on a processor instance without the
pixel processors.
"""

import types

import numpy as np
import pytest

from omnir1_jax import prompts
from omnir1_jax.text import HFTokenizer, SyntheticTokenizer
from omnir1_jax.text.tokenizer import _bytes_to_unicode

MM = {"image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "audio_token": "<|AUDIO|>",
      "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
      "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


@pytest.fixture(scope="module")
def hf():
    from transformers import Qwen2_5OmniProcessor, Qwen2TokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(_bytes_to_unicode().values()))}
    tok = Qwen2TokenizerFast(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                             extra_special_tokens=MM)
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                                          *MM.values()]})
    proc = Qwen2_5OmniProcessor.__new__(Qwen2_5OmniProcessor)  # text side only (no torchvision here)
    proc.tokenizer = tok
    for n in ("image", "audio", "video"):
        setattr(proc, f"{n}_token", getattr(tok, f"{n}_token"))
        setattr(proc, f"{n}_token_id", getattr(tok, f"{n}_token_id"))
    proc.image_processor = types.SimpleNamespace(merge_size=2)
    proc.video_processor = types.SimpleNamespace(merge_size=2, temporal_patch_size=2)
    return proc, tok


def _hf_ids(proc, tok, text, video_grids, image_grids, audio_lengths):
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    ir = [proc.replace_image_token({"image_grid_thw": np.asarray(image_grids)}, i) for i in range(len(image_grids))]
    vr = [proc.replace_video_token({"video_grid_thw": np.asarray(video_grids)}, i, load_audio_from_video=False)
          for i in range(len(video_grids))]
    n_audio = _get_feat_extract_output_lengths(np.asarray(audio_lengths, np.int64))
    ar = [proc.replace_audio_token({"num_audio_tokens": n_audio}, i) for i in range(len(audio_lengths))]
    out, _ = proc.get_text_with_replacements([text], ir, vr, ar)
    return tok(out)["input_ids"][0]


@pytest.mark.parametrize("seed", range(4))
def test_expansion_matches_processor(hf, seed):
    proc, tok = hf
    rng = np.random.default_rng(seed)
    video_grids = [(2 * int(rng.integers(1, 5)) // 2, 2 * int(rng.integers(1, 6)), 2 * int(rng.integers(1, 6)))
                   for _ in range(int(rng.integers(0, 3)))]
    image_grids = [(1, 2 * int(rng.integers(1, 6)), 2 * int(rng.integers(1, 6))) for _ in range(int(rng.integers(0, 3)))]
    audio_lengths = [int(rng.integers(3, 3000)) for _ in range(int(rng.integers(0, 3)))]
    items = ["<|vision_bos|><|VIDEO|><|vision_eos|>"] * len(video_grids) + \
            ["<|vision_bos|><|IMAGE|><|vision_eos|>"] * len(image_grids) + \
            ["<|audio_bos|><|AUDIO|><|audio_eos|>"] * len(audio_lengths)
    rng.shuffle(items)
    text = "<|im_start|>user\n" + " text ".join(items) + " Find [the red circle].<|im_end|>\n<|im_start|>assistant\n"
    ours = HFTokenizer(tok).encode(prompts.expand_placeholders(text, video_grids=video_grids, image_grids=image_grids,
                                                               audio_lengths=audio_lengths))
    theirs = _hf_ids(proc, tok, text, video_grids, image_grids, audio_lengths)
    assert ours == list(theirs)
    assert ours.count(tok.video_token_id) == sum(t * h * w // 4 for t, h, w in video_grids)


def test_audio_token_formula():
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    for n in (1, 2, 3, 4, 5, 99, 100, 1000, 30000):
        assert prompts.num_audio_tokens(n) == int(_get_feat_extract_output_lengths(np.int64(n)))


def test_placeholder_count_mismatch_raises():
    with pytest.raises(ValueError, match="placeholders"):
        prompts.expand_placeholders("<|VIDEO|>", video_grids=[])


def test_batch_prompts_left_padded():
    tok = SyntheticTokenizer()
    batch = {"task": ["revos", "revos"], "uid": ["v/0", "v/1"], "expression": ["the red circle", "the blue one"],
             "num_frames": np.array([4, 4]), "video_grid_thw": np.array([[2, 4, 6], [2, 4, 6]])}
    out = prompts.batch_prompts(tok, batch, 640, "vos_no_hint")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (2, 640) and mask.shape == (2, 640)
    vid = tok.mm_ids["<|VIDEO|>"]
    assert ((ids == vid).sum(1) == 12).all()  # 2*4*6 / 2**2
    n = mask.sum(1)
    for i in range(2):
        assert (ids[i, : 640 - n[i]] == tok.pad_id).all() and mask[i, 640 - n[i]:].all()
        assert tok.decode(ids[i][mask[i] == 1]).count(batch["expression"][i]) >= 1
    with pytest.raises(ValueError, match="max_prompt_length"):
        prompts.batch_prompts(tok, batch, 50, "vos_no_hint")
