"""Where one GRPO step's time goes: r1jax's jitted pieces vs their torch counterparts.

Builds the ``bench_grpo.py`` assets, then times each piece of a step in isolation (median of
``--reps`` after warm-up) with wall time, process CPU time and ``cpu/wall`` (how many cores
were busy on average):

- r1jax: ``Sampler.generate`` (prefill + decode + host), ``jit_logprobs`` (forward only) and
  ``update_fn`` (forward + backward + AdamW), with XLA's FLOP count and the number of
  compiled ``update_fn`` variants after ``--reps + 2`` calls (1 = no recompilation);
- torch: ``model.generate``, a no-grad forward with log-softmax gather, and forward +
  backward + clip + AdamW on the same rollout batch.

    PYTHONPATH=. python benchmarks/grpo_profile.py --framework r1jax
    PYTHONPATH=. python benchmarks/grpo_profile.py --framework torch
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(fn: Callable[[], object], reps: int, warmup: int = 2) -> dict[str, float]:
    """Median wall / CPU seconds of ``fn()`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"wall": wall, "cpu": cpu, "cores": cpu / wall}


def fmt(name: str, m: dict[str, float], flops: float | None = None) -> str:
    extra = f"  {flops / 1e9:7.1f} GFLOP -> {flops / m['wall'] / 1e9:5.1f} GFLOP/s" if flops else ""
    return (
        f"  {name:<26} wall {m['wall']:7.3f}s  cpu {m['cpu']:7.3f}s  "
        f"cpu/wall {m['cores']:4.2f}{extra}"
    )


def profile_r1jax(assets: str, args: argparse.Namespace) -> list[str]:
    """Times the r1jax sampler, forward log-probs and update on one rollout batch."""
    import jax

    from benchmarks.grpo_runners import run_r1jax
    from r1jax.rl import trainer as trainer_mod

    holder = {}
    real_close = trainer_mod.GRPOTrainer.close

    def keep(self):  # run_r1jax closes its trainer; keep it alive for the probes below
        holder["t"] = self

    trainer_mod.GRPOTrainer.close = keep
    try:
        run_r1jax(assets, argparse.Namespace(**{**vars(args), "warmup": 0, "steps": 1}))
    finally:
        trainer_mod.GRPOTrainer.close = real_close
    tr = holder["t"]
    records = next(tr.data)
    sp = tr._sampling_params(0)
    texts = [r["text"] for r in records]

    def sample():
        return tr.sampler.generate(tr.params, texts, num_samples=args.group, params=sp)

    roll = tr.collector.collect(tr.params, 1)
    batch = tr._device_batch(roll)
    update_fn, logprob_fn = tr.programs(batch["tokens"].shape[1] - args.new_tokens)

    def logprobs():
        return jax.block_until_ready(logprob_fn(tr.params, batch["tokens"], batch["input_mask"]))

    def update():
        tr.params, tr.opt_state, m = update_fn(tr.params, tr.opt_state, batch)
        return jax.device_get(m)

    def cost(jitted, *xs) -> float:
        c = jitted.lower(*xs).compile().cost_analysis()
        return float((c[0] if isinstance(c, list) else c).get("flops", 0.0))

    lp_flops = cost(logprob_fn, tr.params, batch["tokens"], batch["input_mask"])
    up_flops = cost(update_fn, tr.params, tr.opt_state, batch)
    rows, length = batch["tokens"].shape
    lines = [
        f"r1jax (jax {jax.__version__}, {jax.device_count()} device(s)), batch [{rows}, {length}]",
        fmt("Sampler.generate", measure(sample, args.reps)),
        fmt("jit_logprobs (fwd)", measure(logprobs, args.reps), lp_flops),
        fmt("update_fn (fwd+bwd+adam)", measure(update, args.reps), up_flops),
        f"  update_fn compiled variants after {args.reps + 3} calls: "
        f"{tr.update_compiles()} (1 = never recompiled)",
    ]
    tr.close()
    return lines


def profile_torch(assets: str, args: argparse.Namespace) -> list[str]:
    """Times HF generate, a no-grad log-prob forward and one AdamW update in torch."""
    import torch
    import transformers

    from benchmarks.bench_sampler import hf_generate
    from benchmarks.grpo_assets import hf_tokenizer, prompts

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(assets, dtype=torch.float32)
    tok = hf_tokenizer(assets)
    enc = tok(prompts(args.prompts), return_tensors="pt", padding=True)
    ids = enc["input_ids"].repeat_interleave(args.group, 0)
    mask = enc["attention_mask"].repeat_interleave(args.group, 0)
    n = args.new_tokens

    def generate():
        return hf_generate(model, ids, n, None, attention_mask=mask, pad_token_id=tok.pad_token_id)

    seq = generate()
    full_mask = torch.cat([mask, torch.ones(seq.shape[0], n, dtype=mask.dtype)], 1)
    adv = torch.randn(seq.shape[0], 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0)

    def completion_logp():
        logits = model(input_ids=seq, attention_mask=full_mask, logits_to_keep=n + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        return logp.gather(-1, seq[:, -n:, None]).squeeze(-1)

    def forward():
        with torch.no_grad():
            return completion_logp()

    def update():
        logp = completion_logp()
        ratio = torch.exp(logp - logp.detach())
        loss = -(ratio * adv).mean(1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return [
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), batch "
        f"[{seq.shape[0]}, {seq.shape[1]}]",
        fmt("model.generate", measure(generate, args.reps)),
        fmt("log-prob forward (no grad)", measure(forward, args.reps)),
        fmt("fwd+bwd+clip+AdamW", measure(update, args.reps)),
    ]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, ROOT)
    from benchmarks.bench_grpo import parse_args
    from benchmarks.grpo_assets import build_assets
    from benchmarks.report import emit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", choices=("r1jax", "torch"), required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--append", default="", help="append the output to this file")
    own, rest = ap.parse_known_args(argv)
    args = parse_args(rest)
    args.reps = own.reps
    if own.framework == "r1jax":
        # A `r1jax train` process sets this up before any thread starts; here the torch
        # asset build below runs first and its threads' heaps would defeat it.
        from r1jax.host_memory import keep_freed_memory

        keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="grpo_profile_") as tmp:
        build_assets(tmp, args)
        run = profile_r1jax if own.framework == "r1jax" else profile_torch
        lines = run(tmp, args)
    lines.append(f"  load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    lines.insert(0, f"$ PYTHONPATH=. python benchmarks/grpo_profile.py {cmd}")
    emit(lines, own.append, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
