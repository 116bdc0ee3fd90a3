"""A run's weights for the commands that read it (``eval``, ``sample``, ``export``, ``traces``,
``rm``) and for ``train.init_checkpoint``: which checkpoint folder (the GRPO stage's, else the
SFT stage's), the newest readable step, and how the weights are named in messages. The files
are :class:`r1jax.checkpoint.RunCheckpointer`'s; nothing here writes to a run.
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from r1jax import storage
from r1jax.checkpoint import CheckpointError, RunCheckpointer, failure_text

__all__ = [
    "checkpoint_dir",
    "from_sft_stage",
    "load_params",
    "restore_init_checkpoint",
    "restore_run_params",
    "saved_steps",
    "sft_checkpoint_dir",
    "weights_label",
]


def sft_checkpoint_dir(run_dir: str) -> str:
    """Where a run's SFT stage (cold start, ``r1jax sft``) keeps its checkpoints."""
    return os.path.join(run_dir, "sft", "checkpoints")


def saved_steps(directory: str) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, oldest first."""
    saved = RunCheckpointer(directory, async_save=False, read_only=True)
    try:
        return saved.steps()
    finally:
        saved.close()


def checkpoint_dir(path: str) -> str:
    """The checkpoint folder of ``path``: a run directory's ``checkpoints/`` (GRPO), else its
    ``sft/checkpoints/`` when only the SFT stage ran (``r1jax sft``), else ``path`` itself."""
    for folder in (os.path.join(path, "checkpoints"), sft_checkpoint_dir(path)):
        if any(name.isdigit() for name in storage.listdir(folder)):
            return folder
    grpo = os.path.join(path, "checkpoints")
    return grpo if storage.isdir(grpo) else path


def load_params(
    path: str, template: nnx.State, step: int | None = None, fresh_adapters: bool = False
) -> tuple[int, nnx.State] | None:
    """The policy params of checkpoint ``step`` (default: the newest) under ``path``: a run
    directory (see :func:`checkpoint_dir`) or a checkpoint folder itself. Returns
    ``(step, params)`` shaped like ``template``, or None when there is no checkpoint and no
    ``step`` was asked for. Without ``step``, a newest checkpoint that cannot be read
    (damaged) is skipped with a warning for the one before (with one process; with several,
    a process that alone cannot read it cannot go back alone: an error asks for a ``step``).
    Reads only: a missing ``path`` is not created, a save in progress is left alone.
    ``fresh_adapters``: see :meth:`RunCheckpointer.restore_params`.

    Raises:
      CheckpointError: ``step`` is not there or cannot be read, none can be read, or the
        checkpoint holds a different model.
    """
    directory = checkpoint_dir(path)
    ck = None
    if storage.isdir(directory):
        ck = RunCheckpointer(directory, async_save=False, read_only=True)
    try:
        steps = ck.steps() if ck is not None else []
        if step is None and not steps:
            return None
        if step is not None and step not in steps:
            raise CheckpointError(f"{directory} has no checkpoint of step {step} (steps: {steps})")
        tried, failures = [], []
        for candidate in [step] if step is not None else reversed(steps):
            try:
                return candidate, ck.restore_params(template, candidate, fresh_adapters)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - a damaged checkpoint: try the previous one
                why = failure_text(candidate, e)
                if jax.process_count() > 1 and step is None:  # (the others may wait for it)
                    raise CheckpointError(
                        f"process {jax.process_index()} could not read checkpoint {directory}/"
                        f"{candidate} ({why}); with several processes one cannot fall back to "
                        "an older checkpoint alone: pass --step=<an older step>"
                    ) from None
                tried.append(candidate)
                failures.append(ck.skip(candidate, e) if step is None else why)
        raise CheckpointError(
            f"{directory}: cannot read the checkpoint of step(s) {tried} (damaged?): "
            + "; ".join(failures)
        )
    finally:
        if ck is not None:
            ck.close()


def restore_run_params(
    model: nnx.Module, run_dir: str, step: int | None = None, fresh_adapters: bool = False
) -> int | None:
    """:func:`load_params` of the run in ``run_dir`` written into ``model`` in place; returns
    the step, or None when the run has no checkpoint."""
    found = load_params(run_dir, nnx.state(model), step, fresh_adapters)
    if found is None:
        return None
    nnx.update(model, found[1])
    return found[0]


def restore_init_checkpoint(model: nnx.Module, path: str) -> str | None:
    """The newest weights of ``path`` (``train.init_checkpoint``: a run directory or its
    checkpoint folder; "" for none) written into ``model`` in place; returns how they are
    named (:func:`weights_label`), or None when ``path`` is empty. A model with LoRA adapters
    keeps its fresh ones when the checkpoint has none (e.g. LoRA RL after a full SFT), and
    takes the checkpoint's when it has them (the same ``lora`` settings are then needed).

    Raises:
      CheckpointError: ``path`` holds no checkpoint (a missing ``path`` is not created).
    """
    if not path:
        return None
    try:
        step = restore_run_params(model, path, fresh_adapters=True)
    except CheckpointError as e:  # e.g. another model's shapes: say which setting led there
        raise CheckpointError(f"config.train.init_checkpoint={path!r}: {e}") from None
    if step is None:
        hf = storage.exists(f"{path.rstrip('/')}/config.json")
        hint = ("; it is a Hugging Face model directory: give it as model.hf_path" if hf else
                " (give a run directory or its checkpoints/ folder)")  # fmt: skip
        raise CheckpointError(f"config.train.init_checkpoint={path!r}: no r1jax checkpoint there"
                              f"{hint}")  # fmt: skip
    return weights_label(path, step)


def from_sft_stage(run_dir: str) -> bool:
    """Whether :func:`checkpoint_dir` of ``run_dir`` is its SFT stage's (no GRPO checkpoint)."""
    return checkpoint_dir(run_dir) == sft_checkpoint_dir(run_dir)


def weights_label(run_dir: str, step: int) -> str:
    """How commands name restored weights: ``"<run_dir> step N"``, or
    ``"<run_dir>/sft step N (SFT stage)"`` when they came from the SFT stage's checkpoints."""
    if from_sft_stage(run_dir):
        return f"{os.path.dirname(sft_checkpoint_dir(run_dir))} step {step} (SFT stage)"
    return f"{run_dir} step {step}"
