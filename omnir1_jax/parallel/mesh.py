"""Device meshes from config data, and the multi-host start.

A mesh is described as data, big_vision style: ``[("data", -1), ("fsdp", 1), ("tensor", 1)]``.  One axis
may be ``-1`` and then takes all devices the others leave.  Meshes are built with
``jax.make_mesh(..., axis_types=Auto)`` so the compiler propagates shardings (DESIGN §3).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")

log = logging.getLogger(__name__)


def resolve_mesh_shape(spec: Sequence[tuple[str, int]], num_devices: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Turns ``[(name, size), ...]`` (one size may be -1) into concrete axis names and sizes.

    Raises ``ValueError`` with the offending sizes when the mesh cannot use exactly ``num_devices``.
    """
    names = tuple(name for name, _ in spec)
    sizes = [int(size) for _, size in spec]
    if len(set(names)) != len(names):
        raise ValueError(f"mesh axis names must be unique, got {names}")
    unknown = [n for n in names if n not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; the rule tables use {MESH_AXES}")
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(names, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(names, sizes))}")
    fixed = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {dict(zip(names, sizes))} does not fit {num_devices} devices: the fixed axes use "
                f"{fixed}, which does not divide {num_devices}"
            )
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh {dict(zip(names, sizes))} needs {fixed} devices but {num_devices} are available; "
            "set one axis to -1 to fill the rest"
        )
    return names, tuple(sizes)


def make_mesh(spec: Sequence[tuple[str, int]], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a mesh over ``devices`` (default: all) with Auto axis types; always has data/fsdp/tensor."""
    devices = list(jax.devices() if devices is None else devices)
    spec = list(spec)
    present = {name for name, _ in spec}
    spec += [(name, 1) for name in MESH_AXES if name not in present]  # rule tables name all three
    names, sizes = resolve_mesh_shape(spec, len(devices))
    axis_types = (AxisType.Auto,) * len(names)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(sizes, names, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(sizes), names, axis_types=axis_types)


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
    """Starts JAX's multi-host runtime when asked to (config or environment); returns whether it did.

    On TPU pods and SLURM/Kubernetes GPU clusters ``jax.distributed.initialize()`` discovers everything
    itself; set ``OMNIR1_DISTRIBUTED=1`` (or pass a coordinator address) to call it.
    """
    wanted = coordinator_address or os.environ.get("OMNIR1_DISTRIBUTED", "0") == "1"
    if not wanted:
        return False
    kwargs = {}
    if coordinator_address:
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return True
