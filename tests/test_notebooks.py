"""The Colab notebooks run top to bottom on the synthetic default (executed with nbclient, as CI does).

Each notebook runs in a fresh ``python3`` kernel in a temporary working directory (the notebooks find the
repository themselves), writes its outputs under ``OMNIR1_NB_WORKDIR`` and a JSON of what it computed to
``OMNIR1_NB_RESULT``; the tests check that JSON, the files it names and the executed cells' outputs.  The
kernels see one CPU device (not the 8 simulated ones of the test process) and share one persistent XLA
cache, so programs compiled by an earlier notebook are reused by a later one.
"""

import json
import math
import os
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image
from conftest import subprocess_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = ("01_quickstart.ipynb", "02_rollout_inspector.ipynb", "03_evaluate_and_tabulate.ipynb")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment of the notebook kernels; installs a ``python3`` kernelspec for this interpreter if the one
    Jupyter would pick starts some other Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIR1_")}
    env.update(XLA_FLAGS=subprocess_xla_flags(), JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               MPLBACKEND="Agg")
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = ""
    with pytest.MonkeyPatch.context() as mp:
        # jupyter_client runs a spec whose argv[0] is a bare "python" with sys.executable.
        if argv0 not in ("python", "python3", sys.executable):
            prefix = tmp_path_factory.mktemp("kernel")
            subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name",
                            "python3"], check=True, capture_output=True)
            path = str(prefix / "share" / "jupyter")  # JUPYTER_PATH comes first in Jupyter's search path
            env["JUPYTER_PATH"] = path
            mp.setenv("JUPYTER_PATH", path)  # the client resolves the spec in this process
            assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
        yield env


def _execute(name: str, env: dict, tmp_path) -> tuple[nbformat.NotebookNode, dict]:
    """Runs notebook ``name`` in a fresh kernel (cwd: a temp dir); returns the executed notebook and its JSON."""
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    work, cwd, result = tmp_path / "work", tmp_path / "cwd", tmp_path / "result.json"
    cwd.mkdir()
    env = dict(env, OMNIR1_NB_WORKDIR=str(work), OMNIR1_NB_RESULT=str(result))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    assert result.is_file(), f"{name} did not write its result JSON"
    assert not any(cwd.iterdir()), f"{name} wrote into the working directory: {list(cwd.iterdir())}"
    return nb, json.loads(result.read_text())


def _outputs(nb, kind: str) -> list:
    """Every executed output of MIME type ``kind`` (display_data / execute_result)."""
    return [o["data"][kind] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "data" in o and kind in o["data"]]


def _png_ok(path: str) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas


def test_notebooks_are_clean_and_colab_ready():
    """Stored without outputs; the first code cell installs only on Colab; no absolute paths of this machine."""
    for name in NOTEBOOKS:
        nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert 'if "google.colab" in sys.modules:' in code[0].source and "pip install" in code[0].source, name
        text = "\n".join(c.source for c in code)
        assert "/work/" not in text and "/tmp/" not in text, name  # outputs go to tempfile / OMNIR1_NB_WORKDIR
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_01_quickstart(kernel_env, tmp_path):
    """GRPO for 2 steps on the synthetic default, then the table (results.json) and the training curves."""
    nb, res = _execute("01_quickstart.ipynb", kernel_env, tmp_path)
    work = tmp_path / "work"
    assert res["step"] == 2 and math.isfinite(res["loss"])
    rows = res["results"]["revos_test"]
    assert "grpo" in rows and {"passthrough", "random_keyframes"} <= set(rows)
    for row in rows.values():
        assert all(math.isfinite(row[k]) and 0.0 <= row[k] <= 100.0 for k in ("J", "F", "JF"))
    assert json.loads((work / "results.json").read_text()) == res["results"]
    assert res["table"].startswith("| row | revos_test J") and "| grpo |" in res["table"]
    assert any("| grpo |" in md for md in _outputs(nb, "text/markdown"))  # the table was displayed
    _png_ok(res["curves_png"])
    assert _outputs(nb, "image/png"), "training curves not displayed"
    steps = [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_02_rollout_inspector(kernel_env, tmp_path):
    """Two expressions through both systems: full-clip masks, the info of every stage, figures written and shown."""
    nb, res = _execute("02_rollout_inspector.ipynb", kernel_env, tmp_path)
    assert len(res["predictions"]) == 2
    for p in res["predictions"]:
        assert p["masks"] == p["frames"]  # one mask per frame of the FULL clip, at the original size
        info = p["info"]
        for key in ("completion", "keyframes", "descriptions", "grounder_descriptions", "grounder_outputs", "boxes"):
            assert key in info, key
        n = len(info["keyframes"])
        assert len(info["descriptions"]) == n and len(info["boxes"]) == n and len(info["grounder_outputs"]) == n
        assert all(0 <= k < p["frames"][0] for k in info["keyframes"] + info["sampled_frames"])
        assert 0 < len(info["sampled_frames"]) <= 12  # eval.max_frames of the tiny config
    assert res["reference_keyframes"], "the reference answer picks no keyframe"
    for png in res["pngs"] + [res["reference_png"]]:
        _png_ok(png)
    assert len(_outputs(nb, "image/png")) == 3
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "grounder outputs:" in printed and "reference completion: <think>" in printed


def test_03_evaluate_and_tabulate(kernel_env, tmp_path):
    """omnir1-eval on the synthetic ReVOS split with random tiny weights, then the paper's table with our row."""
    nb, res = _execute("03_evaluate_and_tabulate.ipynb", kernel_env, tmp_path)
    s = res["summary"]
    assert s["split_name"] == "revos_test" and s["processed"] == 2 == s["num_expressions"]
    assert 0.0 <= s["JF"] <= 100.0
    out = res["out"]
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["JF"] == s["JF"] and os.path.isfile(os.path.join(out, "results.json"))
    md = res["markdown"]
    assert "| Omni-R1-7B† (camera-ready) |" in md  # a published row ...
    ours = [line for line in md.splitlines() if line.startswith(f"| {res['label']} |")]
    assert len(ours) == 1 and re.search(r"\| \d+\.\d\[a\] \|", ours[0])  # ... and ours, marked with its protocol
    assert any(res["label"] in m for m in _outputs(nb, "text/markdown"))
