"""The random tiny Qwen2 that the CPU benchmarks compare frameworks on: its command-line
shape options and the Hugging Face model (torch's default init, seed 0)."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """``--hidden --layers --heads --kv_heads --intermediate --vocab`` (3.2M params)."""
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=704)
    ap.add_argument("--vocab", type=int, default=1024)


def save_random_qwen2(args: argparse.Namespace, path: str, **config: Any):
    """A random fp32 Qwen2 of ``args``' shape with tied embeddings, saved to ``path``;
    ``config`` adds or overrides ``transformers.Qwen2Config`` fields. Returns the model."""
    import torch
    import transformers

    torch.manual_seed(0)
    fields = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**fields, **config}))
    model.eval().save_pretrained(path)
    return model
