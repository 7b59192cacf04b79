"""Paper-table rendering: the published numbers, our numbers with protocol markers, valid LaTeX, the CLI."""

import json
import re
import subprocess
import sys

import pytest

from omnir1_jax import paper_results as pr
from omnir1_jax import tables

REFAVS_OURS = {
    "Omni-R1-JAX (GRPO)": {
        "test_s": {"J": 41.234, "F": 50.71, "JF": 45.97, "S": None, "protocol": "official@256/batch4"},
        "test_u": {"J": 63.4, "F": float("nan"), "JF": None, "protocol": "davis@native"},
    },
    "Omni-R1-JAX (SFT)": {
        "test_s": {"J": 33.3, "F": 44.4, "JF": 38.84, "protocol": "official@256/batch4"},
        "test_u": {"J": 55.5, "F": 66.6, "JF": 61.04, "protocol": "official@256/batch4"},
    },
}
REVOS_OURS = {
    "referring": {"J": 49.1, "F": 53.3, "JF": 51.2}, "reasoning": {"J": 30.0, "F": 34.2, "JF": 32.1},
    "overall": {"J": 39.55, "F": 43.75, "JF": 41.64}, "single": {"J": 40.0, "F": 44.0, "JF": 42.0},
    "multi": {"J": float("nan"), "F": float("nan"), "JF": float("nan"), "count": 0},
    "protocol": "VISA eval_revos (per-expression rounding)",
}
MEVIS_OURS = {"J": 30.12, "F": 35.88, "JF": 33.0, "count": 3, "protocol": "MeViS eval_mevis (all frames, union GT)"}
SYNTH_OURS = {
    "refavs_test": {"base": {"J": 10.0, "F": 12.0, "JF": 11.0}, "sft": {"J": 20.0, "F": 22.0, "JF": 21.0},
                    "grpo": {"J": 30.5, "F": 32.5, "JF": 31.5}},
    "revos_test": {"grpo": {"J": 7.0, "F": 8.0, "JF": 7.5}, "base": {"J": 5.0, "F": 6.0, "JF": 5.5}},
}
CASES = {
    "refavs": REFAVS_OURS, "revos": REVOS_OURS, "mevis": MEVIS_OURS, "synthetic": SYNTH_OURS,
    "ablation": {"R_K + R_G (ours)": REVOS_OURS, "R_K (ours)": REVOS_OURS}, "s2swap": {},
}


def _md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in text.splitlines() if line.startswith("| ")]


def _tabular_rows(tex: str) -> list[str]:
    body = tex.split("\\begin{tabular}", 1)[1].split("\\end{tabular}", 1)[0]
    return [ln for ln in body.splitlines() if ln.rstrip().endswith("\\\\")]


def test_paper_data_is_consistent():
    """Every row is tagged and complete; J&F = mean(J, F) and the Δ row = Omni-R1 − SFT, as printed."""
    for name, rows in pr.PAPER.items():
        keys = {k for k, _ in pr.COLUMNS[name]}
        for r in rows:
            assert re.fullmatch(r"\[P[12](,P2)?\] Table \d( / \[P1\] Table \d)?", r["source"]), r
            assert set(r["values"]) == keys, r["model"]
    by = {r["model"]: r["values"] for r in pr.REFAVS}
    for model, v in by.items():
        if model.startswith("Δ"):
            continue
        for s in ("seen", "unseen"):
            assert abs(v[f"{s}_JF"] - (v[f"{s}_J"] + v[f"{s}_F"]) / 2) <= 0.051, (model, s)
    for k, d in by["Δ vs SFT"].items():
        assert d == pytest.approx(by["Omni-R1-7B†"][k] - by["Qwen2.5-Omni-7B† (SFT)"][k], abs=1e-6)
    revos = {r["model"]: r for r in pr.REVOS}
    assert revos["Omni-R1-7B† (v1)"]["values"]["overall"] == 47.6 and revos["Omni-R1-7B† (v1)"]["source"].startswith("[P1]")
    assert revos["Omni-R1-7B† (camera-ready)"]["values"]["overall"] == 44.7
    assert max(r["values"]["overall"] for r in pr.ABLATION) == 54.0


def test_refavs_markdown_numbers_markers_missing():
    md = tables.render("refavs", REFAVS_OURS, "markdown", {})
    rows = _md_rows(md)
    assert len({len(r) for r in rows}) == 1 and rows[0][0] == "Model" and rows[0][-1] == "Source"
    assert len(rows) == 1 + len(pr.REFAVS) + 2
    ours = {r[0]: r for r in rows}
    # Rounded to the paper's one decimal, marked with the protocol that produced each number.
    assert ours["Omni-R1-JAX (GRPO)"][1:4] == ["46.0[a]", "41.2[a]", "50.7[a]"]
    assert ours["Omni-R1-JAX (GRPO)"][4:7] == ["–", "63.4[b]", "–"]  # None and NaN are missing
    assert ours["Omni-R1-JAX (SFT)"][4] == "61.0[a]"
    assert ours["Omni-R1-7B†"][1:7] == ["47.2", "43.0", "51.4", "74.2", "71.3", "77.0"]
    assert ours["EEMC"][-1] == "[P1,P2] Table 1"
    assert "[a] official@256/batch4" in md and "[b] davis@native" in md
    assert "Null S" not in md  # no null-split result given, so no column for it


def test_protocol_overrides_and_unknown():
    """Explicit ``protocol`` entries beat the evaluator's field; a result with none gets a visible marker."""
    res = {"Run": {"test_s": {"J": 1.0, "F": 2.0, "JF": 1.5}, "test_u": {"J": 3.0, "F": 4.0, "JF": 3.5}}}
    md = tables.render("refavs", res, "markdown", {"Run/test_u": "per_expression@256"})
    assert "[a] protocol not recorded" in md and "[b] per_expression@256" in md
    md = tables.render("refavs", REFAVS_OURS, "markdown", {"*": "ignored", "test_s": "custom-seen"})
    assert "custom-seen" in md and "ignored" not in md
    md = tables.render("refavs", {"test_s": {"J": 1.0, "F": 2.0, "JF": 1.5, "protocol": "p"},
                                  "test_n": {"S": 0.2346, "protocol": "official@256/batch4/null"}}, "markdown")
    row = _md_rows(md)[-1]
    assert row[0] == "Ours" and "Null S" in md and row[-2] == "0.235[b]"


def test_revos_and_mevis_tables():
    md = tables.render("revos", REVOS_OURS, "markdown", None)
    rows = {r[0]: r for r in _md_rows(md)}
    assert rows["Omni-R1-7B† (v1)"][1:7] == ["53.2", "41.9", "48.3", "46.5", "47.6", "[P1] Table 2"]
    assert rows["Omni-R1-7B† (camera-ready)"][5] == "44.7"
    assert rows["LISA-13B"][1:5] == ["–"] * 4
    assert rows["Ours"][1:6] == ["51.2[a]", "32.1[a]", "42.0[a]", "–", "41.6[a]"]
    assert "[a] VISA eval_revos (per-expression rounding)" in md
    md = tables.render("mevis", MEVIS_OURS, "markdown")
    rows = {r[0]: r for r in _md_rows(md)}
    assert rows["Model"][1:4] == ["J&F", "J", "F"]
    assert rows["Sa2VA-4B"][1:4] == ["55.4", "–", "–"]
    assert rows["Ours"][1:4] == ["33.0[a]", "30.1[a]", "35.9[a]"]


def test_ablation_swap_and_synthetic():
    md = tables.render("ablation", CASES["ablation"], "markdown")
    rows = {r[0]: r for r in _md_rows(md)}
    assert rows["R_K + R_A + R_G, Sa2VA as S2"][5] == "54.0" and "R_K (ours)" in rows and "R_K + R_G (ours)" in rows
    md = tables.render("s2swap", {}, "markdown")
    assert "TAM instead of SAM2 as segmenter" in md and "48.6" in md and "[a]" not in md
    md = tables.render("synthetic", SYNTH_OURS, "markdown", {"*": "davis@native"})
    rows = _md_rows(md)
    assert [r[0] for r in rows] == ["Model", "Base", "SFT", "GRPO"]
    assert "Source" not in rows[0] and rows[0][1] == "refavs_test J&F" and rows[0][4] == "revos_test J&F"
    assert rows[2][4:7] == ["–", "–", "–"]  # no SFT result on revos_test
    assert rows[3][1] == "31.5[a]" and "[a] davis@native" in md


@pytest.mark.parametrize("table", tables.TABLES)
def test_latex_is_a_valid_tabular(table):
    tex = tables.render(table, CASES[table], "latex", {"*": "davis@native"})
    unescaped = re.sub(r"\\[{}&_%$#]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert unescaped.count("$") % 2 == 0
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    rows = _tabular_rows(tex)
    amps = [len(re.findall(r"(?<!\\)&", r)) for r in rows]
    assert set(amps) == {len(spec) - 1}, amps
    assert "_" not in re.sub(r"\\_", "", re.sub(r"\$[^$]*\$", "", tex.split("\n", 1)[1]))  # escaped outside math
    assert "†" not in tex and "–" not in tex
    paper = pr.PAPER.get(table, ())
    assert len(rows) == 1 + len(paper) + (3 if table == "synthetic" else len(tables.normalise_ours(table, CASES[table])))
    if table == "refavs":
        assert "45.97" not in tex and "46.0$^{a}$" in tex and "$^{b}$ davis@native" in tex and "& -- &" in tex
        assert "Omni-R1-7B$^{\\dagger}$ & 47.2" in tex and "$\\Delta$ vs SFT" in tex
    if table == "revos":
        assert "eval\\_revos" in tex and "41.6" in tex and "47.6" in tex


def test_cli_dir_file_and_module(tmp_path, capsys):
    (tmp_path / "refavs.json").write_text(json.dumps(REFAVS_OURS["Omni-R1-JAX (SFT)"]))
    (tmp_path / "run_a.json").write_text(json.dumps(REVOS_OURS))
    (tmp_path / "run_b.json").write_text(json.dumps({"x": REVOS_OURS, "junk": [1, 2]}))
    assert tables.main(["--results", str(tmp_path), "--table", "refavs", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| Ours | 38.8[a]" in out
    out_file = tmp_path / "abl.tex"
    assert tables.main(["--results", str(tmp_path), "--table", "ablation", "--format", "latex",
                        "--protocol", "run_a=VISA", "--out", str(out_file)]) == 0
    tex = out_file.read_text()
    assert "run\\_a & 51.2$^{a}$" in tex and "x & 51.2$^{b}$" in tex and "$^{a}$ VISA" in tex
    with pytest.raises(FileNotFoundError):
        tables.load_results(str(tmp_path / "nope"), "revos")
    res = subprocess.run([sys.executable, "-m", "omnir1_jax.tables", "--table", "mevis", "--format", "latex"],
                         capture_output=True, text=True, check=True)
    assert "Sa2VA-1B & 53.4 & -- & -- &" in res.stdout
