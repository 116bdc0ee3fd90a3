"""Reward registry and reward specs.

A reward function has the signature ``fn(completion: str, row: dict, **kwargs) -> float``.
Functions are registered under a name with :func:`register_reward`; a spec such as
``("math_accuracy", 1.0)`` names a registered function (or an importable
``"package.module:function"`` path) with a weight and keyword arguments.

Worker processes of :class:`r1jax.rewards.RewardScorer` receive functions *by reference*
(``module:qualname``) and import them, so functions scored with ``num_workers > 0`` must
live at the top level of an importable module (not ``__main__``, not a lambda/closure).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RewardFn = Callable[..., float]


@dataclasses.dataclass(frozen=True)
class RewardInfo:
    """A registered reward: its name, function, import reference, documented range and
    start-up check (``check(**kwargs)``, run once per spec when a scorer is built: raises
    ``ValueError`` for settings that cannot work, returns a warning to log or None)."""

    name: str
    fn: RewardFn
    ref: str
    value_range: tuple[float, float] | None = None
    check: Callable[..., str | None] | None = None


_REGISTRY: dict[str, RewardInfo] = {}


def function_ref(fn: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a function (how workers find it)."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_ref(ref: str) -> RewardFn:
    """Import ``"package.module:qualname"`` and return the object it names."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"reward reference {ref!r} is not of the form 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"reward reference {ref!r} names a non-callable {type(obj).__name__}")
    return obj


def register_reward(
    name: str,
    fn: RewardFn | None = None,
    *,
    value_range: tuple[float, float] | None = None,
    check: Callable[..., str | None] | None = None,
    overwrite: bool = False,
) -> Any:
    """Register ``fn`` under ``name``; usable as ``@register_reward("name")`` or directly.
    ``check``: see :class:`RewardInfo`.

    Registering the same function (same ``module:qualname``) again is a no-op, so a module
    may be imported by both the trainer and the scorer's workers. A different function
    under an existing name raises ``ValueError`` unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"reward name must be a non-empty string without ':', got {name!r}")

    def decorator(f: RewardFn) -> RewardFn:
        if not callable(f):
            raise TypeError(f"register_reward({name!r}) got a non-callable {type(f).__name__}")
        ref = function_ref(f)
        old = _REGISTRY.get(name)
        if old is not None and old.ref != ref and not overwrite:
            raise ValueError(
                f"reward {name!r} is already registered as {old.ref}; pass overwrite=True "
                f"to replace it with {ref}"
            )
        _REGISTRY[name] = RewardInfo(name, f, ref, value_range, check)
        return f

    return decorator if fn is None else decorator(fn)


def _ensure_builtins() -> None:
    import r1jax.rewards  # noqa: F401  (imports every built-in module, which registers)


def reward_info(name: str) -> RewardInfo:
    """The :class:`RewardInfo` of a registered name or of a ``"module:function"`` path."""
    _ensure_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        fn = resolve_ref(name)
        return RewardInfo(name, fn, name)
    raise KeyError(f"unknown reward {name!r}; registered rewards: {', '.join(list_rewards())}")


def get_reward(name: str) -> RewardFn:
    """The function registered under ``name`` (or imported from ``"module:function"``)."""
    return reward_info(name).fn


def list_rewards() -> list[str]:
    """Sorted names of all registered rewards (built-ins included)."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def check_worker_importable(info: RewardInfo) -> None:
    """Raise ``ValueError`` if worker processes cannot import ``info``'s function."""
    module, _, qualname = info.ref.partition(":")
    if module == "__main__" or "<" in qualname:
        raise ValueError(
            f"reward {info.name!r} ({info.ref}) cannot be imported by worker processes: "
            "define it at the top level of an importable module (not __main__, not a lambda "
            "or closure) and register it there, or use num_workers=0"
        )


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """One weighted reward term.

    Attributes:
      name: registered name or ``"package.module:function"``.
      weight: multiplier in the weighted sum.
      kwargs: keyword arguments passed to the function on every call.
      key: label in results (defaults to ``name``); use distinct keys to apply the same
        function twice with different ``kwargs``.
      timeout_s: per-call timeout overriding the scorer's default (e.g. for code tests).
    """

    name: str
    weight: float = 1.0
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"RewardSpec.name must be a non-empty string, got {self.name!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float):
            raise ValueError(
                f"RewardSpec {self.name!r}: weight must be a number, got {self.weight!r}"
            )
        if not math.isfinite(self.weight):
            raise ValueError(f"RewardSpec {self.name!r}: weight must be finite, got {self.weight}")
        if not isinstance(self.kwargs, Mapping) and callable(getattr(self.kwargs, "items", None)):
            object.__setattr__(self, "kwargs", dict(self.kwargs.items()))  # e.g. a ConfigDict
        if not isinstance(self.kwargs, Mapping):
            raise ValueError(
                f"RewardSpec {self.name!r}: kwargs must be a mapping, got {self.kwargs!r}"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(
                f"RewardSpec {self.name!r}: timeout_s must be > 0, got {self.timeout_s}"
            )
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    @property
    def label(self) -> str:
        """The key under which this term is reported."""
        return self.key or self.name

    @classmethod
    def from_config(cls, item: Any) -> RewardSpec:
        """Build from ``"name"``, ``(name, weight)``, ``(name, weight, kwargs)`` or a mapping."""
        if isinstance(item, RewardSpec):
            return item
        if isinstance(item, str):
            return cls(item)
        if not isinstance(item, Mapping) and callable(getattr(item, "items", None)):
            item = dict(item.items())  # e.g. an ml_collections.ConfigDict
        if isinstance(item, Mapping):
            unknown = set(item) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"reward spec {dict(item)!r} has unknown fields {sorted(unknown)}")
            return cls(**item)
        if isinstance(item, Sequence) and 1 <= len(item) <= 3:
            return cls(*item)
        raise ValueError(
            f"cannot build a reward spec from {item!r}: expected 'name', (name, weight), "
            "(name, weight, kwargs), a mapping or a RewardSpec"
        )


def parse_specs(config: Sequence[Any]) -> list[RewardSpec]:
    """A list of :class:`RewardSpec` from config items; labels must be unique."""
    if isinstance(config, str | Mapping) or not isinstance(config, Sequence):
        raise ValueError(f"reward specs must be a list, got {type(config).__name__}: {config!r}")
    specs = [RewardSpec.from_config(item) for item in config]
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"duplicate reward keys {dupes}: give repeated functions distinct 'key's")
    return specs
