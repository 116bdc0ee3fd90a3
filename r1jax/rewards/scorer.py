"""The host-side reward scorer: weighted, routed reward specs run in a worker pool.

Typical use in a trainer (scoring of batch k overlaps with sampling of batch k+1)::

    scorer = RewardScorer([("math_accuracy", 1.0), ("format_strict", 0.5)],
                          routes={"countdown": [("countdown", 1.0)]}, timeout_s=10)
    handle = scorer.submit(completions, rows)   # returns at once
    ...                                          # dispatch the next sampling step
    result = handle.result()                     # ScoreResult with total [N] etc.

A reward call that raises, returns a non-finite value, hangs past its timeout or
crashes its worker (even with a segfault) scores 0 for that sample and is counted in
``ScoreResult.errors`` / ``ScoreResult.timeouts``; the pool replaces dead or stuck
workers and keeps serving. Reward functions reach workers by import reference, see
:mod:`r1jax.rewards.registry`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from r1jax.rewards.calls import call_with_timeout
from r1jax.rewards.pool import Call, WorkerPool
from r1jax.rewards.registry import (
    RewardInfo,
    RewardSpec,
    check_worker_importable,
    parse_specs,
    reward_info,
)

logger = logging.getLogger(__name__)

MAX_ERROR_MESSAGES = 3


@dataclasses.dataclass
class ScoreResult:
    """Rewards of one batch of N completions.

    Attributes:
      total: ``[N]`` float32 weighted sum over the terms applied to each sample.
      per_function: key -> ``[N]`` float32 raw (unweighted) values; 0 where the term is
        not routed to the sample or failed.
      applied: key -> ``[N]`` bool, True where the term is routed to the sample.
      timeouts / errors: key -> number of calls that timed out / raised or crashed.
      error_messages: key -> up to 3 example messages ``"[sample] message"``.
      elapsed_s: seconds from ``submit`` to the last result.
    """

    total: np.ndarray
    per_function: dict[str, np.ndarray]
    applied: dict[str, np.ndarray]
    timeouts: dict[str, int]
    errors: dict[str, int]
    error_messages: dict[str, list[str]]
    elapsed_s: float

    def metrics(self, prefix: str = "rewards/") -> dict[str, float]:
        """Scalar summaries: total and per-key mean/std over applied samples, counts."""
        out = {f"{prefix}total/mean": float(np.mean(self.total)) if self.total.size else 0.0}
        out[f"{prefix}total/std"] = float(np.std(self.total)) if self.total.size else 0.0
        for key, values in self.per_function.items():
            applied = values[self.applied[key]]
            out[f"{prefix}{key}/mean"] = float(applied.mean()) if applied.size else 0.0
            out[f"{prefix}{key}/std"] = float(applied.std()) if applied.size else 0.0
            out[f"{prefix}{key}/timeouts"] = float(self.timeouts[key])
            out[f"{prefix}{key}/errors"] = float(self.errors[key])
        return out


class ScoreHandle:
    """A pending :class:`ScoreResult`; filled by the scorer's pool thread."""

    def __init__(self, keys: list[str], weights: np.ndarray, num_calls: int) -> None:
        self._keys = keys
        self._weights = weights  # [K, N] float64, 0 where not applied
        self._applied = np.zeros(weights.shape, dtype=bool)
        self._values = np.zeros(weights.shape, dtype=np.float64)
        self._timeouts = dict.fromkeys(keys, 0)
        self._errors = dict.fromkeys(keys, 0)
        self._messages: dict[str, list[str]] = {k: [] for k in keys}
        self._remaining = num_calls
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._start = time.monotonic()
        self._elapsed = 0.0
        if num_calls == 0:
            self._event.set()

    def _on_done(self, k: int, i: int, status: str, value: float, message: str) -> None:
        with self._lock:
            key = self._keys[k]
            if status == "ok":
                self._values[k, i] = value
            else:
                counts = self._timeouts if status == "timeout" else self._errors
                counts[key] += 1
                if len(self._messages[key]) < MAX_ERROR_MESSAGES:
                    self._messages[key].append(f"[{i}] {status}: {message}")
            self._remaining -= 1
            if self._remaining == 0:
                self._elapsed = time.monotonic() - self._start
                self._event.set()

    def done(self) -> bool:
        """Whether every reward call of the batch has finished."""
        return self._event.is_set()

    def result(self, timeout: float | None = None) -> ScoreResult:
        """Block until scored (``TimeoutError`` after ``timeout`` seconds)."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"rewards not ready after {timeout} s")
        total = (self._weights * self._values).sum(axis=0).astype(np.float32)
        return ScoreResult(
            total=total,
            per_function={k: self._values[j].astype(np.float32) for j, k in enumerate(self._keys)},
            applied={k: self._applied[j].copy() for j, k in enumerate(self._keys)},
            timeouts=dict(self._timeouts),
            errors=dict(self._errors),
            error_messages={k: list(v) for k, v in self._messages.items()},
            elapsed_s=self._elapsed,
        )


def _check_kwargs(spec: RewardSpec, info: RewardInfo) -> None:
    try:
        inspect.signature(info.fn).bind("", {}, **spec.kwargs)
    except TypeError as e:
        raise ValueError(f"reward spec {spec.label!r}: bad kwargs {spec.kwargs}: {e}") from None
    except ValueError:  # no signature (builtins): checked at call time
        pass


class RewardScorer:
    """Scores completions with weighted reward specs, routed by ``row["source"]``.

    Args:
      specs: default terms, e.g. ``[("math_accuracy", 1.0), ("format_strict", 0.5)]``
        (items as accepted by :meth:`RewardSpec.from_config`), used for rows whose
        source has no route.
      routes: optional ``{source: [terms]}``; a key may appear in several routes with
        different weights but must name the same function and kwargs everywhere.
      num_workers: worker processes; ``0`` runs serially in the calling process (for
        debugging: timeouts then only work in the main thread, crashes are not caught).
        ``None`` uses ``min(8, os.cpu_count())``.
      timeout_s: default per-call timeout (a spec's ``timeout_s`` overrides it).
      kill_grace_s: time after a timeout before a stuck worker is killed.
      chunk_size: most calls sent to a worker at once.
      worker_memory_mb: optional address-space limit of each worker (a call past it fails
        with MemoryError: scored 0 and counted as an error).
      max_calls_per_worker: results after which an idle worker is replaced (None: never).
      spare_worker: keep one extra started worker to replace a killed or crashed one
        without a start-up delay.
    """

    def __init__(
        self,
        specs: Sequence[Any],
        routes: Mapping[str, Sequence[Any]] | None = None,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        kill_grace_s: float = 1.0,
        chunk_size: int = 16,
        worker_memory_mb: int | None = None,
        spare_worker: bool = True,
        max_calls_per_worker: int | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"RewardScorer: timeout_s must be > 0, got {timeout_s}")
        self.default = parse_specs(specs)
        self.routes = {str(src): parse_specs(items) for src, items in (routes or {}).items()}
        self.timeout_s = float(timeout_s)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        if self.num_workers < 0:
            raise ValueError(f"RewardScorer: num_workers must be >= 0, got {num_workers}")
        self.keys: list[str] = []
        self._terms: dict[str, RewardSpec] = {}
        self._infos: dict[str, RewardInfo] = {}
        for where, spec_list in [("specs", self.default)] + [
            (f"routes[{src!r}]", items) for src, items in self.routes.items()
        ]:
            for spec in spec_list:
                self._add_term(where, spec)
        self._pool: WorkerPool | None = None
        if self.num_workers > 0:
            modules = ["r1jax.rewards"]
            for info in self._infos.values():
                module = info.ref.partition(":")[0]
                modules += [module, *getattr(sys.modules.get(module), "WORKER_PRELOAD", ())]
            self._pool = WorkerPool(
                self.num_workers,
                preload=list(dict.fromkeys(modules)),
                kill_grace_s=kill_grace_s,
                chunk_size=chunk_size,
                memory_mb=worker_memory_mb,
                spare_worker=spare_worker,
                max_calls_per_worker=max_calls_per_worker,
            )
            self._finalizer = weakref.finalize(self, self._pool.close)

    def _add_term(self, where: str, spec: RewardSpec) -> None:
        known = self._terms.get(spec.label)
        if known is not None:
            if (known.name, known.kwargs, known.timeout_s) != (
                spec.name,
                spec.kwargs,
                spec.timeout_s,
            ):
                raise ValueError(
                    f"reward key {spec.label!r} in {where} differs from an earlier spec with "
                    f"the same key ({known} vs {spec}); give it a distinct 'key'"
                )
            return
        info = reward_info(spec.name)
        if self.num_workers > 0:
            check_worker_importable(info)
        _check_kwargs(spec, info)
        if info.check is not None:
            try:
                warning = info.check(**spec.kwargs)
            except ValueError as e:
                raise ValueError(f"reward spec {spec.label!r}: {e}") from None
            if warning:
                logger.warning("reward %r: %s", spec.label, warning)
        self.keys.append(spec.label)
        self._terms[spec.label] = spec
        self._infos[spec.label] = info

    def route(self, row: Mapping[str, Any]) -> list[RewardSpec]:
        """The terms applied to ``row``: ``routes[row["source"]]`` or the default specs."""
        return self.routes.get(str(row.get("source")), self.default)

    @property
    def restarts(self) -> int:
        """Workers replaced so far (after hangs or crashes)."""
        return 0 if self._pool is None else self._pool.restarts

    def submit(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> ScoreHandle:
        """Start scoring ``completions[i]`` against ``rows[i]``; returns immediately
        (``num_workers=0`` scores before returning)."""
        if len(completions) != len(rows):
            raise ValueError(f"got {len(completions)} completions but {len(rows)} rows")
        for i, (c, r) in enumerate(zip(completions, rows, strict=True)):
            if not isinstance(c, str):
                raise TypeError(f"completions[{i}] must be a str, got {type(c).__name__}")
            if not isinstance(r, Mapping):
                raise TypeError(f"rows[{i}] must be a mapping, got {type(r).__name__}")
        if self._pool is not None and self._pool.broken:
            raise RuntimeError(f"reward pool is broken: {self._pool.broken}")
        index = {key: k for k, key in enumerate(self.keys)}
        weights = np.zeros((len(self.keys), len(rows)), dtype=np.float64)
        planned: list[tuple[int, int, RewardSpec, str, dict[str, Any]]] = []
        for i, (completion, row) in enumerate(zip(completions, rows, strict=True)):
            row = dict(row)
            for spec in self.route(row):
                k = index[spec.label]
                weights[k, i] = spec.weight
                planned.append((k, i, spec, completion, row))
        handle = ScoreHandle(self.keys, weights, len(planned))
        for k, i, _, _, _ in planned:
            handle._applied[k, i] = True
        if self._pool is None:
            for k, i, spec, completion, row in planned:
                fn = self._infos[spec.label].fn
                timeout = spec.timeout_s or self.timeout_s
                handle._on_done(k, i, *call_with_timeout(fn, completion, row, spec.kwargs, timeout))
            return handle
        calls = []
        for k, i, spec, completion, row in planned:

            def on_done(status: str, value: float, msg: str, k: int = k, i: int = i) -> None:
                handle._on_done(k, i, status, value, msg)

            ref = self._infos[spec.label].ref
            timeout = spec.timeout_s or self.timeout_s
            calls.append(Call(ref, completion, row, spec.kwargs, timeout, on_done))
        self._pool.submit(calls)
        return handle

    def score(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> ScoreResult:
        """``submit(...).result()``."""
        return self.submit(completions, rows).result()

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._pool is not None:
            self._finalizer()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
