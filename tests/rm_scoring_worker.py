"""One of 2 processes (x 4 CPU devices) for tests/test_rm_grpo.py: a learned reward term
on a mesh whose devices are not in process order (process 1 holds the first batch blocks, as
a physical topology can give). Each process scores its own 4 completions and writes to
``OUT_DIR/scores<process>.json`` what it got and its rows' scores from a one-device copy of
the model.

Usage: ``python tests/rm_scoring_worker.py OUT_DIR``; the distributed setup comes from the
environment (``R1JAX_DISTRIBUTED=1``, ...) as for ``r1jax train``.
"""

from __future__ import annotations

import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # r1jax from the checkout


class _NoRules:
    """A host scorer without rule terms: the total is the learned term alone."""

    keys: list[str] = []

    def submit(self, completions, rows):
        import numpy as np

        from r1jax.rewards.scorer import ScoreResult

        n = len(completions)
        result = ScoreResult(np.zeros(n, np.float32), {}, {}, {}, {}, {}, 0.0)
        return type("Done", (), {"result": lambda self, timeout=None: result,
                                 "done": lambda self: True})()  # fmt: skip

    def close(self):
        pass


def main(out_dir: str) -> None:
    from r1jax.distributed import maybe_initialize

    maybe_initialize()
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from r1jax import sharding as shd
    from r1jax.model import ModelConfig, create_model
    from r1jax.rm import pad_rows
    from r1jax.rm_scoring import RewardModelTerm, WithRewardModel
    from r1jax.tokenizer import CharTokenizer

    tok = CharTokenizer("ab?= ")
    cfg = ModelConfig(vocab_size=tok.vocab_size, num_labels=1)
    devices = sorted(jax.devices(), key=lambda d: (-d.process_index, d.id))
    mesh = Mesh(np.array(devices).reshape(len(devices), 1, 1), shd.MESH_AXES)
    me = jax.process_index()
    assert shd.process_batch_shard(mesh) == (1 - me, 2)  # not the process order
    term = RewardModelTerm(create_model(cfg, mesh, seed=0), tok, mesh, max_len=16)
    completions = ["a", "ab", "b", "ba"] if me == 0 else ["bbbb", "abab ba", "aaa", "b b"]
    rows = [{"text": "a?", "prompt": "a?"}] * 4  # a row per device
    got = WithRewardModel(_NoRules(), [term]).score(completions, rows).total
    local = Mesh(np.array(jax.local_devices()[:1]).reshape(1, 1, 1), shd.MESH_AXES)
    arrays = pad_rows([term.encode(c, r) for c, r in zip(completions, rows, strict=True)], 16,
                      tok.pad_id)  # fmt: skip
    one = create_model(cfg, local, seed=0)
    want = one.sequence_scores(arrays["tokens"], arrays["input_mask"])[:, 0]
    with open(os.path.join(out_dir, f"scores{me}.json"), "w") as f:
        json.dump({"got": np.asarray(got).tolist(), "want": np.asarray(want).tolist()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
