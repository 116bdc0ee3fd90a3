"""Finished blocks of a long ``r1jax eval``, kept so that the same command resumes it.

``<out_dir>/<stem>[_<benchmark>]_<mode>.partial.jsonl``: a first line ``{"settings": ...}``
(what the results depend on: weights, prompts, sampling, judging), then one line per judged
prompt (:func:`r1jax.eval_run.evaluate_prompts`' results, in prompt order), appended after
each block. A rerun with the same settings skips those prompts; as every prompt's samples
draw with its own id, the results equal those of an uninterrupted eval (also with another
``rl.prompts_per_step``, e.g. lowered after running out of memory). The file is removed once
the eval's result files are written; one with other settings is replaced (with a note),
never mixed in. Process 0 reads and writes it; the other processes get its results from
process 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from r1jax import distributed as dist
from r1jax import storage

log = logging.getLogger(__name__)


def prompts_digest(records: Sequence[dict]) -> str:
    """A short hash of the records' model inputs (``text``) and reference answers: an eval
    of other prompts, another template or other answers has another digest."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.get("text"), r.get("answer")], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


class PartialResults:
    """The results already judged of one eval set in one mode (``done``: a list of result
    dicts of the first ``len(done)`` prompts) and the file they are kept in."""

    def __init__(
        self, path: str, settings: dict[str, Any], emit: Callable[[str], None] | None = None
    ):
        self.path = path
        self.settings = json.loads(json.dumps(settings))  # as read back (tuples are lists)
        self.write = dist.is_primary()
        done = self._read(emit) if self.write else []
        self.done: list[dict] = dist.allgather_json(done)[0]  # process 0's file decides
        if self.write and not done:  # a new file: the settings line alone
            storage.makedirs(str(storage.path(path).parent))
            self._rewrite([])

    def _read(self, emit) -> list[dict]:
        """The kept results, or [] when there is no file (or one of other settings / one
        that cannot be read: it is replaced)."""
        if not storage.exists(self.path):
            return []
        lines = storage.read_text(self.path).splitlines()
        try:
            head = json.loads(lines[0]) if lines else {}
        except ValueError:
            head = {}
        head = head if isinstance(head, dict) else {}
        if head.get("settings") != self.settings:
            old = head.get("settings")
            old = old if isinstance(old, dict) else {}
            changed = sorted(k for k in self.settings if old.get(k) != self.settings[k])
            note = f"(other {', '.join(changed)})" if old else "(unreadable)"
            self._say(emit, f"replacing the unfinished eval {self.path} {note}")
            return []
        done = []
        for line in lines[1:]:
            try:
                done.append(json.loads(line))
            except ValueError:  # a line cut short by the crash: that block is redone
                break
        in_order = all(isinstance(r, dict) and r.get("index") == i for i, r in enumerate(done))
        if not in_order or len(done) > self.settings["prompts"]:
            self._say(emit, f"replacing the unfinished eval {self.path} (unreadable)")
            return []
        if len(done) + 1 < len(lines):  # drop the cut line before appending after it
            self._rewrite(done)
        if done:
            self._say(emit, f"resuming the unfinished eval {self.path} after {len(done)} prompts")
        return done

    def _rewrite(self, done: list[dict]) -> None:
        """The file anew: the settings line, then ``done``."""
        storage.write_text(self.path, self._lines([{"settings": self.settings}, *done]))

    @staticmethod
    def _lines(rows: Sequence[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    @staticmethod
    def _say(emit, text: str) -> None:
        (emit or log.warning)(text)

    def add(self, results: Sequence[dict]) -> None:
        """Appends one finished block's results (every process calls it; process 0 writes)."""
        if self.write and results:
            storage.append_text(self.path, self._lines(results))

    def finish(self) -> None:
        """Removes the file: the eval's own result files hold everything now."""
        if self.write and storage.exists(self.path):
            storage.remove(self.path)
