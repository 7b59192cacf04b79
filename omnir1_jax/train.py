"""`omnir1-train`: the training loop (data -> step -> log -> checkpoint -> eval) for any mode's Task.

    omnir1-train --config experiments/synthetic_tiny.py --config.mode=sft --workdir /tmp/omnir1_sft
    omnir1-train --config experiments/synthetic_tiny.py --workdir /tmp/omnir1_tiny        # GRPO

One readable `main(config, workdir)` in banner sections (big_vision style).  What a step does lives in
`omnir1_jax.rl.<mode>.build -> Task`; this file only runs it.  Restarting with the same workdir resumes from
the newest readable checkpoint (state, data-iterator position and counters), so a killed run continues
exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.checkpoint import Checkpointer
from omnir1_jax.config import mesh_spec, validate
from omnir1_jax.logs import MetricWriter, truncate_jsonl_after
from omnir1_jax.parallel import make_mesh, maybe_initialize_distributed
from omnir1_jax.rl.task import build_task

log = logging.getLogger("omnir1-train")


def poison_batch(host_batch: dict) -> dict:
    """Debug hook (`train.inject_nan_at_step`): the batch's floating input tensors (ndim >= 3: pixels, audio
    features) become NaN; per-example metadata (e.g. seconds per grid, a static layout value) is kept."""
    out = {}
    for k, v in host_batch.items():
        tensor = isinstance(v, np.ndarray) and v.ndim >= 3 and np.issubdtype(v.dtype, np.floating)
        out[k] = np.full_like(v, np.nan) if tensor else v
    return out


def main(config, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds checkpoints); returns a summary with the final state."""
    # ------------------------------------------------------------------ config
    validate(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=1, sort_keys=True))

    # ------------------------------------------------------------------ logging
    writer = MetricWriter(workdir, enabled=is_main)
    log.info("workdir %s, mode %s", workdir, config.mode)

    # ------------------------------------------------------------------ mesh
    maybe_initialize_distributed()
    mesh = make_mesh(mesh_spec(config))
    log.info("mesh %s over %d devices", dict(mesh.shape), mesh.devices.size)

    # ------------------------------------------------------------------ task (model, optimizer, data, step)
    task = build_task(config, mesh, workdir)
    evaluate_fn = task.evaluate or default_evaluator(config, workdir, mesh)
    num_steps = config.train.num_steps if config.train.num_steps > 0 else task.total_steps
    state = task.init_state(jax.random.key(config.seed))

    # ------------------------------------------------------------------ restore
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                        every_steps=config.checkpoint.every_steps)
    start, data_state, skipped = 0, None, 0
    restored = ckpt.restore(state)
    if restored is not None:
        start, state, extra = restored
        data_state, skipped = extra.get("data_iter"), int(extra.get("skipped", 0))
        log.info("resumed from step %d (%d non-finite steps skipped so far)", start, skipped)
    if is_main:
        truncate_jsonl_after(writer.path, start)  # rows logged after the restored step are replayed
    data_iter = task.train_iterator(data_state)

    # ------------------------------------------------------------------ loop
    from tqdm import tqdm

    bar = tqdm(total=num_steps, initial=start, disable=not (is_main and config.train.progress_bar),
               desc=f"{config.mode}", unit="step", dynamic_ncols=True)
    skipped_dev = jnp.zeros((), jnp.float32)  # accumulated on device; read when logging
    last: dict[str, Any] = {}
    t0 = time.time()
    for step in range(start + 1, num_steps + 1):
        t_last = time.time()
        host = next(data_iter)
        if step == config.train.inject_nan_at_step:
            log.warning("step %d: injecting NaN into the batch (train.inject_nan_at_step)", step)
            host = poison_batch(host)
        state, metrics = task.train_step(state, task.prepare(host))
        skipped_dev = skipped_dev + metrics["skipped_nonfinite"]

        row: dict[str, Any] = {}
        if step % config.train.log_every == 0 or step == num_steps:
            m = jax.device_get(dict(metrics))
            now_skipped = skipped + int(round(float(jax.device_get(skipped_dev))))
            if float(m["skipped_nonfinite"]) > 0:
                log.warning("step %d: non-finite loss/gradients, update skipped (%d so far)", step, now_skipped)
            now = time.time()
            row = {**m, "skipped_total": now_skipped, "steps_per_sec": (step - start) / max(now - t0, 1e-9),
                   "step_time": now - t_last}
            if "completion_tokens" in m:  # GRPO: generated tokens per second of wall time
                row["tokens_per_sec"] = float(m["completion_tokens"]) / max(now - t_last, 1e-9)
            bar.set_postfix(loss=f"{float(m['loss']):.4g}", skipped=now_skipped)
        if evaluate_fn is not None and config.train.eval_every > 0 and step % config.train.eval_every == 0:
            row.update({f"eval/{k}": v for k, v in jax.device_get(dict(evaluate_fn(state))).items()})
        if row:  # one row per logged step (training and evaluation metrics together)
            last = writer.write(step, row)

        if ckpt.should_save(step) or step == num_steps:
            total_skipped = skipped + int(round(float(jax.device_get(skipped_dev))))
            extra = {"data_iter": _iter_state_json(data_iter), "skipped": total_skipped, "step": step}
            ckpt.save(step, state, extra, force=step == num_steps and not ckpt.should_save(step))
        bar.update(1)

    # ------------------------------------------------------------------ shutdown
    bar.close()
    ckpt.close()
    writer.close()
    total_skipped = skipped + int(round(float(jax.device_get(skipped_dev))))
    log.info("done: %d steps, %d skipped as non-finite", num_steps, total_skipped)
    out = {"step": num_steps, "skipped": total_skipped, "last": last, "state": state}

    # ------------------------------------------------------------------ curves and the final table
    from omnir1_jax import embedded

    if is_main:
        png = embedded.plot_curves(workdir)
        if png:
            log.info("training curves: %s", png)
    if config.eval.final_table and config.mode == "grpo":
        params = state.params
        if jax.process_count() > 1:  # every process joins the gather; process 0 then evaluates unsharded
            from jax.experimental import multihost_utils

            params = multihost_utils.process_allgather(params, tiled=True)
        if is_main:
            results = embedded.run_table(config, workdir, params, mesh=mesh if jax.process_count() == 1 else None,
                                         progress=config.train.progress_bar)
            table = embedded.write_results(workdir, results)
            print("\n" + table + "\n", flush=True)
            log.info("results: %s", os.path.join(workdir, "results.json"))
            if config.data.dataset == "synthetic":  # where each stage stands (python -m omnir1_jax.stages)
                log.info("stage report: %s", embedded.write_stage_report(workdir, tuple(results)))
            out["results"] = results
    return out


def _flatten(tree: Any, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def default_evaluator(config, workdir: str, mesh=None):
    """Periodic evaluation with the two-system pipeline (``omnir1_jax.evaluate.evaluate_split``) on
    ``config.eval.splits``, the first ``eval.limit`` expressions each, predictions under ``workdir/eval/step_N``.
    ``None`` when ``train.eval_every <= 0`` or no split is configured."""
    import copy

    if config.train.eval_every <= 0 or not config.eval.splits:
        return None
    from omnir1_jax import evaluate as ev
    from omnir1_jax.eval_pipeline import make_params_bundle

    cfg = copy.deepcopy(config)
    if cfg.data.dataset == "synthetic" and not cfg.data.synthetic_root:
        with cfg.unlocked():
            cfg.data.synthetic_root = os.path.join(workdir, "data")  # the world the run trains on
    limit = cfg.eval.limit or None
    grounder: dict[str, Any] = {}

    def bundle(params):
        # The frozen reference grounds the descriptions, as in training (None: the policy grounds them itself).
        if "params" not in grounder:
            grounder["params"] = None
            if cfg.model.reference_checkpoint and cfg.rl.grounder == "reference":
                from omnir1_jax.eval_pipeline import load_grounder
                from omnir1_jax.rl.task import build_thinker, build_tokenizer

                model, init_fn, _ = build_thinker(cfg, build_tokenizer(cfg))
                gmodel, grounder["params"] = load_grounder(cfg, model, init_fn, cfg.model.reference_checkpoint)
                grounder["module"] = None if gmodel is model else gmodel
        return make_params_bundle(cfg, params, grounder_params=grounder["params"], grounder=grounder.get("module"))

    def evaluate(state) -> dict[str, float]:
        step = int(jax.device_get(state.step))
        out: dict[str, float] = {}
        for split in cfg.eval.splits:
            summary = ev.evaluate_split(cfg, lambda: bundle(state.params), split,
                                        os.path.join(workdir, "eval", f"step_{step}", split), limit=limit,
                                        progress=False, mesh=mesh)
            out.update(_flatten(summary, split))
        return out

    return evaluate


def _iter_state_json(data_iter) -> str:
    from data_pipelines.pipeline import state_to_json

    return state_to_json(data_iter.get_state())


# ---------------------------------------------------------------------- command line
def run() -> None:
    """Console entry point (`omnir1-train`)."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg]", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl and TensorBoard events")
    flags.mark_flags_as_required(["config", "workdir"])

    def _main(argv):
        del argv
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/absl chatter; our own logs stay at INFO
        summary = main(config_flag.value, flags.FLAGS.workdir)
        print(json.dumps({"step": summary["step"], "skipped": summary["skipped"],
                          "loss": summary["last"].get("loss", math.nan)}))

    app.run(_main)


if __name__ == "__main__":
    run()
