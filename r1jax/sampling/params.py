"""Sampling settings: the user-facing :class:`SamplingParams` and its device form.

:class:`SamplingParams` is a frozen dataclass of Python values, validated on the host before
anything is compiled. :meth:`SamplingParams.device` turns it into :class:`DeviceParams`, a
pytree whose numbers (temperature, top-p, top-k, min-p) are traced arrays, so changing them
between calls never recompiles; only the *kind* of sampling (greedy or not, whether a sort
is needed for top-k/top-p, whether min-p is on) is static.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample completions.

    Attributes:
      temperature: divides the logits; ``0`` means greedy (argmax, ``logp_sampling = 0``).
      top_p: nucleus sampling, keep the smallest set of most likely tokens whose probability
        sums to at least ``top_p`` (``1.0`` disables).
      top_k: keep the ``top_k`` most likely tokens (``0`` disables).
      min_p: keep tokens whose probability is at least ``min_p`` times the largest one
        (``0.0`` disables).
      max_new_tokens: completion length limit; ``None`` uses the sampler's ``max_new_tokens``
        (which fixes the compiled buffer size, so a smaller value here costs no recompile).
      stop_token_ids: ids that end a completion (kept in it, ``finish_reason="stop"``), in
        addition to the tokenizer's / model's end-of-sequence ids (``finish_reason="eos"``).
      stop_strings: strings that end a completion (``finish_reason="stop"``); see
        :mod:`r1jax.sampling.stops` for how they are matched. Needs a tokenizer.
      ignore_eos: do not stop at end-of-sequence ids (benchmarks, fixed-length rollouts).
      seed: the call's PRNG key is ``fold_in(key(0), seed)`` unless a key is passed.

    Filters apply in the order temperature, top-k, top-p, min-p (as in ``transformers``),
    each on the renormalised result of the previous one.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_new_tokens: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    ignore_eos: bool = False
    seed: int = 0

    @property
    def is_greedy(self) -> bool:
        """True when ``temperature == 0``."""
        return self.temperature == 0

    def validate(
        self,
        *,
        max_new_tokens_limit: int | None = None,
        prompt_len: int | None = None,
        max_position_embeddings: int | None = None,
        vocab_size: int | None = None,
        has_tokenizer: bool = True,
    ) -> None:
        """Raises ``ValueError`` naming the field and value of the first bad setting.

        Args:
          max_new_tokens_limit: the sampler's compiled completion length.
          prompt_len: padded prompt length that will be used (checked against the context).
          max_position_embeddings: the model's context length.
          vocab_size: ids in ``stop_token_ids`` must be below it.
          has_tokenizer: ``stop_strings`` need one.
        """

        def bad(field: str, why: str) -> None:
            raise ValueError(f"SamplingParams.{field}={getattr(self, field)!r}: {why}")

        if not isinstance(self.temperature, int | float) or not self.temperature >= 0:
            bad("temperature", "must be a number >= 0 (0 means greedy)")
        if not isinstance(self.top_p, int | float) or not 0.0 < self.top_p <= 1.0:
            bad("top_p", "must be in (0, 1]")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            bad("top_k", "must be an int >= 0 (0 disables)")
        if not isinstance(self.min_p, int | float) or not 0.0 <= self.min_p < 1.0:
            bad("min_p", "must be in [0, 1) (0 disables)")
        if not isinstance(self.seed, int):
            bad("seed", "must be an int")
        n = self.max_new_tokens
        if n is not None:
            if not isinstance(n, int) or n < 1:
                bad("max_new_tokens", "must be an int >= 1 (or None for the sampler's)")
            if max_new_tokens_limit is not None and n > max_new_tokens_limit:
                bad(
                    "max_new_tokens",
                    f"exceeds the sampler's max_new_tokens={max_new_tokens_limit} "
                    "(the compiled completion buffer); build the Sampler with a larger one",
                )
        n = n or max_new_tokens_limit
        known = None not in (n, prompt_len, max_position_embeddings)
        if known and prompt_len + n > max_position_embeddings:
            bad(
                "max_new_tokens",
                f"prompt length {prompt_len} + max_new_tokens {n} = {prompt_len + n} "
                f"exceeds the model's max_position_embeddings={max_position_embeddings}",
            )
        if isinstance(self.stop_token_ids, str | int) or not all(
            isinstance(i, int) and i >= 0 for i in self.stop_token_ids
        ):
            bad("stop_token_ids", "must be a sequence of non-negative ints")
        if vocab_size is not None and any(i >= vocab_size for i in self.stop_token_ids):
            bad("stop_token_ids", f"ids must be below the vocabulary size {vocab_size}")
        if isinstance(self.stop_strings, str) or not all(
            isinstance(s, str) and s for s in self.stop_strings
        ):
            bad("stop_strings", "must be a sequence of non-empty strings (not a bare string)")
        if self.stop_strings and not has_tokenizer:
            bad("stop_strings", "need a tokenizer (pass tokenizer= to the Sampler)")

    def device(self) -> DeviceParams:
        """The device form: traced knobs plus the static sampling mode."""
        return DeviceParams(
            temperature=jnp.float32(self.temperature if self.temperature > 0 else 1.0),
            top_p=jnp.float32(self.top_p),
            top_k=jnp.int32(self.top_k),
            min_p=jnp.float32(self.min_p),
            greedy=self.is_greedy,
            truncate=not self.is_greedy and (self.top_k > 0 or self.top_p < 1.0),
            use_min_p=not self.is_greedy and self.min_p > 0.0,
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeviceParams:
    """Sampling knobs as scalars ``[]`` (traced) plus static mode flags (part of the jit key).

    ``truncate`` turns on the sort needed by top-k / top-p; ``use_min_p`` the min-p filter.
    """

    temperature: jax.Array
    top_p: jax.Array
    top_k: jax.Array
    min_p: jax.Array
    greedy: bool = dataclasses.field(default=False, metadata=dict(static=True))
    truncate: bool = dataclasses.field(default=False, metadata=dict(static=True))
    use_min_p: bool = dataclasses.field(default=False, metadata=dict(static=True))


def as_device_params(params: SamplingParams | DeviceParams) -> DeviceParams:
    """Accepts either form."""
    return params.device() if isinstance(params, SamplingParams) else params
