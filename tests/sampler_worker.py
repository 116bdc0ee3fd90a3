"""One process of a two-process sampling call for tests/test_sampler_sharded.py.

Usage: ``python tests/sampler_worker.py HF_DIR OUT_DIR``; the distributed setup comes from the
environment as for ``r1jax`` (``R1JAX_DISTRIBUTED=1``, ...). Loads the HF model onto an
(8, 1, 1) mesh over both processes' devices; process 0 samples ``SPLIT_PROMPTS[0]``, process
1 ``SPLIT_PROMPTS[1]`` (uneven shares, so process 1's are padded differently from a
one-process call), 2 samples each at temperature 1 with the default draw ids, and writes its
rows' ``tokens`` and ``completion_mask`` to ``OUT_DIR/process<i>.npz``.
"""

from __future__ import annotations

import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # r1jax from the checkout

SPLIT_PROMPTS = ([[5, 17, 3], [40, 2, 9, 11, 60, 7, 8], [33]], [[12, 90, 4, 4, 71, 23, 6, 50]])
SAMPLER_SETTINGS = dict(max_prompt_len=16, max_new_tokens=12, prompt_buckets=(8, 16))


def main(hf_dir: str, out_dir: str) -> None:
    from r1jax.distributed import maybe_initialize

    maybe_initialize()
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from r1jax import sharding as shd
    from r1jax.model.hf import load_hf_model
    from r1jax.sampler import Sampler, SamplingParams

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    mesh = shd.make_mesh((8, 1, 1))
    model = load_hf_model(hf_dir, mesh)
    pid = jax.process_index()
    out = Sampler(model, mesh=mesh, **SAMPLER_SETTINGS).generate(
        model, SPLIT_PROMPTS[pid], 2, SamplingParams(temperature=1.0)
    )
    np.savez(os.path.join(out_dir, f"process{pid}.npz"), tokens=out.tokens,
             completion_mask=out.completion_mask)  # fmt: skip
    multihost_utils.sync_global_devices("sampler_worker done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
