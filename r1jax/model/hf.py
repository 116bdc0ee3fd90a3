"""Hugging Face checkpoint interop: ``config.json`` + safetensors (single file or sharded).

Loading goes tensor by tensor: each HF tensor is memory-mapped, transposed/reshaped as a
view and placed on the mesh shard by shard with ``jax.make_array_from_callback``, so host
memory stays near one shard, not the whole model. Export streams tensors to safetensors
shards that ``transformers`` loads (:mod:`r1jax.model.hf_export`). This module is the
public face of the four: ``config.json`` translation (:mod:`r1jax.model.hf_config`), tensor
names (:mod:`r1jax.model.hf_names`), loading (here) and export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax import storage
from r1jax.model import abstract_model, check_model_fits_mesh, new_score_head
from r1jax.model.hf_config import (  # noqa: F401 - the public names of r1jax.model.hf
    CLASSIFIER_SUFFIX,
    EXPORT_DTYPES,
    FAMILIES,
    SIZE_FIELDS,
    CheckpointError,
    architecture,
    config_from_hf,
    config_to_hf,
    read_hf_config,
    saved_dtype,
)
from r1jax.model.hf_export import (  # noqa: F401
    INDEX_FILE,
    copy_tokenizer_files,
    remove_stale_weights,
    save_hf_model,
)
from r1jax.model.hf_names import bytes_bar, hf_name, to_hf_array  # noqa: F401
from r1jax.model.safetensors_io import SafetensorsError, SafetensorsFile
from r1jax.model.transformer import Transformer


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
    with bytes_bar(sum(nbytes.values()), f"loading {path}") as bar:
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
