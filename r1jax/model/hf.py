"""Hugging Face checkpoint interop: ``config.json`` + safetensors (single file or sharded).

Loading goes tensor by tensor: each HF tensor is memory-mapped, transposed/reshaped as a
view and placed on the mesh shard by shard with ``jax.make_array_from_callback``, so host
memory stays near one shard, not the whole model. Export streams tensors to safetensors
shards that ``transformers`` loads.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax import storage
from r1jax.model import abstract_model, check_model_fits_mesh, new_score_head
from r1jax.model.config import ModelConfig, RopeScaling
from r1jax.model.hf_gemma import (
    ARCHITECTURES as GEMMA_ARCHITECTURES,
)
from r1jax.model.hf_gemma import (
    MODEL_TYPES as GEMMA_TYPES,
)
from r1jax.model.hf_gemma import (
    SANDWICH_NAMES,
    family_mismatch,
    gemma_fields,
    gemma_to_hf,
)
from r1jax.model.safetensors_io import SafetensorsError, SafetensorsFile, save_file
from r1jax.model.transformer import Transformer
from r1jax.tokenizer import TOKENIZER_FILES

FAMILIES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    **GEMMA_ARCHITECTURES,
}
QK_NORMED = ("qwen3", "gemma3")
CLASSIFIER_SUFFIX = "ForSequenceClassification"  # reward models: Qwen2ForSequenceClassification ...
INDEX_FILE = "model.safetensors.index.json"
EXPORT_DTYPES = ("float32", "bfloat16", "float16")
PROGRESS_MIN_BYTES = 1 << 30
"""Loads and exports of at least this many bytes show a progress bar (on process 0)."""
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: a Hugging Face directory that cannot be loaded, or a
    run's Orbax checkpoints that this config cannot continue (:mod:`r1jax.checkpoint`). The
    message names the file, tensor or step and what is wrong."""


def _bytes_bar(total: int, desc: str) -> Any:
    """A tqdm bar over ``total`` bytes, shown on process 0 for at least
    :data:`PROGRESS_MIN_BYTES` (the tensor-by-tensor load or export of a large model)."""
    from tqdm.auto import tqdm

    show = total >= PROGRESS_MIN_BYTES and jax.process_index() == 0
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not show,
                dynamic_ncols=True, mininterval=1.0)  # fmt: skip


# ----------------------------------------------------------------------------- config


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
    return causal.replace("ForCausalLM", CLASSIFIER_SUFFIX) if cfg.num_labels else causal


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


# ----------------------------------------------------------------------------- name map

# (our path suffix) -> (HF name suffix, ours->HF, HF->ours given our shape)
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


# ----------------------------------------------------------------------------- load


def _open_checkpoint(path: str) -> dict[str, SafetensorsFile]:
    """Maps every tensor name to the open file holding it."""
    index = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: unreadable index ({e})") from e
        files = {}
        out = {}
        for name, fname in weight_map.items():
            fpath = os.path.join(path, fname)
            if fname not in files:
                if not os.path.exists(fpath):
                    raise CheckpointError(
                        f"{index}: tensor {name!r} is in {fname}, which does not exist"
                    )
                files[fname] = SafetensorsFile(fpath)
            if name not in files[fname].header:
                raise CheckpointError(f"{fpath}: tensor {name!r} listed in the index is missing")
            out[name] = files[fname]
        return out
    if os.path.exists(single):
        f = SafetensorsFile(single)
        return dict.fromkeys(f.keys(), f)
    raise CheckpointError(f"{path}: no model.safetensors or {INDEX_FILE} found")


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


def load_hf_model(
    path: str,
    mesh: Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> Transformer:
    """Loads a HF checkpoint directory into a sharded :class:`Transformer`.

    Args:
      path: directory with ``config.json`` and ``model.safetensors`` or a sharded index; a
        remote one (``gs://...``) is first copied to the local cache
        (:func:`r1jax.storage.local_copy`).
      mesh: target mesh (default: one device).
      rules: logical-axis sharding rules (default :data:`r1jax.sharding.DEFAULT_RULES`).
      config_overrides: ModelConfig fields to change, e.g. ``dtype="bfloat16"``.
    """
    rules = rules or shd.DEFAULT_RULES
    path = storage.local_copy(path, ("config.json", "*.safetensors", INDEX_FILE))
    cfg = read_hf_config(path, **config_overrides)
    mesh = mesh or shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    check_model_fits_mesh(cfg, mesh, rules)
    tensors = _open_checkpoint(path)
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abs_state, mesh, rules)
    flat_shardings = dict(nnx.to_flat_state(shardings))
    abstract = nnx.to_flat_state(abs_state)
    nbytes = {p: int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for p, v in abstract}
    new_flat = []
    with _bytes_bar(sum(nbytes.values()), f"loading {path}") as bar:
        for p, var in abstract:
            param = _load_param(p, var, tensors, flat_shardings, path, cfg.sandwich_norms)
            new_flat.append((p, param))
            bar.update(nbytes[p])
    extra = set(tensors) - {hf_name(p, cfg.sandwich_norms)[0] for p, _ in abstract}
    if cfg.tie_word_embeddings and not cfg.num_labels and "lm_head.weight" in extra:
        _check_tied_head(tensors, path)
    if cfg.tie_word_embeddings or cfg.num_labels:
        extra.discard("lm_head.weight")
    extra = {n for n in extra if not n.endswith("rotary_emb.inv_freq")}
    if extra:
        names = sorted(extra)
        raise CheckpointError(
            f"{path}: unexpected tensors {names[:5]}"
            f"{' ...' if len(names) > 5 else ''} in {tensors[names[0]].path}"
        )
    state = nnx.from_flat_state(new_flat)
    return nnx.merge(graphdef, state)


def _check_tied_head(tensors: dict, path: str) -> None:
    """A tied model (``tie_word_embeddings``) whose checkpoint also stores an ``lm_head``:
    fine when it is the embedding; refused when it differs (transformers 5 then keeps the
    two apart, transformers 4 tied them: the checkpoint is ambiguous)."""
    head, embed = "lm_head.weight", "model.embed_tokens.weight"
    if embed in tensors and not np.array_equal(tensors[head].get(head), tensors[embed].get(embed)):
        raise CheckpointError(
            f"{path}: config.json ties the output head to the embedding "
            f"(tie_word_embeddings=true) but the checkpoint stores a different {head}; set "
            "tie_word_embeddings to what the weights mean"
        )


def _load_param(
    p: tuple, var: Any, tensors: dict, shardings: dict, path: str, sandwich: bool
) -> Any:
    """The parameter ``p`` (abstract ``var``) placed on its shards from its checkpoint tensor
    (or a new score head for a language model loaded as a reward model)."""
    name, fn = hf_name(p, sandwich)
    if name == "score.weight" and name not in tensors:  # a language model -> reward model
        return var.replace(new_score_head(var.shape, var.dtype, shardings[p]))
    if name not in tensors:
        raise CheckpointError(
            f"{path}: tensor {name!r} (for parameter {'/'.join(map(str, p))}"
            f", shape {var.shape}) is missing from the checkpoint"
        )
    src = tensors[name]
    try:
        data = src.get(name)
    except SafetensorsError as e:
        raise CheckpointError(f"{src.path}: tensor {name!r} cannot be read ({e})") from e
    try:
        view = fn(data, var.shape)
    except ValueError:
        view = None
    if view is None or tuple(view.shape) != tuple(var.shape):
        raise CheckpointError(
            f"{src.path}: tensor {name!r} has shape {src.shape(name)}, which does not fit "
            f"parameter {'/'.join(map(str, p))} of shape {var.shape} (from config.json)"
        )
    arr = jax.make_array_from_callback(
        var.shape,
        shardings[p],
        # A copy: device buffers must never alias the file mapping (on CPU, JAX would
        # otherwise keep the mapping alive, and an overwritten file would change weights).
        lambda idx, v=view, dt=var.dtype: np.array(v[idx], dtype=dt, copy=True),
    )
    return var.replace(arr)


# ----------------------------------------------------------------------------- export


def _implied_zero_biases(cfg: ModelConfig, np_dtype: np.dtype) -> list[tuple]:
    """HF Qwen2 always has q/k/v biases; a qwen2-family model without them exports zeros."""
    if cfg.family != "qwen2" or cfg.qkv_bias:
        return []
    out = []
    for i in range(cfg.num_layers):
        for proj, heads in (("q", cfg.num_heads), ("k", cfg.num_kv_heads), ("v", cfg.num_kv_heads)):
            shape = (heads * cfg.head_dim,)
            out.append(
                (
                    f"model.layers.{i}.self_attn.{proj}_proj.bias",
                    shape,
                    lambda shape=shape: np.zeros(shape, np_dtype),
                    int(np.prod(shape)) * np_dtype.itemsize,
                )
            )
    return out


def copy_tokenizer_files(src: str, dst: str) -> list[str]:
    """Copies the tokenizer and generation files (:data:`TOKENIZER_FILES`) of the HF
    directory ``src`` (or of the directory holding the tokenizer file ``src``) into ``dst``;
    returns the names copied, in that order."""
    directory = src if storage.isdir(src) else os.path.dirname(storage.absolute(src))
    storage.makedirs(dst)
    copied = []
    for name in TOKENIZER_FILES:
        path, to = os.path.join(directory, name), os.path.join(dst, name)
        if storage.isfile(path) and storage.absolute(path) != storage.absolute(to):
            storage.copy_file(path, to)
            copied.append(name)
    return copied


def save_hf_model(
    model: Transformer,
    path: str,
    dtype: str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    pad_token_id: int | None = None,
    token_ids: dict[str, Any] | None = None,
) -> None:
    """Writes ``model`` as a HF directory: ``config.json`` + safetensors shards (+ index).

    Tensors are gathered to the host one at a time. ``dtype`` defaults to the param dtype. A
    classifier (reward model) is written as ``*ForSequenceClassification``; give it the
    tokenizer's ``pad_token_id``; ``token_ids`` fill the BOS/EOS/pad ids a preset model
    lacks (see :func:`config_to_hf`). With several JAX processes every
    process must call it (the tensors are gathered from all of them, one by one) and process
    0 writes ``path``.
    """
    cfg: ModelConfig = model.cfg
    dtype = dtype or cfg.param_dtype
    if dtype not in EXPORT_DTYPES:
        raise ValueError(
            f"{path}: cannot export weights as dtype={dtype!r} (one of {EXPORT_DTYPES})"
        )
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    if cfg.qkv_bias and cfg.family != "qwen2" or cfg.qk_norm != (cfg.family in QK_NORMED):
        raise CheckpointError(
            f"{path}: a {cfg.family!r} model with qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm} "
            "has no Hugging Face architecture (qkv_bias is Qwen2's, qk_norm Qwen3's and Gemma 3's)"
        )
    mismatch = family_mismatch(cfg)
    if mismatch:
        raise CheckpointError(f"{path}: {mismatch} has no Hugging Face architecture")
    if cfg.num_labels and pad_token_id is None:
        log.warning(
            "%s: a classifier saved without pad_token_id: transformers will refuse batches of "
            "more than one row (pass the tokenizer's pad id)",
            path,
        )
    entries = []
    for p, var in nnx.to_flat_state(nnx.state(model)):
        name, _ = hf_name(p, cfg.sandwich_norms)
        value = var.get_value()
        shape = to_hf_array(p, np.empty(value.shape, dtype=np.bool_)).shape
        produce = lambda p=p, v=value: to_hf_array(p, shd.gather_to_host(v)).astype(np_dtype)
        entries.append((name, shape, produce, int(np.prod(shape)) * np_dtype.itemsize))
    if jax.process_index() != 0:
        for _, _, produce, _ in entries:  # process 0 gathers them in this order as it writes
            produce()
        return
    entries += _implied_zero_biases(cfg, np_dtype)
    hf_config = config_to_hf(cfg, dtype, pad_token_id, token_ids)
    if not storage.is_remote(path):
        written = _write_hf_dir(entries, hf_config, np_dtype, max_shard_bytes, path)
        remove_stale_weights(path, written)
        return
    with tempfile.TemporaryDirectory(prefix="r1jax-export-") as local:  # then uploaded
        written = _write_hf_dir(entries, hf_config, np_dtype, max_shard_bytes, local, label=path)
        storage.upload_dir(local, path)
        remove_stale_weights(path, written)


def _write_hf_dir(
    entries: list[tuple],
    hf_config: dict,
    np_dtype: np.dtype,
    max_shard_bytes: int,
    path: str,
    label: str = "",
) -> list[str]:
    """Writes ``entries`` (name, shape, produce, bytes) as safetensors shards (+ index) and
    ``hf_config`` as ``config.json`` into the local directory ``path`` (``label``: its name
    on the progress bar, when it is a temporary one); returns the weight files' names."""
    os.makedirs(path, exist_ok=True)
    shards: list[list[tuple]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e[3] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e[3]
    weight_map = {}
    total = sum(e[3] for e in entries)
    with _bytes_bar(total, f"writing {label or path}") as bar:

        def counted(produce: Callable[[], np.ndarray], nbytes: int) -> Callable[[], np.ndarray]:
            def run() -> np.ndarray:
                array = produce()
                bar.update(nbytes)
                return array

            return run

        for i, group in enumerate(shards):
            fname = (
                "model.safetensors"
                if len(shards) == 1
                else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            )
            tensors = [(n, (s, np_dtype, counted(fn, b))) for n, s, fn, b in group]
            save_file(tensors, os.path.join(path, fname))
            weight_map.update({n: fname for n, *_ in group})
    if len(shards) > 1:
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    return sorted(set(weight_map.values()) | ({INDEX_FILE} if len(shards) > 1 else set()))


def remove_stale_weights(path: str, written: Sequence[str]) -> list[str]:
    """Deletes the weight files (``*.safetensors``, the index) of directory ``path`` (local or
    remote) that an export to it did not write now: a model saved there before in another
    sharding would otherwise mix with the new one (the index wins when loading). Returns them."""
    stale = [n for n in storage.listdir(path) if n not in written
             and (n.endswith(".safetensors") or n == INDEX_FILE)]  # fmt: skip
    for name in stale:
        storage.remove(os.path.join(path, name))
    if stale:
        log.warning("%s: removed %s of an earlier save (not part of this export)",
                    path, ", ".join(stale))  # fmt: skip
    return stale
