"""The Omni-R1 authors' GRPO step recipe in PyTorch / transformers (benchmark-only code, omni_r1.md §7, §10).

Per step, as the released trainer does it: ``generate`` G samples per prompt -> decode + regex parse on the
host -> greedy grounding of every (completion, keyframe) by the frozen reference thinker (batched
``generate``, up to 32 image prompts per call) -> SAM2 video propagation with ``Sam2VideoModel`` and one
``Sam2VideoInferenceSession`` per completion (one request per rollout) -> rewards on the host (NumPy) ->
reference log-probs (no grad) + policy forward/backward + ``torch.optim.AdamW`` step.

Random tiny models write unparsable completions and boxes, so to keep the work that a trained policy
would cause, every completion grounds K FIXED keyframes (frames 0..K-1) with the referring expression as
description, and every completion tracks one object prompted with the ground-truth box on those K frames
when the grounder gave none.  Our jitted step does (at least) the same work: it grounds all N*K slots and
propagates G track slots per clip (``sam_tracks_per_clip = G``, ``benchmarks/grpo_step.py``; all G*O with 0)
at static shapes, masking the unprompted ones.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import numpy as np

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
OBJ_RE = re.compile(r"\{[^{}]*\}")
BOX_RE = re.compile(r'"bbox_2d"\s*:\s*\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]')
GROUND_BATCH = 32  # the authors batch up to 32 image prompts per grounding call


def hf_thinker(params: Any, config: Any, tmp_dir: str) -> Any:
    """Our thinker params exported with ``export_hf`` and loaded as a transformers thinker (float32)."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omnir1_jax.models.qwen_omni import export_hf

    export_hf(params, config, tmp_dir)
    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_dir, dtype=torch.float32)


def hf_sam2(sam_cfg: Any, sam_params: Any) -> Any:
    """Our SAM2 params converted with ``flax_to_hf_state_dict`` into ``transformers.Sam2VideoModel``."""
    import torch
    from transformers import Sam2VideoModel

    from omnir1_jax.models.sam2.convert import flax_to_hf_state_dict

    hf = Sam2VideoModel(sam_cfg.to_hf()).eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in flax_to_hf_state_dict(sam_params).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return hf


def parse_completion(text: str) -> list[tuple[int, str]]:
    """(keyframe seconds x 100, description) pairs of a VOS answer, the released code's regex way."""
    m = ANSWER_RE.search(text)
    out = []
    for obj in OBJ_RE.findall(m.group(1)) if m else []:
        try:
            d = json.loads(obj)
            mm, ss = str(d["start_time"]).split(":")
            out.append((int(round((int(mm) * 60 + float(ss)) * 100)), str(d["description"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    return float(inter / max(area(a) + area(b) - inter, 1e-6))


class TorchRecipe:
    """One GRPO step of the released recipe on the same weights and inputs as our jitted step."""

    def __init__(self, hf_policy: Any, hf_ref: Any, hf_sam: Any, tok: Any, host: dict[str, np.ndarray],
                 video_grid: tuple, hires_grid: tuple, *, G: int, T: int, Tg: int, K: int, query: str,
                 variant: str = "default", lr: float = 1e-6, beta: float = 0.04, seed: int = 0):
        import torch

        from omnir1_jax.rollout.grounding_spec import host_prompt_ids

        self.torch = torch
        self.policy, self.ref, self.sam, self.tok = hf_policy.train(), hf_ref.eval(), hf_sam.eval(), tok
        for name, p in self.policy.named_parameters():  # the towers are frozen (as in our optimizer)
            p.requires_grad_(not (name.startswith("visual") or name.startswith("audio_tower")))
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=0.01)
        self.h, self.G, self.T, self.Tg, self.K, self.beta = host, G, T, Tg, K, beta
        self.B = host["input_ids"].shape[0]
        self.vgrid, self.hgrid = video_grid, hires_grid
        self.n_img = int(np.prod(hires_grid)) // 4
        self.query, self.variant, self.prompt_ids = query, variant, host_prompt_ids
        self.gen = torch.Generator().manual_seed(seed)
        for m in (self.policy, self.ref):
            m.generation_config.pad_token_id = tok.pad_id
        torch.manual_seed(seed)

    def decode(self, row: list[int]) -> str:
        """Tokenizer decode; ids of the padded vocab tail (no token) decode to nothing, as in our byte table."""
        return self.tok.decode([i for i in row if i < self.tok.vocab_size])

    # ------------------------------------------------------------------------------------------ stages
    def generate(self):
        """G samples per prompt, exactly T new tokens (no early EOS), top-p 0.95, temperature 1."""
        t = self.torch
        h = self.h
        with t.inference_mode():
            out = self.policy.generate(
                input_ids=t.from_numpy(h["input_ids"]).long(), attention_mask=t.from_numpy(h["attention_mask"]).long(),
                pixel_values_videos=t.from_numpy(h["pixel_values_videos"]),
                video_grid_thw=t.tensor([self.vgrid] * self.B), video_second_per_grid=t.ones(self.B),
                do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                num_return_sequences=self.G, max_new_tokens=self.T, min_new_tokens=self.T, eos_token_id=None)
        return out[:, h["input_ids"].shape[1]:].clone()  # [N, T]

    def parse(self, completions) -> list[list[tuple[int, str]]]:
        """Decode + regex parse; unparsable completions ground K fixed keyframes with the query."""
        F = int(self.h["num_frames"][0])
        slots = []
        for row in completions.tolist():
            found = parse_completion(self.decode(row))
            frames = [min(int(round(t / 100)), F - 1) for t, _ in found][: self.K]
            descs = [d for _, d in found][: self.K]
            if not frames:  # random tiny policy: fixed keyframes, same work as a trained one
                frames, descs = [k % F for k in range(self.K)], [self.query] * self.K
            slots.append(list(zip(frames, descs)))
        return slots

    def ground(self, slots) -> np.ndarray:
        """Greedy grounding of every (completion, keyframe) by the reference thinker, batched <= 32 prompts."""
        t = self.torch
        jobs = [(n, k, f, d) for n, s in enumerate(slots) for k, (f, d) in enumerate(s)]
        boxes = np.full((len(slots), self.K, 4), np.nan, np.float32)
        ratio = self.h["ground_ratio"]
        for i in range(0, len(jobs), GROUND_BATCH):
            chunk = jobs[i:i + GROUND_BATCH]
            ids = [self.prompt_ids(self.tok, d, self.variant, self.n_img) for _, _, _, d in chunk]
            L = max(map(len, ids))
            inp = np.full((len(ids), L), self.tok.pad_id, np.int64)
            att = np.zeros((len(ids), L), np.int64)
            for r, row in enumerate(ids):
                inp[r, L - len(row):], att[r, L - len(row):] = row, 1
            b_of = lambda n: n // self.G  # noqa: E731
            pix = np.concatenate([self.h["hires_patches"][b_of(n), f] for n, _, f, _ in chunk])
            with t.inference_mode():
                out = self.ref.generate(input_ids=t.from_numpy(inp), attention_mask=t.from_numpy(att),
                                        pixel_values=t.from_numpy(pix),
                                        image_grid_thw=t.tensor([self.hgrid] * len(ids)),
                                        do_sample=False, max_new_tokens=self.Tg, eos_token_id=list(self.tok.eos_ids))
            for (n, k, _, _), row in zip(chunk, out[:, L:].tolist()):
                m = BOX_RE.search(self.decode(row))
                if m:
                    boxes[n, k] = np.asarray([float(v) for v in m.groups()]) / np.tile(ratio[b_of(n)], 2)
        return boxes

    def segment(self, slots, boxes: np.ndarray) -> np.ndarray:
        """One SAM2 video session per completion: box prompts on its keyframes, forward propagation."""
        t = self.torch
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        N = len(slots)
        F, S = self.h["sam_pixels"].shape[1], self.h["sam_pixels"].shape[-1]
        masks = []
        with t.inference_mode():
            for n in range(N):
                b = n // self.G
                sess = Sam2VideoInferenceSession(video=t.from_numpy(self.h["sam_pixels"][b]), video_height=S,
                                                 video_width=S, dtype=t.float32)
                idx = sess.obj_id_to_idx(0)
                for k, (f, _) in enumerate(slots[n]):
                    box = boxes[n, k] if np.all(np.isfinite(boxes[n, k])) else self.h["gt_boxes"][b, 0, f]
                    box = box * np.tile(self.h["sam_scale"][b], 2)
                    sess.add_point_inputs(idx, f, {"point_coords": t.tensor(box, dtype=t.float32).reshape(1, 1, 2, 2),
                                                   "point_labels": t.tensor([[[2, 3]]], dtype=t.int32)})
                    sess.obj_with_new_inputs = [0]
                    self.sam(inference_session=sess, frame_idx=f)
                per = {}
                for o in self.sam.propagate_in_video_iterator(sess, start_frame_idx=0):
                    per[o.frame_idx] = (o.pred_masks[:, 0] > 0).any(0).numpy()
                masks.append(np.stack([per[i] for i in range(F)]))
        return np.stack(masks)  # [N, F, h, w]

    def rewards(self, completions, slots, boxes: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Host rewards (format + keyframe box IoU + SAM2 mask IoU) and group-normalised advantages [N]."""
        N, m = len(slots), self.h["gt_masks"].shape[-1]
        r = np.zeros(N, np.float32)
        for n in range(N):
            b = n // self.G
            text = self.decode(completions[n].tolist())
            fmt = 1.0 if ANSWER_RE.search(text) else 0.0
            ious = [box_iou(boxes[n, k], self.h["gt_boxes"][b, 0, f]) if np.all(np.isfinite(boxes[n, k])) else 0.0
                    for k, (f, _) in enumerate(slots[n])]
            pm = masks[n]
            if pm.shape[-1] != m:  # nearest downsample to the reward-mask side
                step = pm.shape[-1] // m
                pm = pm[..., ::step, ::step]
            gt = self.h["gt_masks"][b, 0]
            inter, union = np.logical_and(pm, gt).sum((1, 2)), np.logical_or(pm, gt).sum((1, 2))
            j = np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean()
            r[n] = fmt + float(np.mean(ious)) + 2.0 * float(j)
        g = r.reshape(-1, self.G)
        adv = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)
        return adv.reshape(-1)

    def update(self, completions, adv: np.ndarray) -> float:
        """Reference log-probs (no grad), policy forward + backward, clip 5, AdamW step (lr 1e-6)."""
        t = self.torch
        h, G = self.h, self.G
        # A sampled multimodal special id (placeholder, vision/audio bos/eos) would be taken for a media token by
        # transformers' rope index: feed it as pad (the target keeps the sampled id; our step embeds every
        # completion token as text).
        mm = t.tensor(sorted(int(i) for i in self.tok.mm_ids.values()))
        fed = completions.masked_fill(t.isin(completions, mm), self.tok.pad_id)
        ids = t.cat([t.from_numpy(np.repeat(h["input_ids"], G, 0)).long(), fed], 1)
        att = t.cat([t.from_numpy(np.repeat(h["attention_mask"], G, 0)).long(), t.ones_like(completions)], 1)
        n_vid = int(np.prod(self.vgrid))
        pix = t.from_numpy(np.concatenate([h["pixel_values_videos"][b * n_vid:(b + 1) * n_vid]
                                           for b in range(self.B) for _ in range(G)]))
        kw = dict(input_ids=ids, attention_mask=att, pixel_values_videos=pix,
                  video_grid_thw=t.tensor([self.vgrid] * ids.shape[0]), video_second_per_grid=t.ones(ids.shape[0]))
        P = h["input_ids"].shape[1]

        def logp(model):
            logits = model(**kw).logits[:, P - 1:-1].float()  # [N, T, V]
            return t.gather(t.log_softmax(logits, -1), 2, completions[..., None]).squeeze(-1)

        with t.no_grad():
            ref = logp(self.ref)
        lp = logp(self.policy)
        d = ref - lp
        kl = t.exp(d) - d - 1
        per_tok = -(t.exp(lp - lp.detach()) * t.from_numpy(adv)[:, None] - self.beta * kl)
        loss = per_tok.mean(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.nn.utils.clip_grad_norm_([p for p in self.policy.parameters() if p.requires_grad], 5.0)
        self.opt.step()
        return float(loss.detach())

    def step(self) -> dict[str, float]:
        """One full step; returns wall seconds per stage (and ``total``)."""
        times, t0 = {}, time.perf_counter()

        def mark(name):
            nonlocal t0
            now = time.perf_counter()
            times[name], t0 = now - t0, now

        comp = self.generate()
        mark("generate")
        slots = self.parse(comp)
        mark("parse")
        boxes = self.ground(slots)
        mark("ground")
        masks = self.segment(slots, boxes)
        mark("sam2")
        adv = self.rewards(comp, slots, boxes, masks)
        mark("rewards")
        self.last_loss = self.update(comp, adv)
        mark("update")
        self.last_tokens = tuple(comp.shape)
        times["total"] = sum(times.values())
        return times
