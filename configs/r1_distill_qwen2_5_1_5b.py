"""Distillation: SFT of Qwen2.5-1.5B on a teacher's reasoning traces, no RL (R1's students).

The traces are a JSONL/Parquet file (globs allowed) of ``prompt``/``completion`` rows: the
output of ``r1jax traces`` with a teacher's config, or a published set of R1 traces (name its
columns with ``cold_start.prompt_field`` / ``completion_field``). Prompts get the
``r1_zero`` template, completions are the teacher's ``<think>...</think> <answer>...``
text as it is. R1 fine-tuned its students for 2 epochs. Rows of up to 8,192 tokens are
packed (several short traces per row); traces longer than that are dropped (a truncated
trace would teach answers that never finish). 32 rows per update run as 4 micro-batches of
8, sharded over every chip (FSDP), with splash attention on TPUs (``attention="cudnn"`` on
GPUs).

    r1jax sft  --config=configs/r1_distill_qwen2_5_1_5b.py \\
      --config.cold_start.path=/data/traces/*.jsonl \\
      --config.model.hf_path=/models/Qwen2.5-1.5B --config.tokenizer.path=/models/Qwen2.5-1.5B
    r1jax eval   --config=...   # MATH-500 (k=4) and AIME 2024 (k=16); --sets=aime2024 for one
    r1jax export --config=... --dst=/models/r1jax-distill-1.5b
"""

from r1jax.config import base_config


def get_config():
    c = base_config()
    c.run_dir = "runs/r1_distill_qwen2.5_1.5b"
    c.model.preset = "qwen2.5-1.5b"
    c.model.hf_path = ""
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = "full"
    c.model.attention = "splash"
    c.mesh.shape = (1, -1, 1)
    c.tokenizer.path = ""
    c.prompt.style = "r1_zero"
    c.cold_start.task = "file"
    c.cold_start.path = ""
    c.cold_start.epochs = 2.0
    c.cold_start.batch_size = 32
    c.cold_start.grad_accum = 4
    c.cold_start.max_len = 8192
    c.cold_start.pack = True
    c.cold_start.overlong = "drop"
    c.cold_start.lr = 1e-5
    c.cold_start.warmup_steps = 50
    c.cold_start.schedule = "cosine"
    c.cold_start.weight_decay = 0.0
    c.cold_start.checkpoint_every = 200
    c.cold_start.eval_path = ""  # held-out traces (e.g. a split-off file): sft/eval_loss
    c.cold_start.eval_every = 200
    c.cold_start.eval_sampled = False  # True: MATH-500 / AIME 2024 pass@1 there too (slow)
    # evaluation of the student (r1jax eval): R1's math benchmarks and sampling settings
    c.data.name = "math"
    c.data.eval_split = ""
    c.train.eval_benchmarks = dict(
        math500=dict(name="math500"),
        aime2024=dict(name="aime2024", samples=16),
    )
    c.rewards.functions = (("math_accuracy", 1.0),)
    c.sampling.max_prompt_len = 512
    c.sampling.max_new_tokens = 8192
    c.train.eval_samples = 4
    return c
