"""Start-up checks of a GRPO run's reward settings against its prompts: settings that would
do nothing (a misspelt source, a reward-model weight without a model) are warned of, and
ones that would silently score or route nothing are :class:`r1jax.config.ConfigError`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import ml_collections

from r1jax.config import ConfigError
from r1jax.eval_sets import EvalSet

log = logging.getLogger(__name__)


def _sources(records: Iterable[dict]) -> set[str]:
    """The ``source`` of each row (``"None"`` for rows without one)."""
    return {str(record.get("source")) for record in records}


def check_reward_model(c: ml_collections.ConfigDict, records: Iterable[dict]) -> None:
    """``reward_model.sources`` must name the source of some training prompt: otherwise the
    learned reward scores no rollout (silently, before); names no prompt has are warned of,
    and so are ``reward_model.weight`` / ``sources`` set without a ``reward_model.path`` (no
    learned reward: they do nothing)."""
    rm = c.reward_model
    present = _sources(records)
    if not rm.path:
        if rm.weight != 1.0 or rm.sources:
            log.warning("reward_model.weight=%s / sources=%s do nothing: reward_model.path is "
                        "empty (no learned reward)", rm.weight, tuple(rm.sources))  # fmt: skip
        return
    missing = [s for s in rm.sources if s not in present]
    theirs = f"training prompts' sources: {sorted(present)}"
    if missing and len(missing) == len(rm.sources):
        raise ConfigError(
            f"config.reward_model.sources={tuple(rm.sources)!r}: no training prompt has any of "
            f"these sources ({theirs}), so the reward model would score nothing"
        )
    if missing:
        log.warning("reward_model.sources %s: no training prompt has them (%s)", missing, theirs)


def check_routes(
    c: ml_collections.ConfigDict, records: Iterable[dict], eval_sets: list[EvalSet]
) -> None:
    """Each ``rewards.routes`` key should be the source of a training prompt or of a row that
    an eval set scores with the run's rewards: a key that is neither (a misspelt source, whose
    rows stay on the default terms) is warned of, and a table of which no key is either is an
    error (it would route nothing)."""
    train = _sources(records)
    scored = _sources(r for s in eval_sets if s.accuracy is None for r in s.records)
    nowhere = sorted(k for k in c.rewards.routes if k not in train | scored)
    if not nowhere:
        return
    theirs = (f"training prompts' sources: {sorted(train)}; evaluation rows': "
              f"{sorted(scored - train)}")  # fmt: skip
    if len(nowhere) == len(c.rewards.routes):
        raise ConfigError(
            f"config.rewards.routes keys {nowhere}: no training or evaluation prompt has any "
            f"of these sources ({theirs}), so the table would route nothing. Name the rows' "
            "sources (data.source, or a 'source' column) or drop rewards.routes"
        )
    log.warning("rewards.routes %s: no training or evaluation prompt has these sources (%s); "
                "they route nothing", nowhere, theirs)  # fmt: skip
