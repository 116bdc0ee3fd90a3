"""Per-step sampling on fixed logits: filters, frequencies, log-probs, stop matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.sampler import SamplingParams, filter_logprobs, sample_token
from r1jax.sampling import ops
from r1jax.sampling.stops import stop_sequence_array

filter_jit = jax.jit(filter_logprobs)  # one compile per sampling mode, not per op
sample_jit = jax.jit(sample_token)

Q = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])  # probabilities behind the logits below

# (params, renormalised distribution worked out by hand from Q)
TABLE = [
    (SamplingParams(), Q),
    (SamplingParams(top_k=2), [0.4 / 0.65, 0.25 / 0.65, 0, 0, 0, 0]),
    (SamplingParams(top_p=0.7), [0.5, 0.3125, 0.1875, 0, 0, 0]),  # mass before: 0 .4 .65 .8
    (SamplingParams(min_p=0.5), [0.4 / 0.65, 0.25 / 0.65, 0, 0, 0, 0]),  # p >= 0.2
    (SamplingParams(temperature=2.0), [0.27728, 0.21921, 0.16980, 0.13864, 0.10739, 0.08768]),
    (SamplingParams(temperature=0.5, top_k=3), [0.65306, 0.25510, 0.09184, 0, 0, 0]),
    # top-4 renormalised: .444 .278 .167 .111 -> masses before 0 .444 .722 .889: keep 3
    (SamplingParams(top_k=4, top_p=0.8), [0.5, 0.3125, 0.1875, 0, 0, 0]),
]


def reference_probs(logits, p: SamplingParams) -> np.ndarray:
    """Float64 loop implementation of temperature -> top-k -> top-p -> min-p."""
    z = np.asarray(logits, np.float64) / p.temperature
    keep = np.ones(z.shape, bool)
    order = np.argsort(-z, kind="stable")
    if p.top_k:
        keep[order[p.top_k :]] = False

    def softmax(mask):
        e = np.where(mask, np.exp(z - z.max()), 0.0)
        return e / e.sum()

    if p.top_p < 1:
        probs, mass = softmax(keep), 0.0
        for idx in order:
            if keep[idx] and mass < p.top_p:
                mass += probs[idx]
            else:
                keep[idx] = False
    if p.min_p > 0:
        probs = softmax(keep)
        keep &= probs >= p.min_p * probs.max()
    return softmax(keep)


@pytest.mark.parametrize("params,expected", TABLE)
def test_filter_matches_hand_table(params, expected):
    logits = jnp.log(jnp.asarray(Q, jnp.float32))[None]
    got = np.exp(np.asarray(filter_jit(logits, params.device()))[0])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(reference_probs(np.log(Q), params), expected, atol=2e-5)


@pytest.mark.parametrize("params,expected", TABLE)
def test_sample_frequencies_match_renormalised_distribution(params, expected):
    n = 40_000
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(Q, jnp.float32)), (n, len(Q)))
    tokens, logp = sample_jit(logits, jax.random.key(7), params.device())
    tokens, logp = np.asarray(tokens), np.asarray(logp)
    expected = np.asarray(expected)
    freq = np.bincount(tokens, minlength=len(Q)) / n
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-4), (freq, expected)
    assert np.all(freq[expected == 0] == 0)  # never outside the truncated support
    exact = reference_probs(np.log(Q), params)
    np.testing.assert_allclose(logp, np.log(exact[tokens]), atol=1e-5)


def test_filter_matches_reference_on_random_logits():
    rng = np.random.RandomState(0)
    logits = rng.randn(32, 50) * 2.5
    for params in (
        SamplingParams(temperature=0.7, top_p=0.9),
        SamplingParams(temperature=1.3, top_k=10, top_p=0.8, min_p=0.05),
        SamplingParams(min_p=0.1),
        SamplingParams(top_k=1),
    ):
        got = np.exp(np.asarray(filter_jit(jnp.asarray(logits, jnp.float32), params.device())))
        ref = np.stack([reference_probs(row, params) for row in logits])
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=str(params))


def test_greedy_is_argmax_with_zero_sampling_logp():
    logits = jnp.asarray(np.random.RandomState(1).randn(5, 20), jnp.float32)
    tokens, logp = sample_jit(logits, jax.random.key(0), SamplingParams(temperature=0).device())
    np.testing.assert_array_equal(tokens, np.argmax(np.asarray(logits), -1))
    np.testing.assert_array_equal(logp, 0)


@pytest.mark.parametrize("v", [1, 31, 32, 100])
def test_blocked_cumsum_and_first_argmax(v):
    x = np.random.RandomState(v).rand(3, v).astype(np.float32)
    np.testing.assert_allclose(ops.cumsum_last(jnp.asarray(x)), np.cumsum(x, -1), rtol=1e-6)
    x[:, v // 2] = 2.0
    x[:, -1] = 2.0  # a tie: the first index wins
    np.testing.assert_array_equal(ops.argmax_first(jnp.asarray(x)), [v // 2] * 3)


def test_same_key_same_draws_other_key_other_draws():
    logits = jnp.zeros((64, 30))
    p = SamplingParams().device()
    a, _ = sample_jit(logits, jax.random.key(1), p)
    b, _ = sample_jit(logits, jax.random.key(1), p)
    c, _ = sample_jit(logits, jax.random.key(2), p)
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.asarray(a) != np.asarray(c)) > 0.5


def test_knob_values_are_traced_mode_is_static():
    f = jax.jit(sample_token)
    logits, key = jnp.zeros((2, 8)), jax.random.key(0)
    start = f._cache_size()  # the cache is shared with other jit wrappers of sample_token
    f(logits, key, SamplingParams(temperature=0.7, top_p=0.9).device())
    f(logits, key, SamplingParams(temperature=1.3, top_p=0.5, top_k=3).device())
    assert f._cache_size() - start == 1
    f(logits, key, SamplingParams(temperature=0).device())
    f(logits, key, SamplingParams(temperature=0).device())
    assert f._cache_size() - start == 2


def test_stop_sequences_match_only_at_the_end():
    seqs = stop_sequence_array([[5], [7, 8, 9], [3, 4]])
    assert seqs.shape == (4, 4)  # rounded up to the bucket
    windows = np.array(
        [
            [-2, -2, -2, 5],  # first token is a stop id
            [1, 7, 8, 9],  # three-token sequence
            [7, 8, 9, 1],  # sequence not at the end
            [0, 0, 3, 4],
            [0, 0, 4, 3],
            [-2, -2, 8, 9],  # partial sequence
        ]
    )
    got = ops.stop_matches(jnp.asarray(windows), jnp.asarray(seqs))
    np.testing.assert_array_equal(got, [True, True, False, True, False, False])


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=-0.1), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=1.0), "min_p"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(stop_strings="</answer>"), "stop_strings"),
        (dict(stop_token_ids=(-3,)), "stop_token_ids"),
    ],
)
def test_bad_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}="):
        SamplingParams(**kwargs).validate()


def test_context_length_is_checked():
    p = SamplingParams(max_new_tokens=100)
    with pytest.raises(ValueError, match="max_new_tokens=100.*max_position_embeddings=128"):
        p.validate(prompt_len=64, max_position_embeddings=128)
    with pytest.raises(ValueError, match="max_new_tokens=100.*exceeds the sampler's"):
        p.validate(max_new_tokens_limit=64)


@pytest.mark.parametrize("v,block", [(1000, 256), (700, 64), (5, 256), (960, 256)])
def test_tempered_block_sampler_frequencies_on_a_large_vocab(v, block):
    """The two-level inverse CDF draws from softmax(logits / T): frequencies of a vocabulary
    that spans several blocks (and ends in a partial one), never a -inf token."""
    rng = np.random.RandomState(v)
    row = rng.randn(v) * 2.0
    row[rng.rand(v) < 0.3] = -np.inf  # zero-probability tokens, some in every block
    row[0] = 0.0
    temperature = 1.5
    expected = np.exp((row - row.max()) / temperature)
    expected /= expected.sum()
    n = 20_000
    logits = jnp.broadcast_to(jnp.asarray(row, jnp.float32), (n, v))
    draw = jax.jit(ops.sample_tempered, static_argnames="block")
    tokens, logp = draw(logits, jax.random.key(3), temperature, block=block)
    tokens, logp = np.asarray(tokens), np.asarray(logp)
    assert np.all(np.isfinite(row[tokens]))
    np.testing.assert_allclose(logp, np.log(expected[tokens]), atol=2e-5)
    freq = np.bincount(tokens, minlength=v) / n
    top = np.argsort(-expected)[:10]  # the likely tokens: within 5 sigma each
    sigma = np.sqrt(expected[top] * (1 - expected[top]) / n)
    assert np.all(np.abs(freq[top] - expected[top]) <= 5 * sigma + 1e-4)
    # chi-square over the tokens with an expected count of at least 5 (rest pooled)
    counts, exp_counts = freq * n, expected * n
    big = exp_counts >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp_ = np.append(exp_counts[big], exp_counts[~big].sum())
    keep = exp_ > 0
    chi2 = np.sum((obs[keep] - exp_[keep]) ** 2 / exp_[keep])
    dof = keep.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)


def test_tempered_sampler_edges_of_the_cdf():
    """u near 0 picks the first positive-mass token; all mass in the last token of a
    partial last block is always found."""
    v = 300
    draw = jax.jit(ops.sample_tempered, static_argnames="block")
    row = np.full(v, -np.inf, np.float32)
    row[v - 1] = 0.0
    logits = jnp.broadcast_to(jnp.asarray(row), (64, v))
    tokens, logp = draw(logits, jax.random.key(0), 1.0, block=128)
    np.testing.assert_array_equal(tokens, v - 1)
    np.testing.assert_allclose(logp, 0.0, atol=1e-6)
    row[3] = 0.0  # two equal tokens in different blocks
    logits = jnp.broadcast_to(jnp.asarray(row), (4000, v))
    tokens, _ = draw(logits, jax.random.key(1), 1.0, block=128)
    assert set(np.unique(np.asarray(tokens))) == {3, v - 1}
    assert abs(np.mean(np.asarray(tokens) == 3) - 0.5) < 0.05


def test_policy_logprob_is_log_softmax_gather():
    logits = np.random.RandomState(2).randn(6, 1000).astype(np.float32) * 4
    tokens = np.arange(6) * 97
    ref = logits[np.arange(6), tokens] - np.log(np.exp(logits.astype(np.float64)).sum(-1))
    got = ops.policy_logprob(jnp.asarray(logits), jnp.asarray(tokens))
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_block_size_divides_the_vocabulary_when_it_can():
    assert ops.block_size_for(151_936, 256) == 128  # Qwen2: 1187 * 128
    assert ops.block_size_for(128_256, 256) == 256  # Llama 3
    assert ops.block_size_for(960, 256) == 64
    assert ops.block_size_for(1000, 256) == 256  # no divisor >= 32: padded
    assert ops.block_size_for(5, 256) == 256


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("v", [960, 1000])
def test_draw_returns_the_policy_logprob_of_the_drawn_token(v, temperature):
    """The untruncated draw computes the policy log-prob from the block masses it shares
    with sampling; it must equal log_softmax of the raw logits (float64 reference)."""
    logits = np.random.RandomState(v).randn(16, v).astype(np.float32) * 5
    logits[:, ::7] = -np.inf
    params = SamplingParams(temperature=temperature)
    tokens, lp_s, lp_p = jax.jit(ops.draw)(jnp.asarray(logits), jax.random.key(0), params.device())
    x = logits.astype(np.float64)
    ref = x - (np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1))[:, None]
    rows = np.arange(16)
    np.testing.assert_allclose(lp_p, ref[rows, np.asarray(tokens)], atol=2e-5)
    xt = x / temperature
    ref_t = xt - (np.log(np.exp(xt - xt.max(-1, keepdims=True)).sum(-1)) + xt.max(-1))[:, None]
    np.testing.assert_allclose(lp_s, ref_t[rows, np.asarray(tokens)], atol=2e-5)
    assert np.all(np.isfinite(logits[rows, np.asarray(tokens)]))
