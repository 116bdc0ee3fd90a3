"""Export of a model as a Hugging Face directory: ``config.json`` and safetensors shards (and
an index) that ``transformers`` loads, streamed tensor by tensor."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from r1jax import sharding as shd
from r1jax import storage
from r1jax.model.config import ModelConfig
from r1jax.model.hf_config import (
    EXPORT_DTYPES,
    QK_NORMED,
    CheckpointError,
    config_to_hf,
)
from r1jax.model.hf_gemma import family_mismatch
from r1jax.model.hf_names import bytes_bar, hf_name, to_hf_array
from r1jax.model.safetensors_io import save_file
from r1jax.model.transformer import Transformer
from r1jax.tokenizer import TOKENIZER_FILES

INDEX_FILE = "model.safetensors.index.json"
log = logging.getLogger(__name__)


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
    with bytes_bar(total, f"writing {label or path}") as bar:

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
