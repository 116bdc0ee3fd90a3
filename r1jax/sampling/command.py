"""``r1jax sample``: completions for a few prompts with the model and sampling of a config."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from r1jax import storage
from r1jax.config import ConfigError
from r1jax.sampling.sampler import SampleOutput


def _tokenizer(c: ml_collections.ConfigDict) -> Any:
    """The configured tokenizer, or None when the config names none (prompts are then ids)."""
    from r1jax import build

    hf_tok = c.model.hf_path and any(
        storage.isfile(os.path.join(c.model.hf_path, f))
        for f in ("tokenizer.json", "tokenizer.model")
    )
    if c.tokenizer.path or c.tokenizer.chars or hf_tok:
        return build.build_tokenizer(c)
    return None


def parse_prompts(
    prompts: Sequence[str],
    tokenizer: Any,
    format_prompt: Callable[[dict], str] | None = None,
    hf_path: str = "",
) -> list[str] | list[list[int]]:
    """With a tokenizer: each text through ``format_prompt`` (a record ``{"prompt": text}`` ->
    model input, e.g. the run's R1-Zero template), or as it is when that is None. Without
    a tokenizer, each prompt is space-separated token ids (``hf_path``: the config's
    ``model.hf_path``, named in the error as holding no tokenizer files)."""
    if tokenizer is not None:
        return [format_prompt({"prompt": p}) if format_prompt else p for p in prompts]
    out = []
    for i, p in enumerate(prompts):
        try:
            out.append([int(t) for t in p.split()])
        except ValueError:
            where = (f"config.model.hf_path={hf_path!r} holds no tokenizer.json or "
                     "tokenizer.model, and tokenizer.path and tokenizer.chars are empty"
                     if hf_path else "the config has no tokenizer (tokenizer.path, "
                     "tokenizer.chars, model.hf_path)")  # fmt: skip
            said = f"--prompt {i} ({p[:40]!r}): {where}"
            raise ConfigError(f"{said}, so prompts must be space-separated token ids") from None
    return out


def check_prompt_lengths(inputs: Sequence[Any], tokenizer: Any, max_prompt_len: int) -> None:
    """Raises a :class:`ConfigError` naming the first ``--prompt`` that cannot be encoded or
    is longer than ``sampling.max_prompt_len`` tokens (before any model loads)."""
    for i, p in enumerate(inputs):
        try:
            n = len(tokenizer.encode(p)) if isinstance(p, str) else len(p)
        except ValueError as e:  # e.g. a character outside a char vocabulary
            raise ConfigError(f"--prompt {i}: {e}") from None
        if n > max_prompt_len:
            raise ConfigError(
                f"--prompt {i} is {n} tokens (as the model reads it) > config.sampling."
                f"max_prompt_len={max_prompt_len}: shorten it or raise that setting"
            )


def sample_command(
    c: ml_collections.ConfigDict,
    prompts: Sequence[str],
    num_samples: int = 1,
    emit: Callable[[str], None] = print,
    step: int | None = None,
    raw: bool = False,
) -> SampleOutput:
    """Builds mesh, tokenizer, model and sampler from ``c`` and prints the completions.

    Text prompts are formatted as the run formats its data (``c.prompt``: the R1-Zero
    template by default, or the chat template, ...) unless ``raw``.

    The weights are those of the run's checkpoint ``step`` (default: the newest) in
    ``c.run_dir`` when the run has one, else the config's model (``model.hf_path`` or a
    random init); the first line printed says which.
    """
    import jax

    from r1jax import build
    from r1jax import config as cfgmod

    if not prompts:
        raise ConfigError("sample needs at least one --prompt")
    from r1jax.distributed import is_primary

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    if not is_primary():  # several processes sample together; one prints
        emit = _silent
    tokenizer = _tokenizer(c)
    fmt = None if raw else build.prompt_formatter(c, tokenizer)
    inputs = parse_prompts(prompts, tokenizer, fmt, c.model.hf_path)
    check_prompt_lengths(inputs, tokenizer, c.sampling.max_prompt_len)
    mesh = build.build_mesh(c)
    model, _, weights = build.load_run_model(c, mesh, tokenizer, step)
    emit(f"weights: {weights}")
    sampler = build.build_sampler(c, model, mesh, tokenizer)
    params = build.sampling_params(c, c.seed)
    # prompt i draws with id i: every process holds the same prompts and samples the same
    # completions (their rows are part of one batch), so what process 0 prints is the result
    out = sampler.generate(model, inputs, num_samples, params, draw_ids=range(len(inputs)))
    for r, i in enumerate(out.prompt_index):
        body = (
            out.texts[r]
            if out.texts is not None
            else " ".join(map(str, out.tokens[r, : out.lengths[r]]))
        )
        emit(
            f"--- prompt {i} sample {r % num_samples} ({out.finish_reason[r]}, "
            f"{out.lengths[r]} tokens)\n{body}"
        )
    return out


def _silent(_: str) -> None:
    """The ``emit`` of processes other than 0."""
