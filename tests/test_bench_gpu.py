"""The accelerator benchmark script runs end to end (tiny sizes, CPU), so it is ready for a
session that is lent a GPU (its FLOP formula: tests/test_perf.py)."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_gpu import main  # noqa: E402
from r1jax.model import get_preset  # noqa: E402


def test_smoke_run_reports_every_number_and_each_variant(tmp_path):
    out = tmp_path / "gpu.txt"
    args = ["--smoke", "--sampler_fuse", "on,off", "--remat", "dots,none:1"]
    report = main([*args, "--out", str(out)])
    assert report["copy_gb_per_s"] > 0
    s, u = report["sampler"], report["update"]
    # t(N) - t(1) of a tiny smoke model is timing noise and may be negative: check the
    # numbers are there and finite, not their sign
    assert all(math.isfinite(s[k]) for k in ("decode_tokens_per_s", "roofline_fraction"))
    assert s["end_to_end_tokens_per_s"] > 0
    assert s["bytes_per_step_gb"] > 0 and u["update_s"] > 0
    assert u["xla_tflops_per_update"] > 0 and u["model_tflops_per_update"] > 0
    assert math.isnan(u["mfu"])  # no bf16 peak known for a CPU
    assert out.read_text().startswith("$ PYTHONPATH=. python benchmarks/bench_gpu.py --smoke")
    # variants are reported separately
    assert s["fuse_projections"] is True
    assert report["sampler_fuse_off"]["fuse_projections"] is False
    assert (u["remat"], u["grad_accum"]) == ("dots", 2)
    extra = report["update_remat_none_accum_1"]
    assert (extra["remat"], extra["grad_accum"]) == ("none", 1) and extra["update_s"] > 0


def test_attention_check_runs_and_passes_on_cpu(tmp_path):
    """The device's cuDNN check, run with XLA's attention: every comparison is reported."""
    from benchmarks.check_gpu_attention import main as check

    for model in ("qwen2", "gemma3"):
        out = tmp_path / f"att_{model}.txt"
        assert check(["--impl", "xla", "--model", model, "--out", str(out)]) == 0
        lines = out.read_text().splitlines()
        assert lines[-1] == "PASS" and len(lines) == 9  # header, 7 comparisons, verdict


def test_dense_update_masks_reach_the_attention_and_change_nothing(monkeypatch):
    """``--update_mask dense``: inside ``dense_span_masks`` the library attention receives the
    dense ``[B, T, S]`` array a span stands for, and the GRPO log-probs stay the same."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from benchmarks.bench_gpu import dense_span_masks
    from r1jax.model import create_model, transformer
    from r1jax.rl.step import completion_logprobs

    cfg = get_preset("tiny").replace(attention="xla", dtype="float32")
    graphdef, params = nnx.split(create_model(cfg, seed=0))
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(2, cfg.vocab_size, (4, 12)), jnp.int32)
    tokens = tokens.at[:, :5].set(jnp.repeat(tokens[::2, :5], 2, axis=0))
    mask = np.ones((4, 12), bool)
    mask[:2, :2] = False  # left padding of the first group's prompt
    mask[1, -3:] = False  # right padding of one completion
    mask = jnp.asarray(mask)

    def logp(group):  # a new program each call: the masks are chosen while tracing
        def fn(p):
            return completion_logprobs(graphdef, p, tokens, mask, 5, 4, False, group)[0]

        return jax.jit(fn)(params)

    seen = []
    library = transformer.library_attention
    spy = lambda *a: seen.append(a[4]) or library(*a)  # noqa: E731
    monkeypatch.setattr(transformer, "library_attention", spy)
    spans = {g: logp(g) for g in (2, 1)}
    assert seen and all(not isinstance(m, jax.Array) for m in seen)  # RowSpan as shipped
    seen.clear()
    with dense_span_masks():
        dense = {g: logp(g) for g in (2, 1)}
    assert seen and all(isinstance(m, jax.Array) and m.ndim == 3 for m in seen)
    real = np.asarray(mask[:, 5:])  # padding positions' log-probs are unused (and differ)
    for g in spans:
        np.testing.assert_allclose(dense[g][real], spans[g][real], atol=1e-5)
    assert transformer.library_attention is spy  # restored on leaving
