"""Hugging Face ``config.json`` <-> :class:`~r1jax.model.config.ModelConfig`, for every
supported family (the Gemma families' own fields are in :mod:`r1jax.model.hf_gemma`), and the
error type of checkpoints that cannot be used."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from r1jax import storage
from r1jax.model.config import ModelConfig, RopeScaling
from r1jax.model.hf_gemma import ARCHITECTURES as GEMMA_ARCHITECTURES
from r1jax.model.hf_gemma import CLASSIFIERS as GEMMA_CLASSIFIERS
from r1jax.model.hf_gemma import MODEL_TYPES as GEMMA_TYPES
from r1jax.model.hf_gemma import gemma_fields, gemma_to_hf

FAMILIES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    **GEMMA_ARCHITECTURES,
}
QK_NORMED = ("qwen3", "gemma3")
CLASSIFIER_SUFFIX = "ForSequenceClassification"  # reward models: Qwen2ForSequenceClassification ...
EXPORT_DTYPES = ("float32", "bfloat16", "float16")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: a Hugging Face directory that cannot be loaded, or a
    run's Orbax checkpoints that this config cannot continue (:mod:`r1jax.checkpoint`). The
    message names the file, tensor or step and what is wrong."""


SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "num_key_value_heads", "head_dim",
               "max_position_embeddings")  # fmt: skip


def config_from_hf(
    hf: Mapping[str, Any], source: str = "config.json", **overrides: Any
) -> ModelConfig:
    """Translates a HF ``config.json`` dict into a :class:`ModelConfig`."""
    model_type = hf.get("model_type")
    if model_type == "gemma3":
        raise CheckpointError(
            f"{source}: a multimodal Gemma 3 checkpoint (model_type gemma3); r1jax loads the text "
            "models (model_type gemma3_text, Gemma3ForCausalLM)"
        )
    gemma = model_type in GEMMA_TYPES
    if model_type not in FAMILIES and not gemma:
        supported = sorted({*FAMILIES, *GEMMA_TYPES} - {"gemma3"})
        raise CheckpointError(
            f"{source}: model_type={model_type!r} is not supported; supported: {supported}"
        )
    for key in SIZE_FIELDS:
        value = hf.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CheckpointError(f"{source}: {key}={value!r} is not an integer")
    if gemma:
        return _config(hf, gemma_fields(hf, source), overrides)
    # (HF Qwen2 always has q/k/v biases and reads no attention_bias)
    flags = ("mlp_bias",) if model_type == "qwen2" else ("attention_bias", "mlp_bias")
    for flag in flags:
        if hf.get(flag):
            raise CheckpointError(f"{source}: {flag}=true is not supported")
    sliding = _sliding_layers(hf)
    if sliding:
        raise CheckpointError(
            f"{source}: sliding-window attention (window {hf.get('sliding_window')}) on layers "
            f"{sliding[:4]}{' ...' if len(sliding) > 4 else ''} is not supported"
        )
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):  # the same function
        raise CheckpointError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported")
    # as transformers reads them: a legacy rope_scaling block replaces rope_parameters
    rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        scaling = RopeScaling(
            factor=float(rope["factor"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(
                rope.get("original_max_position_embeddings", hf["max_position_embeddings"])
            ),
        )
    elif rope_type != "default":
        raise CheckpointError(
            f"{source}: rope type {rope_type!r} is not supported (supported: default, llama3)"
        )
    family = dict(
        family=model_type,
        rope_theta=float(theta),
        rope_scaling=scaling,
        qkv_bias=model_type == "qwen2",
        qk_norm=model_type == "qwen3",
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
    )
    return _config(hf, family, overrides)


def _config(hf: Mapping[str, Any], family: dict[str, Any], overrides: dict) -> ModelConfig:
    """The :class:`ModelConfig` of the sizes every family's ``config.json`` shares, the
    ``family`` fields and ``overrides`` (last)."""
    heads = hf["num_attention_heads"]
    num_labels = 0
    if any(str(a).endswith(CLASSIFIER_SUFFIX) for a in hf.get("architectures") or ()):
        num_labels = len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))
    kwargs = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        # (HF's Qwen3Config defaults head_dim to 128, not hidden_size / heads)
        head_dim=hf.get("head_dim")
        or (128 if family["family"] == "qwen3" else hf["hidden_size"] // heads),
        intermediate_size=hf["intermediate_size"],
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        num_labels=num_labels,
        **family,
    )
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def _sliding_layers(hf: Mapping[str, Any]) -> list[int]:
    """The layers a HF config makes attend through a sliding window (transformers' rule:
    ``layer_types``, else layers from ``max_window_layers`` on when ``use_sliding_window``
    and a ``sliding_window`` are set)."""
    if hf.get("layer_types"):
        return [i for i, t in enumerate(hf["layer_types"]) if t == "sliding_attention"]
    if hf.get("use_sliding_window") and hf.get("sliding_window") is not None:
        return list(range(int(hf.get("max_window_layers") or 0), int(hf["num_hidden_layers"])))
    return []


def architecture(cfg: ModelConfig) -> str:
    """The ``transformers`` class of ``cfg``: ``Qwen2ForCausalLM``, or for a classifier
    (reward model) ``Qwen2ForSequenceClassification``, and so on."""
    causal = FAMILIES[cfg.family]
    if not cfg.num_labels:
        return causal
    return GEMMA_CLASSIFIERS.get(cfg.family, causal.replace("ForCausalLM", CLASSIFIER_SUFFIX))


def config_to_hf(
    cfg: ModelConfig,
    dtype: str,
    pad_token_id: int | None = None,
    token_ids: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` dict ``transformers`` needs to rebuild ``cfg`` (``pad_token_id``:
    a classifier pools each row at its last non-pad token, so ``transformers`` needs it for
    batches of more than one row). ``token_ids`` (``bos_token_id``, ``eos_token_id``,
    ``pad_token_id``: the tokenizer's) fill those that ``cfg`` (or ``pad_token_id``) lacks, as
    a model built from a preset does."""
    token_ids = token_ids or {}
    rope: dict[str, Any] = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_scaling is not None:
        rs = cfg.rope_scaling
        rope.update(
            rope_type="llama3",
            factor=rs.factor,
            low_freq_factor=rs.low_freq_factor,
            high_freq_factor=rs.high_freq_factor,
            original_max_position_embeddings=rs.original_max_position_embeddings,
        )
    out = {
        "architectures": [architecture(cfg)],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "bos_token_id": _or(cfg.bos_token_id, token_ids.get("bos_token_id")),
        "eos_token_id": _or(cfg.eos_token_id, token_ids.get("eos_token_id")),
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    if cfg.rope_scaling is not None:
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if cfg.num_labels:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    pad_token_id = _or(pad_token_id, token_ids.get("pad_token_id"))
    if pad_token_id is not None:
        out["pad_token_id"] = pad_token_id
    if cfg.family == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    if cfg.family in GEMMA_ARCHITECTURES:
        out.pop("rope_scaling", None)
        out.update(gemma_to_hf(cfg))
        if cfg.num_labels:
            out["architectures"] = [architecture(cfg)]
    return out


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def saved_dtype(path: str) -> str | None:
    """The dtype that ``path/config.json`` says the weights are stored in (``dtype``, or the
    older ``torch_dtype``) when it is one of :data:`EXPORT_DTYPES`, else None."""
    hf = json.loads(storage.read_text(os.path.join(path, "config.json")))
    dtype = hf.get("dtype") or hf.get("torch_dtype")
    return dtype if dtype in EXPORT_DTYPES else None


def read_hf_config(path: str, field: str = "", **overrides: Any) -> ModelConfig:
    """Reads ``path/config.json`` into a :class:`ModelConfig` (overrides e.g. dtype);
    ``field``: the config field that gave ``path``, named when there is no model there."""
    cfg_path = os.path.join(path, "config.json")
    if not storage.exists(cfg_path):
        where = f"config.{field}={path!r}" if field else path
        raise CheckpointError(f"{where}: config.json not found (is this a HF model directory?)")
    try:
        hf = json.loads(storage.read_text(cfg_path))
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from e
    try:
        return config_from_hf(hf, cfg_path, **overrides)
    except KeyError as e:
        raise CheckpointError(f"{cfg_path}: missing field {e}") from e
