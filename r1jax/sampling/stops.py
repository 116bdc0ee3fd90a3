"""Stop strings: cheap early stopping on device, exact truncation on the host.

A stop string can be produced by many token sequences, and which one only shows after
decoding, so the sampler handles stop strings in two parts:

1. **On device**, each stop string's standalone tokenization (``encode(s)`` without BOS) is
   matched against the last generated tokens, together with ``stop_token_ids`` (sequences
   of length 1). A match finishes the row inside the decode loop, so the usual
   tokenization of a stop string stops generation right away.
2. **On the host**, after decoding, each completion is cut after the token that completes
   the first occurrence of any stop string in its text (found by binary search over decoded
   prefixes). Tokens, masks and log-probs after that token become pad / 0 / 0 and the
   finish reason becomes ``"stop"``. This catches stop strings that were generated through
   another tokenization (the decode loop then ran on until EOS or the length limit: correct
   output, some wasted compute).

The kept completion includes the stop string (and the rest of the token that completes
it), so ``texts[i] == decode(tokens[i][:lengths[i]])`` always holds; format rewards that
look for ``</answer>`` see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from r1jax.sampling import ops


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without a BOS token, for any tokenizer with ``encode``."""
    try:
        return list(tokenizer.encode(text, add_bos=False))
    except TypeError:  # duck-typed tokenizer without the add_bos argument
        ids = list(tokenizer.encode(text))
        bos = getattr(tokenizer, "bos_id", None)
        return ids[1:] if ids and bos is not None and ids[0] == bos else ids


def _round_up(x: int, m: int) -> int:
    return max(m, -(-x // m) * m)


def stop_sequence_array(seqs: Sequence[Sequence[int]], bucket: int = 4) -> np.ndarray:
    """``[S, W]`` int32 right-aligned stop sequences for :func:`r1jax.sampling.ops.stop_matches`.

    S and W are rounded up to multiples of ``bucket`` (unused rows never match), so changing
    the stop strings rarely changes the compiled shape.
    """
    seqs = [list(s) for s in seqs if len(s)]
    width = _round_up(max((len(s) for s in seqs), default=1), bucket)
    out = np.full((_round_up(len(seqs), bucket), width), ops.NEVER, np.int32)
    for r, s in enumerate(seqs):
        out[r] = ops.WILDCARD
        out[r, width - len(s) :] = s
    return out


def first_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    """End offset in ``text`` of the earliest-ending stop string occurrence, or None."""
    ends = [i + len(s) for s in stop_strings if (i := text.find(s)) >= 0]
    return min(ends) if ends else None


def stop_cut(
    tokens: Sequence[int], tokenizer: Any, stop_strings: Sequence[str]
) -> tuple[int, str] | None:
    """Number of tokens to keep so that the completion ends with its first stop string.

    Args:
      tokens: the completion's ids ``[n]`` (valid tokens only).
    Returns:
      ``(k, decode(tokens[:k]))`` with the smallest k whose decoded text contains a stop
      string, or None when the full text contains none.
    """
    tokens = [int(t) for t in tokens]
    text = tokenizer.decode(tokens)
    if not stop_strings or first_stop(text, stop_strings) is None:
        return None
    lo, hi = 1, len(tokens)  # invariant: decode(tokens[:hi]) contains a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(tokenizer.decode(tokens[:mid]), stop_strings) is not None:
            hi = mid
        else:
            lo = mid + 1
    return hi, tokenizer.decode(tokens[:hi])
