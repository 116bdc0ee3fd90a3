"""Build the pieces a run needs from its config: mesh, tokenizer, model, prompt formatter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax.config import ConfigError, model_config
from r1jax.model import Transformer, create_model
from r1jax.model.config import ModelConfig


def configure_devices(c: ml_collections.ConfigDict) -> None:
    """Applies ``c.mesh.cpu_devices`` (see :func:`r1jax.distributed.configure_cpu_devices`)
    and ``c.mesh.cpu_keep_memory`` (see :mod:`r1jax.host_memory`; undone when the backend
    turns out not to be the CPU). Call it before the first JAX computation."""
    import jax

    from r1jax import host_memory
    from r1jax.distributed import configure_cpu_devices

    kept = c.mesh.cpu_keep_memory and host_memory.keep_freed_memory()
    configure_cpu_devices(c.mesh.cpu_devices)
    if kept and jax.default_backend() != "cpu":
        host_memory.restore_defaults()


def build_mesh(c: ml_collections.ConfigDict) -> Mesh:
    return shd.make_mesh(tuple(c.mesh.shape))


def sharding_rules(c: ml_collections.ConfigDict) -> dict[str, Any]:
    return {**shd.DEFAULT_RULES, **c.mesh.rules.to_dict()}


def build_tokenizer(c: ml_collections.ConfigDict):
    """The tokenizer named by ``c.tokenizer`` (a path, or a character vocabulary)."""
    from r1jax.tokenizer import CharTokenizer, load_tokenizer

    if c.tokenizer.path:
        return load_tokenizer(c.tokenizer.path)
    if c.tokenizer.chars:
        return CharTokenizer(c.tokenizer.chars)
    if c.model.hf_path:
        return load_tokenizer(c.model.hf_path)
    raise ConfigError(
        "config.tokenizer.path='' and config.tokenizer.chars='': set one of them "
        "(or model.hf_path to a directory that has a tokenizer)"
    )


def resolve_model_config(c: ml_collections.ConfigDict, tokenizer=None) -> ModelConfig:
    """Model config; a preset without an explicit vocab takes the tokenizer's vocabulary."""
    cfg = model_config(c)
    if (
        not c.model.hf_path
        and tokenizer is not None
        and "vocab_size" not in c.model.overrides
        and cfg.vocab_size != tokenizer.vocab_size
    ):
        cfg = cfg.replace(vocab_size=tokenizer.vocab_size)
    return cfg


def build_model(c: ml_collections.ConfigDict, mesh: Mesh, tokenizer=None) -> Transformer:
    """Loads ``model.hf_path`` or randomly initialises the preset, sharded over ``mesh``."""
    rules = sharding_rules(c)
    if c.model.hf_path:
        from r1jax.model.hf import load_hf_model

        m = c.model
        overrides = dict(
            dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention=m.attention
        )
        return load_hf_model(c.model.hf_path, mesh, rules, **overrides)
    return create_model(resolve_model_config(c, tokenizer), mesh, seed=c.seed, rules=rules)


def prompt_formatter(c: ml_collections.ConfigDict, tokenizer=None) -> Callable[[dict], str]:
    """Record -> model input text, following ``c.prompt.style``."""
    from r1jax.prompts import format_prompt

    p = c.prompt
    kwargs = dict(
        style=p.style,
        system=p.system or None,
        suffix=p.suffix or None,
        prefill=p.prefill,
        tokenizer=tokenizer if p.style == "chat" else None,
    )
    return lambda record: format_prompt(record, **kwargs)
