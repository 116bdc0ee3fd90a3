"""Recipe glue: cold-start SFT before RL, and prompt builders that configs can name.

The CPU demo (``configs/r1_zero_countdown_cpu.py``) starts from a randomly initialised tiny
model, which has no "base" ability to build on; R1's stage 1 (cold-start SFT on a few
thousand readable reasoning traces) gives it one, then GRPO improves accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
from jax.sharding import Mesh

from r1jax.config import ConfigError
from r1jax.distributed import is_primary
from r1jax.model import Transformer
from r1jax.prompts import continuation


def _countdown_compact(record: dict[str, Any]) -> str:
    from r1jax.cold_start import countdown_prompt

    return countdown_prompt(record["numbers"], record["target"])


PROMPT_BUILDERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "countdown_compact": _countdown_compact,
}


def prompt_builder(name: str, field: str = "data.prompt_builder") -> Callable[[dict], str]:
    """The prompt builder ``name`` (:data:`PROMPT_BUILDERS`); ``field`` names the config
    field in the error for an unknown one."""
    if name not in PROMPT_BUILDERS:
        raise ConfigError(f"config.{field}={name!r} is not one of {sorted(PROMPT_BUILDERS)}")
    return PROMPT_BUILDERS[name]


class PromptMappedSource(Sequence):
    """A random-access source whose records get ``prompt = builder(record)``."""

    def __init__(
        self, source: Sequence[dict], builder: str, field: str = "data.prompt_builder"
    ) -> None:
        self.source, self.fn = source, prompt_builder(builder, field)
        self.name, self.field = builder, field

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        record = dict(self.source[i])
        try:
            record["prompt"] = self.fn(record)
        except KeyError as e:  # e.g. a file whose rows lack the builder's fields
            raise ConfigError(
                f"config.{self.field}={self.name!r} reads the field {e} that record {i} lacks "
                f"(its fields: {sorted(record)})"
            ) from None
        return record


def formatted_text_rows(
    c: ml_collections.ConfigDict,
    tokenizer: Any,
    path_field: str,
    prompt_field: str,
    text_fields: Sequence[str],
    template: bool = True,
) -> list[tuple[str, ...]]:
    """``(model input, *texts)`` of the JSONL/Parquet file(s) at ``config.<path_field>``: the
    prompt formatted with the run's template (``c.prompt``; ``template=False``: the prompt
    text as it is), the ``text_fields`` as they continue it (:func:`r1jax.prompts.continuation`:
    e.g. an SFT completion, or a preference pair's chosen and rejected responses). Bad rows
    follow ``c.data.on_bad_row`` (skipped ones are counted on stdout); no usable row at all is
    a :class:`ConfigError` naming the setting."""
    from r1jax.build import prompt_formatter
    from r1jax.data.files import DataFileNotFoundError, load_text_rows

    section, key = path_field.split(".")
    path = c[section][key]
    try:
        rows, bad = load_text_rows(path, prompt_field, text_fields, c.data.on_bad_row)
    except DataFileNotFoundError as e:  # name the field that gave the path
        raise DataFileNotFoundError(f"config.{path_field}: {e}") from None
    if bad.count and is_primary():
        print(f"{path_field}: {bad.count} bad rows of {path} skipped ({dict(bad.by_field)})")
    if not rows:
        raise ConfigError(f"config.{path_field}={path!r}: no usable rows")
    fmt = prompt_formatter(c, tokenizer) if template else (lambda row: row["prompt"])
    out, cut = [], 0
    for row, texts in rows:
        prompt = fmt(row)
        kept = [continuation(prompt, text) for text in texts]
        cut += sum(a != b for a, b in zip(texts, kept, strict=True))
        out.append((prompt, *kept))
    if cut and is_primary():
        print(f"{path_field}: the prompts end with <think> (the template or prompt.prefill); "
              f"removed the <think> that starts {cut} of the texts")  # fmt: skip
    return out


def sft_examples(
    c: ml_collections.ConfigDict, tokenizer: Any, held_out: bool = False
) -> list[tuple[str, str]]:
    """``(model input, completion)`` pairs of ``c.cold_start``: synthetic countdown traces
    (task ``countdown``) or the traces of ``cold_start.path`` (task ``file``); prompts get the
    run's template (``c.prompt``), as the RL prompts do. ``held_out``: the held-out traces
    instead (``cold_start.eval_path``, or ``eval_examples`` countdown traces of another seed;
    none when those are unset)."""
    from r1jax.build import prompt_formatter

    cs = c.cold_start
    if cs.task == "file":
        if held_out and not cs.eval_path:
            return []
        fields = (cs.completion_field,)
        where = "cold_start.eval_path" if held_out else "cold_start.path"
        return formatted_text_rows(c, tokenizer, where, cs.prompt_field, fields)
    if cs.task != "countdown":
        raise ConfigError(f"config.cold_start.task={cs.task!r}: one of 'countdown', 'file'")
    count = cs.eval_examples if held_out else cs.examples
    if not count:
        return []
    fmt = prompt_formatter(c, tokenizer)
    from r1jax.cold_start import make_countdown_sft_examples
    from r1jax.data.countdown import CountdownSpec, generate_countdown

    fields = {f.name for f in dataclasses.fields(CountdownSpec)} - {"seed"}
    opts = {k: v for k, v in c.data.countdown.to_dict().items() if k in fields}
    # Another seed and split name than the RL data: cold-start problems are not RL prompts
    # (and the held-out traces another one again).
    spec = CountdownSpec(seed=c.data.countdown.seed + (7920 if held_out else 7919), **opts)
    records = generate_countdown(spec, "cold_start_eval" if held_out else "cold_start", count)
    builder = prompt_builder(c.data.prompt_builder) if c.data.prompt_builder else None
    prompt_fn = (lambda r: fmt({**r, "prompt": builder(r)})) if builder else fmt
    examples = make_countdown_sft_examples(records, prompt_fn, np.random.default_rng(c.seed))
    return [(prompt, continuation(prompt, text)) for prompt, text in examples]


def cold_start(
    c: ml_collections.ConfigDict,
    model: Transformer,
    tokenizer: Any,
    mesh: Mesh,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> Transformer:
    """SFT of ``c.cold_start`` (see :func:`sft_examples`) before RL; returns the model.

    Resumable: checkpoints go to ``<run_dir>/sft/checkpoints`` every
    ``cold_start.checkpoint_every`` steps and at the end, so a crash or Ctrl-C during the SFT
    loses at most that many steps, and an SFT that has finished is restored, not redone. The
    step metrics (``sft/loss``, ``sft/eval_loss``, ...) go to ``<run_dir>/sft/metrics.jsonl``
    (and TensorBoard with ``train.tensorboard``), and to ``on_log``."""
    from r1jax.metrics import MetricsWriter
    from r1jax.run_weights import sft_checkpoint_dir

    ckpt_dir = sft_checkpoint_dir(c.run_dir)
    writer = None
    if is_primary():  # rewound at its first row: the loop alone knows the step it restores
        writer = MetricsWriter(os.path.dirname(ckpt_dir), tensorboard=c.train.tensorboard)

    def log(entry: dict[str, float]) -> None:
        if writer is not None:
            writer.write(
                int(entry["step"]), {f"sft/{k}": v for k, v in entry.items() if k != "step"}
            )
        if on_log is not None:
            on_log(entry)

    flush = writer.flush if writer is not None else None
    try:
        return _train_cold_start(c, model, tokenizer, mesh, ckpt_dir, log, flush)
    finally:
        if writer is not None:
            writer.close()


def _train_cold_start(c, model, tokenizer, mesh, ckpt_dir: str, on_log, flush) -> Transformer:
    with contextlib.ExitStack() as stack:
        sampled = _sampled_eval(c, model, tokenizer, mesh, stack)
        return _run_cold_start(c, model, tokenizer, mesh, ckpt_dir, on_log, flush, sampled)


def _sampled_eval(c, model, tokenizer, mesh, stack: contextlib.ExitStack):
    """With ``cold_start.eval_sampled``: ``(state, step) -> metrics`` of the run's eval sets
    (:func:`r1jax.eval_sets.evaluate_sets`, as the GRPO trainer's eval), else None."""
    if not c.cold_start.eval_sampled:
        return None
    from r1jax import build
    from r1jax import sharding as shd
    from r1jax.eval_sets import EvalScorers, evaluate_sets, load_eval_sets

    hint = " (or set cold_start.eval_sampled=False)"
    sets = load_eval_sets(c, tokenizer, "cold_start.eval_sampled", hint=hint)
    sampler = build.build_sampler(c, model, mesh, tokenizer)
    scorers = stack.enter_context(EvalScorers(c, stack.enter_context(build.build_scorer(c))))
    shard = shd.process_batch_shard(mesh)
    return lambda state, step: evaluate_sets(c, sets, sampler, state, scorers, step, shard)


def _run_cold_start(c, model, tokenizer, mesh, ckpt_dir, on_log, flush, sampled) -> Transformer:
    from r1jax.sft import train_sft

    cs = c.cold_start
    examples = sft_examples(c, tokenizer)
    held_out = sft_examples(c, tokenizer, held_out=True)
    primary = is_primary()
    length = f"{cs.steps} steps" if cs.steps else f"{cs.epochs:g} epochs"
    if primary:
        print(f"cold start: SFT on {len(examples)} {cs.task} traces, {length}"
              + (f"; held-out loss on {len(held_out)} traces" if held_out else ""))  # fmt: skip
    model, history = train_sft(
        model,
        tokenizer,
        examples,
        steps=cs.steps,
        epochs=cs.epochs,
        batch_size=cs.batch_size,
        grad_accum=cs.grad_accum,
        lr=cs.lr,
        max_len=cs.max_len or c.sampling.max_prompt_len + c.sampling.max_new_tokens,
        mesh=mesh,
        seed=c.seed,
        progress=c.train.progress and primary,
        pack=cs.pack,
        overlong=cs.overlong,
        warmup_steps=cs.warmup_steps,
        schedule=cs.schedule,
        weight_decay=cs.weight_decay,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=cs.checkpoint_every,
        on_log=on_log,
        before_checkpoint=flush,
        eval_examples=held_out,
        eval_every=cs.eval_every,
        extra_eval=sampled,
    )
    if history and primary:
        first, last = history[0], history[-1]
        loss = (
            f"{first['loss']:.3f} -> {last['loss']:.3f}"
            if len(history) > 1
            else f"{last['loss']:.3f}"
        )
        evaluated = (f", held-out loss {last['eval_loss']:.3f} (token accuracy "
                     f"{last['eval_accuracy']:.3f})" if "eval_loss" in last else "")  # fmt: skip
        evaluated += "".join(f", {k} {v:.3f}" for k, v in last.items()
                             if k.startswith("eval/") and k.endswith("pass@1"))  # fmt: skip
        print(f"cold start: {last['step']} steps, loss {loss}, token accuracy "
              f"{last['accuracy']:.3f}{evaluated}")  # fmt: skip
    return model
