"""``r1jax eval``: pass@1 from k samples, pass@k, maj@k and greedy accuracy of a checkpoint.

The eval sets (the held-out split and the benchmarks of ``train.eval_benchmarks``, see
:mod:`r1jax.eval_sets`), their template, the rewards that judge them and the sampling
settings all come from the run's config, as in the trainer's periodic eval
(``train.eval_*``): the numbers of ``r1jax eval --step=N`` equal the ``eval/*`` metrics the
run logged at step N. Results go to ``<out_dir>/step_<N>.json`` (settings and metrics: the
held-out split's at the top level, each benchmark's under ``"benchmarks"``) and one
``<out_dir>/step_<N>[_<benchmark>]_samples.jsonl`` per set (one line per prompt: the prompt,
its fields, every completion with its extracted answer and correctness, the vote, the greedy
completion). With prompts of several sources, MATH levels or subjects, or AIME years, the
metrics are also broken down by them (``groups``). The stem is ``sft_step_<N>`` for weights
of the SFT stage and ``init`` for the config's own. A long eval resumes: finished blocks of
prompts are kept next to the results until they are written (:mod:`r1jax.eval_partial`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from r1jax import storage


def eval_command(
    c: ml_collections.ConfigDict,
    step: int | None = None,
    num_prompts: int | None = None,
    greedy: bool = True,
    out_dir: str | None = None,
    emit: Callable[[str], None] = print,
    only: Sequence[str] = (),
    all_steps: bool = False,
) -> dict[str, Any]:
    """Evaluates the run's checkpoint ``step`` (default: the newest; the config's initial
    weights when the run has none) on its eval sets (:mod:`r1jax.eval_sets`: the held-out
    split and ``train.eval_benchmarks``; ``only``: some of them by name, ``"held_out"`` for
    the split), each on its first ``num_prompts`` prompts (default: ``train.eval_prompts``
    for the split, a benchmark's ``prompts``; 0: all), and writes the results to ``out_dir``
    (default ``<run_dir>/eval``). Returns the summary written to the JSON file: the held-out
    split's results at the top level, each benchmark's under ``"benchmarks"``.

    ``all_steps``: every checkpoint of the run instead, oldest first (one model and sampler
    for all: each checkpoint's weights are loaded into it), each written as above, then
    pass@1 of every set at every step; returns ``{"steps": [summary, ...]}``."""
    import jax

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import distributed as dist
    from r1jax import sharding as shd
    from r1jax.eval_sets import EvalScorers, load_eval_sets
    from r1jax.run_weights import checkpoint_dir, restore_run_params, saved_steps, weights_label

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    if num_prompts is not None and num_prompts < 0:
        raise cfgmod.ConfigError(f"--num_prompts={num_prompts} must be >= 0 (0: all prompts)")
    if out_dir and storage.exists(out_dir) and not storage.isdir(out_dir):
        raise cfgmod.ConfigError(f"--dst={out_dir} is a file: eval writes a directory there")
    steps = saved_steps(checkpoint_dir(c.run_dir)) if all_steps else [step]
    if not steps:
        raise cfgmod.ConfigError(f"--all_steps: {c.run_dir} has no checkpoint to evaluate")
    tokenizer = build.build_tokenizer(c)
    sets = load_eval_sets(c, tokenizer, "r1jax eval", num_prompts, only)
    mesh = build.build_mesh(c)
    model, restored, weights = build.load_run_model(c, mesh, tokenizer, steps[0])
    sampler = build.build_sampler(c, model, mesh, tokenizer)
    data_shard = shd.process_batch_shard(mesh)
    out_dir = out_dir or os.path.join(c.run_dir, "eval")
    summaries, partials = [], []  # kept blocks go once every step's results are written
    with build.build_scorer(c) as run_scorer, EvalScorers(c, run_scorer) as scorers:
        for n in steps:
            if n != steps[0]:
                restored = restore_run_params(model, c.run_dir, n)
                weights = weights_label(c.run_dir, restored)
            run = _Weights(model, restored, weights)
            say = emit if dist.is_primary() else None
            summaries.append(_evaluate_weights(c, run, sets, sampler, data_shard, scorers, greedy,
                                               out_dir, say, partials))  # fmt: skip
    for partial in partials:  # (an --all_steps rerun resumes a finished step from its blocks)
        partial.finish()
    if not all_steps:
        return summaries[0]
    if dist.is_primary():
        for line in _steps_table(summaries):
            emit(line)
    return {"steps": summaries}


@dataclasses.dataclass(frozen=True)
class _Weights:
    """The model with one checkpoint's weights: its step (None: the config's own) and label."""

    model: Any
    step: int | None
    label: str


def _evaluate_weights(
    c,
    run: _Weights,
    sets,
    sampler,
    data_shard: tuple[int, int],
    scorers,
    greedy: bool,
    out_dir: str,
    emit: Callable[[str], None] | None,
    partials: list,
) -> dict[str, Any]:
    """Every eval set on ``run``'s weights; writes and (``emit``: the primary process)
    reports the results; returns the summary. The kept blocks of each set
    (:class:`r1jax.eval_partial.PartialResults`) are added to ``partials``."""
    from r1jax.run_weights import from_sft_stage

    t = c.train
    say = emit or (lambda _: None)
    say(f"weights: {run.label}")
    stem = "init" if run.step is None else f"step_{run.step}"
    if run.step is not None and from_sft_stage(c.run_dir):
        stem = f"sft_{stem}"
    summary: dict[str, Any] = {
        "weights": run.label,
        "step": run.step,
        "temperature": t.eval_temperature,
        "top_p": t.eval_top_p,
    }
    results: dict[str, dict[str, list[dict]]] = {}
    for s in sets:
        say(
            f"eval {s.title}: {len(s.records)} prompts ({s.data}), k={s.samples} samples at "
            f"temperature {t.eval_temperature}, top_p {t.eval_top_p}"
            + (", and greedy" if greedy else "")
        )
        prefix = os.path.join(out_dir, f"{stem}_{s.name}" if s.name else stem)
        results[s.title] = _evaluate_set(c, s, run, sampler, data_shard, scorers(s), greedy,
                                         emit, prefix, partials)  # fmt: skip
        part = _set_summary(s, results[s.title])
        if s.name:
            summary.setdefault("benchmarks", {})[s.name] = part
        else:
            summary.update(part)
        for line in _report(part) + _group_report(part.get("groups", {}), s.samples):
            say(line)
    if emit is not None:
        if len(sets) > 1:
            for line in _table(summary):
                emit(line)
        earlier = storage.exists(os.path.join(out_dir, f"{stem}.json"))
        paths = _write(out_dir, stem, summary, sets, results)
        emit(f"results: {', '.join(paths)}"
             + (" (replacing an earlier eval of these weights)" if earlier else ""))  # fmt: skip
    return summary


def _evaluate_set(c, s, run: _Weights, sampler, data_shard, scorer, greedy: bool, emit,
                  prefix: str, partials: list) -> dict[str, list[dict]]:  # fmt: skip
    """``{"sampled": results[, "greedy": results]}`` of eval set ``s``; each mode's blocks
    are kept in ``<prefix>_<mode>.partial.jsonl`` as they finish (added to ``partials``),
    and an unfinished eval of the same settings there is resumed (:mod:`r1jax.eval_partial`)."""
    from r1jax import build
    from r1jax.eval_partial import PartialResults, prompts_digest
    from r1jax.eval_sets import eval_seed, sample_set

    seed = eval_seed(c.seed, run.step or 0, s.name)
    modes = {"sampled": (build.eval_sampling_params(c, seed), s.samples)}
    if greedy:
        modes["greedy"] = (build.sampling_params(c, c.seed, temperature=0.0), 1)
    section = lambda name: json.loads(c[name].to_json_best_effort())
    same = dict(  # what the results depend on besides the mode's sampling
        weights=run.label,
        set=s.title,
        prompts=len(s.records),
        prompts_digest=prompts_digest(s.records),
        accuracy=repr(s.task.accuracy),
        correct_threshold=s.task.threshold,
        model=section("model"),
        sampling=section("sampling"),
        rewards=section("rewards"),
    )
    out = {}
    for mode, (sampling, samples) in modes.items():
        draw = {f"draw.{k}": v for k, v in dataclasses.asdict(sampling).items()}
        settings = same | draw | dict(mode=mode, samples=samples)
        partial = PartialResults(f"{prefix}_{mode}.partial.jsonl", settings, emit)
        partials.append(partial)
        out[mode] = sample_set(c, s, sampler, run.model, scorer, sampling, samples, data_shard,
                               f"eval {s.title} {mode}", emit is not None and c.train.progress,
                               keep_text=True, partial=partial)  # fmt: skip
    return out


def _set_summary(s, results: dict[str, list[dict]]) -> dict[str, Any]:
    """The JSON summary of one eval set's results (see :func:`eval_command`)."""
    from r1jax.eval_run import summarize_groups, summarize_results

    part = {
        "data": s.data,
        "num_prompts": len(s.records),
        "samples": s.samples,
        "accuracy_reward": s.task.accuracy,
        "correct_threshold": s.task.threshold,
        "metrics": summarize_results(results["sampled"]),
    }
    if "greedy" in results:
        part["greedy"] = summarize_results(results["greedy"])
    groups = summarize_groups(s.records, results["sampled"])
    if groups:
        part["groups"] = groups
    return part


def _report(part: dict[str, Any]) -> list[str]:
    """One line per decoding mode of a set summary: its pass/maj scores, length, truncation."""
    lines = []
    for mode in ("sampled", "greedy"):
        m = part["metrics"] if mode == "sampled" else part.get(mode)
        if m is None:
            continue
        scores = "  ".join(f"{name} {v:.4f}" for name, v in m.items() if "@" in name)
        lines.append(
            f"  {mode:<8} {scores}  length {m['length_mean']:.1f}  truncated {m['truncated']:.3f}"
        )
    return lines


def _steps_table(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """pass@1 of every eval set (columns) at every evaluated step (rows)."""
    names = [name for name, _ in _parts(summaries[0])]
    lines = ["  " + f"{'step':>8}" + "".join(f" {n[:16]:>16}" for n in names)]
    for summary in summaries:
        scores = "".join(f" {part['metrics']['pass@1']:>16.4f}" for _, part in _parts(summary))
        lines.append(f"  {summary['step']!s:>8}{scores}")
    return lines


def _parts(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(set name, its summary)`` of every eval set of a summary."""
    held_out = [("held_out", summary)] if "metrics" in summary else []
    return held_out + list(summary.get("benchmarks", {}).items())


def _table(summary: dict[str, Any]) -> list[str]:
    """Every eval set of a summary on one line: prompts, k, pass@1, maj@k, greedy."""
    parts = _parts(summary)
    lines = [f"  {'set':<16} {'prompts':>7} {'k':>4} {'pass@1':>7} {'maj@k':>7} {'greedy':>7}"]
    for name, part in parts:
        m, k = part["metrics"], part["samples"]
        maj = f"{m[f'maj@{k}']:.4f}" if f"maj@{k}" in m else "-"
        greedy = f"{part['greedy']['pass@1']:.4f}" if "greedy" in part else "-"
        lines.append(f"  {name:<16} {part['num_prompts']:>7} {k:>4} {m['pass@1']:>7.4f} "
                     f"{maj:>7} {greedy:>7}")  # fmt: skip
    return lines


def _group_report(groups: dict[str, dict[str, dict[str, float]]], k: int) -> list[str]:
    """One line per field: pass@1 (and maj@k) of each of its values, with the prompt count."""
    lines = []
    for field, by_value in groups.items():
        parts = []
        for value, m in by_value.items():
            maj = f" maj@{k} {m[f'maj@{k}']:.3f}" if f"maj@{k}" in m else ""
            parts.append(f"{value}: pass@1 {m['pass@1']:.3f}{maj} ({m['prompts']})")
        lines.append(f"  by {field}: " + " | ".join(parts))
    return lines


def _jsonable(value: Any) -> Any:
    """A JSON form of a record field (NumPy arrays and scalars, bytes)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _write(
    out_dir: str,
    stem: str,
    summary: dict[str, Any],
    sets: Sequence[Any],
    results: dict[str, dict[str, list[dict]]],
) -> list[str]:
    """Writes ``<stem>.json`` and one ``<stem>[_<benchmark>]_samples.jsonl`` per eval set
    (each via a temporary file, so an interrupted eval leaves the previous results whole);
    returns their paths."""
    storage.makedirs(out_dir)
    files = {os.path.join(out_dir, f"{stem}.json"): json.dumps(summary, indent=1)}
    for s in sets:
        lines = []
        for i, record in enumerate(s.records):
            row = {"record": record} | {mode: res[i] for mode, res in results[s.title].items()}
            lines.append(json.dumps(row, default=_jsonable, ensure_ascii=False))
        name = f"{stem}_{s.name}_samples.jsonl" if s.name else f"{stem}_samples.jsonl"
        files[os.path.join(out_dir, name)] = "\n".join(lines) + "\n"
    for path, text in files.items():
        storage.write_text(path, text)
    return list(files)
