"""``r1jax traces``: SFT traces sampled from a model, for rejection sampling or distillation.

R1's third stage samples many completions per training prompt from the RL checkpoint and
keeps the correct ones as SFT data (rejection sampling); distillation samples a strong
teacher's traces for a small student. Both are this command: the run's weights (or the
config's ``model.hf_path``) sample ``num_samples`` completions of each training prompt at
``train.eval_temperature`` / ``train.eval_top_p`` (R1's 0.6 / 0.95); completions cut at the
length limit are dropped, and with ``keep="correct"`` so are those whose accuracy reward is
below ``rewards.correct_threshold``. Up to ``max_per_prompt`` distinct ones per prompt are
written as JSONL rows ``{"prompt", "completion", "id", "answer", "reward"}``, the form
``cold_start.task="file"`` reads (``r1jax sft``). With ``keep="pairs"`` the rows are preference
pairs for a reward model (``r1jax rm``): ``{"prompt", "chosen", "rejected", "id", "answer"}``,
a correct completion against a wrong one of the same prompt, up to ``max_per_prompt`` pairs
per prompt (prompts the model always or never solves give none).

Long jobs resume: kept rows are appended to ``<dst>.partial`` after every block of
``rl.prompts_per_step`` prompts, with the progress in ``<dst>.partial.json``; the same command
continues after the last finished block (each block's sampling seed depends only on its
position, so the output equals that of an uninterrupted run). ``<dst>`` appears, whole, at
the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from r1jax import storage
from r1jax.config import ConfigError

KEEP = ("correct", "all", "pairs")
KEEP_WORDS = {
    "correct": "the correct ones",
    "all": "all finished ones",
    "pairs": "correct-vs-wrong pairs",
}
COUNTS = (
    "prompts",
    "samples",
    "kept",
    "prompts_kept",
    "truncated",
    "empty",
    "incorrect",
    "duplicate",
    "beyond_max",
)


def select_traces(
    records: Sequence[dict], results: Sequence[dict], keep: str, max_per_prompt: int
) -> tuple[list[dict], dict[str, int]]:
    """The trace rows of one block (``results`` of :func:`r1jax.eval_run.evaluate_prompts`
    with ``keep_text``, in the order of ``records``) and the block's counts (see
    :data:`COUNTS`)."""
    rows, counts = [], dict.fromkeys(COUNTS, 0)
    for record, res in zip(records, results, strict=True):
        counts["prompts"] += 1
        seen: set[str] = set()
        kept = 0
        for text, correct, finish, score in zip(
            res["completions"], res["correct"], res["finish"], res["scores"], strict=True
        ):
            counts["samples"] += 1
            if finish == "length":
                counts["truncated"] += 1
            elif not text.strip():  # nothing to learn (and SFT data files refuse it)
                counts["empty"] += 1
            elif keep == "correct" and not correct:
                counts["incorrect"] += 1
            elif text in seen:
                counts["duplicate"] += 1
            elif kept == max_per_prompt:
                counts["beyond_max"] += 1
            else:
                seen.add(text)
                kept += 1
                rows.append(
                    {
                        "prompt": record["prompt"],
                        "completion": text,
                        "id": record.get("id"),
                        "answer": record.get("answer"),
                        "reward": score,
                    }
                )
        counts["kept"] += kept
        counts["prompts_kept"] += kept > 0
    return rows, counts


def select_pairs(
    records: Sequence[dict], results: Sequence[dict], max_per_prompt: int
) -> tuple[list[dict], dict[str, int]]:
    """Preference pairs of one block (correct vs wrong completions of the same prompt, each
    used once; truncated ones and duplicates left out) and the block's counts: ``kept`` counts
    pairs, ``incorrect`` the distinct wrong completions, ``beyond_max`` the pairs past
    ``max_per_prompt``."""
    rows, counts = [], dict.fromkeys(COUNTS, 0)
    for record, res in zip(records, results, strict=True):
        counts["prompts"] += 1
        seen: set[str] = set()
        right, wrong = [], []
        for text, correct, finish in zip(
            res["completions"], res["correct"], res["finish"], strict=True
        ):
            counts["samples"] += 1
            if finish == "length":
                counts["truncated"] += 1
            elif not text.strip():  # the pair files refuse empty text
                counts["empty"] += 1
            elif text in seen:
                counts["duplicate"] += 1
            else:
                seen.add(text)
                (right if correct else wrong).append(text)
        counts["incorrect"] += len(wrong)
        possible = min(len(right), len(wrong))
        kept = min(possible, max_per_prompt)
        counts["beyond_max"] += possible - kept
        counts["kept"] += kept
        counts["prompts_kept"] += kept > 0
        rows += [
            {"prompt": record["prompt"], "chosen": c, "rejected": r, "id": record.get("id"),
             "answer": record.get("answer")}
            for c, r in zip(right[:kept], wrong[:kept], strict=True)
        ]  # fmt: skip
    return rows, counts


class _Progress:
    """``<dst>.partial`` (rows so far) and ``<dst>.partial.json`` (settings, prompts done,
    counts); written by process 0 only."""

    def __init__(self, dst: str, settings: dict[str, Any], write: bool):
        self.dst, self.settings, self.write = dst, settings, write
        self.rows_path, self.state_path = dst + ".partial", dst + ".partial.json"
        self.done, self.counts = 0, dict.fromkeys(COUNTS, 0)
        if storage.exists(self.state_path):
            state = self._read_state()
            if state["settings"] != settings:
                changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
                raise ConfigError(
                    f"{self.state_path} belongs to an unfinished traces run with other settings "
                    f"({', '.join(changed)}); rerun with those, or delete it and "
                    f"{self.rows_path} to start over"
                )
            self.done, self.counts = state["done"], state["counts"]
            self._truncate_rows(state["rows"])
        elif write:
            storage.makedirs(os.path.dirname(storage.absolute(dst)))
            storage.write_text(self.rows_path, "")

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(storage.read_text(self.state_path))
            if not (
                isinstance(state, dict) and {"settings", "done", "counts", "rows"} <= set(state)
            ):
                raise ValueError("not the progress of a traces run")
        except ValueError as e:
            raise ConfigError(
                f"{self.state_path}: unreadable progress of an unfinished traces run ({e}); "
                f"delete it and {self.rows_path} to start over"
            ) from None
        return state

    def _truncate_rows(self, n: int) -> None:
        """Drops rows appended after the last saved state (a crash between the two writes)."""
        if not self.write:
            return
        lines = storage.read_text(self.rows_path).splitlines(keepends=True)[:n]
        storage.write_text(self.rows_path, "".join(lines))

    def add(self, rows: list[dict], done: int, counts: dict[str, int]) -> None:
        self.done = done
        self.counts = {k: self.counts[k] + counts[k] for k in COUNTS}
        if not self.write:
            return
        storage.append_text(self.rows_path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                    for r in rows))  # fmt: skip
        state = {
            "settings": self.settings,
            "done": done,
            "counts": self.counts,
            "rows": self.counts["kept"],
        }
        storage.write_text(self.state_path, json.dumps(state))

    def finish(self) -> None:
        if self.write:
            storage.rename(self.rows_path, self.dst)
            storage.remove(self.state_path)


def traces_command(
    c: ml_collections.ConfigDict,
    dst: str,
    num_prompts: int = 0,
    num_samples: int = 1,
    step: int | None = None,
    keep: str = "correct",
    max_per_prompt: int = 1,
    emit: Callable[[str], None] = print,
) -> dict[str, int]:
    """Writes the traces of the first ``num_prompts`` training prompts (0: all) to ``dst``
    (see the module docstring); returns the counts (:data:`COUNTS`)."""
    import jax
    from tqdm.auto import tqdm

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import distributed as dist
    from r1jax import sharding as shd
    from r1jax.eval_run import evaluate_prompts
    from r1jax.rl.trainer import step_seed

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    for name, value, ok in (
        ("--keep", keep, keep in KEEP),
        ("--num_prompts", num_prompts, num_prompts >= 0),
        ("--num_samples", num_samples, num_samples >= 1),
        ("--max_per_prompt", max_per_prompt, max_per_prompt >= 1),
        ("--dst", dst, bool(dst)),
    ):
        if not ok:
            raise ConfigError(f"traces: {name}={value!r} is not valid (see r1jax traces --help)")
    if keep == "pairs" and num_samples < 2:
        raise ConfigError(f"traces: --keep=pairs needs --num_samples >= 2 (a correct and a "
                          f"wrong sample of one prompt), got {num_samples}")  # fmt: skip
    if storage.exists(dst) and not storage.exists(dst + ".partial.json"):
        raise ConfigError(f"--dst={dst} exists: give another file, or delete it first")
    primary = dist.is_primary()
    tokenizer = build.build_tokenizer(c)
    task = build.eval_task(c)
    records = build.training_records(c, tokenizer, num_prompts)
    task.check_records(records, "traces (the training prompts)")
    mesh = build.build_mesh(c)
    model, _, weights = build.load_run_model(c, mesh, tokenizer, step)
    t = c.train
    settings = dict(
        weights=weights,
        prompts=len(records),
        samples=num_samples,
        keep=keep,
        max_per_prompt=max_per_prompt,
        temperature=t.eval_temperature,
        top_p=t.eval_top_p,
        seed=c.seed,
    )
    progress = _Progress(dst, settings, write=primary)
    progress.done = dist.allgather_json(progress.done)[0]  # process 0's files decide
    if primary:
        emit(f"weights: {weights}")
        emit(
            f"traces: {len(records)} training prompts x {num_samples} samples at temperature "
            f"{t.eval_temperature}, top_p {t.eval_top_p}, keeping {KEEP_WORDS[keep]} (at most "
            f"{max_per_prompt} per prompt)"
            + (f"; resuming after {progress.done} prompts" if progress.done else "")
        )
    sampler = build.build_sampler(c, model, mesh, tokenizer)
    block = c.rl.prompts_per_step
    bar = tqdm(
        total=len(records),
        initial=progress.done,
        desc="traces",
        unit="prompt",
        disable=not (primary and t.progress),
        dynamic_ncols=True,
    )
    # one seed: prompt i draws with id i, whatever the blocks (rl.prompts_per_step) and
    # processes, and wherever a resumed run starts
    params = build.eval_sampling_params(c, step_seed(c.seed, 0, 2))
    with build.build_scorer(c) as scorer:
        for start in range(progress.done, len(records), block):
            chunk = records[start : start + block]
            results = evaluate_prompts(
                sampler,
                model,
                chunk,
                scorer,
                task,
                params,
                num_samples,
                block,
                shd.process_batch_shard(mesh),
                keep_text=True,
                first_id=start,
            )
            if keep == "pairs":
                rows, counts = select_pairs(chunk, results, max_per_prompt)
            else:
                rows, counts = select_traces(chunk, results, keep, max_per_prompt)
            progress.add(rows, start + len(chunk), counts)
            bar.update(len(chunk))
    bar.close()
    progress.finish()
    n = progress.counts
    if primary:
        what = "preference pairs" if keep == "pairs" else "traces"
        emit(
            f"traces: {n['kept']} {what} from {n['prompts_kept']} of {n['prompts']} prompts "
            f"({n['samples']} samples: {n['truncated']} truncated, {n['empty']} empty, "
            f"{n['incorrect']} incorrect, "
            f"{n['duplicate']} duplicates, {n['beyond_max']} beyond --max_per_prompt) -> {dst}"
        )
    return n
