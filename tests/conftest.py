"""Test-wide setup: 8 simulated CPU devices, fp32 matmuls, deterministic hypothesis profile, and two settings
that only make the suite faster (both inherited by the subprocesses the tests start):

* ``--xla_backend_optimization_level=0``: the tiny test models spend most of their time in XLA's CPU compiler,
  and LLVM's optimisation passes are most of that; at level 0 the warm-start SAM2 fixture compiles in 88 s
  instead of 146 s with the same losses to 4 decimals. HLO-level passes (fusion, layout) still run.
* a persistent compilation cache in ``.pytest_cache/xla``, shared by the xdist workers and the subprocesses, so
  a program compiled by one test module (the tiny thinker, SAM2, the GRPO step) is loaded, not recompiled, by
  the next; a second local run reuses it. Delete the folder to start cold.

Set ``XLA_FLAGS`` / ``JAX_COMPILATION_CACHE_DIR`` yourself to override either.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "xla"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

try:
    from hypothesis import settings  # noqa: E402

    settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
    settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def subprocess_xla_flags(devices: int | None = None) -> str:
    """This session's ``XLA_FLAGS`` for a child process: ``devices`` simulated CPU devices (None: the default
    single device, as on a laptop) and the speed flags above."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
    if devices is not None:
        flags.insert(0, f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)
