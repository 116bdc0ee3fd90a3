"""On the device: ``model.attention=cudnn`` computes what r1jax's einsum attention
computes, in bf16, on rows with left and right padding.

The CPU tests check the ``jax.nn.dot_product_attention`` path through its XLA lowering; this
checks cuDNN itself. Compared, each against the same model in fp32 with einsum attention
(the reference):

- the full forward's logits with a dense mask (as SFT's packed rows use) and with a
  ``RowSpan`` (as the GRPO update and the sampler's prefill use), and the dense forward's
  gradients (padding query rows have no key: cuDNN gave NaN gradients there before they were
  given every key);
- GRPO completion log-probs and their gradients, shared prompt (G=4: prefill into a cache,
  then the completions over it) and full rows (G=1).

``--model gemma3`` checks the same on a Gemma 3-shaped model: sliding-window layers
(window 12, shorter than the 64-slot rows, so the window masks real keys), a full layer, a
``query_pre_attn_scalar`` that is not the head dim, QK norms.

The error of ``--impl`` must stay within ``--slack`` x the error of bf16 einsum attention
(the same rounding, no library kernel) plus ``--atol``; prints one JSON line per comparison
and PASS/FAIL. ``--impl xla`` runs it on CPU (``tests/test_bench_gpu.py``).

    PYTHONPATH=. python benchmarks/check_gpu_attention.py --out benchmarks/results/att.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from r1jax.model import ModelConfig, RowSpan, causal_mask, create_model, positions_from_mask
from r1jax.model.config import get_preset
from r1jax.rl.step import completion_logprobs

CFG = ModelConfig(
    vocab_size=512,
    hidden_size=256,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
    intermediate_size=512,
    qkv_bias=True,
    param_dtype="float32",
)
MODELS = {
    "qwen2": CFG,
    "gemma3": get_preset("tiny-gemma3").replace(
        vocab_size=512,
        hidden_size=256,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        intermediate_size=512,
        sliding_window=12,
        layer_types=("sliding", "full"),
        num_layers=2,
        query_pre_attn_scalar=48.0,
        param_dtype="float32",
    ),  # fmt: skip
}
P, N, G, ROWS = 24, 40, 4, 16


def grouped_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``tokens, mask [ROWS, P + N]``: prompts shared within groups of G, left padding 0..7
    per group, completions right padded by 0..9 per row."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(2, CFG.vocab_size, (ROWS, P + N)).astype(np.int32)
    mask = np.ones((ROWS, P + N), bool)
    for i in range(0, ROWS, G):
        mask[i : i + G, : rng.randint(0, 8)] = False
        tokens[i : i + G, :P] = tokens[i, :P]
    for i in range(ROWS):
        right = rng.randint(0, 10)
        if right:
            mask[i, -right:] = False
    return tokens, mask


def run(
    cfg: ModelConfig, impl: str, dtype: str, tokens: np.ndarray, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """One implementation's logits (dense mask, span), the dense forward's gradients, and
    the update's log-probs and gradients (G and 1)."""
    model = create_model(cfg.replace(attention=impl, dtype=dtype), seed=3)
    graphdef, params = nnx.split(model)
    weights = np.random.RandomState(1).randn(ROWS, N).astype(np.float32) * mask[:, P:]
    pos = positions_from_mask(jnp.asarray(mask))
    logit_weights = np.random.RandomState(2).randn(ROWS, P + N, CFG.vocab_size) * mask[..., None]
    logit_weights = logit_weights.astype(np.float32)

    def dense_loss(params):
        m = nnx.merge(graphdef, params)
        out = m(tokens, pos, causal_mask(jnp.asarray(mask)))[0]
        return jnp.sum(out * logit_weights), out

    @jax.jit
    def span_logits(params):
        return nnx.merge(graphdef, params)(tokens, pos, RowSpan.from_mask(jnp.asarray(mask)))[0]

    (_, dense), grads = jax.jit(jax.value_and_grad(dense_loss, has_aux=True))(params)
    out = {"logits_dense": dense, "logits_span": span_logits(params), "grad_dense": _flat(grads)}
    for group in (G, 1):

        def loss(params, group=group):
            lp, _ = completion_logprobs(graphdef, params, tokens, mask, P, 16, False, group)
            return jnp.sum(lp * weights), lp

        (_, lp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        out[f"logp_g{group}"] = np.asarray(lp)
        out[f"grad_g{group}"] = _flat(grads)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _flat(tree: Any) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(g, np.float32)) for g in jax.tree.leaves(tree)])


def error(x: np.ndarray, ref: np.ndarray, where: np.ndarray | None) -> float:
    """Max abs error on ``where`` (logits, log-probs) or relative L2 error (gradients)."""
    if where is None:
        return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
    return float(np.max(np.abs(x - ref)[where]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", default="cudnn", help="the attention checked: cudnn or xla")
    ap.add_argument("--model", default="qwen2", choices=sorted(MODELS))
    ap.add_argument("--slack", type=float, default=2.0)
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    tokens, mask = grouped_batch()
    cfg = MODELS[args.model]
    ref = run(cfg, "einsum", "float32", tokens, mask)
    base = run(cfg, "einsum", "bfloat16", tokens, mask)
    got = run(cfg, args.impl, "bfloat16", tokens, mask)
    logits_at = np.broadcast_to(mask[..., None], (ROWS, P + N, CFG.vocab_size))
    where = {"logits": logits_at, "logp": mask[:, P:], "grad": None}
    lines = [f"device: {jax.devices()[0].device_kind}, impl: {args.impl}, model: {args.model}"]
    ok = True
    for name in ref:
        w = where[name.split("_")[0]]
        err, err_base = error(got[name], ref[name], w), error(base[name], ref[name], w)
        passed = err <= args.slack * err_base + args.atol
        ok &= passed
        lines.append(json.dumps({"check": name, "err": err, "bf16_einsum_err": err_base,
                                 "pass": passed}))  # fmt: skip
    lines.append("PASS" if ok else "FAIL")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
