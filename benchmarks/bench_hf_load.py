"""Load time and peak host memory of ``r1jax.model.hf.load_hf_model`` vs ``transformers``.

Builds (once, cached) a random ~100M-parameter Qwen2-shaped checkpoint with ``transformers``
in three variants: float32 single file, bfloat16 single file, float32 sharded into ~100 MB
files (index path). Every measurement runs in a fresh subprocess that imports its stack,
resets the peak-RSS counter (``/proc/self/clear_refs``), then loads the checkpoint. Reported:

- ``load s``: wall time of the load (+ ``jax.block_until_ready`` on every parameter).
  ``touch s``: ``transformers`` returns zero-copy mmap views whose pages are read lazily, so its
  parameters are then summed once (timed separately) before the peak is read.
- ``cpu s``: CPU time (all threads) of the load, steadier than wall time on a shared machine.
- ``peak-base``: peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss`` after the reset) minus the RSS
  after imports, and that over the model's bytes in its parameter dtype (on CPU the device
  buffers live in host memory, so 1.0 is the floor; 2.0 means a second full copy).
- ``anon`` / ``file``: the peak of the anonymous and file-backed (mmap page cache) parts of
  RSS over baseline, sampled by the parent from ``/proc/PID/status`` every ~2 ms during the
  load (file-backed pages are clean and reclaimable, but count in RSS and cgroup accounting).
- ``after``: RSS over baseline once the load returned (what the loaded model keeps).

Usage (from the repo root):
  .venv/bin/python benchmarks/bench_hf_load.py [--dir DIR] [--reps 3] [--out FILE]
(DIR caches the checkpoints; default /tmp/r1jax_bench_hf_load, ~1 GB.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ~99.5M parameters: embed + untied lm_head 49.2M, 8 layers x 6.29M (GQA 12 q / 4 kv heads).
SHAPE = dict(
    vocab_size=32000,
    hidden_size=768,
    num_hidden_layers=8,
    num_attention_heads=12,
    num_key_value_heads=4,
    intermediate_size=2048,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
VARIANTS = {  # name -> (param dtype to load into, save dtype, max_shard_size)
    "f32": ("float32", "float32", "5GB"),
    "bf16": ("bfloat16", "bfloat16", "5GB"),
    "f32-sharded": ("float32", "float32", "100MB"),
}
# (loader, variant, devices): the 8-device runs use mesh (data, fsdp, tensor) = (1, 8, 1).
RUNS = [
    ("r1jax", "f32", 1),
    ("transformers", "f32", 1),
    ("r1jax", "bf16", 1),
    ("transformers", "bf16", 1),
    ("r1jax", "f32-sharded", 1),
    ("transformers", "f32-sharded", 1),
    ("r1jax", "f32", 8),
    ("r1jax", "bf16", 8),
    ("r1jax", "f32-sharded", 8),
]
MB = 1e6


# ----------------------------------------------------------------------------- build


def build(root: str) -> dict[str, Any]:
    """Saves the random checkpoint variants under ``root/<variant>`` (skips if cached)."""
    stamp = os.path.join(root, "built.json")
    want = {"shape": SHAPE, "variants": VARIANTS}
    if os.path.exists(stamp):
        with open(stamp) as f:
            info = json.load(f)
        if {k: info.get(k) for k in want} == json.loads(json.dumps(want)):
            return info
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPE)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    for name, (_, save_dtype, shard) in VARIANTS.items():
        model.to(getattr(torch, save_dtype))
        model.save_pretrained(os.path.join(root, name), max_shard_size=shard)
    info = dict(want, n_params=n_params)
    with open(stamp, "w") as f:
        json.dump(info, f)
    return info


def disk_bytes(path: str) -> int:
    """Bytes of the ``.safetensors`` files in ``path``."""
    return sum(
        os.path.getsize(os.path.join(path, f))
        for f in os.listdir(path)
        if f.endswith(".safetensors")
    )


# ----------------------------------------------------------------------------- worker


def _status(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS``/``VmHWM``/``RssAnon``/``RssFile`` of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


def worker(loader: str, path: str, dtype: str, devices: int) -> None:
    """Runs one measurement in this (fresh) process; prints BEGIN, END, then a JSON line."""
    import resource

    t0 = time.perf_counter()
    if loader == "r1jax":
        import jax
        from flax import nnx

        from r1jax import sharding as shd
        from r1jax.model.hf import load_hf_model

        assert len(jax.devices()) == devices, (jax.devices(), devices)
    else:
        import torch
        import transformers
    import_s = time.perf_counter() - t0
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak-RSS high-water mark that ru_maxrss reports
    base = _status()
    print("BEGIN", flush=True)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if loader == "r1jax":
        mesh = shd.make_mesh((1, devices, 1)) if devices > 1 else None
        model = load_hf_model(path, mesh=mesh, param_dtype=dtype, dtype=dtype)
        leaves = [x for x in jax.tree.leaves(nnx.state(model)) if isinstance(x, jax.Array)]
        jax.block_until_ready(leaves)
        load_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        model_bytes = sum(x.nbytes for x in leaves)
        buffer_bytes = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
        touch_s = 0.0  # block_until_ready above: the buffers are already materialised
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        load_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        # transformers returns zero-copy mmap views whose pages are only read on first use:
        # touch every parameter so the peak counts the whole model being resident.
        t1 = time.perf_counter()
        with torch.no_grad():
            for p in model.parameters():
                p.sum()
        touch_s = time.perf_counter() - t1
        model_bytes = buffer_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print("END", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gc.collect()
    after = _status()
    result = dict(
        import_s=import_s,
        load_s=load_s,
        touch_s=touch_s,
        cpu_s=cpu_s,
        base_rss=base["VmRSS"],
        peak_over_base=peak - base["VmRSS"],
        after_over_base=after["VmRSS"] - base["VmRSS"],
        after_file_over_base=after["RssFile"] - base["RssFile"],
        model_bytes=model_bytes,
        buffer_bytes=buffer_bytes,
        base_anon=base["RssAnon"],
        base_file=base["RssFile"],
    )
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver


def measure(loader: str, path: str, dtype: str, devices: int) -> dict[str, Any]:
    """Runs :func:`worker` in a fresh subprocess, sampling its RSS split during the load."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", loader, path, dtype, str(devices)]
    err_file = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: no deadlock on warnings
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
    phase = {"loading": False, "done": False, "result": None}

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("BEGIN"):
                phase["loading"] = True
            elif line.startswith("END"):
                phase["loading"] = False
                phase["done"] = True
            elif line.startswith("RESULT "):
                phase["result"] = json.loads(line[7:])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak_anon = peak_file = 0
    while proc.poll() is None and not phase["done"]:
        if phase["loading"]:
            try:
                s = _status(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            peak_anon = max(peak_anon, s["RssAnon"])
            peak_file = max(peak_file, s["RssFile"])
        time.sleep(0.002)
    proc.wait()
    reader.join()
    err_file.seek(0)
    err = err_file.read()
    err_file.close()
    if proc.returncode != 0 or phase["result"] is None:
        raise RuntimeError(f"worker {loader} {path} devices={devices} failed:\n{err[-3000:]}")
    res = phase["result"]
    res["peak_anon_over_base"] = peak_anon - res["base_anon"]
    res["peak_file_over_base"] = peak_file - res["base_file"]
    return res


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Formats the median rows as a fixed-width table."""
    head = [
        "variant",
        "loader",
        "dev",
        "disk MB",
        "model MB",
        "buffers MB",
        "load s",
        "touch s",
        "cpu s",
        "vs HF",
        "cpu vs HF",
        "peak-base MB",
        "peak/model",
        "anon MB",
        "file MB",
        "after MB",
        "import s",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r["variant"],
                r["loader"],
                str(r["devices"]),
                f"{r['disk'] / MB:.0f}",
                f"{r['model_bytes'] / MB:.0f}",
                f"{r['buffer_bytes'] / MB:.0f}",
                f"{r['load_s']:.2f}",
                f"{r['touch_s']:.2f}",
                f"{r['cpu_s']:.2f}",
                r["vs_hf"],
                r["cpu_vs_hf"],
                f"{r['peak_over_base'] / MB:.0f}",
                f"{r['peak_over_base'] / r['model_bytes']:.2f}",
                f"{r['peak_anon_over_base'] / MB:.0f}",
                f"{r['peak_file_over_base'] / MB:.0f}",
                f"{r['after_over_base'] / MB:.0f}",
                f"{r['import_s']:.1f}",
            ]
        )
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join([_row(head, widths), *(_row(b, widths) for b in body)])


def main() -> None:
    """Parses flags, builds the checkpoints, runs every measurement and writes the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join("/tmp", "r1jax_bench_hf_load"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "hf_load.txt"))
    ap.add_argument("--worker", nargs=4, metavar=("LOADER", "PATH", "DTYPE", "DEVICES"))
    ap.add_argument("--build", action="store_true", help="only build the checkpoints")
    args = ap.parse_args()
    if args.build:
        os.makedirs(args.dir, exist_ok=True)
        print(json.dumps(build(args.dir)))
        return
    if args.worker:
        loader, path, dtype, devices = args.worker
        worker(loader, path, dtype, int(devices))
        return
    if args.reps < 1:
        raise SystemExit(f"--reps={args.reps} must be >= 1")
    command = "cd " + ROOT + " && " + shlex.join([sys.executable, *sys.argv])
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    build_cmd = [sys.executable, os.path.abspath(__file__), "--build", "--dir", args.dir]
    out = subprocess.run(build_cmd, check=True, capture_output=True, text=True).stdout
    info = json.loads(out.splitlines()[-1])
    print(
        f"checkpoints in {args.dir} ({info['n_params'] / 1e6:.1f}M params), "
        f"ready after {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    for name in VARIANTS:  # warm the page cache equally for every loader
        for f in sorted(os.listdir(os.path.join(args.dir, name))):
            with open(os.path.join(args.dir, name, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass
    samples: dict[tuple, list[dict[str, Any]]] = {run: [] for run in RUNS}
    for rep in range(args.reps):  # interleave reps so drift hits every configuration alike
        for loader, variant, devices in RUNS:
            path = os.path.join(args.dir, variant)
            res = measure(loader, path, VARIANTS[variant][0], devices)
            samples[(loader, variant, devices)].append(res)
            print(
                f"rep {rep} {variant:12s} {loader:12s} dev={devices} "
                f"load {res['load_s']:.2f}s peak-base {res['peak_over_base'] / MB:.0f} MB",
                flush=True,
            )
    rows = []
    for (loader, variant, devices), runs in samples.items():
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        row.update(
            loader=loader,
            variant=variant,
            devices=devices,
            disk=disk_bytes(os.path.join(args.dir, variant)),
            load_all=[r["load_s"] for r in runs],
            cpu_all=[r["cpu_s"] for r in runs],
        )
        rows.append(row)
    hf = {r["variant"]: r["load_s"] for r in rows if r["loader"] == "transformers"}
    hf_cpu = {r["variant"]: r["cpu_s"] for r in rows if r["loader"] == "transformers"}
    for r in rows:
        r["vs_hf"] = f"{r['load_s'] / hf[r['variant']]:.2f}x" if r["variant"] in hf else "-"
        r["cpu_vs_hf"] = f"{r['cpu_s'] / hf_cpu[r['variant']]:.2f}x" if r["variant"] in hf else "-"
    import platform

    text = "\n".join(
        [
            "# r1jax load_hf_model vs transformers from_pretrained: load time and host memory",
            f"# command: {command}",
            f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end, python "
            f"{platform.python_version()}; checkpoint {info['n_params'] / 1e6:.2f}M params "
            f"Qwen2 {json.dumps(SHAPE)}",
            f"# medians of {args.reps} fresh-subprocess runs each (page cache warm). "
            "vs HF = load time / transformers' 1-device load of the same files, same machine, "
            "same run.",
            "# peak-base: ru_maxrss (after /proc/self/clear_refs reset) - RSS after imports; "
            "peak/model = that / model bytes in param dtype (1.0 = floor on CPU).",
            "# anon/file: peak anonymous / file-backed (mmap) RSS over baseline sampled every "
            "~2 ms; after: RSS over baseline once loaded. buffers = bytes of all device "
            "shards (replicated params count once per device).",
            "",
            table(rows),
            "",
            "# load s / cpu s of every rep: "
            + "; ".join(
                f"{r['variant']}/{r['loader']}/{r['devices']}: "
                + ",".join(f"{x:.2f}" for x in r["load_all"])
                + " / "
                + ",".join(f"{x:.2f}" for x in r["cpu_all"])
                for r in rows
            ),
        ]
    )
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
