"""One of 2 JAX processes (started by tests/test_multihost.py): ``save`` writes checkpoints 1
and 2 of a weight split over both processes (random values around the step, so that each
process's shard file holds real data); ``restore`` restores the newest loadable one (``read``:
reads its params as ``r1jax eval`` does, :func:`r1jax.run_weights.load_params`) and writes
``OUT_DIR/restored<process>.json`` (the step and the means of its local shards), or, when the
restore fails, the error there and exits at once with 1 (as ``r1jax`` does with several
processes: the others may wait for this one in a collective).

Usage: python tests/multihost_restore_worker.py save|restore|read CHECKPOINT_DIR OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS)]  # r1jax from the checkout


def main(phase: str, directory: str, out_dir: str) -> None:
    from r1jax.distributed import maybe_initialize

    maybe_initialize()
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from r1jax.checkpoint import RunCheckpointer
    from r1jax.run_weights import load_params

    sharding = NamedSharding(jax.make_mesh((jax.device_count(),), ("x",)), P("x"))

    def filled(value: float) -> jax.Array:
        noise = np.random.default_rng(int(value)).normal(0, 1e-3, (jax.device_count(), 512))
        full = (value + noise).astype(np.float32)
        return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])

    if phase == "save":
        saver = RunCheckpointer(directory, async_save=False)
        for step in (1, 2):
            saver.save(step, nnx.State({"w": nnx.Param(filled(step))}), [filled(10 * step)], {})
        saver.close()
        return
    out = os.path.join(out_dir, f"restored{jax.process_index()}.json")
    template = nnx.State({"w": nnx.Param(filled(0))})
    try:
        if phase == "read":  # as r1jax eval / sample / export read a run
            step, params = load_params(directory, template)
        else:
            step, params, _, _, _ = RunCheckpointer(directory).restore_latest(template, [filled(0)])
    except Exception as e:  # noqa: BLE001 - reported to the test
        with open(out, "w") as f:
            json.dump({"error": str(e)}, f)
        sys.stdout.flush()
        os._exit(1)
    local = [round(float(s.data.mean()), 2) for s in params["w"].get_value().addressable_shards]
    with open(out, "w") as f:
        json.dump({"step": step, "values": local}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
