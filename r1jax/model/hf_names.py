"""Our parameter paths <-> Hugging Face tensor names and layouts, and the progress bar of
tensor-by-tensor loads and exports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from r1jax.model.hf_gemma import SANDWICH_NAMES

PROGRESS_MIN_BYTES = 1 << 30
"""Loads and exports of at least this many bytes show a progress bar (on process 0)."""


def bytes_bar(total: int, desc: str) -> Any:
    """A tqdm bar over ``total`` bytes, shown on process 0 for at least
    :data:`PROGRESS_MIN_BYTES` (the tensor-by-tensor load or export of a large model)."""
    from tqdm.auto import tqdm

    show = total >= PROGRESS_MIN_BYTES and jax.process_index() == 0
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not show,
                dynamic_ncols=True, mininterval=1.0)  # fmt: skip


_T = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
_IDENT: _T = lambda w, shape: w
_TRANSPOSE: _T = lambda w, shape: w.T
_IN_HEADS: _T = lambda w, shape: w.T.reshape(shape)  # [N*Dh, D] -> [D, N, Dh]
_OUT_HEADS: _T = lambda w, shape: w.T.reshape(shape)  # [D, N*Dh] -> [N, Dh, D]
_BIAS: _T = lambda w, shape: w.reshape(shape)  # [N*Dh] -> [N, Dh]

_LAYER_MAP: dict[tuple[str, ...], tuple[str, _T]] = {
    ("input_norm", "weight"): ("input_layernorm.weight", _IDENT),
    ("post_attn_norm", "weight"): ("post_attention_layernorm.weight", _IDENT),
    ("attn", "q"): ("self_attn.q_proj.weight", _IN_HEADS),
    ("attn", "k"): ("self_attn.k_proj.weight", _IN_HEADS),
    ("attn", "v"): ("self_attn.v_proj.weight", _IN_HEADS),
    ("attn", "o"): ("self_attn.o_proj.weight", _OUT_HEADS),
    ("attn", "q_bias"): ("self_attn.q_proj.bias", _BIAS),
    ("attn", "k_bias"): ("self_attn.k_proj.bias", _BIAS),
    ("attn", "v_bias"): ("self_attn.v_proj.bias", _BIAS),
    ("attn", "q_norm", "weight"): ("self_attn.q_norm.weight", _IDENT),
    ("attn", "k_norm", "weight"): ("self_attn.k_norm.weight", _IDENT),
    ("mlp", "gate"): ("mlp.gate_proj.weight", _TRANSPOSE),
    ("mlp", "up"): ("mlp.up_proj.weight", _TRANSPOSE),
    ("mlp", "down"): ("mlp.down_proj.weight", _TRANSPOSE),
}
_TOP_MAP: dict[tuple[str, ...], tuple[str, _T]] = {
    ("embed",): ("model.embed_tokens.weight", _IDENT),
    ("final_norm", "weight"): ("model.norm.weight", _IDENT),
    ("lm_head",): ("lm_head.weight", _TRANSPOSE),
    ("score",): ("score.weight", _TRANSPOSE),
}


def hf_name(path: tuple[Any, ...], sandwich: bool = False) -> tuple[str, _T]:
    """HF tensor name and HF->ours transform of our parameter ``path`` (``sandwich``: a model
    with ``sandwich_norms``, whose norms HF names as Gemma 2 / 3 do)."""
    if path[0] == "layers":
        key = tuple(path[2:])
        if sandwich and key in SANDWICH_NAMES:
            return f"model.layers.{path[1]}.{SANDWICH_NAMES[key]}", _IDENT
        name, fn = _LAYER_MAP[key]
        return f"model.layers.{path[1]}.{name}", fn
    return _TOP_MAP[tuple(path)]


def to_hf_array(path: tuple[Any, ...], value: np.ndarray) -> np.ndarray:
    """Our parameter value -> the HF tensor layout (2-D ``[out, in]`` weights, 1-D vectors)."""
    key = tuple(path[2:]) if path[0] == "layers" else tuple(path)
    if key in (("attn", "q"), ("attn", "k"), ("attn", "v")):
        d = value.shape[0]
        return value.reshape(d, -1).T
    if key == ("attn", "o"):
        return value.reshape(-1, value.shape[-1]).T
    if key in (("attn", "q_bias"), ("attn", "k_bias"), ("attn", "v_bias")):
        return value.reshape(-1)
    if key in (("mlp", "gate"), ("mlp", "up"), ("mlp", "down"), ("lm_head",), ("score",)):
        return value.T
    return value
