"""r1jax: DeepSeek-R1 style reasoning RL (GRPO) natively in JAX."""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.7",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "etils[epath]>=1.7",  # local and gs:// paths (r1jax.storage)
    "grain>=0.2.12",
    "tensorflow-datasets>=4.9.9",
    "array-record>=0.7",
    "importlib_resources",
    "sentencepiece>=0.2",
    "tokenizers>=0.21",
    "safetensors>=0.5",
    "ml-collections>=1.0",
    "absl-py>=2.0",
    "math-verify>=0.7",
    "sympy>=1.13",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "jinja2>=3.1",
    "pyarrow>=15",
    "ml_dtypes>=0.5",
    "numpy>=1.26",
]

EXTRAS = {
    # transformers + the CPU torch wheel: logit/tokenizer parity tests and HF export checks.
    "hf": ["transformers>=4.56", "torch==2.13.0"],
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "hypothesis>=6.100",
        "ruff>=0.6",
        "transformers>=4.56",
        "torch==2.13.0",
        "peft>=0.13",  # LoRA adapters exported by `r1jax export --adapters` load in PEFT
    ],
    "tpu": ["jax[tpu]"],
    "gpu": ["jax[cuda12]"],
    "wandb": ["wandb"],
    # gs:// run directories, models and data (r1jax.storage): the file system for etils.epath
    # and the bucket writer of tensorboardX.
    "gcs": ["gcsfs", "google-cloud-storage"],
}

setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 style reasoning RL (GRPO, SFT, distillation) in JAX/Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["r1jax", "r1jax.*"]),
    python_requires=">=3.11",
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["r1jax=r1jax.cli:main"]},
)
