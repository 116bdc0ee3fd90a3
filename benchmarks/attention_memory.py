"""Peak temporary memory of one GRPO-shaped forward + backward pass with each attention
implementation, from XLA's compiled memory analysis (no run; CPU is enough).

    python benchmarks/attention_memory.py [--tokens 4096] [--impls einsum splash]

A Qwen2.5-0.5B-shaped layer stack (``--layers`` layers, 14 heads, 2 kv heads, head dim 64),
one row of ``--tokens`` tokens, bf16 compute, log-probs of every token against random
targets, gradients of all parameters. On CPU the splash kernel runs in Pallas interpret mode,
whose temporaries are the kernel's blocks: the comparison shows what the einsum attention's
``[B, H, T, T]`` scores cost and that splash does not form them, not TPU timings.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.model import RowSpan, create_model, get_preset, positions_from_mask
from r1jax.rl.logprobs import compute_dtype_head, token_logprobs


def temp_bytes(impl: str, tokens: int, layers: int) -> int:
    cfg = get_preset("qwen2.5-0.5b").replace(
        num_layers=layers, vocab_size=1024, attention=impl, dtype="bfloat16", remat="full"
    )
    graphdef, params = nnx.split(nnx.eval_shape(lambda: create_model(cfg, seed=0)))
    ids = jax.ShapeDtypeStruct((1, tokens), jnp.int32)

    def loss(p, ids):
        model = nnx.merge(graphdef, p)
        mask = jnp.ones(ids.shape, bool)
        hidden, _ = model(ids, positions_from_mask(mask), RowSpan.from_mask(mask),
                          return_hidden=True, max_position=tokens)  # fmt: skip
        logp, _ = token_logprobs(hidden[:, :-1], compute_dtype_head(model.lm_head_weight()),
                                 ids[:, 1:], 256)  # fmt: skip
        return -jnp.mean(logp)

    compiled = jax.jit(jax.grad(loss)).lower(params, ids).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--impls", nargs="+", default=["einsum", "splash"])
    args = ap.parse_args()
    for t in args.tokens:
        row = {"tokens": t, "layers": args.layers}
        for impl in args.impls:
            row[f"{impl}_temp_mib"] = round(temp_bytes(impl, t, args.layers) / 2**20, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
