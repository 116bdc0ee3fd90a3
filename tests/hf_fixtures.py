"""Tiny random Hugging Face models built locally with ``transformers`` (no network)."""

from __future__ import annotations

import os

TINY = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    initializer_range=0.25,
)  # large weights: attention far from uniform


def make_hf_model(family: str, path: str, seed: int = 0, **overrides):
    """Creates, saves and returns a random tiny HF causal LM of ``family``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    kw = dict(TINY, **overrides)
    if family == "qwen2":
        cfg = transformers.Qwen2Config(**kw)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif family == "qwen3":
        cfg = transformers.Qwen3Config(head_dim=16, **kw)
        model = transformers.Qwen3ForCausalLM(cfg)
    elif family == "llama":
        kw.setdefault(
            "rope_scaling",
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        )
        kw.setdefault("rope_theta", 500000.0)
        cfg = transformers.LlamaConfig(**kw)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        raise ValueError(family)
    # Random (not zero) biases and norm weights so every tensor matters for parity.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    model.eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return model
