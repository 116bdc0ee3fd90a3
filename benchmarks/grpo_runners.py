"""One timed GRPO run of r1jax or of TRL in this process (``bench_grpo.py`` starts each in a
fresh subprocess). Both return a dict of per-step timings (seconds) and completion lengths.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

REWARD_REF = "benchmarks.grpo_reward:char_fraction"


def run_r1jax(assets: str, args) -> dict[str, Any]:
    """Runs ``args.warmup + args.steps`` calls of ``GRPOTrainer.train_step`` on
    ``args.r1jax_devices`` CPU devices (``mesh.cpu_devices``).

    Completions are forced to full length by adding ``ignore_eos=True`` to the trainer's
    sampling parameters (a benchmark-only patch: ``rl`` configs have no such field).
    """
    import jax

    from r1jax.config import base_config
    from r1jax.rl.trainer import GRPOTrainer

    c = base_config()
    c.run_dir = tempfile.mkdtemp(prefix="bench_grpo_r1jax_")
    c.seed = 0
    c.model.hf_path = assets
    c.tokenizer.path = assets
    c.mesh.shape = (-1, 1, 1)  # data parallel over every (virtual) CPU device
    c.mesh.cpu_devices = args.r1jax_devices
    c.prompt.style = "plain"
    c.data.name = "jsonl"
    c.data.path = os.path.join(assets, "prompts.jsonl")
    c.sampling.max_prompt_len = args.max_prompt_len
    c.sampling.prompt_buckets = (args.max_prompt_len,)
    c.sampling.max_new_tokens = args.new_tokens
    c.sampling.temperature = 1.0
    c.rewards.functions = ((REWARD_REF, 1.0),)
    c.rewards.num_workers = args.r1jax_workers
    c.rl.prompts_per_step = args.prompts
    c.rl.group_size = args.group
    c.rl.loss_type = "grpo"
    c.rl.beta = 0.0
    c.rl.share_prompt = not args.no_share_prompt
    c.model.dtype = args.dtype
    c.rl.eps_low = c.rl.eps_high = 0.2
    c.optim.lr = args.lr
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.lora.rank, c.lora.alpha = args.lora_rank, args.lora_alpha
    c.train.steps = args.warmup + args.steps
    c.train.checkpoint_every = 0
    c.train.progress = False
    c.train.tensorboard = False

    t0 = time.perf_counter()
    trainer = GRPOTrainer(c)
    build_s = time.perf_counter() - t0
    base_params = trainer._sampling_params
    forced = lambda seed, **kw: base_params(seed, ignore_eos=True, **kw)
    trainer._sampling_params = trainer.collector.sampling_params_fn = forced
    steps = []
    try:
        for _ in range(args.warmup + args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            m = trainer.train_step()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            steps.append(
                {
                    "wall": wall,
                    "cpu": cpu,
                    "step": m["time/step"],
                    "sample": m["time/sample"],
                    "score": m["time/score_wait"],
                    "update": m["time/update"],
                    "length": m["completion/length_mean"],
                    "reward": m["reward/mean"],
                }
            )
    finally:
        trainer.close()
        shutil.rmtree(c.run_dir, ignore_errors=True)
    short = [s["length"] for s in steps if s["length"] != args.new_tokens]
    if short:  # the comparison is only fair at the same, forced, completion length
        raise RuntimeError(f"r1jax completions were not forced to {args.new_tokens}: {short}")
    return {
        "framework": "r1jax",
        "build_s": build_s,
        "steps": steps,
        "train_len": args.max_prompt_len + args.new_tokens,
        "devices": jax.device_count(),
        "update_compiles": trainer.update_compiles(),
    }


def run_trl(assets: str, args) -> dict[str, Any]:
    """Runs ``args.warmup + args.steps`` optimizer steps of TRL's ``GRPOTrainer`` on CPU."""
    import datasets
    import torch
    import transformers
    import trl

    from benchmarks.grpo_assets import hf_tokenizer
    from benchmarks.grpo_reward import trl_char_fraction

    world = int(os.environ.get("WORLD_SIZE", "1"))  # > 1 under torchrun (trl_ddp)
    torch.set_num_threads(max(1, args.threads // world))
    timings: dict[str, list[float]] = {"gen_score": [], "generate": [], "score": []}
    lengths: list[float] = []
    train_lens: list[int] = []

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            timings[name].append(time.perf_counter() - t0)
            return out

        return wrapper

    class TimedGRPOTrainer(trl.GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            timings["gen_score"].append(time.perf_counter() - t0)
            mask = out["completion_mask"]
            lengths.append(float(mask.sum(1).float().mean()))
            train_lens.append(int(out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]))
            return out

    TimedGRPOTrainer._generate_single_turn = timed(
        "generate", trl.GRPOTrainer._generate_single_turn
    )
    TimedGRPOTrainer._calculate_rewards = timed("score", trl.GRPOTrainer._calculate_rewards)

    class StepClock(transformers.TrainerCallback):
        def __init__(self):
            self.begin: list[float] = []
            self.end: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, *a, **kw):
            self.begin.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_step_end(self, *a, **kw):
            self.end.append(time.perf_counter())

    rows = [json.loads(line) for line in open(os.path.join(assets, "prompts.jsonl"))]
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    total = args.warmup + args.steps
    config = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_grpo_trl_"),
        per_device_train_batch_size=args.prompts * args.group // world,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.group,
        num_iterations=1,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        adam_beta2=0.99,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=total,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=args.dtype == "bfloat16",
        fp16=False,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(assets, dtype=torch.float32)
    tok = hf_tokenizer(assets)
    clock = StepClock()
    peft_config = None
    if args.lora_rank:  # the same adapters as r1jax's lora.targets
        import peft

        peft_config = peft.LoraConfig(
            r=args.lora_rank,
            lora_alpha=args.lora_alpha,
            lora_dropout=0.0,
            target_modules=[f"{n}_proj" for n in ("q", "k", "v", "o", "gate", "up", "down")],
            task_type="CAUSAL_LM",
        )
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=trl_char_fraction,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[clock],
        peft_config=peft_config,
    )
    build_s = time.perf_counter() - t0
    try:
        trainer.train()
    finally:
        shutil.rmtree(config.output_dir, ignore_errors=True)
    train_end = time.perf_counter()
    clock.cpu.append(time.process_time())
    if len(clock.end) != total or len(timings["gen_score"]) != total:
        raise RuntimeError(
            f"TRL ran {len(clock.end)} steps / {len(timings['gen_score'])} generations, "
            f"expected {total}"
        )
    steps = []
    for i in range(total):
        nxt = clock.begin[i + 1] if i + 1 < total else train_end
        step = clock.end[i] - clock.begin[i]
        steps.append(
            {
                "wall": nxt - clock.begin[i],
                "cpu": clock.cpu[i + 1] - clock.cpu[i],
                "step": step,
                "sample": timings["generate"][i],
                "score": timings["score"][i],
                "gen_score": timings["gen_score"][i],
                "update": step - timings["gen_score"][i],
                "length": lengths[i],
                "train_len": train_lens[i],
            }
        )
    return {
        "framework": "trl",
        "build_s": build_s,
        "steps": steps,
        "train_len": max(train_lens),
        "threads": torch.get_num_threads(),
    }
