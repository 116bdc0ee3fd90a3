"""``r1jax eval``: pass@1 from k samples, pass@k, maj@k and greedy accuracy of a checkpoint.

The held-out prompts, their template, the rewards that judge them and the sampling settings
all come from the run's config, as in the trainer's periodic eval (``train.eval_*``): the
numbers of ``r1jax eval --step=N`` equal the ``eval/*`` metrics the run logged at step N.
Results go to ``<out_dir>/step_<N>.json`` (settings and metrics) and
``<out_dir>/step_<N>_samples.jsonl`` (one line per prompt: the prompt, its fields, every
completion with its extracted answer and correctness, the vote, the greedy completion). With
prompts of several sources, MATH levels or subjects, or AIME years, the metrics are also
broken down by them (``groups``). The stem is ``sft_step_<N>`` for weights of the SFT stage
and ``init`` for the config's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np


def eval_command(
    c: ml_collections.ConfigDict,
    step: int | None = None,
    num_prompts: int | None = None,
    greedy: bool = True,
    out_dir: str | None = None,
    emit: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluates the run's checkpoint ``step`` (default: the newest; the config's initial
    weights when the run has none) on ``num_prompts`` held-out prompts (default
    ``train.eval_prompts``; 0: all) and writes the results to ``out_dir`` (default
    ``<run_dir>/eval``). Returns the summary written to the JSON file."""
    import jax
    from tqdm.auto import tqdm

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import distributed as dist
    from r1jax import sharding as shd
    from r1jax.checkpoint import from_sft_stage
    from r1jax.eval_run import evaluate_prompts, summarize_groups, summarize_results
    from r1jax.rl.trainer import step_seed

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    t = c.train
    n = t.eval_prompts if num_prompts is None else num_prompts
    if n < 0:
        raise cfgmod.ConfigError(f"--num_prompts={n} must be >= 0 (0: every held-out prompt)")
    primary = dist.is_primary()
    tokenizer = build.build_tokenizer(c)
    task = build.eval_task(c)
    records = build.eval_records(c, tokenizer, n, "r1jax eval")
    mesh = build.build_mesh(c)
    model, restored, weights = build.load_run_model(c, mesh, tokenizer, step)
    sampler = build.build_sampler(c, model, mesh, tokenizer)
    k = t.eval_samples
    modes = {"sampled": (build.eval_sampling_params(c, step_seed(c.seed, restored or 0, 1)), k)}
    if greedy:
        modes["greedy"] = (build.sampling_params(c, c.seed, temperature=0.0), 1)
    if primary:
        emit(f"weights: {weights}")
        emit(
            f"eval: {len(records)} held-out prompts ({_split_name(c)}), k={k} samples at "
            f"temperature {t.eval_temperature}, top_p {t.eval_top_p}"
            + (", and greedy" if greedy else "")
        )
    metrics: dict[str, dict[str, float]] = {}
    results: dict[str, list[dict]] = {}
    with build.build_scorer(c) as scorer:
        for mode, (params, samples) in modes.items():
            bar = tqdm(
                total=len(records),
                desc=f"eval {mode}",
                unit="prompt",
                disable=not (primary and t.progress),
                dynamic_ncols=True,
            )
            results[mode] = evaluate_prompts(
                sampler,
                model,
                records,
                scorer,
                task,
                params,
                samples,
                c.rl.prompts_per_step,
                shd.process_batch_shard(mesh),
                keep_text=True,
                progress=lambda done, bar=bar: bar.update(done - bar.n),
            )
            bar.close()
            metrics[mode] = summarize_results(results[mode])
    groups = summarize_groups(records, results["sampled"])
    summary = {
        "weights": weights,
        "step": restored,
        "data": _split_name(c),
        "num_prompts": len(records),
        "samples": k,
        "temperature": t.eval_temperature,
        "top_p": t.eval_top_p,
        "accuracy_reward": task.accuracy,
        "correct_threshold": task.threshold,
        "metrics": metrics["sampled"],
    }
    if greedy:
        summary["greedy"] = metrics["greedy"]
    if groups:
        summary["groups"] = groups
    if primary:
        for line in _report(metrics) + _group_report(groups, k):
            emit(line)
        out_dir = out_dir or os.path.join(c.run_dir, "eval")
        stem = "init" if restored is None else f"step_{restored}"
        if restored is not None and from_sft_stage(c.run_dir):
            stem = f"sft_{stem}"
        paths = _write(out_dir, stem, summary, records, results)
        emit(f"results: {', '.join(paths)}")
    return summary


def _split_name(c: ml_collections.ConfigDict) -> str:
    d = c.data
    return d.eval_path if d.name in ("jsonl", "parquet") else f"{d.name}/{d.eval_split}"


def _report(metrics: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for mode, m in metrics.items():
        scores = "  ".join(f"{name} {v:.4f}" for name, v in m.items() if "@" in name)
        lines.append(
            f"  {mode:<8} {scores}  length {m['length_mean']:.1f}  truncated {m['truncated']:.3f}"
        )
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
    records: list[dict],
    results: dict[str, list[dict]],
) -> list[str]:
    """Writes ``<stem>.json`` and ``<stem>_samples.jsonl`` (each via a temporary file, so an
    interrupted eval leaves the previous results whole); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{stem}.json"), os.path.join(out_dir, f"{stem}_samples.jsonl")]
    lines = []
    for i, record in enumerate(records):
        row = {"record": record} | {mode: res[i] for mode, res in results.items()}
        lines.append(json.dumps(row, default=_jsonable, ensure_ascii=False))
    for path, text in zip(paths, (json.dumps(summary, indent=1), "\n".join(lines) + "\n"),
                          strict=True):  # fmt: skip
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return paths
