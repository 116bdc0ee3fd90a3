"""``r1jax rm``: train a reward model on preference pairs (R1's all-scenario RL, stage 4).

The reward model starts from the run's newest weights (its GRPO or SFT checkpoint, else the
newest of the run ``train.init_checkpoint``, else ``model.hf_path`` or the preset's random
init) with a fresh score head, and trains with the Bradley-Terry loss (:mod:`r1jax.rm`) on the
``(prompt, chosen, rejected)`` rows of ``reward_model.train_path``; prompts get the run's
template, as the RL prompts do. Layout:

    <run_dir>/rm/checkpoints   Orbax checkpoints (resumable after a crash or Ctrl-C)
    <run_dir>/rm/metrics.jsonl rm/loss, rm/accuracy, rm/margin, ... per logged step
    <run_dir>/rm/eval.json     held-out pair accuracy before and after (reward_model.eval_path)
    <run_dir>/rm/hf            the trained reward model as a HF *ForSequenceClassification
                               directory with its tokenizer: set reward_model.path to it
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import ml_collections

from r1jax import storage
from r1jax.config import ConfigError


def rm_dir(run_dir: str) -> str:
    """``<run_dir>/rm``: where ``r1jax rm`` writes."""
    return os.path.join(run_dir, "rm")


def load_pairs(c: ml_collections.ConfigDict, path_field: str, tokenizer: Any) -> list[tuple]:
    """``(prompt, chosen, rejected)`` triples of the pair file(s) at
    ``config.reward_model.<path_field>``, as GRPO will score them (``reward_model.input``:
    the prompt is the policy's model input, or the plain prompt for the chat layout;
    ``reward_model.scope``: the whole responses, or their answers)."""
    from r1jax.build import prompt_formatter
    from r1jax.prompts import opened_think
    from r1jax.recipes import formatted_text_rows
    from r1jax.rewards.extract import opens_think
    from r1jax.rm_scoring import scored_part

    rm = c.reward_model
    fields = (rm.chosen_field, rm.rejected_field)
    chat = rm.input == "chat"
    rows = formatted_text_rows(c, tokenizer, f"reward_model.{path_field}", rm.prompt_field,
                               fields, template=not chat)  # fmt: skip
    whole = chat and opens_think(prompt_formatter(c, tokenizer)({"prompt": "?"}))
    if whole:  # the chat layout reads the whole assistant turn, as scoring does
        rows = [(p, opened_think(a), opened_think(b)) for p, a, b in rows]
    return [(p, scored_part(a, rm.scope), scored_part(b, rm.scope)) for p, a, b in rows]


def _eval_before(folder: str, evaluate: Callable[[], dict | None], resumed: bool,
                 primary: bool) -> dict | None:  # fmt: skip
    """The held-out metrics of the reward model before training: measured at a fresh start
    and kept in ``<folder>/eval_before.json``, read back from there by a resumed run."""
    path = os.path.join(folder, "eval_before.json")
    if resumed:
        return json.loads(storage.read_text(path)) if storage.exists(path) else None
    before = evaluate()
    if primary:
        storage.makedirs(folder)
        storage.write_text(path, json.dumps(before))
    return before


def rm_command(c: ml_collections.ConfigDict, emit: Callable[[str], None] = print) -> dict:
    """Trains (or resumes, or finds finished) the reward model of ``c``; exports it; returns
    ``{"step", "hf_dir", "eval_before", "eval_after"}`` (evals None without an eval_path)."""
    import jax
    from flax import nnx

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import distributed as dist
    from r1jax.metrics import MetricsWriter
    from r1jax.model import reward_model_from
    from r1jax.model.lora import merge_lora
    from r1jax.model.lora import summary as lora_summary
    from r1jax.optim import check_training_dtypes
    from r1jax.rm import evaluate_pairs, train_reward_model
    from r1jax.rm_export import export_reward_model
    from r1jax.run_weights import saved_steps

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    check_training_dtypes(c.model.dtype, c.model.param_dtype)
    rm = c.reward_model
    if not rm.train_path or rm.steps < 1:
        raise ConfigError(
            f"config.reward_model.train_path={rm.train_path!r}, steps={rm.steps}: r1jax rm "
            "trains on the preference pairs of train_path for steps >= 1 steps"
        )
    folder = rm_dir(c.run_dir)
    ckpt_dir = os.path.join(folder, "checkpoints")
    done = saved_steps(ckpt_dir)
    tokenizer = build.build_tokenizer(c)
    if rm.input == "chat" and not tokenizer.chat_template:
        raise ConfigError("config.reward_model.input='chat' needs a tokenizer with a "
                          "chat_template (tokenizer.path)")  # fmt: skip
    pairs = load_pairs(c, "train_path", tokenizer)  # (the files' errors before a model loads)
    held = load_pairs(c, "eval_path", tokenizer) if rm.eval_path else None
    mesh = build.build_mesh(c)
    rules = build.sharding_rules(c)
    # (lora.rank > 0 for the reward model takes a policy trained without adapters too)
    lm, _, label = build.load_run_model(c, mesh, tokenizer, fresh_adapters=True)
    merge_lora(lm)  # adapters the policy was trained with are part of its weights
    model = reward_model_from(lm, mesh, rules)
    del lm
    build.add_lora_adapters(c, model, mesh)  # lora.rank > 0: trains them and the score head
    said = lora_summary(nnx.state(model))
    primary = dist.is_primary()
    max_len = build.reward_model_max_len(c)
    if primary:
        start = f"resuming {ckpt_dir} at step {done[-1]}" if done else f"from {label}"
        emit(f"reward model: {len(pairs)} pairs, {rm.steps} steps, {start}")
        if said:
            emit(f"reward model: {said} (with the score head)")

    def evaluate() -> dict[str, float] | None:
        if held is None:
            return None
        kw = dict(max_len=max_len, batch_size=rm.batch_size, mesh=mesh, rules=rules,
                  layout=rm.input)  # fmt: skip
        return evaluate_pairs(model, tokenizer, held, **kw)

    before = _eval_before(folder, evaluate, resumed=bool(done), primary=primary)
    writer = None
    if primary:
        # rewound at its first row: the loop alone knows the step it restores (the newest
        # of `done` may be damaged)
        writer = MetricsWriter(folder, tensorboard=c.train.tensorboard)

    def log(entry: dict[str, float]) -> None:
        if writer is not None:
            values = {f"rm/{k}": v for k, v in entry.items() if k != "step"}
            writer.write(int(entry["step"]), values)

    try:
        train_reward_model(
            model,
            tokenizer,
            pairs,
            steps=rm.steps,
            batch_size=rm.batch_size,
            grad_accum=rm.grad_accum,
            lr=rm.lr,
            max_len=max_len,
            mesh=mesh,
            seed=c.seed,
            center_coef=rm.center_coef,
            overlong="truncate",
            progress=c.train.progress and primary,
            optimizer=dict(warmup_steps=min(20, rm.steps // 10), schedule="cosine"),
            rules=rules,
            checkpoint_dir=ckpt_dir,
            checkpoint_every=rm.checkpoint_every,
            on_log=log,
            before_checkpoint=writer.flush if writer is not None else None,
            layout=rm.input,
        )
    finally:
        if writer is not None:
            writer.close()
    after = evaluate()
    hf_dir = os.path.join(folder, "hf")
    export_reward_model(c, model, tokenizer, hf_dir, primary)  # every process; 0 writes
    result = {"step": rm.steps, "hf_dir": hf_dir, "eval_before": before, "eval_after": after}
    if primary:
        storage.write_text(os.path.join(folder, "eval.json"), json.dumps(result, indent=2))
        if after is not None:
            was = f"{before['accuracy']:.3f} -> " if before else ""
            emit(f"reward model: held-out pair accuracy {was}{after['accuracy']:.3f} "
                 f"({int(after['pairs'])} pairs)")  # fmt: skip
        emit(f"reward model: wrote {hf_dir}; use it in GRPO with "
             f"--config.reward_model.path={hf_dir}")  # fmt: skip
    return result
