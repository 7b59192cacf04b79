"""The Omni-R1 paper's published numbers (arXiv 2505.20256) as plain data, one source tag per row.

Tags: [P1] = arXiv v1 (26 May 2025), [P2] = NeurIPS 2025 camera-ready.  Values are x100 as printed;
``None`` means the paper prints "–".  Transcribed from ``shared/reference/omni_r1.md`` §6.6 and §9 and
``datasets_and_metrics.md`` §6; the paper's own inconsistencies are kept in ``NOTES``, not "fixed".
"""

from __future__ import annotations

from typing import Any

# Column keys of each table, in print order, with their header text.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "refavs": (("seen_JF", "Seen J&F"), ("seen_J", "Seen J"), ("seen_F", "Seen F"),
               ("unseen_JF", "Unseen J&F"), ("unseen_J", "Unseen J"), ("unseen_F", "Unseen F")),
    "revos": (("referring", "Referring"), ("reasoning", "Reasoning"), ("single", "Single"),
              ("multi", "Multi"), ("overall", "Overall")),
    "mevis": (("JF", "J&F"),),
}
COLUMNS["ablation"] = COLUMNS["revos"]
COLUMNS["s2swap"] = COLUMNS["revos"]


def _row(model: str, source: str, keys: tuple[str, ...], vals: tuple[float | None, ...], note: str = "") -> dict[str, Any]:
    assert len(keys) == len(vals), model
    return {"model": model, "source": source, "values": dict(zip(keys, vals)), "note": note}


_AVS = tuple(k for k, _ in COLUMNS["refavs"])
_VOS = tuple(k for k, _ in COLUMNS["revos"])

# Table 1: RefAVSBench (identical in both versions); † = masks from SAM2 prompted by the model's boxes.
REFAVS: tuple[dict[str, Any], ...] = (
    _row("AVSBench + text", "[P1,P2] Table 1", _AVS, (37.2, 23.2, 51.1, 43.5, 32.4, 54.7)),
    _row("AVSegFormer + text", "[P1,P2] Table 1", _AVS, (40.2, 33.5, 47.0, 43.1, 36.1, 50.1)),
    _row("GAVS + text", "[P1,P2] Table 1", _AVS, (39.4, 28.9, 49.8, 39.8, 29.8, 49.7)),
    _row("ReferFormer + audio", "[P1,P2] Table 1", _AVS, (40.7, 31.3, 50.1, 39.6, 30.4, 48.8)),
    _row("R2VOS + audio", "[P1,P2] Table 1", _AVS, (33.0, 25.0, 41.0, 38.9, 27.9, 49.8)),
    _row("EEMC", "[P1,P2] Table 1", _AVS, (42.8, 34.2, 51.3, 57.2, 49.5, 64.8), "Ref-AVS paper SOTA"),
    _row("Qwen2.5-Omni-7B†", "[P1,P2] Table 1", _AVS, (31.6, 27.7, 35.5, 62.3, 59.0, 65.7)),
    _row("Qwen2.5-Omni-7B† (SFT)", "[P1,P2] Table 1", _AVS, (39.1, 35.4, 42.8, 66.2, 63.1, 69.3),
         "SFT recipe not given"),
    _row("Omni-R1-7B†", "[P1,P2] Table 1", _AVS, (47.2, 43.0, 51.4, 74.2, 71.3, 77.0)),
    _row("Δ vs SFT", "[P2] Table 1", _AVS, (8.1, 7.6, 8.6, 8.0, 8.2, 7.7),
         "v1 prints +16.4/+15.3/+9.4 for Seen, inconsistent with its own table"),
)

# Table 2: ReVOS J&F. † = Omni-R1 is S1 and S2 (Qwen grounding + SAM2); ‡ = Sa2VA as S2.
REVOS: tuple[dict[str, Any], ...] = (
    _row("LISA-13B", "[P2] Table 2", _VOS, (None, None, None, None, 41.6)),
    _row("TrackGPT-13B", "[P2] Table 2", _VOS, (None, None, None, None, 45.0)),
    _row("VISA-13B", "[P2] Table 2", _VOS, (None, None, None, None, 50.9)),
    _row("Sa2VA-8B", "[P2] Table 2", _VOS, (None, None, None, None, 57.6)),
    _row("Sa2VA-26B", "[P2] Table 2", _VOS, (None, None, None, None, 58.4)),
    _row("Qwen2.5-Omni-7B†", "[P2] Table 2", _VOS, (46.3, 26.9, 38.6, 37.4, 36.6)),
    _row("Omni-R1-7B† (camera-ready)", "[P2] Table 2", _VOS, (52.5, 36.9, 45.0, 46.6, 44.7)),
    _row("Omni-R1-7B† (v1)", "[P1] Table 2", _VOS, (53.2, 41.9, 48.3, 46.5, 47.6),
         "superseded by the camera-ready row"),
    _row("Omni-R1-8B‡ (S2 = Sa2VA-1B)", "[P2] Table 2", _VOS, (61.6, 50.7, 56.6, 47.3, 56.2)),
    _row("Omni-R1-11B‡ (S2 = Sa2VA-4B)", "[P2] Table 2", _VOS, (64.1, 53.7, 59.2, 51.0, 58.9)),
)

# MeViS val_u J&F [P2 Table 7; v1 Table 5].
MEVIS: tuple[dict[str, Any], ...] = (
    _row("Sa2VA-1B", "[P2] Table 7 / [P1] Table 5", ("JF",), (53.4,)),
    _row("Sa2VA-4B", "[P2] Table 7 / [P1] Table 5", ("JF",), (55.4,)),
    _row("Qwen2.5-Omni-7B†", "[P2] Table 7 / [P1] Table 5", ("JF",), (33.6,)),
    _row("Omni-R1-8B‡", "[P2] Table 7 / [P1] Table 5", ("JF",), (55.4,)),
)

# Reward ablation on ReVOS (one epoch on ReVOS + MeViS, exactly 4 keyframes), J&F.
ABLATION: tuple[dict[str, Any], ...] = (
    _row("Omni-R1 + refCOCOg", "[P1,P2] Table 4", _VOS, (52.5, 36.9, 45.0, 46.6, 44.7)),
    _row("R_K + R_A + R_G", "[P1,P2] Table 4", _VOS, (44.2, 32.5, 38.2, 41.9, 38.4)),
    _row("R_K + R_G", "[P1,P2] Table 4", _VOS, (45.5, 34.2, 39.6, 42.6, 39.9)),
    _row("R_K + R_A", "[P1,P2] Table 4", _VOS, (43.1, 29.5, 36.8, 37.5, 36.3)),
    _row("R_K", "[P1,P2] Table 4", _VOS, (44.1, 26.2, 36.6, 34.1, 35.2)),
    _row("R_G only", "[P2] Table 4", _VOS, (47.3, 28.8, 38.9, 40.4, 38.1)),
    _row("R_G, Sa2VA as S2", "[P2] Table 4", _VOS, (58.1, 43.5, 50.6, 53.5, 50.8)),
    _row("R_K + R_G, Sa2VA as S2", "[P2] Table 4", _VOS, (60.4, 41.8, 51.7, 51.0, 51.1)),
    _row("R_K + R_A + R_G, Sa2VA as S2", "[P2] Table 4", _VOS, (61.8, 46.1, 54.6, 50.7, 54.0)),
)

# System-2 swaps on ReVOS, J&F [P2 Tables 5, 6].
S2SWAP: tuple[dict[str, Any], ...] = (
    _row("Original (Omni-R1-7B†, SAM2)", "[P2] Table 5", _VOS, (52.5, 36.9, 45.0, 46.6, 44.7)),
    _row("VisionReasoner as grounder, training only", "[P2] Table 5", _VOS, (52.2, 39.4, 45.4, 49.2, 45.8)),
    _row("VisionReasoner also at inference", "[P2] Table 5", _VOS, (55.5, 41.7, 49.1, 44.7, 48.6)),
    _row("SAM2 as segmenter", "[P2] Table 6", _VOS, (None, None, None, None, 45.8),
         "Table 6 reference row"),
    _row("TAM instead of SAM2 as segmenter", "[P2] Table 6", _VOS, (50.6, 39.1, 44.0, 51.3, 44.9)),
)

PAPER: dict[str, tuple[dict[str, Any], ...]] = {
    "refavs": REFAVS, "revos": REVOS, "mevis": MEVIS, "ablation": ABLATION, "s2swap": S2SWAP,
}

TITLES: dict[str, str] = {
    "refavs": "RefAVSBench (Omni-R1 Table 1), x100",
    "revos": "ReVOS J&F (Omni-R1 Table 2), x100",
    "mevis": "MeViS val_u (Omni-R1 Table 7)",
    "ablation": "Reward ablation on ReVOS, J&F (Omni-R1 Table 4)",
    "s2swap": "System-2 swaps on ReVOS, J&F (Omni-R1 Tables 5, 6)",
    "synthetic": "Synthetic held-out splits (no paper rows)",
}

NOTES: dict[str, tuple[str, ...]] = {
    "refavs": ("† masks from SAM2 prompted by the model's grounding output.",
               "Camera-ready claims +4.4 (v1: +4.6) Seen J&F and +17.0 Unseen J&F over EEMC."),
    "revos": ("† Omni-R1 is System 1 and System 2 (Qwen grounding, SAM2); ‡ Sa2VA as System 2.",
              "Both the v1 and the camera-ready Omni-R1-7B† rows are shown."),
    "mevis": ("‡ Omni-R1-7B as System 1, Sa2VA as System 2.",),
    "ablation": ("Reading: R_A lowers the score with the training-time System 2 but helps when "
                 "transferring to a different System 2.",),
    "s2swap": ("Table 6 compares SAM2 45.8 with TAM 44.9 overall.",),
}
