"""Model FLOPs of the GRPO update and model FLOPs utilisation (MFU) against a chip's peak.

Model FLOPs count the matmuls a transformer must do, not what a kernel happens to do: the
dense layers (``2 x params`` per token), the LM head only where a completion token is
predicted, causal attention (half of the keys on average), forward + backward = 3 x forward.
Padding in the batch counts as work (the prompt bucket, ``max_new_tokens``), as in the
update's own arrays.
"""

from __future__ import annotations

from r1jax.model.config import ModelConfig

PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
    "TPU v4": 275.0,
}
"""Dense bf16 peak per chip, TFLOP/s (vendor figures, no sparsity), by device-kind substring."""


def peak_tflops(device_kind: str) -> float | None:
    """The bf16 peak of a ``jax.Device.device_kind`` (None when the chip is not listed, e.g.
    a CPU)."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_kind), None)


def update_flops(
    cfg: ModelConfig, prompts: int, group: int, prompt_len: int, new: int, frozen: bool = False
) -> float:
    """Model FLOPs of one forward + backward pass of the GRPO update over ``prompts`` prompts
    of ``prompt_len`` tokens, each run once for its ``group`` completions of ``new`` tokens
    (``rl.share_prompt``; without it pass the rows as ``prompts`` and ``group=1``).

    The backward pass of a weight matmul is two matmuls (input and weight gradients);
    ``frozen`` weights (under LoRA adapters, whose own small matmuls are not counted) need
    only the input gradient: 2x the forward's matmul FLOPs instead of 3x."""
    d, hd = cfg.hidden_size, cfg.head_dim
    per_layer = d * hd * (cfg.num_heads * 2 + cfg.num_kv_heads * 2) + 3 * d * cfg.intermediate_size
    rows = prompts * group
    tokens = prompts * prompt_len + rows * new
    # scores + weighted values: 2 dots of 2*hd FLOPs per (query, key); causal: half the keys
    attn_pairs = prompts * prompt_len * prompt_len / 2 + rows * new * (prompt_len + new / 2)
    attn = cfg.num_layers * cfg.num_heads * 4 * hd * attn_pairs
    dense = 2 * (cfg.num_layers * per_layer * tokens + d * cfg.vocab_size * rows * new)
    return (2 if frozen else 3) * dense + 3 * attn
