"""``r1jax export``: a run's checkpoint as a Hugging Face directory (the LoRA adapters
folded in), or with ``--adapters`` its LoRA adapters alone as a PEFT adapter directory."""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import app

from r1jax import build, storage
from r1jax import config as cfgmod
from r1jax.distributed import is_primary


def export_command(
    c: ml_collections.ConfigDict, dst: str, step: int | None, dtype: str, adapters: bool
) -> int:
    """Writes checkpoint ``step`` (default: the latest) of run ``c`` to ``dst`` in ``dtype``
    (default: ``model.dtype``; float32 for adapters); exit code 0."""
    from r1jax.model.hf import save_hf_model
    from r1jax.model.lora import merge_lora

    if adapters and not c.lora.rank:
        raise app.UsageError("export --adapters needs a LoRA run (config.lora.rank > 0)")
    refuse_dst_over_run_files(c, dst)
    cfgmod.validate(c, jax.device_count(), jax.process_count())
    mesh = build.build_mesh(c)
    tokenizer = build.build_tokenizer(c)
    model, step, weights = build.load_run_model(c, mesh, tokenizer, step)
    if step is None:
        raise app.UsageError(f"no checkpoints in {os.path.join(c.run_dir, 'checkpoints')}")
    if adapters:
        return _export_adapters(c, model, weights, dst, dtype or "float32")
    ids = build.token_ids(tokenizer)
    dtype = dtype or c.model.dtype  # (training keeps float32 master weights)
    merge_lora(model)  # a LoRA run: the adapters folded into the weights they adapt
    save_hf_model(model, dst, dtype=dtype, token_ids=ids)  # every process; 0 writes
    if not is_primary():
        return 0
    written = build.save_tokenizer_files(c, tokenizer, dst)
    print(f"wrote {weights} to {dst} in {dtype} (tokenizer files: "
          f"{', '.join(written) or 'none'})")  # fmt: skip
    return 0


def _export_adapters(c: ml_collections.ConfigDict, model, weights: str, dst: str, dtype: str):
    """``export --adapters``: the run's LoRA adapters as a PEFT adapter directory."""
    from r1jax.model.lora_export import save_peft_adapters

    save_peft_adapters(model, dst, c.model.hf_path, dtype)  # every process; 0 writes
    if is_primary():
        base = c.model.hf_path or f"the random {c.model.preset!r} init (seed {c.seed})"
        print(f"wrote the LoRA adapters of {weights} to {dst} in {dtype} (PEFT) for "
              f"the base model {base}")  # fmt: skip
        if c.train.init_checkpoint:
            print(
                f"note: the base weights of this run are train.init_checkpoint's "
                f"({c.train.init_checkpoint}), not model.hf_path's: load the adapters on "
                "those, or export the merged model (export without --adapters)"
            )
    return 0


def refuse_dst_over_run_files(c: Any, dst: str) -> None:
    """``export --dst`` must not be a directory the run reads (its model, tokenizer, reward
    model) or the run directory and its checkpoints: the export would overwrite them."""
    target = storage.dir_key(dst)
    if storage.exists(dst) and not storage.isdir(dst):
        raise app.UsageError(f"--dst={dst} is a file: export writes a directory there")
    for field in ("model.hf_path", "tokenizer.path", "reward_model.path", "train.init_checkpoint"):
        value = cfgmod.field_value(c, field)
        if value and storage.dir_key(value) == target:
            raise app.UsageError(f"--dst={dst} is config.{field}: the export would overwrite "
                                 "what the run reads; write to another directory")  # fmt: skip
    run = storage.dir_key(c.run_dir)
    managed = [run] + [f"{run}/{d}" for d in ("checkpoints", "sft", "rm")]
    if any(target == d or (d != run and target.startswith(d + "/")) for d in managed):
        raise app.UsageError(f"--dst={dst} is the run directory or holds its checkpoints; "
                             f"write to another directory (e.g. {run}/hf)")  # fmt: skip
