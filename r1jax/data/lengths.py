"""Prompts that do not fit the sampler: found when the data is loaded, not mid-run.

The sampler refuses a prompt longer than its largest bucket (``sampling.max_prompt_len``),
which would stop a run at whichever step first draws one. The trainer instead tokenizes every
formatted prompt once, when it builds its data, and either skips the long ones (counted and
reported) or names the first of them. The filter is a function of the data and the settings
only, so every process, and a resumed run, sees the same filtered stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class SubsetSource(Sequence):
    """The records of ``source`` at ``indices`` (random access, like the source)."""

    def __init__(self, source: Sequence[dict], indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.source[self.indices[i]]


def split_long_prompts(
    source: Sequence[dict], count_tokens: Callable[[dict], int], max_tokens: int
) -> tuple[Sequence[dict], list[dict[str, Any]]]:
    """``(fitting, long)``: ``source`` without the records whose prompt has more than
    ``max_tokens`` tokens (``source`` itself when none does), and ``{"index", "id",
    "tokens"}`` of each long one, in source order."""
    keep, long = [], []
    for i in range(len(source)):
        record = source[i]
        n = count_tokens(record)
        if n > max_tokens:
            long.append({"index": i, "id": record.get("id", f"#{i}"), "tokens": n})
        else:
            keep.append(i)
    return (source if not long else SubsetSource(source, keep)), long
