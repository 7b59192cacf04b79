"""Trainer reliability on the tiny SFT config: kill -9 and resume reproduces the uninterrupted run, a corrupt
latest checkpoint falls back to the previous one, an injected NaN batch is skipped and counted, and the logs
(metrics.jsonl rows, TensorBoard events, config.json) are there.

The runs are subprocesses of `python -m omnir1_jax.train` on 2 simulated CPU devices (same layout for every
run, so resumed numbers can be compared exactly).
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import subprocess_xla_flags

from omnir1_jax.logs import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _cmd(workdir, data, **overrides):
    flags = {"mode": "sft", "train.num_steps": STEPS, "checkpoint.every_steps": 2, "checkpoint.keep": 3,
             "train.log_every": 1, "train.progress_bar": False, "rl.max_prompt_length": 576,
             "data.prompt_template": "vos_no_hint", "data.max_frames": 8, "data.min_frames": 8,
             "train.sft_max_answer_tokens": 48, "data.synthetic_root": data, "data.num_workers": 0,
             "optim.schedule": "constant"}  # constant LR: runs of different lengths share one compiled step
    flags.update(overrides)
    return [sys.executable, "-m", "omnir1_jax.train", f"--config={ROOT}/experiments/synthetic_tiny.py",
            f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]


def _env():
    """The session's persistent XLA cache (conftest) is inherited: later runs skip compiling the step."""
    env = dict(os.environ)
    env.update(XLA_FLAGS=subprocess_xla_flags(2), JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _run(workdir, data, **overrides):
    p = subprocess.run(_cmd(workdir, data, **overrides), env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from omnir1_jax.rl.sft import ensure_synthetic_data

    return ensure_synthetic_data(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted run."""
    workdir = str(tmp_path_factory.mktemp("ref"))
    _run(workdir, data)
    return workdir


def test_logs_and_checkpoints(reference):
    rows = read_jsonl(os.path.join(reference, "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one row per logged step
    for r in rows:
        assert isinstance(r["loss"], float) and r["skipped_nonfinite"] == 0 and r["skipped_total"] == 0
    assert glob.glob(os.path.join(reference, "tb", "events.out.tfevents.*"))
    assert json.load(open(os.path.join(reference, "config.json")))["mode"] == "sft"
    steps = sorted(int(d) for d in os.listdir(os.path.join(reference, "checkpoints")) if d.isdigit())
    assert steps == [2, 4, 6]


def test_kill_and_resume_matches_uninterrupted(tmp_path, data, reference):
    workdir = str(tmp_path / "killed")
    proc = subprocess.Popen(_cmd(workdir, data), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt2 = os.path.join(workdir, "checkpoints", "2")
    deadline = time.time() + 500
    while not os.path.isdir(ckpt2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _run(workdir, data)
    k = int(resumed.stderr.split("resumed from step ")[1].split()[0])
    assert 2 <= k < STEPS
    want, got = _losses(reference), _losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))  # rows after the restored step were replaced, not duplicated
    for s in range(k + 1, STEPS + 1):
        assert got[s] == pytest.approx(want[s], abs=1e-6), (s, got[s], want[s])


def test_corrupt_latest_checkpoint_falls_back(tmp_path, data, reference):
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(reference, workdir)
    state_dir = os.path.join(workdir, "checkpoints", "6", "state")
    for f in glob.glob(os.path.join(state_dir, "**", "*"), recursive=True):
        if os.path.isfile(f):
            with open(f, "wb") as fh:
                fh.write(b"garbage")
    p = _run(workdir, data)
    assert "step 6" in p.stderr and "cannot be restored" in p.stderr  # the warning
    assert "resumed from step 4" in p.stderr
    want, got = _losses(reference), _losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for s in (5, 6):
        assert got[s] == pytest.approx(want[s], abs=1e-6)


def test_nan_batch_is_skipped(tmp_path, data, reference):
    workdir = str(tmp_path / "nan")
    p = _run(workdir, data, **{"train.num_steps": 3, "train.inject_nan_at_step": 3, "checkpoint.every_steps": 1})
    rows = {r["step"]: r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}
    assert rows[3]["skipped_nonfinite"] == 1 and rows[3]["loss"] is None  # NaN is written as null
    assert rows[2]["skipped_total"] == 0 and rows[3]["skipped_total"] == 1 and sorted(rows) == [1, 2, 3]
    assert json.loads(p.stdout.strip().splitlines()[-1])["skipped"] == 1
    assert "update skipped" in p.stderr
    want = _losses(reference)
    assert rows[2]["loss"] == pytest.approx(want[2], abs=1e-6)
    # Params unchanged by the skipped step: checkpoints 2 and 3 hold identical params and optimizer state.
    s1, s2, s3 = (_load_numpy(os.path.join(workdir, "checkpoints", str(k), "state")) for k in (1, 2, 3))
    assert _same((s2["params"], s2["opt_state"]), (s3["params"], s3["opt_state"]))
    assert not _same(s1["params"], s2["params"])  # a normal step does change them
    assert int(s3["step"]) == 3


def _load_numpy(path):
    """A checkpointed TrainState as NumPy arrays (no devices needed)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    meta = ocp.PyTreeCheckpointer().metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ocp.PyTreeCheckpointer().restore(path, restore_args=args)


def _same(a, b):
    import jax
    import numpy as np

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) > 0 and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_unknown_mode_is_a_clear_error():
    from omnir1_jax.config import default_config
    from omnir1_jax.rl.task import build_task

    config = default_config()
    config.mode = "dpo"
    with pytest.raises(ValueError, match="unknown mode 'dpo'"):
        build_task(config, None, "/tmp/unused")


class _CountingIterator:
    """A restorable iterator of tiny batches (grain-like get_state/set_state)."""

    def __init__(self, state=None):
        self.i = 0 if state is None else json.loads(state)["i"]

    def __next__(self):
        import numpy as np

        self.i += 1
        return {"x": np.full((8,), float(self.i), np.float32)}

    def get_state(self):
        return {"i": self.i}


def _fake_task(evals):
    import jax
    import jax.numpy as jnp
    import optax

    from omnir1_jax.rl.state import TrainState, guarded_apply
    from omnir1_jax.rl.task import Task

    tx = optax.sgd(0.1)

    @jax.jit
    def step(state, batch):
        loss_fn = lambda p: jnp.mean((p["w"] - batch["x"]) ** 2)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        state, guard = guarded_apply(state, grads, tx, loss)
        return state, {"loss": loss, **guard}

    def init_state(rng):
        params = {"w": jnp.zeros((8,))}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          rng=jax.random.key_data(rng))

    def evaluate(state):
        evals.append(int(state.step))
        return {"w_mean": jnp.mean(state.params["w"])}

    return Task(init_state=init_state, train_step=step, train_iterator=_CountingIterator,
                prepare=lambda b: {k: jax.numpy.asarray(v) for k, v in b.items()}, total_steps=5,
                evaluate=evaluate, name="fake")


def test_loop_with_a_fake_task(tmp_path, monkeypatch):
    """The loop alone (in-process, no model): one epoch = total_steps, log_every, eval_every, final checkpoint,
    and a second call resumes (nothing left to do) with the data iterator state restored."""
    import omnir1_jax.train as train
    from omnir1_jax.config import default_config

    evals = []
    monkeypatch.setattr(train, "build_task", lambda config, mesh, workdir: _fake_task(evals))
    config = default_config()
    config.mode = "sft"
    config.train.num_steps, config.train.log_every, config.train.eval_every = -1, 2, 2
    config.checkpoint.every_steps, config.train.progress_bar = 3, False
    out = train.main(config, str(tmp_path))
    rows = read_jsonl(os.path.join(str(tmp_path), "metrics.jsonl"))
    assert out["step"] == 5 and out["skipped"] == 0
    assert [r["step"] for r in rows] == [2, 4, 5] and all("loss" in r for r in rows)
    assert [r["step"] for r in rows if "eval/w_mean" in r] == [2, 4] and evals == [2, 4]
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [3, 5]
    again = train.main(config, str(tmp_path))  # resumes at the final step: no new rows
    assert again["step"] == 5 and len(read_jsonl(os.path.join(str(tmp_path), "metrics.jsonl"))) == len(rows)
    import numpy as np

    np.testing.assert_array_equal(np.asarray(again["state"].params["w"]), np.asarray(out["state"].params["w"]))


def test_periodic_evaluation_runs_the_two_system_pipeline(tmp_path):
    """With no Task-specific evaluator, the trainer evaluates the current params with omnir1-eval's pipeline on
    config.eval.splits and logs the official metrics as eval/<split>/... in the same row."""
    import omnir1_jax.train as train
    from omnir1_jax.config import load_config

    config = load_config(os.path.join(ROOT, "experiments", "synthetic_tiny.py"),
                         overrides={"mode": "sft", "train.num_steps": 1, "train.eval_every": 1, "eval.limit": 1,
                                    "train.progress_bar": False, "rl.prompts_per_step": 8,
                                    "eval.splits": ("revos_test",)})
    train.main(config, str(tmp_path))
    rows = read_jsonl(os.path.join(str(tmp_path), "metrics.jsonl"))
    evals = {k: v for k, v in rows[-1].items() if k.startswith("eval/revos_test/")}
    assert evals, rows[-1].keys()
    jf = [v for k, v in evals.items() if k.endswith("JF") and v is not None]
    assert jf and all(0.0 <= v <= 100.0 for v in jf)
    assert os.path.isdir(tmp_path / "eval" / "step_1" / "revos_test")


def test_grpo_with_kl_anchor_and_refavs_temperature(tmp_path):
    """The embedded GRPO config with rl.kl_anchor=initial and rl.refavs_temperature: at step 1 the policy is
    still its initial weights, so the KL to the anchor is exactly 0 (to the shipped grounder, the reference, it
    would not be), and the update's log-probs equal the sampler's at the RefAVS temperature."""
    import omnir1_jax.train as train
    from omnir1_jax.config import load_config

    config = load_config(os.path.join(ROOT, "experiments", "synthetic_tiny.py"),
                         overrides={"train.num_steps": 1, "train.eval_every": 0, "eval.final_table": False,
                                    "train.progress_bar": False, "data.mixture": "refavs:1", "rl.beta": 0.04,
                                    "rl.kl_anchor": "initial", "rl.refavs_temperature": 0.7,
                                    "rl.prompts_per_step": 8, "rl.num_generations": 2})  # 8 simulated devices
    train.main(config, str(tmp_path))
    row = read_jsonl(os.path.join(str(tmp_path), "metrics.jsonl"))[-1]
    assert row["step"] == 1 and "kl" in row and "reward/box_iou" in row
    assert abs(row["kl"]) < 1e-6
    assert row["logp_gap"] < 1e-4
