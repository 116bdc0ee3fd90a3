"""One process of a multi-process GRPO run for tests/test_multihost.py.

Usage: ``python tests/multihost_worker.py TMP_DIR RUN_NAME OUT_DIR STEPS [STEPS ...]``; the
distributed setup comes from the environment (``R1JAX_DISTRIBUTED=1``, ``R1JAX_COORDINATOR``,
...) as for ``r1jax train``. For each ``STEPS``, builds a fresh trainer of the
``trainer_fixtures.multihost_config`` run (resuming from its checkpoints) and trains it up to
``STEPS``; a ``damage`` instead of a number: process 0 empties the parameter files of the
newest checkpoint (the next trainer must set it aside and resume from the one before); then
process 0 writes the final parameters (gathered from all processes) to
``OUT_DIR/params.npz`` and, per phase, the step it started from and its step metrics to
``OUT_DIR/history.json``, and both processes export the model to ``OUT_DIR/hf`` (a HF
directory that process 0 writes).
"""

from __future__ import annotations

import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # trainer_fixtures, and r1jax from the checkout


def main(tmp_dir: str, run_name: str, out_dir: str, phases: list[str]) -> None:
    from r1jax.distributed import maybe_initialize

    maybe_initialize()
    import jax
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils
    from trainer_fixtures import multihost_trainer

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    runs = []
    for steps in phases:
        if steps == "damage":
            if jax.process_index() == 0:
                _damage_newest_checkpoint(os.path.join(tmp_dir, run_name, "checkpoints"))
            multihost_utils.sync_global_devices("multihost_worker damaged")
            continue
        trainer = multihost_trainer(tmp_dir, run_name, train__steps=int(steps))
        try:
            start = trainer.step
            runs.append({"start": start, "history": trainer.train()})
        finally:
            trainer.close()
    flat = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(trainer.params)}
    full = {k: multihost_utils.process_allgather(v, tiled=True) for k, v in flat.items()}
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        np.savez(os.path.join(out_dir, "params.npz"), **full)
        with open(os.path.join(out_dir, "history.json"), "w") as f:
            json.dump(runs, f)
    from r1jax.model.hf import save_hf_model

    save_hf_model(nnx.merge(trainer.graphdef, trainer.params), os.path.join(out_dir, "hf"))
    multihost_utils.sync_global_devices("multihost_worker done")


def _damage_newest_checkpoint(folder: str) -> None:
    newest = max(int(name) for name in os.listdir(folder) if name.isdigit())
    for root, _, files in os.walk(os.path.join(folder, str(newest), "params")):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
