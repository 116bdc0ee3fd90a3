"""The jitted GRPO update: sharding invariance, compile-once, accumulation, NaN guard,
shared prompt forward passes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from r1jax import sharding as shd
from r1jax.model import create_model, get_preset
from r1jax.optim import consecutive_nonfinite, init_opt_state, make_optimizer, total_nonfinite
from r1jax.rl.losses import LossConfig
from r1jax.rl.step import StepConfig, jit_logprobs, jit_update, make_update_fn

P, N, R = 6, 5, 16
CFG = get_preset("tiny").replace(num_heads=8, num_kv_heads=8, head_dim=8, intermediate_size=128)


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, CFG.vocab_size, (R, P + N)).astype(np.int32)
    input_mask = np.ones((R, P + N), bool)
    for i in range(R):
        input_mask[i, : i % 3] = False  # left padding of prompts
        input_mask[i, P + N - i % 4 :] = False  # right padding of completions
    loss_mask = input_mask[:, P:].astype(np.float32)
    adv = rng.randn(R).astype(np.float32)
    return {"tokens": tokens, "input_mask": input_mask, "loss_mask": loss_mask, "advantages": adv}


def _setup(mesh, step_cfg, lr=1e-2, adam=True, extra_keys=(), model_cfg=CFG):
    model = create_model(model_cfg, mesh, seed=1)
    graphdef, params = nnx.split(model)
    ps = shd.state_shardings(params, mesh)
    # Plain SGD for invariance checks: Adam's g/sqrt(v) turns float noise in near-zero
    # gradients into full-size steps, which would hide what is compared.
    opt = make_optimizer(lr, total_steps=10) if adam else optax.sgd(lr)
    opt_state = init_opt_state(opt, params, mesh)
    os_ = jax.tree.map(lambda x: x.sharding, opt_state)
    keys = ["tokens", "input_mask", "loss_mask", "advantages"]
    if not step_cfg.on_policy:
        keys.append("old_logp")
    keys += list(extra_keys)
    bs = {k: shd.batch_sharding(mesh, 1 if k == "advantages" else 2) for k in keys}
    update = jit_update(make_update_fn(graphdef, step_cfg, opt), ps, os_, bs)
    logprob = jit_logprobs(graphdef, step_cfg, ps, shd.batch_sharding(mesh, 2))
    return params, opt_state, update, logprob, bs


def _run(mesh, step_cfg, steps=2, adam=False):
    params, opt_state, update, logprob, bs = _setup(mesh, step_cfg, lr=0.5, adam=adam)
    metrics = None
    for s in range(steps):
        batch = {k: jax.device_put(v, bs[k]) for k, v in _batch(s).items()}
        if not step_cfg.on_policy:
            batch["old_logp"] = logprob(params, batch["tokens"], batch["input_mask"])
        params, opt_state, metrics = update(params, opt_state, batch)
    return params, opt_state, metrics, update


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


ON_POLICY = StepConfig(loss=LossConfig("grpo"), prompt_len=P)
MU2 = StepConfig(
    loss=LossConfig("token", eps_low=0.2, eps_high=0.28),
    prompt_len=P,
    num_iterations=2,
    num_minibatches=2,
)


@pytest.mark.parametrize("step_cfg", [ON_POLICY, MU2], ids=["on_policy", "mu2_minibatch2"])
@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharding_changes_nothing(shape, step_cfg):
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    ref, _, ref_m, _ = _run(single, step_cfg)
    out, _, m, _ = _run(shd.make_mesh(shape), step_cfg)
    # MU2 clips: a token whose ratio sits at a clip edge can flip sides on float noise of
    # the reduction order, which moves its weights by lr * its gradient (measured up to
    # 2.6e-5 at lr 0.5); the on-policy update has no such edge (measured 7e-8).
    atol = 1e-5 if step_cfg.on_policy else 5e-5
    for a, b in zip(_leaves(out), _leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-4, atol=1e-6)
    init = _leaves(nnx.split(create_model(CFG, seed=1))[1])
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(_leaves(out), init, strict=True))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 2)])
def test_compiles_once(shape):
    devices = jax.devices()[: int(np.prod(shape))]
    _, _, _, update = _run(shd.make_mesh(shape, devices=devices), MU2, steps=3, adam=True)
    assert update._cache_size() == 1


@pytest.mark.parametrize("loss_type", ["grpo", "token", "dr_grpo", "gspo"])
def test_grad_accumulation_matches_full_batch(loss_type):
    """Micro-batches with very different token counts (the first rows keep one token): the
    accumulated update equals the full-batch one for every loss, the token loss included (its
    micro-batch gradients are weighted by their tokens), and so do the loss and token count."""
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    batch = _batch(0)
    batch["loss_mask"][:4] = 0
    batch["loss_mask"][:4, 0] = 1
    out = {}
    for accum in (1, 4):
        cfg = StepConfig(loss=LossConfig(loss_type, max_completion_len=N), prompt_len=P,
                         grad_accum=accum)  # fmt: skip
        params, opt_state, update, _, bs = _setup(single, cfg, lr=0.5, adam=False)
        placed = {k: jax.device_put(v, bs[k]) for k, v in batch.items()}
        params, _, metrics = update(params, opt_state, placed)
        out[accum] = (_leaves(params), metrics)
    (full, fm), (acc, am) = out[1], out[4]
    for a, b in zip(acc, full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(am["loss"]), float(fm["loss"]), rtol=1e-5, atol=1e-7)
    assert float(am["num_tokens"]) == float(fm["num_tokens"]) == batch["loss_mask"].sum()
    assert float(am["ratio_max"]) == pytest.approx(float(fm["ratio_max"]))


def test_bfloat16_params_update_with_grad_accumulation():
    """model.param_dtype=bfloat16, 2 micro-batches: the update compiles (the scan's carry was
    bf16 and its sum float32), keeps the params bfloat16, and moves them as the float32
    model's update moves the same weights (the same direction, to bf16 rounding)."""
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P, grad_accum=2)
    start, moved = None, {}

    def flat(tree):
        return np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(tree)])

    for dtype in ("float32", "bfloat16"):
        model_cfg = CFG.replace(param_dtype=dtype)
        params, opt_state, update, _, bs = _setup(single, cfg, 0.5, False, model_cfg=model_cfg)
        if start is None:  # a host copy: the update donates its params
            start = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
        params = jax.tree.map(lambda p, s: jax.device_put(s.astype(p.dtype), p.sharding),
                              params, start)  # the same weights  # fmt: skip
        placed = {k: jax.device_put(v, bs[k]) for k, v in _batch(0).items()}
        before = flat(params)
        new, _, _ = update(params, opt_state, placed)
        assert {x.dtype.name for x in jax.tree.leaves(new)} == {dtype}
        moved[dtype] = flat(new) - before
    a, b = moved["bfloat16"], moved["float32"]
    assert np.all(np.isfinite(a)) and np.linalg.norm(a) > 0
    assert float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.95


def test_mu2_first_pass_is_on_policy():
    """With old_logp from the same params, the first minibatch sees ratio 1 (no clipping)."""
    mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P, num_iterations=1, num_minibatches=1)
    params, opt_state, update, logprob, bs = _setup(
        mesh, StepConfig(loss=cfg.loss, prompt_len=P, num_iterations=2)
    )
    batch = {k: jax.device_put(v, bs[k]) for k, v in _batch().items()}
    batch["old_logp"] = logprob(params, batch["tokens"], batch["input_mask"])
    _, _, m = update(params, opt_state, batch)
    assert float(m["ratio_max"]) > 1.0  # second pass moved the policy ...
    assert float(m["clip_frac"]) >= 0.0


def test_nonfinite_step_is_skipped_and_counted():
    mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    params, opt_state, update, _, bs = _setup(mesh, ON_POLICY)
    before = _leaves(params)
    for _ in range(2):
        batch = _batch()
        batch["advantages"][0] = np.nan
        batch = {k: jax.device_put(v, bs[k]) for k, v in batch.items()}
        params, opt_state, _ = update(params, opt_state, batch)
    for a, b in zip(_leaves(params), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert consecutive_nonfinite(opt_state) == 2 and total_nonfinite(opt_state) == 2
    batch = {k: jax.device_put(v, bs[k]) for k, v in _batch().items()}
    params, opt_state, _ = update(params, opt_state, batch)
    assert consecutive_nonfinite(opt_state) == 0 and total_nonfinite(opt_state) == 2


GEMMA2 = get_preset("tiny-gemma2").replace(
    num_heads=8, num_kv_heads=8, head_dim=8, final_softcap=2.0
)  # soft-capped logits (a cap of 2 changes them), sliding windows of 4 keys


@pytest.mark.parametrize("model_cfg", [CFG, GEMMA2], ids=["qwen2", "gemma2"])
def test_logprobs_match_full_forward(model_cfg):
    """Completion log-probs equal log_softmax of the plain forward pass (a Gemma 2 model's
    soft-capped logits too: the update's chunked head caps them as the model does)."""
    from r1jax.model import causal_mask, positions_from_mask

    mesh = shd.make_mesh((2, 2, 2))
    params, _, _, logprob, _ = _setup(mesh, ON_POLICY, model_cfg=model_cfg)
    b = _batch()
    lp = np.asarray(logprob(params, jnp.asarray(b["tokens"]), jnp.asarray(b["input_mask"])))
    mask = jnp.asarray(b["input_mask"])
    logits = nnx.jit(lambda m, t: m(t, positions_from_mask(mask), causal_mask(mask))[0])(
        create_model(model_cfg, seed=1), jnp.asarray(b["tokens"])
    )
    full = np.asarray(jax.nn.log_softmax(logits, -1))
    ref = np.take_along_axis(full[:, P - 1 : -1], b["tokens"][:, P:, None], -1)[..., 0]
    valid = b["loss_mask"] > 0
    np.testing.assert_allclose(lp[valid], ref[valid], rtol=1e-5, atol=1e-5)


G = 4  # rows per prompt in the shared-prompt tests


def _grouped_batch(seed=0):
    """``_batch`` with the prompt part (tokens and padding) equal within each group of G."""
    b = _batch(seed)
    for name in ("tokens", "input_mask"):
        prompts = b[name][::G, :P]
        b[name][:, :P] = np.repeat(prompts, G, axis=0)
    return b


def test_deal_keeps_blocks_and_undeal_inverts():
    from r1jax.sharding import deal_rows as _deal
    from r1jax.sharding import undeal_rows as _undeal

    x = jnp.arange(24)
    d = _deal(x, 3, block=2)
    assert d.shape == (3, 8)
    np.testing.assert_array_equal(d[1], [2, 3, 8, 9, 14, 15, 20, 21])  # blocks 1, 4, 7, 10
    np.testing.assert_array_equal(_undeal(d, 2), x)
    np.testing.assert_array_equal(_deal(x, 4)[1], [1, 5, 9, 13, 17, 21])  # rows round-robin


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 2)])
def test_shared_prompt_logprobs_and_grads_equal_per_row_forward(shape):
    """One prompt pass per group gives the per-row forward's log-probs and gradients."""
    from r1jax.rl.step import completion_logprobs

    devices = jax.devices()[: int(np.prod(shape))]
    mesh = shd.make_mesh(shape, devices=devices)
    graphdef, params = nnx.split(create_model(CFG, mesh, seed=1))
    b = _grouped_batch(3)
    weights = jnp.asarray(np.random.RandomState(0).randn(R, N).astype(np.float32))

    def f(p, group_size):
        lp, ent = completion_logprobs(
            graphdef, p, b["tokens"], b["input_mask"], P, 3, True, group_size
        )
        valid = b["loss_mask"]
        return jnp.sum(lp * weights * valid) + jnp.sum(ent * valid), (lp, ent)

    outs = {
        g: jax.jit(jax.value_and_grad(f, has_aux=True), static_argnums=1)(params, g) for g in (1, G)
    }
    (v1, (lp1, ent1)), g1 = outs[1]
    (vg, (lpg, entg)), gg = outs[G]
    valid = b["loss_mask"] > 0
    np.testing.assert_allclose(np.asarray(lpg)[valid], np.asarray(lp1)[valid], atol=1e-5)
    np.testing.assert_allclose(np.asarray(entg)[valid], np.asarray(ent1)[valid], atol=1e-5)
    np.testing.assert_allclose(float(vg), float(v1), rtol=1e-5)
    for a, c in zip(_leaves(gg), _leaves(g1), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)
    assert max(np.abs(a).max() for a in _leaves(g1)) > 1e-2  # the gradients are not trivial


def test_shared_prompt_forward_differs_when_prompts_differ():
    """Guard for the test above: rows of a group with different prompts do change the result
    (so equality there is not vacuous)."""
    from r1jax.rl.step import completion_logprobs

    graphdef, params = nnx.split(create_model(CFG, seed=1))
    b = _batch(3)  # prompts differ within groups
    logprobs = jax.jit(
        lambda p, group: completion_logprobs(
            graphdef, p, b["tokens"], b["input_mask"], P, 3, False, group
        )[0],
        static_argnums=1,
    )
    lp1, lpg = logprobs(params, 1), logprobs(params, G)
    valid = b["loss_mask"] > 0
    assert np.abs(np.asarray(lpg)[valid] - np.asarray(lp1)[valid]).max() > 1e-3


def test_shared_prompt_update_on_mesh_matches_per_row_update():
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    per_row = StepConfig(loss=LossConfig("grpo"), prompt_len=P, grad_accum=2)
    shared = dataclasses.replace(per_row, group_size=G)

    def run(mesh, cfg):
        params, opt_state, update, _, bs = _setup(mesh, cfg, lr=0.5, adam=False)
        for s in range(2):
            batch = {k: jax.device_put(v, bs[k]) for k, v in _grouped_batch(s).items()}
            params, opt_state, m = update(params, opt_state, batch)
        return _leaves(params), m

    ref, ref_m = run(single, per_row)
    out, m = run(shd.make_mesh((2, 2, 2)), shared)
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-4, atol=1e-6)


def test_shared_prompt_old_logprobs_in_micro_batches_keep_row_order():
    mesh = shd.make_mesh((2, 2, 2))
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P, group_size=G)
    params, _, _, _, _ = _setup(mesh, cfg)
    graphdef = nnx.graphdef(create_model(CFG, seed=1))
    ps = shd.state_shardings(params, mesh)
    b = _grouped_batch(1)
    toks, mask = jnp.asarray(b["tokens"]), jnp.asarray(b["input_mask"])
    whole = jit_logprobs(graphdef, cfg, ps, shd.batch_sharding(mesh, 2), 1)(params, toks, mask)
    split = jit_logprobs(graphdef, cfg, ps, shd.batch_sharding(mesh, 2), 2)(params, toks, mask)
    valid = b["loss_mask"] > 0
    np.testing.assert_allclose(np.asarray(split)[valid], np.asarray(whole)[valid], atol=1e-6)


def test_sampler_logprob_mismatch_metrics():
    """Given the sampler's log-probs, the update reports |trainer - sampler| and k3 KL."""
    mesh = shd.make_mesh((2, 2, 2))
    params, opt_state, update, logprob, bs = _setup(mesh, ON_POLICY, extra_keys=["sampler_logp"])
    b = _batch()
    exact = np.asarray(logprob(params, jnp.asarray(b["tokens"]), jnp.asarray(b["input_mask"])))
    noise = np.random.RandomState(5).uniform(-0.1, 0.1, exact.shape).astype(np.float32)
    b["sampler_logp"] = np.where(b["loss_mask"] > 0, exact + noise, 0.0).astype(np.float32)
    batch = {k: jax.device_put(v, bs[k]) for k, v in b.items()}
    _, _, m = update(params, opt_state, batch)
    valid = b["loss_mask"] > 0
    np.testing.assert_allclose(float(m["sampler_logp_abs_diff"]), np.abs(noise[valid]).mean(), 1e-4)
    d = -noise[valid]
    np.testing.assert_allclose(float(m["sampler_kl"]), (np.exp(d) - d - 1).mean(), 1e-3)


def test_sharded_update_has_no_involuntary_rematerialization(capfd):
    """With fsdp > 1 the embedding table is sharded on its hidden dim. The traced update
    gathers it before the lookup and pins the activations to batch sharding, so XLA's SPMD
    partitioner never falls back to replicating ``[B, T, D]`` tensors. Control: the bare
    lookup from the D-sharded table with a batch-sharded result does log the warning (the
    check can see the problem), and the same lookup through ``gather_rows_of`` does not."""
    mesh = shd.make_mesh((2, 2, 2))
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P)
    graphdef, params = nnx.split(create_model(CFG, mesh, seed=1))
    opt = optax.sgd(0.123)  # an optimizer no other test compiles: a fresh program
    opt_state = init_opt_state(opt, params, mesh)
    ps, os_ = shd.state_shardings(params, mesh), jax.tree.map(lambda x: x.sharding, opt_state)
    bs = {k: shd.batch_sharding(mesh, 1 if k == "advantages" else 2) for k in _batch()}
    batch = {k: jax.device_put(v, bs[k]) for k, v in _batch().items()}
    fn = make_update_fn(graphdef, cfg, opt)

    def compile_log(jitted, *args):
        capfd.readouterr()
        jitted.lower(*args).compile()
        return capfd.readouterr().err

    warning = "Involuntary full rematerialization"
    assert warning not in compile_log(jit_update(fn, ps, os_, bs), params, opt_state, batch)

    table = jax.device_put(jnp.ones((256, 64)), ps["embed"])
    assert table.sharding.spec[1] is not None  # D is sharded (over fsdp)
    tokens = jax.device_put(jnp.zeros((8, 11), jnp.int32), shd.batch_sharding(mesh, 2))
    rows = jax.sharding.NamedSharding(mesh, shd.batch_spec(mesh, 3))

    fresh = float(np.random.default_rng().uniform(1, 2))  # a new program: no cache hit

    def lookup(gather):
        def f(table, tokens):
            x = jnp.take(shd.gather_rows_of(table) if gather else table, tokens, axis=0)
            return jax.lax.with_sharding_constraint(x * fresh, rows).sum(-1)

        return jax.jit(shd.on_mesh(f, mesh), out_shardings=shd.batch_sharding(mesh, 2))

    assert warning in compile_log(lookup(False), table, tokens)
    assert warning not in compile_log(lookup(True), table, tokens)


def test_policy_drift_kl_is_kl_of_the_old_policy_to_the_current_one():
    """``policy_drift_kl`` estimates KL(old || current) with k3 over the tokens the old policy
    sampled: d = logp - old_logp, mean of exp(d) - d - 1 (not the reversed ratio, which
    estimates another divergence; asymmetric noise tells the two apart)."""
    mesh = shd.make_mesh((2, 2, 2))
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P, num_iterations=2)
    params, opt_state, update, logprob, bs = _setup(mesh, cfg, lr=0.0)  # the policy stays
    b = _batch()
    exact = np.asarray(logprob(params, jnp.asarray(b["tokens"]), jnp.asarray(b["input_mask"])))
    noise = np.random.RandomState(5).uniform(0.0, 0.5, exact.shape).astype(np.float32)
    b["old_logp"] = np.where(b["loss_mask"] > 0, exact + noise, 0.0).astype(np.float32)
    _, _, m = update(params, opt_state, {k: jax.device_put(v, bs[k]) for k, v in b.items()})
    d = -noise[b["loss_mask"] > 0]  # logp - old_logp
    np.testing.assert_allclose(float(m["policy_drift_kl"]), (np.exp(d) - d - 1).mean(), 1e-3)


def test_ratio_max_is_the_largest_ratio_of_all_passes():
    """mu = 2: the first pass is on-policy (ratio 1), the second sees the moved policy;
    ``ratio_max`` is the largest ratio of the step (it was the mean of the passes' maxima)."""
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    mu2 = StepConfig(loss=LossConfig("grpo"), prompt_len=P, num_iterations=2)
    params, opt_state, update, logprob, bs = _setup(single, mu2, lr=0.5, adam=False)
    batch = {k: jax.device_put(v, bs[k]) for k, v in _batch(0).items()}
    batch["old_logp"] = old = logprob(params, batch["tokens"], batch["input_mask"])
    _, _, m = update(params, opt_state, batch)
    mu1 = StepConfig(loss=LossConfig("grpo"), prompt_len=P)  # replay the first pass alone
    params, opt_state, update1, logprob1, _ = _setup(single, mu1, lr=0.5, adam=False)
    on_policy = {k: v for k, v in batch.items() if k != "old_logp"}
    moved, _, first = update1(params, opt_state, on_policy)
    new = np.asarray(logprob1(moved, batch["tokens"], batch["input_mask"]))
    ratio = np.exp(new - np.asarray(old))
    largest = ratio[np.asarray(batch["loss_mask"]) > 0].max()
    assert float(first["ratio_max"]) == pytest.approx(1.0) and largest > 1.01
    assert float(m["ratio_max"]) == pytest.approx(largest, rel=1e-4)


@pytest.mark.parametrize("loss_type", ["grpo", "token"])
def test_split_update_metrics_equal_the_whole_batch(loss_type):
    """Minibatches, micro-batches and passes change no metric (the policy held still, lr 0):
    per-token means (entropy, clip fractions, ratio, KLs) weigh each part by its tokens, the
    loss as the loss does, though the parts hold very different token counts."""
    single = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    loss = LossConfig(loss_type, eps_low=0.1, eps_high=0.1, beta=0.05)
    b = _batch(3)
    b["loss_mask"][::2] = 0  # even rows keep one token: the parts' token counts differ
    b["loss_mask"][::2, 0] = 1
    out = {}
    for parts in (1, 2):
        cfg = StepConfig(loss=loss, prompt_len=P, num_iterations=2, num_minibatches=parts,
                         grad_accum=parts)  # fmt: skip
        params, opt_state, update, logprob, bs = _setup(
            single, cfg, lr=0.0, adam=False, extra_keys=("ref_logp",)
        )
        exact = np.asarray(logprob(params, jnp.asarray(b["tokens"]), jnp.asarray(b["input_mask"])))
        noise = np.random.RandomState(5).uniform(-0.3, 0.3, exact.shape).astype(np.float32)
        batch = dict(b, old_logp=exact + noise, ref_logp=exact - noise)
        _, _, out[parts] = update(
            params, opt_state, {k: jax.device_put(v, bs[k]) for k, v in batch.items()}
        )
    whole, split = out[1], out[2]
    assert float(whole["clip_frac_low"]) > 0.02 and float(whole["clip_frac_high"]) > 0.02
    for k in ("loss", "pg_loss", "kl", "entropy", "clip_frac", "clip_frac_low", "clip_frac_high",
              "ratio_mean", "ratio_max", "policy_drift_kl"):  # fmt: skip
        np.testing.assert_allclose(float(split[k]), float(whole[k]), rtol=1e-5, err_msg=k)
    assert float(whole["num_tokens"]) == b["loss_mask"].sum()
    assert float(split["num_tokens"]) == b["loss_mask"].sum() / 2  # per optimizer update
