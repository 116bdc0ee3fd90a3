"""What an evaluation runs on: the held-out split of the training data and named benchmarks.

The trainer's periodic eval (``train.eval_every``) and ``r1jax eval`` evaluate every set the
same way (:mod:`r1jax.eval_run`). The held-out split (``data.eval_split``, or the file
``data.eval_path`` for jsonl/parquet data; empty: none) logs ``eval/<metric>``; each
benchmark of ``train.eval_benchmarks`` logs ``eval/<name>/<metric>``. A benchmark is a
mapping of

- where its prompts come from, with the keys of ``c.data``: ``name`` (a dataset such as
  ``math500``, ``aime2024``, ``gsm8k``, ``countdown``, or ``jsonl`` / ``parquet`` with
  ``path``), ``split``, ``field_map``, ``source``, ``answer_parser``, ``data_dir`` (default
  ``data.data_dir``), ``manual_dir``, ``on_bad_row``, ``countdown``, and ``prompt_builder``
  (default none);
- ``prompts``: how many of them (default 0: all; ``r1jax eval --num_prompts`` overrides);
- ``samples``: k completions per prompt (default ``train.eval_samples``);
- ``accuracy``: the reward that decides whether a completion is correct, as a
  ``rewards.functions`` item without weight (``"math_accuracy"``, ``("countdown", 1.0,
  {...})``; default the run's ``rewards.accuracy``), and ``correct_threshold`` (default
  ``rewards.correct_threshold``).

For example R1's math benchmarks next to training on MATH::

    c.data.eval_split = ""  # no held-out MATH split: the benchmarks instead
    c.train.eval_benchmarks = dict(
        math500=dict(name="math500"),
        aime2024=dict(name="aime2024", samples=16),
    )

On the command line, ``--benchmark=NAME[:key=value,...]`` adds one (or changes one the config
has; :func:`add_benchmarks`): ``--benchmark=math500 --benchmark=aime2024:samples=16``.

The prompts get the run's template (``c.prompt``) and must fit ``sampling.max_prompt_len``
(longer ones are skipped and counted, as for the training data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections

from r1jax.config import ConfigError
from r1jax.eval_run import EvalTask

if TYPE_CHECKING:
    from r1jax.eval_partial import PartialResults

HELD_OUT = "held_out"
"""The name ``r1jax eval --sets`` gives the held-out split."""

EVAL_KEYS = ("prompts", "samples", "accuracy", "correct_threshold", "prompt_builder")
"""Benchmark keys that are not data keys (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Prompts evaluated together, and how their completions are judged.

    Attributes:
      name: ``""`` for the held-out split, else the benchmark's name.
      data: what the prompts are, for reports (``"gsm8k/test"``, a file path).
      records: the prompts' rows, each with its model input in ``"text"``.
      task: the accuracy reward, threshold and answer extraction.
      samples: k completions per prompt.
      accuracy: the benchmark's own accuracy reward spec, scored by a scorer of its own;
        None: the run's scorer (``rewards.functions`` / ``routes``).
    """

    name: str
    data: str
    records: list[dict]
    task: EvalTask
    samples: int
    accuracy: Any = None

    @property
    def prefix(self) -> str:
        """Metric name prefix: ``"eval/"`` or ``"eval/<name>/"``."""
        return f"eval/{self.name}/" if self.name else "eval/"

    @property
    def title(self) -> str:
        return self.name or HELD_OUT


def benchmarks(c: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
    """``train.eval_benchmarks`` as plain dicts, by name (a ConfigDict keeps its keys sorted)."""
    return {name: dict(spec) for name, spec in c.train.eval_benchmarks.to_dict().items()}


def parse_benchmark(text: str) -> tuple[str, dict[str, Any]]:
    """A benchmark given on the command line (``--benchmark=NAME[:key=value,...]``) as its
    name and settings. Keys are those of a ``train.eval_benchmarks`` entry; a value is read
    as a Python literal when it is one (``16``, ``0.5``, ``("countdown", 1.0, {...})``,
    ``"a,b.jsonl"``) and as a string otherwise (``path=/data/x.jsonl``); commas inside
    brackets or quotes do not split.

    >>> parse_benchmark("aime:name=aime2024,samples=16")
    ('aime', {'name': 'aime2024', 'samples': 16})
    """
    import ast

    from r1jax.data.sources import CONFIG_KEYS

    where = f"--benchmark={text!r}"
    label, _, rest = text.partition(":")
    label = label.strip()
    if not label or "/" in label or label == HELD_OUT or "=" in label:
        raise ConfigError(f"{where}: needs NAME[:key=value,...] with a NAME that is non-empty, "
                          f"without '/' or '=', not {HELD_OUT!r}")  # fmt: skip
    spec: dict[str, Any] = {}
    for item in _split_top_level(rest, where) if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"{where}: {item.strip()!r} is not key=value")
        if key not in (*CONFIG_KEYS, *EVAL_KEYS):
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed: {[*CONFIG_KEYS, *EVAL_KEYS]}"
            )
        if key in spec:
            raise ConfigError(f"{where}: key {key!r} given twice")
        try:
            spec[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            spec[key] = value.strip()
    return label, spec


def _split_top_level(text: str, where: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
        if depth < 0:
            break
    if depth or quote:
        raise ConfigError(f"{where}: unbalanced brackets or quotes")
    return [*items, text[start:]]


def add_benchmarks(c: ml_collections.ConfigDict, texts: Sequence[str]) -> None:
    """Add the ``--benchmark`` specs ``texts`` (:func:`parse_benchmark`) to
    ``c.train.eval_benchmarks``, in place (a locked config too). A new benchmark's dataset
    (``name``) defaults to its NAME (``--benchmark=math500``); one the config already has
    keeps the settings the spec does not give (``--benchmark=aime2024:samples=64``)."""
    for text in texts:
        label, spec = parse_benchmark(text)
        old = c.train.eval_benchmarks.get(label)
        merged = {**(old.to_dict() if old is not None else {"name": label}), **spec}
        with c.unlocked():
            c.train.eval_benchmarks[label] = ml_collections.ConfigDict(merged)


def has_held_out(c: ml_collections.ConfigDict) -> bool:
    """Whether the config names a held-out split of the training data."""
    d = c.data
    return bool(d.eval_path if d.name in ("jsonl", "parquet") else d.eval_split)


def eval_seed(seed: int, step: int, name: str) -> int:
    """The sampling seed of set ``name`` at ``step`` (the held-out split keeps the seed it
    always had; a benchmark's depends on its name, not on its place in the config)."""
    from r1jax.rl.trainer import step_seed

    return step_seed(seed, step, 1 if not name else 2 + zlib.crc32(name.encode()) % 2**30)


def load_eval_sets(
    c: ml_collections.ConfigDict,
    tokenizer: Any,
    needed_by: str,
    num_prompts: int | None = None,
    only: Sequence[str] = (),
    eval_source: Any = None,
    hint: str = "",
) -> list[EvalSet]:
    """The held-out split (when the config has one, or ``eval_source`` gives its rows) and
    the benchmarks, each with its first ``num_prompts`` prompts (default: the held-out split
    ``train.eval_prompts``, a benchmark its ``prompts``; 0: all). ``only``: names of the sets
    to load (``"held_out"`` for the split; default all). ``needed_by`` and ``hint`` complete
    the error when there is nothing to evaluate."""
    from r1jax import build

    specs = benchmarks(c)
    known = ([HELD_OUT] if has_held_out(c) or eval_source is not None else []) + list(specs)
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"eval sets {unknown} are not in this config; it has {known}")
    wanted = set(only or known)
    sets = []
    if HELD_OUT in known and HELD_OUT in wanted:
        n = c.train.eval_prompts if num_prompts is None else num_prompts
        records = build.eval_records(c, tokenizer, n, needed_by, hint, eval_source)
        task = build.eval_task(c)
        task.check_records(records, f"the held-out set {held_out_name(c)}")
        sets.append(EvalSet("", held_out_name(c), records, task, c.train.eval_samples))
    elif not specs:
        build.eval_source_config(c, needed_by, hint)  # raises: nothing to evaluate
        raise ConfigError(
            f"data.eval_split is empty: {needed_by} needs a held-out split or "
            f"train.eval_benchmarks{hint}"
        )
    for name, spec in specs.items():
        if name in wanted:
            sets.append(_benchmark(c, tokenizer, name, spec, num_prompts))
    return sets


def held_out_name(c: ml_collections.ConfigDict) -> str:
    d = c.data
    return d.eval_path if d.name in ("jsonl", "parquet") else f"{d.name}/{d.eval_split}"


def _benchmark(c, tokenizer, name: str, spec: dict[str, Any], num_prompts: int | None) -> EvalSet:
    from r1jax import build
    from r1jax.data import load_source
    from r1jax.data.builders import BUILDERS
    from r1jax.data.sources import CONFIG_KEYS
    from r1jax.recipes import PromptMappedSource

    field = f"train.eval_benchmarks.{name}"
    unknown = sorted(set(spec) - set(CONFIG_KEYS) - set(EVAL_KEYS))
    if unknown:
        raise ConfigError(
            f"config.{field}: unknown keys {unknown}; allowed: {[*CONFIG_KEYS, *EVAL_KEYS]}"
        )
    data = {k: v for k, v in spec.items() if k not in EVAL_KEYS}
    if data.get("name") not in ("jsonl", "parquet") and c.data.data_dir:
        data.setdefault("data_dir", c.data.data_dir)  # prepared next to the training data
    try:
        source = load_source(data)
    except ConfigError as e:
        raise ConfigError(f"config.{field}: {e}") from None
    except FileNotFoundError as e:  # not prepared, no network: say which benchmark it is
        raise FileNotFoundError(f"config.{field}: {e}") from e
    if spec.get("prompt_builder"):
        source = PromptMappedSource(source, spec["prompt_builder"], f"{field}.prompt_builder")
    n = spec.get("prompts", 0) if num_prompts is None else num_prompts
    records = build.records_with_text(c, tokenizer, source, n, f"benchmark {name!r}")
    threshold = spec.get("correct_threshold", c.rewards.correct_threshold)
    accuracy = spec.get("accuracy")
    if accuracy is None:
        task = dataclasses.replace(build.eval_task(c), threshold=threshold)
        task.check_records(records, f"config.{field}")
    else:
        try:
            task = build.accuracy_task(accuracy, threshold)
        except (ValueError, TypeError, KeyError) as e:
            why = e.args[0] if isinstance(e, KeyError) else e
            raise ConfigError(f"config.{field}.accuracy={accuracy!r}: {why}") from None
    if "path" in data:
        label = str(data["path"])
    else:
        label = f"{data['name']}/{data.get('split') or BUILDERS[data['name']][2]}"
    samples = spec.get("samples", c.train.eval_samples)
    return EvalSet(name, label, records, task, samples, accuracy)


@contextlib.contextmanager
def progress_bar(
    desc: str, total: int, enabled: bool, initial: int = 0
) -> Iterator[Callable[[int], None]]:
    """A tqdm bar of ``total`` prompts (``initial`` of them done before) while the block
    runs; yields the ``progress`` callback of :func:`r1jax.eval_run.evaluate_prompts`
    (prompts done so far)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit="prompt", disable=not enabled,
               dynamic_ncols=True, leave=False)  # fmt: skip
    try:
        yield lambda done: bar.update(done - bar.n)
    finally:
        bar.close()


def sample_set(
    c: ml_collections.ConfigDict,
    s: EvalSet,
    sampler: Any,
    params: Any,
    scorer: Any,
    sampling: Any,
    samples: int,
    data_shard: tuple[int, int],
    desc: str,
    progress: bool = False,
    keep_text: bool = False,
    partial: PartialResults | None = None,
) -> list[dict]:
    """:func:`r1jax.eval_run.evaluate_prompts` of set ``s``: ``samples`` completions of each
    prompt drawn with ``sampling`` (``SamplingParams``), judged by ``scorer``, in blocks of
    ``rl.prompts_per_step`` prompts; ``progress``: a bar named ``desc``; ``partial``: the
    results kept of an unfinished eval (skipped here) and where each new block is kept."""
    from r1jax.eval_run import evaluate_prompts

    done = partial.done if partial is not None else []
    on_block = partial.add if partial is not None else None
    with progress_bar(desc, len(s.records), progress, len(done)) as advance:
        return evaluate_prompts(sampler, params, s.records, scorer, s.task, sampling, samples,
                                c.rl.prompts_per_step, data_shard, keep_text=keep_text,
                                progress=advance, done=done, on_block=on_block)  # fmt: skip


def evaluate_sets(
    c: ml_collections.ConfigDict,
    sets: Sequence[EvalSet],
    sampler: Any,
    params: Any,
    scorers: EvalScorers,
    step: int,
    data_shard: tuple[int, int],
    progress: bool = False,
) -> dict[str, float]:
    """The eval metrics of ``params`` at ``step``: :func:`r1jax.eval_run.summarize_results`
    of every set, named ``<set prefix><metric>`` (``eval/pass@1``, ``eval/aime2024/maj@16``,
    ...), sampled with the set's :func:`eval_seed` at ``step``; ``progress``: a bar per set."""
    from r1jax import build
    from r1jax.eval_run import summarize_results

    out = {}
    for s in sets:
        sampling = build.eval_sampling_params(c, eval_seed(c.seed, step, s.name))
        results = sample_set(c, s, sampler, params, scorers(s), sampling, s.samples, data_shard,
                             f"eval {s.title}", progress)  # fmt: skip
        out |= {s.prefix + name: v for name, v in summarize_results(results).items()}
    return out


class EvalScorers:
    """The scorer of each eval set: the run's, or one of a benchmark's own accuracy reward
    (started on first use, kept for later evals, closed by :meth:`close`)."""

    def __init__(self, c: ml_collections.ConfigDict, run_scorer: Any):
        self.c, self.run_scorer = c, run_scorer
        self._own: dict[str, Any] = {}

    def __call__(self, s: EvalSet) -> Any:
        if s.accuracy is None:
            return self.run_scorer
        key = repr(s.accuracy)
        if key not in self._own:
            from r1jax.build import scorer_options
            from r1jax.rewards import RewardScorer

            self._own[key] = RewardScorer([s.accuracy], **scorer_options(self.c))
        return self._own[key]

    def close(self) -> None:
        for scorer in self._own.values():
            scorer.close()
        self._own.clear()

    def __enter__(self) -> EvalScorers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def metric_names(s: EvalSet) -> list[str]:
    """The metrics an eval of ``s`` logs (see :func:`r1jax.eval_run.summarize_results`)."""
    k = s.samples
    names = ["pass@1"] + ([f"pass@{k}", f"maj@{k}"] if k > 1 else [])
    return [s.prefix + n for n in (*names, "length_mean", "truncated")]


def best_metric(c: ml_collections.ConfigDict, sets: Sequence[EvalSet]) -> str:
    """The eval metric that picks the best checkpoint: ``train.best_metric``, by default the
    first set's pass@1 (the held-out split's, when there is one, else the benchmark first by
    name). Higher is better."""
    names = [n for s in sets for n in metric_names(s)]
    if not names:  # no eval (train.eval_every=0): no best checkpoint to pick
        return ""
    chosen = c.train.best_metric or names[0]
    if chosen not in names:
        raise ConfigError(
            f"config.train.best_metric={chosen!r} is not a metric of this run's eval; "
            f"it logs {names}"
        )
    return chosen
