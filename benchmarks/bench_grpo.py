"""One GRPO step: r1jax ``GRPOTrainer.train_step`` vs TRL ``GRPOTrainer`` on CPU, fp32.

Both trainers read the same HF directory (a random Qwen2 built with ``transformers`` and a
byte-level BPE ``tokenizer.json`` trained here), the same prompts, and the same reward (the
fraction of ``e`` characters, :mod:`benchmarks.grpo_reward`). Same algorithm: ``prompts`` x
``G`` rollouts per step sampled at temperature 1 without truncation, exactly ``new_tokens``
tokens each (TRL: ``min_new_tokens``; r1jax: ``ignore_eos``), group-normalised advantages,
``grpo`` loss, beta 0, clip 0.2, one AdamW update per batch (no gradient accumulation, no
old-logprob pass), constant lr, grad clip 1. r1jax scores rewards with ``--r1jax_workers``
pool workers (0: in the main process, as TRL does).

r1jax runs data parallel over ``--r1jax_devices`` CPU devices (``mesh.cpu_devices``; default
one per core, as the CPU recipe does). TRL runs twice: ``trl``, its default single process
with ``--threads`` torch threads, and ``trl_ddp``, data parallel over
``--trl_ddp_processes`` processes under torchrun (gloo), the threads split between them.

Each framework runs in its own fresh subprocess, one after the other, alternating for
``--rounds`` rounds; the first ``--warmup`` steps of each run are dropped (r1jax compiles in
its first step, reported separately) and medians over all kept steps are reported. The
warm-up is 10 steps: with ``mesh.cpu_keep_memory`` r1jax's heap grows to its working size
over its first steps (a few 228 MB growths, each a step ~0.5 s slower while the new pages
fault in; none seen after step 16 in 60), and the report is about the steady state.

    PYTHONPATH=. python benchmarks/bench_grpo.py --out benchmarks/results/grpo_cpu.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python benchmarks/bench_grpo.py`
    sys.path.insert(0, ROOT)
from benchmarks.tiny_qwen2 import add_model_args  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="G completions per prompt")
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--max_prompt_len", type=int, default=32, help="r1jax prompt bucket")
    ap.add_argument("--warmup", type=int, default=10, help="steps dropped per run")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per framework")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for TRL")
    ap.add_argument(
        "--trl_ddp_processes",
        type=int,
        default=2,
        help="framework trl_ddp: TRL data parallel over this many processes (torchrun, gloo; "
        "--threads split between them)",
    )
    ap.add_argument("--r1jax_workers", type=int, default=0, help="r1jax reward pool workers")
    ap.add_argument(
        "--r1jax_devices",
        type=int,
        default=-1,
        help="r1jax mesh.cpu_devices: XLA CPU devices, data parallel (-1 = one per core, as "
        "in configs/r1_zero_countdown_cpu.py; 0 = JAX's default single device)",
    )
    ap.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (fp32 master weights in both: r1jax model.dtype, TRL bf16=True)",
    )
    ap.add_argument(
        "--no_share_prompt",
        action="store_true",
        help="r1jax: run the prompt once per row in the update (rl.share_prompt=False)",
    )
    ap.add_argument(
        "--r1jax_xla_flags", default="", help="extra XLA_FLAGS for the r1jax runs (experiments)"
    )
    ap.add_argument(
        "--trl_env",
        default="",
        help="extra NAME=VALUE environment (space separated) for the TRL runs (experiments, "
        "e.g. the malloc settings r1jax's mesh.cpu_keep_memory makes, as MALLOC_* variables)",
    )
    ap.add_argument(
        "--lora_rank",
        type=int,
        default=0,
        help="> 0: both train LoRA adapters of this rank on q/k/v/o/gate/up/down (r1jax "
        "lora.rank, TRL peft_config); 0: full fine-tuning",
    )
    ap.add_argument("--lora_alpha", type=float, default=32.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    add_model_args(ap)
    ap.add_argument("--num_prompts", type=int, default=256, help="prompts in the data set")
    ap.add_argument(
        "--frameworks",
        default="r1jax,trl,trl_ddp",
        help="which to run, in this order (reversed every other round): r1jax, trl, trl_ddp",
    )
    ap.add_argument("--out", default="", help="write the report to this file")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: run one
    ap.add_argument("--assets", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def worker(args: argparse.Namespace) -> int:
    """Subprocess entry: one timed run of ``args.worker``, JSON written to ``args.result``."""
    from benchmarks.grpo_runners import run_r1jax, run_trl

    run = {"r1jax": run_r1jax, "trl": run_trl, "trl_ddp": run_trl}[args.worker]
    out = run(args.assets, args)
    rank = int(os.environ.get("RANK", "0"))
    with open(args.result if rank == 0 else f"{args.result}.rank{rank}", "w") as f:
        json.dump(out, f)
    return 0


def spawn(framework: str, args, assets: str, argv: list[str], tmp: str, i: int) -> dict[str, Any]:
    """Runs one framework in a fresh interpreter (r1jax's CPU devices: ``--r1jax_devices``)."""
    result = os.path.join(tmp, f"{framework}_{i}.json")
    env = dict(os.environ, PYTHONPATH=ROOT, TOKENIZERS_PARALLELISM="false")
    env.pop("XLA_FLAGS", None)
    if framework == "r1jax" and args.r1jax_xla_flags:
        env["XLA_FLAGS"] = args.r1jax_xla_flags
    if framework != "r1jax" and args.trl_env:
        env.update(item.split("=", 1) for item in args.trl_env.split())
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    procs = args.trl_ddp_processes if framework == "trl_ddp" else 1
    if procs > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd = [sys.executable, *launcher, *cmd[1:]]
    cmd += ["--worker", framework, "--assets", assets, "--result", result]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"{framework} run {i} failed with exit code {proc.returncode}")
    with open(result) as f:
        out = json.load(f)
    for rank in range(1, procs):  # CPU seconds of a step: all processes together
        with open(f"{result}.rank{rank}") as f:
            other = json.load(f)
        for step, o in zip(out["steps"], other["steps"], strict=True):
            step["cpu"] += o["cpu"]
    out["process_s"] = time.perf_counter() - t0
    print(
        f"  {framework} run {i}: process {out['process_s']:.1f}s, step times "
        + " ".join(f"{s['wall']:.2f}" for s in out["steps"]),
        flush=True,
    )
    return out


def median(runs: list[dict], key: str, warmup: int) -> float:
    return statistics.median(s[key] for r in runs for s in r["steps"][warmup:])


def report(args, argv, facts, runs: dict[str, list[dict]], load: list[str]) -> str:
    """The results table as text."""
    import jax
    import torch
    import transformers
    import trl

    w, rows = args.warmup, args.prompts * args.group
    tokens = rows * args.new_tokens
    keys = ("wall", "cpu", "step", "sample", "score", "update")
    med = {fw: {k: median(rs, k, w) for k in keys} for fw, rs in runs.items()}
    for fw, rs in runs.items():
        med[fw]["length"] = median(rs, "length", w)
        med[fw]["train_len"] = max(r["train_len"] for r in rs)
        med[fw]["build"] = statistics.median(r["build_s"] for r in rs)
        med[fw]["first"] = statistics.median(r["steps"][0]["wall"] for r in rs)
        med[fw]["process"] = statistics.median(r["process_s"] for r in rs)
    names = ["cycle s", "cpu s", "step s", "sample s", "score s", "update s", "gen tok/s"]
    names += ["step tok/s", "len", "train T", "1st step s", "init s"]

    def row(label: str, cells: list[str]) -> str:
        padded = [f"{c:>{len(n)}}" for c, n in zip(cells, names, strict=False)]
        return " | ".join([f"{label:>15}", *padded])

    n_dev = max((r["devices"] for r in runs.get("r1jax", [])), default=None)
    devices = {
        None: "not run",
        1: "1 CPU device (XLA uses all usable cores)",
    }.get(n_dev, f"{n_dev} CPU devices, data parallel (the devices share the cores)")
    trl_procs = f"torch threads={args.threads}"
    if "trl_ddp" in runs:  # the threads each process actually ran with, as it recorded them
        threads = runs["trl_ddp"][0]["threads"]
        trl_procs += (
            f"; trl_ddp: TRL data parallel over {args.trl_ddp_processes} processes (torchrun, "
            f"gloo) of {threads} torch thread(s) each, timed on rank 0, cpu s summed over the "
            "processes"
        )
    header = row("", names)
    lines = [
        f"GRPO step: r1jax GRPOTrainer.train_step vs TRL GRPOTrainer, CPU, {args.dtype} compute",
        f"model: random Qwen2 vocab={facts['vocab']} hidden={args.hidden} layers={args.layers} "
        f"heads={args.heads} kv_heads={args.kv_heads} intermediate={args.intermediate} tied "
        f"embeddings ({facts['params_m']:.2f}M params); byte-level BPE tokenizer.json",
        f"step: {args.prompts} prompts x G={args.group} = {rows} rollouts of {args.new_tokens} "
        f"new tokens (forced full length), temperature 1, grpo loss, beta 0, eps 0.2, 1 AdamW "
        f"update/step, lr {args.lr}, reward = fraction of 'e' (python)",
        f"trained: LoRA adapters rank {args.lora_rank}, alpha {args.lora_alpha:g}, on q/k/v/o/"
        "gate/up/down (r1jax lora.*, TRL peft_config; base frozen)"
        if args.lora_rank
        else "trained: every weight",
        f"prompts: {facts['prompt_tokens_min']}-{facts['prompt_tokens_max']} tokens (mean "
        f"{facts['prompt_tokens_mean']:.1f}); r1jax pads to a fixed {args.max_prompt_len}, TRL "
        "to the longest prompt of the batch",
        f"timing: {args.rounds} alternating fresh-process runs per framework, {args.warmup} "
        f"warm-up + {args.steps} timed steps each; medians over the {args.rounds * args.steps} "
        "timed steps",
        f"r1jax: {devices} (mesh.cpu_devices={args.r1jax_devices}), reward workers="
        f"{args.r1jax_workers} ({'in-process' if args.r1jax_workers == 0 else 'process pool'}); "
        f"TRL: {trl_procs}, no vLLM, rewards in-process",
        f"machine: {platform.machine()}, usable cpus={len(os.sched_getaffinity(0))} of "
        f"{os.cpu_count()}, load average before/after: {load[0]} / {load[1]}",
        f"versions: jax {jax.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, trl {trl.__version__}, python {sys.version.split()[0]}",
        f"command: PYTHONPATH=. python benchmarks/bench_grpo.py {' '.join(argv)}",
        "",
        "step = on_step_begin->on_step_end (TRL) / time/step (r1jax); cycle = one whole loop "
        "iteration incl. logging (TRL: begin->next begin; r1jax: the train_step() call); cpu = "
        "process CPU seconds (all threads) of one cycle, less sensitive to other load",
        "sample = TRL _generate_single_turn (tokenize prompts excluded) / r1jax time/sample; "
        "score = reward call (TRL _calculate_rewards) / r1jax time/score_wait; update = "
        "step - generate&score (TRL) / r1jax time/update",
        "",
        header,
    ]
    for fw in runs:
        m = med[fw]
        lines.append(
            row(
                fw,
                [
                    f"{m['wall']:.3f}",
                    f"{m['cpu']:.2f}",
                    f"{m['step']:.3f}",
                    f"{m['sample']:.3f}",
                    f"{m['score']:.4f}",
                    f"{m['update']:.3f}",
                    f"{tokens / m['sample']:.0f}",
                    f"{tokens / m['step']:.0f}",
                    f"{m['length']:.1f}",
                    f"{m['train_len']}",
                    f"{m['first']:.2f}",
                    f"{m['build']:.2f}",
                ],
            )
        )
    for fw in (f for f in runs if f != "r1jax" and "r1jax" in runs):
        a, b = med[fw], med["r1jax"]
        ratio = [f"{a[k] / b[k]:.2f}x" for k in ("wall", "cpu", "step", "sample")]
        lines.append(row(f"{fw} / r1jax", [*ratio, "", f"{a['update'] / b['update']:.2f}x"]))
    lines += ["", "warm-up steps (s, cycle; r1jax compiles in the first):"]
    for fw, rs in runs.items():
        for i, r in enumerate(rs):
            warm = " ".join(f"{s['wall']:.2f}" for s in r["steps"][:w])
            extra = ""
            if "update_compiles" in r:
                extra = f"   (update_fn compiled {r['update_compiles']}x in this run)"
            lines.append(f"  {fw} run {i}: {warm}{extra}")
    lines += ["", "every timed step (s, cycle: sample / update):"]
    for fw, rs in runs.items():
        for i, r in enumerate(rs):
            lines.append(
                f"  {fw} run {i}: "
                + "  ".join(
                    f"{s['wall']:.2f}: {s['sample']:.2f}/{s['update']:.2f}" for s in r["steps"][w:]
                )
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    sys.path.insert(0, ROOT)
    from benchmarks.grpo_assets import build_assets

    frameworks = args.frameworks.split(",")
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        assets = os.path.join(tmp, "hf")
        facts = build_assets(assets, args)
        print(f"assets in {assets}: {json.dumps(facts)}", flush=True)
        runs: dict[str, list[dict]] = {fw: [] for fw in frameworks}
        for i in range(args.rounds):
            for fw in frameworks if i % 2 == 0 else frameworks[::-1]:
                runs[fw].append(spawn(fw, args, assets, argv, tmp, i))
    load_after = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(args, argv, facts, runs, [load_before, load_after])
    print("\n" + text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
