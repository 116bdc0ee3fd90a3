"""The r1jax decoder model: config, NNX modules, sharded creation, HF interop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax.model.attention import RowSpan, Segments, causal_mask
from r1jax.model.config import PRESETS, ModelConfig, RopeScaling, get_preset
from r1jax.model.transformer import (
    Block,
    KVCache,
    Transformer,
    init_cache,
    positions_from_mask,
    prepare_for_decoding,
)

__all__ = [
    "PRESETS",
    "KVCache",
    "ModelConfig",
    "RopeScaling",
    "RowSpan",
    "Segments",
    "Transformer",
    "abstract_model",
    "causal_mask",
    "create_model",
    "get_preset",
    "init_cache",
    "positions_from_mask",
    "prepare_for_decoding",
    "reward_model_from",
]

SCORE_INIT_STD = 0.02  # a new score head (a language model turned into a reward model)


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model with ``ShapeDtypeStruct`` leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def check_model_fits_mesh(
    cfg: ModelConfig, mesh: Mesh, rules: Mapping[str, Any] = shd.DEFAULT_RULES
) -> None:
    """Fails early, naming the config field, if a parameter cannot be split over the mesh."""
    dims = {
        "heads": ("model.num_heads", cfg.num_heads),
        "kv_heads": ("model.num_kv_heads", cfg.num_kv_heads),
        "mlp": ("model.intermediate_size", cfg.intermediate_size),
        "vocab": ("model.vocab_size", cfg.vocab_size),
        "embed": ("model.hidden_size", cfg.hidden_size),
    }
    for logical, (field, value) in dims.items():
        spec = shd.logical_to_spec((logical,), rules, mesh)
        shd.check_divisible((value,), spec, mesh, f"{field}={value} (logical axis {logical!r})")


def create_model(
    cfg: ModelConfig,
    mesh: Mesh | None = None,
    seed: int = 0,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
) -> Transformer:
    """Randomly initialised model whose parameters are created directly sharded on ``mesh``.

    Initialisation runs inside ``jax.jit`` with ``out_shardings``, so no device ever holds a
    full replica of a sharded parameter. Every layer is initialised by the same compiled
    program (its own key): XLA compiles each random-number kernel of a program separately, so
    one program for the whole model took ~3 min to compile for Qwen2.5-0.5B on an H100 (13 s
    on CPU), and its compile time grew with the layer count.
    """
    if mesh is None:
        mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    check_model_fits_mesh(cfg, mesh, rules)
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = nnx.to_pure_dict(shd.state_shardings(abs_state, mesh, rules))
    layer_shardings = shardings.pop("layers")
    key = jax.random.key(seed)

    def init_outer(k: jax.Array) -> dict:
        outer = nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(k), build_layers=False)))
        return {n: v for n, v in outer.items() if n != "layers"}

    def init_layer(k: jax.Array) -> dict:
        return nnx.to_pure_dict(nnx.state(Block(cfg, rngs=nnx.Rngs(k))))

    layer_fn = jax.jit(init_layer, out_shardings=layer_shardings[0])
    values = jax.jit(init_outer, out_shardings=shardings)(jax.random.fold_in(key, 0))
    values["layers"] = {i: layer_fn(jax.random.fold_in(key, i + 1)) for i in range(cfg.num_layers)}
    nnx.replace_by_pure_dict(abs_state, values)
    return nnx.merge(graphdef, abs_state)


def new_score_head(shape: tuple[int, ...], dtype: Any, sharding: Any) -> jax.Array:
    """A fresh ``score [D, num_labels]`` head, normal(0, :data:`SCORE_INIT_STD`), from a fixed
    seed (every process draws the same values), placed with ``sharding``."""
    values = np.random.default_rng(0).normal(0.0, SCORE_INIT_STD, shape).astype(dtype)
    return jax.make_array_from_callback(shape, sharding, lambda idx: values[idx])


def reward_model_from(
    lm: Transformer, mesh: Mesh, rules: Mapping[str, Any] = shd.DEFAULT_RULES
) -> Transformer:
    """A reward model (``num_labels=1``) with the weights of the language model ``lm`` (its
    ``lm_head``, if any, dropped) and a fresh score head (:func:`new_score_head`). The two
    share buffers: keep using only the returned model."""
    cfg = lm.cfg.replace(num_labels=1)
    check_model_fits_mesh(cfg, mesh, rules)
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = dict(nnx.to_flat_state(shd.state_shardings(abs_state, mesh, rules)))
    weights = dict(nnx.to_flat_state(nnx.state(lm, nnx.Param)))
    flat = []
    for path, var in nnx.to_flat_state(abs_state):
        if path == ("score",):
            value = new_score_head(var.shape, var.dtype, shardings[path])
        else:
            value = jax.device_put(weights[path].get_value(), shardings[path])
        flat.append((path, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))
