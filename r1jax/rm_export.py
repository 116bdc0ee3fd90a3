"""A trained reward model as a Hugging Face ``*ForSequenceClassification`` directory.

r1jax scores a row at its final EOS (:func:`r1jax.rm.encode_scored` appends it). transformers
pools at the last token that is not ``config.pad_token_id``, ignoring the attention mask; so
with a tokenizer whose pad token is its EOS (Qwen2.5 base, Llama 3 and R1-distill tokenizers,
and any without a pad token) it would read the token before the EOS and give other scores.
The export then gives the tokenizer a pad token of its own, :data:`PAD_TOKEN`, at the first id
past the tokenizer's vocabulary that the model's embedding has (Qwen2.5 pads its embedding
well past its tokenizer), and writes it as the pad token of ``config.json`` and of the
tokenizer files. With no such id (or no ``tokenizer.json`` to add it to), ``config.json``
gets no pad id: transformers then scores single rows right and refuses batches instead of
scoring them wrong; a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ml_collections

from r1jax import storage

log = logging.getLogger(__name__)
PAD_TOKEN = "<|r1jax_pad|>"
LAYOUT_FILE = "r1jax_reward_layout.json"
"""In an exported reward model: the ``reward_model.input`` and ``scope`` it was trained on,
which GRPO's scoring must use too (:func:`r1jax.build.check_reward_layout`)."""


def export_reward_model(
    c: ml_collections.ConfigDict, model: Any, tokenizer: Any, hf_dir: str, primary: bool
) -> None:
    """Writes ``model`` (a one-label classifier; LoRA adapters are merged into it in place),
    its tokenizer and the text layout it was trained on (:data:`LAYOUT_FILE`) to ``hf_dir``;
    every process calls it (the tensors are gathered from all), ``primary`` (process 0)
    writes."""
    from r1jax import build
    from r1jax.model.hf import save_hf_model
    from r1jax.model.lora import merge_lora

    merge_lora(model)  # LoRA adapters (lora.rank > 0) folded into their weights, in place
    ids = build.token_ids(tokenizer)
    if primary:
        rm = c.reward_model
        storage.makedirs(hf_dir)
        layout = json.dumps({"input": rm.input, "scope": rm.scope})
        storage.write_text(os.path.join(hf_dir, LAYOUT_FILE), layout)
        names = build.save_tokenizer_files(c, tokenizer, hf_dir)
        if ids["pad_token_id"] is None or ids["pad_token_id"] in tokenizer.eos_ids:
            ids["pad_token_id"] = _own_pad_token(hf_dir, names, tokenizer.vocab_size,
                                                 model.cfg.vocab_size)  # fmt: skip
    save_hf_model(model, hf_dir, pad_token_id=ids["pad_token_id"], token_ids=ids)


def _own_pad_token(hf_dir: str, names: list[str], free: int, model_vocab: int) -> int | None:
    """Adds :data:`PAD_TOKEN` at id ``free`` (the tokenizer's next id) when the model's
    embedding has it and the tokenizer is a ``tokenizer.json``; returns that id, else None
    (with a warning)."""
    if free < model_vocab and "tokenizer.json" in names:
        _add_pad_token(hf_dir, free)
        return free
    log.warning(
        "reward model export: the tokenizer pads with its EOS id and there is no free id for "
        "a pad token of its own (tokenizer ids %d, model vocabulary %d%s): %s has no "
        "pad_token_id, so transformers scores single rows only",
        free,
        model_vocab,
        "" if "tokenizer.json" in names else ", no tokenizer.json",
        hf_dir,
    )
    return None


def _add_pad_token(hf_dir: str, pad_id: int) -> None:
    """Adds :data:`PAD_TOKEN` as id ``pad_id`` (the next id) to ``hf_dir``'s tokenizer files
    and makes it their pad token."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as RustTokenizer

    path = os.path.join(hf_dir, "tokenizer.json")
    rust = RustTokenizer.from_str(storage.read_text(path))
    rust.add_special_tokens([AddedToken(PAD_TOKEN, special=True, normalized=False)])
    if rust.token_to_id(PAD_TOKEN) != pad_id:
        raise ValueError(
            f"{path}: {PAD_TOKEN} got id {rust.token_to_id(PAD_TOKEN)}, expected {pad_id}"
        )
    storage.write_text(path, rust.to_str())
    cfg_path = os.path.join(hf_dir, "tokenizer_config.json")
    cfg = json.loads(storage.read_text(cfg_path)) if storage.exists(cfg_path) else {}
    cfg["pad_token"] = PAD_TOKEN
    cfg.setdefault("added_tokens_decoder", {})[str(pad_id)] = {
        "content": PAD_TOKEN,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }
    storage.write_text(cfg_path, json.dumps(cfg, ensure_ascii=False, indent=2))
