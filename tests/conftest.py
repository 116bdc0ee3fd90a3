"""Test setup: 8 fake CPU devices so sharded code is really sharded."""

import hashlib
import os
import platform

from fast_compile import TEST_XLA_FLAGS

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A persistent XLA compilation cache for this checkout, shared by the xdist workers and by the
# `r1jax` processes the tests start: the tiny models' programs repeat across tests, and on CPU
# compiling them is most of the suite's time. Compile-count tests count lowerings (every new
# program is lowered, cached or not), so a cache hit cannot hide a recompilation.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu_kind() -> str:
    """A short hash of this CPU's feature flags: a checkout moved to another machine does not
    load executables compiled for instructions that machine may lack."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:12]


os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".xla-cache-tests", _cpu_kind())
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))  # LRU beyond 2 GiB

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """Tiny random HF checkpoints of each family, built once per session."""
    from hf_fixtures import make_hf_model

    root = tmp_path_factory.mktemp("hf")
    out = {}
    for fam in ("qwen2", "qwen3", "llama"):
        make_hf_model(fam, str(root / fam))
        out[fam] = str(root / fam)
    make_hf_model("qwen2", str(root / "qwen2_tied"), tie_word_embeddings=True)
    out["qwen2_tied"] = str(root / "qwen2_tied")
    return out
