"""R1-Zero on MATH from Qwen2.5-7B on a Cloud TPU slice (e.g. v5p-64 or v4-64).

R1-Zero's published GRPO settings (``r1jax.config.r1_zero_settings``): lr 3e-6, KL 0.001 to
a reference refreshed every 400 steps, G = 16, 32 prompts (512 rollouts) per step split into
16 minibatches, temperature 1. Completions are capped at 4,096 tokens here (R1: 32,768); raise
``sampling.max_new_tokens`` as the slice allows. Splash attention (the Pallas flash kernel)
keeps long rows from writing ``[B, H, T, T]`` scores; parameters, gradients and optimizer
state are sharded over every chip (FSDP, ``mesh.shape=(1, -1, 1)``).

Evaluation every 100 steps is on MATH-500 (k=4) and AIME 2024 (k=16), R1's benchmarks
(``train.eval_benchmarks``); the best checkpoint kept is the best by MATH-500 pass@1.

Point ``model.hf_path`` and ``tokenizer.path`` at a Qwen2.5-7B directory on every host (or
``gs://``), ``data.data_dir`` at the prepared MATH, MATH-500 and AIME 2024 datasets (the
benchmarks read theirs from there too), and ``run_dir`` at shared storage:

    TPU_NAME=<tpu> ZONE=<zone> bash launch/tpu_pod.sh r1jax train \\
      --config=configs/r1_zero_qwen2_5_7b_math_tpu.py \\
      --config.model.hf_path=/models/Qwen2.5-7B --config.tokenizer.path=/models/Qwen2.5-7B \\
      --config.run_dir=gs://bucket/runs/r1_zero_7b_math
"""

from r1jax.config import base_config, r1_zero_settings


def get_config():
    c = r1_zero_settings(base_config())
    c.run_dir = "runs/r1_zero_qwen2.5_7b_math"
    c.model.preset = "qwen2.5-7b"
    c.model.hf_path = ""
    c.model.remat = "full"
    c.model.attention = "splash"
    c.mesh.shape = (1, -1, 1)
    c.tokenizer.path = ""
    c.data.name = "math"
    # evaluated on R1's math benchmarks instead of a held-out MATH split: MATH-500 (k=4) and
    # AIME 2024 (k=16), logged as eval/math500/* and eval/aime2024/*
    c.data.eval_split = ""
    c.train.eval_benchmarks = dict(
        math500=dict(name="math500"),
        aime2024=dict(name="aime2024", samples=16),
    )
    c.train.best_metric = "eval/math500/pass@1"
    c.rewards.functions = (("math_accuracy", 1.0), ("format_strict", 0.1))
    c.sampling.max_prompt_len = 512
    c.sampling.max_new_tokens = 4096
    c.train.steps = 2000
    c.train.eval_every = 100
    c.train.eval_samples = 4
    c.train.checkpoint_every = 50
    return c
