"""One of 2 JAX processes (started by tests/test_multihost.py) that save checkpoints 1 and 2
of a parameter split over both, then restore the newest loadable one while process 1 alone
cannot read the metadata of step 2 (as a host whose read of shared storage fails). Writes
``OUT_DIR/restored<process>.json``: the step restored and the values of its local shards.
Then the same with a LoRA adapter beside the split weight: the checkpoint holds the adapter
and the base's fingerprint (computed over both processes' shards), which restores on the same
base and is refused on another (``lora``: the adapter's local values, ``base`` / ``refused``).

Usage: python tests/multihost_ckpt_worker.py CHECKPOINT_DIR OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS)]  # r1jax from the checkout


def main(directory: str, out_dir: str) -> None:
    from r1jax.distributed import maybe_initialize

    maybe_initialize()
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from r1jax.checkpoint import RunCheckpointer

    sharding = NamedSharding(jax.make_mesh((jax.device_count(),), ("x",)), P("x"))

    def filled(value: float) -> jax.Array:
        full = np.full((jax.device_count(), 3), value, np.float32)
        return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])

    saver = RunCheckpointer(directory, async_save=False)
    for step in (1, 2):
        saver.save(step, nnx.State({"w": nnx.Param(filled(step))}), [filled(10 * step)], {})
    saver.wait()
    reader = RunCheckpointer(directory)
    if jax.process_index() == 1:
        read_meta = reader.read_meta

        def fails_on_step_2(step: int) -> dict:
            if step == 2:
                raise OSError("step 2 unreadable on this host")
            return read_meta(step)

        reader.read_meta = fails_on_step_2
    step, params, opt_state, _, _ = reader.restore_latest(
        nnx.State({"w": nnx.Param(filled(0))}), [filled(0)]
    )
    local = [float(s.data.mean()) for s in params["w"].get_value().addressable_shards]
    local += [float(s.data.mean()) for s in opt_state[0].addressable_shards]
    lora = _lora_round_trip(f"{directory}_lora", filled)
    with open(os.path.join(out_dir, f"restored{jax.process_index()}.json"), "w") as f:
        json.dump({"step": step, "values": local, **lora}, f)


def _lora_round_trip(directory: str, filled) -> dict:
    from flax import nnx

    from r1jax.checkpoint import CheckpointError, RunCheckpointer
    from r1jax.model.lora import LoRAParam

    def state(base: float, adapter: float) -> nnx.State:
        return nnx.State({"w": nnx.Param(filled(base)), "w_lora_a": LoRAParam(filled(adapter))})

    saver = RunCheckpointer(directory, async_save=False)
    saver.save(1, state(1.0, 5.0), [filled(50)], {})
    meta = saver.read_meta(1)
    _, params, _, _, _ = saver.restore_latest(state(1.0, 0.0), [filled(0)])
    try:
        saver.restore_latest(state(2.0, 0.0), [filled(0)])
        refused = ""
    except CheckpointError as e:
        refused = str(e)
    saver.close()
    local = [float(s.data.mean()) for s in params["w_lora_a"].get_value().addressable_shards]
    return {"lora": local, "base": sorted(meta["base_fingerprint"]), "refused": refused}


if __name__ == "__main__":
    main(*sys.argv[1:3])
