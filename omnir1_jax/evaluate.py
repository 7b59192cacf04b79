"""`omnir1-eval`: the two-system pipeline on a split -> predictions in both layouts -> official metrics.

    omnir1-eval --config experiments/synthetic_tiny.py --checkpoint CKPT --split refavs_test --out DIR [--limit N]
                [--mode policy|passthrough|random_keyframes]
    omnir1-eval tables --results DIR --table refavs            (renders paper tables: omnir1_jax.tables.main)

Writes ``DIR/Annotations/<video>/<exp_id>/<frame>.png`` (0/255, VISA), ``DIR/results.json`` (Sa2VA RLE),
``DIR/expressions/<video>/<exp_id>.json`` (keyframes, descriptions, boxes, completion) and ``DIR/metrics.json``
(with the protocol).  Resumable: expressions whose outputs exist are skipped.  Splits: RefAVS test_s / test_u /
test_n / val, ReVOS valid, MeViS valid_u; for ``data.dataset=synthetic`` (or ``joint``) name the format too:
``refavs_test_s`` / ``refavs:test_s``; ``refavs_test`` = RefAVS test_s and ``revos_test`` = ReVOS valid.
``--checkpoint`` is a thinker checkpoint (``omnir1-convert``), an HF directory, a trainer checkpoint
directory (orbax steps; newest readable step), or ``init[:SEED]`` for random weights (tiny preset only).
``--mode`` picks an ablation of the two-system pipeline (``omnir1_jax.eval_pipeline.MODES``); each mode needs
its own ``--out`` (``DIR/mode.json`` records it).  The thinker stages run batched on the config's mesh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from omnir1_jax import predictions as preds_io

log = logging.getLogger("omnir1-eval")

FORMAT_SPLITS = {"refavs": ("test_s", "test_u", "test_n", "val"), "revos": ("valid",), "mevis": ("valid_u",)}
SYNTHETIC_ALIASES = {"refavs_test": ("refavs", "test_s"), "revos_test": ("revos", "valid"),
                     "mevis_test": ("mevis", "valid_u")}


MODE_FILE = "mode.json"


class EvalError(ValueError):
    """A user-facing evaluation error (bad split, checkpoint, config/dataset mismatch)."""


# ----------------------------------------------------------------------------- splits
@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Which data a split name points to."""

    name: str  # as the user wrote it
    format: str  # refavs | revos | mevis
    root: str
    split: str  # the format's own split name


def _split_exists(fmt: str, root: str, split: str) -> str | None:
    """The path whose absence means the split is missing (None if present)."""
    path = {"refavs": os.path.join(root, "metadata.csv"),
            "revos": os.path.join(root, f"meta_expressions_{split}_.json"),
            "mevis": os.path.join(root, split, "meta_expressions.json")}[fmt]
    return None if os.path.isfile(path) else path


def resolve_split(config, split: str, default_synthetic_root: str | None = None) -> SplitSpec:
    """Maps ``split`` to (format, root, split) for ``config.data.dataset``; raises :class:`EvalError` clearly."""
    ds = config.data.dataset
    fmt, sub = None, split
    if ":" in split:
        fmt, sub = split.split(":", 1)
    elif split in SYNTHETIC_ALIASES and ds in ("synthetic", "joint"):
        fmt, sub = SYNTHETIC_ALIASES[split]
    else:
        for f in FORMAT_SPLITS:
            if split.startswith(f + "_") and split[len(f) + 1:] in FORMAT_SPLITS[f]:
                fmt, sub = f, split[len(f) + 1:]
    if fmt is None:
        others = [f for f, ss in FORMAT_SPLITS.items() if split in ss and f != ds]
        if ds in FORMAT_SPLITS and split not in FORMAT_SPLITS[ds] and others:
            raise EvalError(f"config/dataset mismatch: the config is for data.dataset={ds!r} but {split!r} is a "
                            f"{others[0]} split")
        if ds in FORMAT_SPLITS:
            fmt = ds
        else:
            owners = [f for f, ss in FORMAT_SPLITS.items() if split in ss]
            if len(owners) != 1:
                raise EvalError(f"split {split!r} is ambiguous or unknown for data.dataset={ds!r}; name the format, "
                                f"e.g. refavs_test_s, revos_valid, mevis_valid_u (or refavs_test / revos_test)")
            fmt = owners[0]
    if fmt not in FORMAT_SPLITS:
        raise EvalError(f"unknown dataset format {fmt!r} in split {split!r}; expected one of {sorted(FORMAT_SPLITS)}")
    if sub not in FORMAT_SPLITS[fmt]:
        raise EvalError(f"{sub!r} is not an evaluation split of {fmt}; expected one of {FORMAT_SPLITS[fmt]}")
    if ds in FORMAT_SPLITS and ds != fmt:
        raise EvalError(f"config/dataset mismatch: the config is for data.dataset={ds!r} but split {split!r} is {fmt}")
    if ds == "synthetic":
        base = config.data.synthetic_root or default_synthetic_root
        if not base:
            raise EvalError("config.data.synthetic_root is empty; set it to a directory written by `omnir1-data synth`")
        root = os.path.join(base, fmt)
    else:
        root = config.data[f"{fmt}_root"]
        if not root:
            raise EvalError(f"config.data.{fmt}_root is empty; set it to the local {fmt} dataset directory")
    missing = _split_exists(fmt, root, sub)
    if missing:
        raise EvalError(f"split {split!r} ({fmt} {sub}) is missing: {missing} does not exist")
    return SplitSpec(split, fmt, root, sub)


def open_reader(spec: SplitSpec):
    """The format's reader over the split (bad examples are skipped and counted, not fatal)."""
    from data_pipelines.formats import get_reader_cls

    reader = get_reader_cls(spec.format)(spec.root, spec.split, skip_bad_examples=True)
    if spec.format == "refavs" and len(reader) == 0:
        raise EvalError(f"split {spec.name!r}: {reader.csv_path} has no rows with split={spec.split!r}")
    return reader


def expression_keys(reader, fmt: str) -> list[tuple[str, str, list[str]]]:
    """(video, exp_id, frame names) of every entry, in reader order (RefAVS: media id, uid, 00000..00009)."""
    out = []
    if fmt == "refavs":
        reused = set(reader.reused_uids)
        for e in reader.entries:
            exp_id = e["uid"] if e["uid"] not in reused else f"{e['uid']}__row{e['row']}"
            out.append((e["media_id"] or e["uid"], exp_id, [f"{k:05d}" for k in range(reader.num_frames)]))
    else:
        for e in reader.entries:
            out.append((e["video"], e["exp_id"], list(e["frame_names"])))
    return out


# ----------------------------------------------------------------------------- ground truth for the metrics
def _refavs_gt(reader, i: int, shape: tuple) -> np.ndarray:
    """RefAVS GT ``[10, H, W]`` {0,1} of entry i from the PNGs (Null rows without masks: zeros of ``shape``)."""
    from data_pipelines.formats import common

    p = reader.paths(i)
    if reader.entries[i]["uid"].startswith("null_") and not os.path.isdir(p["mask_dir"]):
        return np.zeros(shape, np.uint8)
    return np.stack([common.read_binary_png(m) for m in p["masks"]])


def _vos_gt(reader, i: int, shape: tuple) -> np.ndarray:
    """Sum over the expression's objects of their RLE masks ``[T, H, W]`` uint8 (VISA: overlaps give 2)."""
    e = reader.entries[i]
    md = reader.mask_dict
    gt = np.zeros(shape, np.uint8)
    for a in e["anno_id"]:
        for t, r in enumerate(md[a]):
            if r:
                gt[t] = gt[t] + reader._decode_frame(r, f"{reader.mask_dict_path}:{a}[{t}]", shape[1:])
    return gt


def compute_metrics(spec: SplitSpec, reader, indices: Sequence[int], out_dir: str, refavs_protocol: str) -> dict:
    """Official metrics of the predictions on disk (read back from the VISA PNG layout) for ``indices``."""
    from omnir1_jax.metrics import refavs as refavs_m
    from omnir1_jax.metrics import revos as revos_m

    keys = expression_keys(reader, spec.format)
    if spec.format == "refavs":
        ps, gs = [], []
        for i in indices:
            v, e, names = keys[i]
            p = preds_io.read_png_masks(out_dir, v, e, names)
            ps.append(p)
            gs.append(_refavs_gt(reader, i, p.shape))
        res = refavs_m.evaluate(ps, gs, protocol=refavs_protocol, null_split=spec.split == "test_n").as_dict()
        return res
    items = []
    for i in indices:
        v, e, names = keys[i]
        p = preds_io.read_png_masks(out_dir, v, e, names)
        it = {"pred": p, "gt": _vos_gt(reader, i, p.shape), "video": v, "exp_id": e,
              "type_id": reader.entries[i]["type_id"], "num_objects": len(reader.entries[i]["anno_id"])}
        if spec.format == "revos":
            it["fg"] = reader.foreground(v)
        items.append(it)
    if spec.format == "mevis":
        return revos_m.evaluate_mevis(items)
    res = revos_m.evaluate(items, pred_scale=255)  # VISA reads 0/255 PNGs
    res["protocol"] += "; R with pred_scale=255 (VISA 0/255 PNG predictions)"
    ov = res["overall"]
    if all(math.isfinite(ov[k]) for k in ("J", "F", "JF")):
        res.update(J=ov["J"], F=ov["F"], JF=ov["JF"])
    else:  # a subset is empty (tiny splits): summarise over the scored expressions, and say so
        rows = [r for r in res["expressions"] if r["type_id"] in (0, 1)]
        j = float(np.mean([r["J"] for r in rows])) if rows else float("nan")
        f = float(np.mean([r["F"] for r in rows])) if rows else float("nan")
        res.update(J=j, F=f, JF=(j + f) / 2, summary="mean over expressions (a type_id subset is empty)")
    return res


# ----------------------------------------------------------------------------- the split loop
Predictor = Callable[[list[dict]], list[dict]]


def _claim_mode(out_dir: str, mode: str) -> None:
    """Records ``mode`` in ``out_dir/mode.json``; raises if the directory holds predictions of another mode."""
    prev = None
    for name in (MODE_FILE, "metrics.json"):  # metrics.json of runs older than modes: "policy"
        path = os.path.join(out_dir, name)
        if prev is None and os.path.isfile(path):
            try:
                with open(path) as fh:
                    prev = json.load(fh).get("mode", "policy")
            except (OSError, ValueError, AttributeError):
                prev = None
    if prev is not None and prev != mode and os.path.isdir(os.path.join(out_dir, preds_io.EXPRESSIONS)):
        raise EvalError(f"{out_dir} already holds predictions written in mode {prev!r}; evaluating mode {mode!r} "
                        "there would mix the two: give each mode its own output directory")
    if prev != mode:
        with open(os.path.join(out_dir, MODE_FILE), "w") as fh:
            json.dump({"mode": mode}, fh)


def evaluate_split(config, params_bundle: Any, split: str, out_dir: str, limit: int | None = None, *,
                   predictor: Predictor | None = None, progress: bool = True, mode: str = "policy",
                   mesh: Any = None) -> dict:
    """Runs the two-system pipeline on ``split`` (first ``limit`` expressions), writes both prediction layouts
    and ``metrics.json`` under ``out_dir``, skipping expressions already written; returns the metric summary.

    ``params_bundle``: :class:`omnir1_jax.eval_pipeline.ParamsBundle` (models, params, tokenizer), or a
    zero-argument callable returning one, called only if some expression still needs predicting.
    ``predictor``: override of the model (``records -> [{"masks": [T, H, W], "info": {...}}]``), e.g. oracles.
    ``mode``: ``policy`` | ``passthrough`` | ``random_keyframes`` (``eval_pipeline.MODES``), recorded in every
    record and in ``metrics.json``; an ``out_dir`` holding predictions of another mode is an error.
    ``mesh``: shard the thinker stages' batch over it (``eval.batch_size`` rounded up to its data x fsdp size).
    """
    from omnir1_jax.eval_pipeline import MODES

    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {', '.join(MODES)}")
    os.makedirs(out_dir, exist_ok=True)
    _claim_mode(out_dir, mode)
    spec = resolve_split(config, split, default_synthetic_root=_default_synthetic_root(config, out_dir))
    reader = open_reader(spec)
    keys = expression_keys(reader, spec.format)
    n = len(keys) if limit is None or limit < 0 else min(limit, len(keys))
    model: list = [predictor]

    def predict(records: list[dict]) -> list[dict]:
        if model[0] is None:  # built on first use: a finished split never loads the weights
            from omnir1_jax.eval_pipeline import TwoSystemPredictor

            bundle = params_bundle() if callable(params_bundle) else params_bundle
            if bundle is None:
                raise EvalError("evaluate_split needs a params bundle (or a predictor) to predict new expressions")
            model[0] = TwoSystemPredictor(config, bundle, task=spec.format, mode=mode, mesh=mesh)
        return model[0](records)

    batch_size = max(1, int(config.eval.batch_size))
    if mesh is not None:
        from omnir1_jax.eval_pipeline import data_parallel_size

        dp = data_parallel_size(mesh)
        batch_size = -(-batch_size // dp) * dp
    counts = {"processed": 0, "skipped_existing": 0, "bad_examples": 0}
    done: list[int] = []
    pending: list[tuple[int, dict]] = []
    t0 = time.time()

    def flush():
        if not pending:
            return
        outs = predict([rec for _, rec in pending])
        for (i, rec), out in zip(pending, outs):
            v, e, names = keys[i]
            info = {"uid": rec.get("uid", ""), "expression": rec.get("expression", ""), "split": spec.name,
                    "mode": mode, **out.get("info", {})}
            preds_io.write_expression(out_dir, v, e, names, out["masks"], info)
            counts["processed"] += 1
            done.append(i)
        pending.clear()

    bar = _progress(n, f"eval {spec.name}", progress)
    for i in range(n):
        v, e, names = keys[i]
        if preds_io.is_done(out_dir, v, e, names):
            counts["skipped_existing"] += 1
            done.append(i)
        else:
            rec = reader.load(i)
            if rec is None:
                counts["bad_examples"] += 1
            else:
                if rec["frames"].shape[0] != len(names):
                    raise EvalError(f"{v}/{e}: reader returned {rec['frames'].shape[0]} frames for {len(names)} names")
                pending.append((i, rec))
                if len(pending) >= batch_size:
                    flush()
        bar.update(1)
    flush()
    bar.close()
    done.sort()
    preds_io.write_results_json(out_dir, [keys[i][:2] for i in done])
    metrics = compute_metrics(spec, reader, done, out_dir, config.eval.refavs_protocol) if done else {}
    metrics["num_scored"] = metrics.pop("num_expressions", metrics.get("count", len(done)))
    summary = {"dataset": spec.format, "split": spec.split, "split_name": spec.name, "root": spec.root,
               "mode": mode, "num_expressions": n, **counts, "reader_skips": dict(reader.skipped),
               "seconds": round(time.time() - t0, 3), **metrics}
    summary.setdefault("protocol", "none (no expression evaluated)")
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(_finite(summary), fh, indent=1)
    log.info("%s: %d processed, %d already done, %d bad; J&F %s (%s)", spec.name, counts["processed"],
             counts["skipped_existing"], counts["bad_examples"], summary.get("JF"), summary["protocol"])
    return summary


def _finite(x: Any) -> Any:
    """JSON-safe copy: NaN/Inf become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="expr", dynamic_ncols=True)


def _default_synthetic_root(config, out_dir: str) -> str | None:
    """For the embedded default without ``data.synthetic_root``: the synthetic world under ``out_dir/data``."""
    if config.data.dataset != "synthetic" or config.data.synthetic_root:
        return None
    from data_pipelines.synthetic import writer

    root = os.path.join(out_dir, "data")
    if not os.path.isfile(os.path.join(root, "revos", "world.json")):
        log.info("writing the synthetic world to %s", root)
        writer.write_vos(os.path.join(root, "revos"), seed=config.seed, num_train=8, num_valid=2,
                         min_visible=config.data.synthetic_vos_min_visible)
        writer.write_refavs(os.path.join(root, "refavs"), seed=config.seed, num_train=8, num_val=2, num_test=2)
    return root


# ----------------------------------------------------------------------------- CLI
def _define_flags(argv: Sequence[str]):
    """Flags in a private FlagValues (no clash with omnir1-train's ``--config`` when both are imported)."""
    from absl import flags
    from ml_collections import config_flags

    from omnir1_jax.eval_pipeline import MODES

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config (experiments/*.py[:arg])", flag_values=fv,
                                    sys_argv=list(argv))  # ``--config.x.y=v`` overrides are read from argv
    flags.DEFINE_string("checkpoint", None, "thinker checkpoint / HF dir / trainer checkpoint dir / init[:SEED]",
                        flag_values=fv)
    flags.DEFINE_string("grounder_checkpoint", "", "separate System-2 grounder weights (default: the policy, †)",
                        flag_values=fv)
    flags.DEFINE_string("split", None, "split to evaluate (e.g. test_s, valid, valid_u, refavs_test)", flag_values=fv)
    flags.DEFINE_string("out", None, "output directory (predictions, records, metrics.json)", flag_values=fv)
    flags.DEFINE_integer("limit", -1, "evaluate only the first N expressions (-1: all)", flag_values=fv)
    flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=fv)
    flags.DEFINE_enum("mode", "policy", list(MODES),
                      "two-system pipeline mode: policy | passthrough (the grounder gets the original query) | "
                      "random_keyframes (random frames instead of the policy's keyframes)", flag_values=fv)
    return fv


def main(argv: Sequence[str]) -> dict:
    """Parses ``argv`` (program name first) and evaluates; returns the metric summary."""
    fv = _define_flags(argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(__doc__ + "\nflags:\n" + fv.get_help())
        return {}
    fv(list(argv))
    for name in ("config", "checkpoint", "split", "out"):
        if fv[name].value is None:
            raise EvalError(f"--{name} is required")
    from omnir1_jax.config import validate
    from omnir1_jax.eval_pipeline import check_checkpoint, load_params_bundle

    config = validate(fv.config)
    resolve_split(config, fv.split, default_synthetic_root=_default_synthetic_root(config, fv.out))
    for ckpt in (fv.checkpoint, fv.grounder_checkpoint):
        if ckpt:
            try:
                check_checkpoint(ckpt)
            except ValueError as err:
                raise EvalError(str(err)) from None

    def bundle():
        try:
            return load_params_bundle(config, fv.checkpoint, fv.grounder_checkpoint or None)
        except ValueError as err:  # unreadable checkpoint, config/checkpoint mismatch
            raise EvalError(str(err)) from None

    return evaluate_split(config, bundle, fv.split, fv.out, None if fv.limit < 0 else fv.limit,
                          progress=fv.progress, mode=fv.mode, mesh=config_mesh(config))


def config_mesh(config):
    """The device mesh of ``config.mesh`` (``omnir1_jax.config.mesh_spec``); a clear error if it does not fit."""
    from omnir1_jax.config import mesh_spec
    from omnir1_jax.parallel import make_mesh

    try:
        return make_mesh(mesh_spec(config))
    except ValueError as err:
        raise EvalError(f"config.mesh: {err}") from None


def run(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``omnir1-eval`` (``omnir1-eval tables ...`` renders the paper tables)."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] == "tables":
        from omnir1_jax import tables

        return tables.main(argv[2:])
    from omnir1_jax.config import ConfigError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from absl import flags

    try:
        summary = main(argv)
    except (EvalError, FileNotFoundError, ConfigError, flags.Error) as err:
        print(f"omnir1-eval: error: {err}", file=sys.stderr)
        return 2
    if not summary:  # --help
        return 0
    print(json.dumps({k: summary.get(k) for k in ("split_name", "processed", "skipped_existing", "J", "F", "JF",
                                                   "S", "protocol") if k in summary}))
    return 0


if __name__ == "__main__":
    sys.exit(run())
