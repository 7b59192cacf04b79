"""Test-wide setup: 8 simulated CPU devices, fp32 matmuls, deterministic hypothesis profile."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
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
