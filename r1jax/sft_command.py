"""``r1jax sft``: the SFT stage of a run alone (cold start, distillation of teacher traces).

Trains ``config.cold_start`` (see :func:`r1jax.recipes.sft_examples`) from the newest weights
of the run ``train.init_checkpoint`` (e.g. R1's stage-3 SFT from the RL checkpoint), else the
config's model (``model.hf_path`` or the preset's random init). Checkpoints, resumable after
a crash or Ctrl-C, go to ``<run_dir>/sft/checkpoints``, and the step metrics (``sft/loss``,
``sft/accuracy``, ``sft/eval_loss``, ...) to ``<run_dir>/sft/metrics.jsonl`` (as in the
cold start of ``r1jax train``). Afterwards ``r1jax eval`` /
``sample`` / ``export`` with the same config use those weights, and ``r1jax train`` restores
the finished SFT as its cold start (it is not redone) and continues with GRPO.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections


def sft_command(c: ml_collections.ConfigDict, emit: Callable[[str], None] = print) -> int:
    """Runs (or resumes, or finds finished) the SFT stage of ``c``; returns its last step."""
    import jax
    from flax import nnx

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import distributed as dist
    from r1jax.model.lora import summary as lora_summary
    from r1jax.optim import check_training_dtypes
    from r1jax.recipes import cold_start
    from r1jax.run_weights import restore_init_checkpoint, saved_steps, sft_checkpoint_dir

    cfgmod.validate(c, jax.device_count(), jax.process_count())
    check_training_dtypes(c.model.dtype, c.model.param_dtype)
    if not c.cold_start.task:
        raise cfgmod.ConfigError(
            "config.cold_start.task is empty: r1jax sft trains 'file' (the prompt/completion "
            "traces of cold_start.path) or 'countdown' (synthetic traces)"
        )
    ckpt_dir = sft_checkpoint_dir(c.run_dir)
    tokenizer = build.build_tokenizer(c)
    mesh = build.build_mesh(c)
    model = build.build_model(c, mesh, tokenizer)
    said = lora_summary(nnx.state(model))
    if said and dist.is_primary():
        emit(f"sft: {said}")
    resuming = bool(saved_steps(ckpt_dir))  # (restores its own checkpoint instead, but
    if c.lora.rank or not resuming:  # a LoRA run's holds its adapters alone: their base)
        label = restore_init_checkpoint(model, c.train.init_checkpoint)
        if label and dist.is_primary() and not resuming:
            emit(f"sft: starting from {label}")
    cold_start(c, model, tokenizer, mesh)
    steps = saved_steps(ckpt_dir)[-1]  # cold_start.epochs sets the step count from the data
    if dist.is_primary():
        emit(
            f"sft: step {steps} in {ckpt_dir}; next: r1jax eval / sample / export, or r1jax "
            "train (which starts GRPO from it), with the same config"
        )
    return steps
