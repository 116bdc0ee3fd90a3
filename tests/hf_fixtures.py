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
    elif family == "gemma":
        cfg = transformers.GemmaConfig(head_dim=8, **kw)
        model = transformers.GemmaForCausalLM(cfg)
    elif family == "gemma2":  # small window and caps, so that both change the logits
        kw = dict(head_dim=8, sliding_window=4, query_pre_attn_scalar=12,
                  attn_logit_softcapping=5.0, final_logit_softcapping=3.0, **kw)  # fmt: skip
        cfg = transformers.Gemma2Config(**kw)
        model = transformers.Gemma2ForCausalLM(cfg)
    elif family == "gemma3":
        rope = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}  # fmt: skip
        kw = dict(kw, num_hidden_layers=3)
        kw = dict(head_dim=8, sliding_window=4, query_pre_attn_scalar=8, rope_parameters=rope,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                  **kw)  # fmt: skip
        cfg = transformers.Gemma3TextConfig(**kw)
        model = transformers.Gemma3ForCausalLM(cfg)
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
