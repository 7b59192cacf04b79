"""omnir1_jax: JAX/Flax Omni-R1 (GRPO for omnimodal models with a two-system design)."""

from setuptools import find_packages, setup

# Pinned, tested versions (CPU machine, Python 3.11).  jax[cuda12] / jax[tpu] replace jax[cpu] on
# accelerators: `pip install -e . "jax[cuda12]==0.10.2"`.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "grain==0.2.18",
    "opencv-python-headless==5.0.0.93",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "pycocotools==2.0.11",
    "scipy==1.17.1",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "importlib_resources==7.1.0",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
]

TEST_REQUIRES = [
    # Reference implementations for parity tests only: the CPU build of torch (an unpinned torch
    # pulls a multi-GB CUDA build).
    "torch==2.13.0",
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "hypothesis==6.170.17",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setup(
    name="omnir1_jax",
    version="0.1.0",
    description="Omni-R1 (arXiv 2505.20256) in JAX/Flax: GRPO with a Global Reasoning System and a "
    "frozen Detail Understanding System (grounder + SAM2), sharded over a device mesh.",
    packages=find_packages(include=["omnir1_jax*", "data_pipelines*", "experiments*"]),
    package_data={"omnir1_jax": ["assets/**/*"], "data_pipelines": ["**/*.json"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={
        "console_scripts": [
            "omnir1-train=omnir1_jax.train:run",
            "omnir1-eval=omnir1_jax.evaluate:run",
            "omnir1-convert=omnir1_jax.convert:run",
            "omnir1-data=data_pipelines.cli:run",
            "omnir1-plan=omnir1_jax.plan:run",
        ]
    },
)
