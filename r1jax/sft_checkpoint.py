"""Checkpoints of a supervised stage (SFT, reward model): resume on the same trajectory.

The files are those of :class:`r1jax.checkpoint.RunCheckpointer` (params, optimizer state,
``meta``), so ``r1jax eval`` / ``sample`` / ``export`` and ``train.init_checkpoint`` read an
SFT run like a GRPO one. ``meta["sft"]`` records what fixes the data order (a fingerprint of
the tokenized examples, their number, batch size, ``max_len``, packing, seed): the data
position is then just the step, and a resume with different data is refused instead of
silently continuing on other rows.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from r1jax import distributed as dist
from r1jax.checkpoint import CheckpointError, RunCheckpointer

KILL_ENV = "R1JAX_TEST_SFT_SIGKILL_AT_STEP"  # test hook: simulate a crash after this step


class SFTCheckpoints:
    """Saves every ``every`` steps (0: only when asked) and at the last; keeps the newest
    ``keep``; restores the newest one whose ``meta["sft"]`` equals ``identity``.
    ``before_save`` runs before each save (the stage's metrics writer flushes there, so a
    bucket's ``metrics.jsonl`` holds every step the checkpoint has). ``save_base``: see
    :class:`r1jax.checkpoint.RunCheckpointer`."""

    def __init__(
        self,
        directory: str,
        every: int,
        identity: dict[str, Any],
        keep: int = 2,
        name: str = "SFT",
        before_save: Callable[[], None] | None = None,
        save_base: bool = False,
    ):
        self.directory, self.name, self.before_save = directory, name, before_save
        self.every, self.identity = every, identity
        self.ckpt = RunCheckpointer(directory, keep=keep, save_base=save_base)
        self.kill_at = int(os.environ.get(KILL_ENV, "-1"))

    @staticmethod
    def fingerprint(seqs: Sequence[tuple[list[int], int]]) -> str:
        """A short hash of the tokenized examples (ids and prompt lengths, in order)."""
        h = hashlib.sha256()
        for ids, n_prompt in seqs:
            h.update(np.asarray([len(ids), n_prompt, *ids], np.int64).tobytes())
        return h.hexdigest()[:16]

    def restore(
        self, state: nnx.State, opt_state: Any
    ) -> tuple[int, nnx.State, Any, list[dict[str, float]]] | None:
        """``(step, state, opt_state, log_window)`` of the newest checkpoint, or None when
        there is none; ``log_window``: the step metrics not yet logged when it was saved.

        Raises:
          CheckpointError: the checkpoint holds another model, or was written for other
            examples or settings (named); nothing is deleted.
        """
        restored = self.ckpt.restore_latest(state, opt_state)
        if restored is None:
            return None
        step, state, opt_state, _, meta = restored
        saved = meta.get("sft", {})
        diffs = [f"{k}: saved {saved.get(k)!r}, now {v!r}"
                 for k, v in self.identity.items() if saved.get(k) != v]  # fmt: skip
        if diffs:
            raise CheckpointError(
                f"{self.name} checkpoint {self.directory}/{step} was written for other data or "
                f"settings ({'; '.join(diffs)}); resume with the same ones, or move "
                f"{self.directory} away (or use a new run_dir) to start over. Nothing was deleted."
            )
        if dist.is_primary():
            print(f"resumed {self.name} from {self.directory} step {step}")
        return step, state, opt_state, meta.get("log_window", [])

    def after_step(
        self, step: int, state: nnx.State, opt_state: Any, final: bool, window: Sequence = ()
    ) -> None:
        """Saves when ``step`` is due (``window``: see :meth:`save`)."""
        if final or (self.every and step % self.every == 0):
            self.save(step, state, opt_state, window)
        if step == self.kill_at:
            self.ckpt.wait()
            os.kill(os.getpid(), signal.SIGKILL)

    def save(self, step: int, state: nnx.State, opt_state: Any, window: Sequence = ()) -> None:
        """Saves ``step``; ``window``: the step metrics (dicts of scalars) that the next log
        entry will average, so that a resumed run logs the entries an uninterrupted one does."""
        if self.before_save is not None:
            self.before_save()
        log_window = [{k: float(v) for k, v in m.items()} for m in jax.device_get(list(window))]
        meta = {"step": step, "stage": self.name, "sft": self.identity, "log_window": log_window}
        self.ckpt.save(step, state, opt_state, meta, force=True)

    def close(self) -> None:
        self.ckpt.close()
