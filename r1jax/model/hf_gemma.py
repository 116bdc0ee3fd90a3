"""The Gemma families' ``config.json`` fields and tensor names (Gemma, Gemma 2, Gemma 3 text).

transformers' ``model_type`` -> our ``family``: ``gemma``, ``gemma2``, ``gemma3_text`` ->
``gemma3`` (a multimodal ``gemma3`` checkpoint is refused: load its text model). Both rope
formats are read: transformers 5's ``rope_parameters`` per layer type, and the older
``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling`` fields (Gemma 3), which export
writes too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from r1jax.model.config import ModelConfig, gemma_layer_types

MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3"}
ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
# reward models: Gemma 3's text classifier is not "Gemma3ForSequenceClassification"
# (transformers' multimodal one)
CLASSIFIERS = {"gemma3": "Gemma3TextForSequenceClassification"}
# HF layer tensor names where Gemma 2 / 3 (sandwich norms) differ from Llama's
SANDWICH_NAMES = {
    ("post_attn_norm", "weight"): "pre_feedforward_layernorm.weight",
    ("attn_out_norm", "weight"): "post_attention_layernorm.weight",
    ("mlp_out_norm", "weight"): "post_feedforward_layernorm.weight",
}
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")
# transformers' defaults where a config.json omits the field
_SOFTCAPS = {"gemma2": (50.0, 30.0)}
_WINDOW_EVERY = {"gemma2": 2, "gemma3": 6}


def _error(source: str, message: str) -> Exception:
    from r1jax.model.hf_config import CheckpointError

    return CheckpointError(f"{source}: {message}")


def gemma_fields(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The :class:`ModelConfig` fields of a Gemma-family ``config.json`` (``hf``) beyond the
    sizes every family shares. Raises ``CheckpointError`` naming ``source`` and the field
    for settings r1jax does not compute."""
    family = MODEL_TYPES[hf["model_type"]]
    act = hf.get("hidden_activation") or "gelu_pytorch_tanh"  # (Gemma 1 ignores hidden_act)
    if act not in _GELU_TANH:
        raise _error(source, f"hidden_activation={act!r} is not supported (gelu_pytorch_tanh)")
    if hf.get("use_bidirectional_attention"):
        raise _error(source, "use_bidirectional_attention=true (an encoder) is not supported")
    if hf.get("attention_bias"):
        raise _error(source, "attention_bias=true is not supported")
    layers = int(hf["num_hidden_layers"])
    attn_cap, final_cap = _SOFTCAPS.get(family, (None, None))
    out: dict[str, Any] = dict(
        family=family,
        norm_offset=1.0,
        embed_scale=True,
        mlp_activation="gelu_tanh",
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        qk_norm=family == "gemma3",
        sandwich_norms=family != "gemma",
    )
    if family == "gemma":
        out["rope_theta"] = float(_rope(hf, "full_attention").get("rope_theta", 10000.0))
        return out
    out.update(
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        attn_softcap=hf.get("attn_logit_softcapping", attn_cap),
        final_softcap=hf.get("final_logit_softcapping", final_cap),
    )
    kinds = hf.get("layer_types") or [
        "full_attention" if t == "full" else "sliding_attention"
        for t in gemma_layer_types(layers, hf.get("sliding_window_pattern", _WINDOW_EVERY[family]))
    ]
    types = tuple("sliding" if k == "sliding_attention" else "full" for k in kinds)
    if any(k not in ("sliding_attention", "full_attention") for k in kinds):
        raise _error(source, f"layer_types={kinds!r}: only sliding/full attention layers")
    if "sliding" in types:
        out.update(sliding_window=int(hf.get("sliding_window", 4096)), layer_types=types)
    full = _rope(hf, "full_attention")
    default_theta = 1e6 if family == "gemma3" else 10000.0
    out["rope_theta"] = float(full.get("rope_theta", default_theta))
    kind = full.get("rope_type", full.get("type", "default"))
    if kind == "linear":
        out["rope_linear_factor"] = float(full["factor"])
    elif kind != "default":
        raise _error(source, f"rope type {kind!r} is not supported (default, linear)")
    if family == "gemma3":
        local = _rope(hf, "sliding_attention")
        if local.get("rope_type", "default") != "default":
            raise _error(source, f"sliding layers' rope type {local['rope_type']!r}: only default")
        out["rope_local_theta"] = float(local.get("rope_theta", 10000.0))
    return out


def _rope(hf: Mapping[str, Any], layer_type: str) -> dict[str, Any]:
    """The rope settings of one layer type, from either config.json format."""
    params = hf.get("rope_parameters") or {}
    if layer_type in params:  # transformers 5, Gemma 3: per layer type
        return dict(params[layer_type] or {})
    if layer_type == "sliding_attention":
        return {"rope_theta": hf.get("rope_local_base_freq", 10000.0)}
    out = {k: v for k, v in params.items() if k not in ("full_attention", "sliding_attention")}
    if "rope_theta" not in out and hf.get("rope_theta") is not None:
        out["rope_theta"] = hf["rope_theta"]
    out.update(hf.get("rope_scaling") or {})  # (legacy: what transformers reads first)
    return out


def gemma_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The Gemma-specific ``config.json`` fields that rebuild ``cfg`` in transformers (read
    back by :func:`gemma_fields`)."""
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[cfg.family]],
        "model_type": "gemma3_text" if cfg.family == "gemma3" else cfg.family,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_act": "gelu_pytorch_tanh",
        "attention_bias": False,
    }
    if cfg.family == "gemma":
        return out
    kinds = [
        "sliding_attention" if cfg.is_sliding(i) else "full_attention"
        for i in range(cfg.num_layers)
    ]
    scalar = cfg.query_pre_attn_scalar or cfg.head_dim
    out.update(
        query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,  # (HF: int)
        attn_logit_softcapping=cfg.attn_softcap,
        final_logit_softcapping=cfg.final_softcap,
        sliding_window=cfg.sliding_window,
        layer_types=kinds,
    )
    full: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_linear_factor != 1.0:
        full.update(rope_type="linear", factor=cfg.rope_linear_factor)
    if cfg.family == "gemma3":
        local = {"rope_type": "default", "rope_theta": cfg.rope_local_theta or cfg.rope_theta}
        out["rope_parameters"] = {"full_attention": full, "sliding_attention": local}
        out["rope_local_base_freq"] = local["rope_theta"]
    else:
        out["rope_parameters"] = full
    if cfg.rope_linear_factor != 1.0:
        out["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_linear_factor}
    return out


def family_mismatch(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` has no transformers architecture (Gemma traits on another family, or a
    Gemma family without its own), or None when it has one."""
    gemma = cfg.family in ARCHITECTURES
    traits = dict(
        norm_offset=cfg.norm_offset == (1.0 if gemma else 0.0),
        embed_scale=cfg.embed_scale == gemma,
        mlp_activation=cfg.mlp_activation == ("gelu_tanh" if gemma else "silu"),
        sandwich_norms=cfg.sandwich_norms == (cfg.family in ("gemma2", "gemma3")),
    )
    if not gemma or cfg.family == "gemma":
        traits.update(
            attn_softcap=cfg.attn_softcap is None,
            final_softcap=cfg.final_softcap is None,
            layer_types=cfg.layer_types is None or "sliding" not in cfg.layer_types,
            query_pre_attn_scalar=cfg.query_pre_attn_scalar in (None, cfg.head_dim),
            rope_local_theta=cfg.rope_local_theta is None,
            rope_linear_factor=cfg.rope_linear_factor == 1.0,
        )
    wrong = [name for name, ok in traits.items() if not ok]
    if not wrong:
        return None
    return f"a {cfg.family!r} model with these {', '.join(wrong)} settings"
