"""grain pipelines: source -> skip filter -> Omni-R1 preprocessing -> per-host sharded, task-homogeneous batches.

Per source: `MapDataset.range(len)` -> host shard (`[shard_index::shard_count]`) -> `shuffle(seed)` ->
`repeat(num_epochs)` (a fresh permutation per epoch) -> `random_map` (load + frame sampling + preprocess, with
an rng grain derives from (seed, position), so the same position always gives the same example) -> None
(skipped bad example) dropped -> `to_iter_dataset` -> `batch(drop_remainder)`.  Batched sources are mixed
by ratio with `IterDataset.mix` so a batch never mixes RefAVS with VOS (Omni-R1), then optionally
`mp_prefetch` over worker processes.  The iterator's `get_state()` / `set_state()` restore the stream
exactly (JSON-serialisable; save it with the model checkpoint).

Worker processes: grain spawns them, so scripts need an `if __name__ == "__main__":` guard; outside
`absl.app.run` the absl flags must be marked parsed (done here when num_workers > 0).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from data_pipelines.pipeline_transforms import PreprocessConfig, collate, load_sampled, to_example

__all__ = ["PreprocessConfig", "SourceSpec", "make_source", "make_task_dataset", "make_dataset",
           "make_train_iterator", "make_eval_dataset", "state_to_json", "state_from_json"]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One mixture component: a dataset split, read through its reader or a prepared TFDS directory."""

    name: str
    format: str  # "refavs" | "revos" | "mevis"
    root: str = ""  # raw layout (reader); ignored when tfds_data_dir is set
    split: str = "train"
    weight: float = 1.0
    tfds_data_dir: str | None = None


def make_source(spec: SourceSpec):
    """Random-access source for a spec: the format's reader (skipping bad examples) or the TFDS split."""
    if spec.tfds_data_dir:
        from data_pipelines.tfds.builders import TfdsRecordSource

        return TfdsRecordSource(spec.tfds_data_dir, spec.format, spec.split)
    from data_pipelines.formats import get_reader_cls

    return get_reader_cls(spec.format)(spec.root, spec.split, skip_bad_examples=True)


class _Preprocess:
    """Picklable grain random-map: position -> fixed-shape example (or None for a skipped record)."""

    def __init__(self, source, cfg: PreprocessConfig, name: str):
        self.source, self.cfg, self.name = source, cfg, name

    def __call__(self, index: int, rng: np.random.Generator) -> dict | None:
        rec = load_sampled(self.source, int(index), rng, self.cfg)
        return None if rec is None else to_example(rec, rng, self.cfg, self.name)


def make_task_dataset(
    source,
    batch_size: int,
    cfg: PreprocessConfig,
    *,
    name: str = "",
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    drop_remainder: bool = True,
    read_threads: int = 2,
    read_buffer: int = 8,
) -> grain.IterDataset:
    """Batched IterDataset over one source (one task): static shapes, host shard `shard_index`/`shard_count`."""
    ds = grain.MapDataset.range(len(source))[shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds.random_map(_Preprocess(source, cfg, name), seed=seed + 1)
    ds = ds.filter(lambda ex: ex is not None)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_buffer))
    return it.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate)


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """This host's (index, count): explicit values, else jax.process_index()/process_count()."""
    if shard_index is not None and shard_count is not None:
        return shard_index, shard_count
    import jax

    return jax.process_index(), jax.process_count()


def make_dataset(
    sources: Sequence[SourceSpec],
    batch_size: int,
    *,
    preprocess: PreprocessConfig | None = None,
    seed: int = 0,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_workers: int = 0,
    worker_buffer_size: int = 1,
    read_threads: int = 2,
    source_objects: Mapping[str, Any] | None = None,
) -> grain.IterDataset:
    """Mixture of task-homogeneous batched sources by `weight` (per-host batch size `batch_size`)."""
    cfg = preprocess or PreprocessConfig()
    index, count = _default_shard(shard_index, shard_count)
    parts = []
    for k, spec in enumerate(sources):
        src = (source_objects or {}).get(spec.name)
        src = make_source(spec) if src is None else src
        parts.append(make_task_dataset(src, batch_size, cfg, name=spec.name, seed=seed + 1000 * k,
                                       num_epochs=num_epochs, shard_index=index, shard_count=count,
                                       read_threads=read_threads))
    ds = parts[0] if len(parts) == 1 else grain.IterDataset.mix(parts, [s.weight for s in sources])
    if num_workers > 0:
        _mark_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                         per_worker_buffer_size=worker_buffer_size))
    return ds


def make_train_iterator(
    sources: Sequence[SourceSpec | Mapping[str, Any]],
    batch_size: int,
    *,
    seed: int = 0,
    min_frames: int = 16,
    max_frames: int = 24,
    video_max_pixels: int = PreprocessConfig.video_max_pixels,
    video_min_pixels: int = PreprocessConfig.video_min_pixels,
    image_max_pixels: int = PreprocessConfig.image_max_pixels,
    image_min_pixels: int = PreprocessConfig.image_min_pixels,
    max_objects: int = 3,
    mask_size: int = 256,
    sam2_size: int | None = None,
    hires_hw: tuple[int, int] | None = None,
    audio_seconds: int = 10,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_workers: int = 0,
    state: dict | str | None = None,
) -> grain.DatasetIterator:
    """Training iterator from plain arguments; `sources` are SourceSpecs or dicts with the same fields.

    Pass `state` (from `it.get_state()` or its JSON) to resume exactly where a checkpoint left off.
    """
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in sources]
    cfg = PreprocessConfig(train=True, min_frames=min_frames, max_frames=max_frames,
                           video_min_pixels=video_min_pixels, video_max_pixels=video_max_pixels,
                           image_min_pixels=image_min_pixels, image_max_pixels=image_max_pixels,
                           max_objects=max_objects, mask_size=mask_size, sam2_size=sam2_size, hires_hw=hires_hw,
                           audio_seconds=audio_seconds)
    ds = make_dataset(specs, batch_size, preprocess=cfg, seed=seed, num_epochs=num_epochs,
                      shard_index=shard_index, shard_count=shard_count, num_workers=num_workers)
    it = iter(ds)
    if state is not None:
        it.set_state(state_from_json(state) if isinstance(state, str) else state)
    return it


def make_eval_dataset(
    spec: SourceSpec,
    batch_size: int,
    *,
    preprocess: PreprocessConfig | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> grain.IterDataset:
    """One deterministic pass (inference frame sampling, no shuffle); the last batch may be smaller."""
    cfg = preprocess or PreprocessConfig(train=False)
    index, count = _default_shard(shard_index, shard_count)
    return make_task_dataset(make_source(spec), batch_size, cfg, name=spec.name, shuffle=False, num_epochs=1,
                             shard_index=index, shard_count=count, drop_remainder=False)


def state_to_json(state: dict) -> str:
    """Iterator state (a small dict of ints/lists) -> JSON text, for orbax `JsonSave` or a plain file."""
    return json.dumps(state, sort_keys=True)


def state_from_json(text: str) -> dict:
    """Inverse of `state_to_json`."""
    return json.loads(text)


def _mark_flags_parsed() -> None:
    """grain's workers read absl flags; mark them parsed when not running under absl.app.run."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
