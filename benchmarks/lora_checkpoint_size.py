"""Disk size and save / restore time of one LoRA checkpoint: the adapters and a fingerprint
of the base (r1jax's default) vs the whole model (``save_base=True``).

Random adapters and AdamW moments (fresh ones are zeros, which compress), rank 16 on all
seven projections, float32 weights, on the host's CPU:

    python benchmarks/lora_checkpoint_size.py --preset qwen2.5-0.5b --dst /tmp/lora_size
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from r1jax.checkpoint import RunCheckpointer
from r1jax.fingerprint import fingerprints
from r1jax.model import create_model
from r1jax.model.config import get_preset
from r1jax.model.lora import add_lora, split_base, split_trainable


def _random_like(rng: np.random.Generator):
    def fill(x):
        if x.ndim and jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(rng.normal(size=x.shape), x.dtype)
        return x

    return fill


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="qwen2.5-0.5b")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dst", default="/tmp/lora_checkpoint_size")
    a = p.parse_args()
    model = create_model(get_preset(a.preset), None, seed=0)
    add_lora(model, a.rank, 16.0, seed=1)
    fill = _random_like(np.random.default_rng(0))
    trainable, frozen = split_trainable(nnx.state(model))
    trainable = jax.tree.map(fill, trainable)
    params = nnx.merge_state(trainable, frozen)
    opt_state = jax.tree.map(fill, optax.adamw(1e-5).init(trainable))
    base = {
        "/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(split_base(params)[1])
    }
    for label in ("with compile", "again"):
        t = time.perf_counter()
        fingerprints(base)
        print(f"{a.preset}: base fingerprint ({sum(x.size for x in base.values()) / 1e6:.1f}M "
              f"params) {label}: {time.perf_counter() - t:.2f} s")  # fmt: skip
    for save_base in (False, True):
        folder = f"{a.dst}/{'whole' if save_base else 'adapters'}"
        shutil.rmtree(folder, ignore_errors=True)
        ck = RunCheckpointer(folder, async_save=False, save_base=save_base)
        t = time.perf_counter()
        ck.save(1, params, opt_state, {"step": 1})
        ck.wait()
        saved = time.perf_counter() - t
        t = time.perf_counter()
        ck.restore_latest(params, opt_state)
        restored = time.perf_counter() - t
        ck.close()
        size = int(subprocess.check_output(["du", "-sb", folder]).split()[0])
        print(f"save_base={save_base}: {size / 1e6:.1f} MB, save {saved:.2f} s, "
              f"restore {restored:.2f} s")  # fmt: skip
    shutil.rmtree(a.dst, ignore_errors=True)


if __name__ == "__main__":
    main()
