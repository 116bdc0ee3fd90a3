"""End-to-end sampler checks against references that recompute everything without a cache."""

import os
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import backend_compiles
from flax import nnx
from test_sampler_ops import reference_probs

from r1jax import sharding as shd
from r1jax.model import causal_mask, get_preset, positions_from_mask
from r1jax.model.hf import load_hf_model
from r1jax.sampler import Sampler, SamplingParams
from r1jax.sampling.decode import segment_ends

PROMPTS = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 8], [33], [12, 90, 4, 4, 71, 23, 6, 50, 19, 2, 44]]


class PieceTokenizer:
    """Stand-in tokenizer: ids 0/1 are pad/eos, then letters, digits and two-letter pieces,
    so one string has several tokenizations (like BPE). Encoding is greedy longest-match."""

    def __init__(self, vocab_size: int = 96):
        singles = list("abcdefghijklmnopqrstuvwxyz0123456789")
        pairs = [a + b for a in "aeiost" for b in "abcdefghijklmnopqrstuvwxyz"]
        self.pieces = ["<pad>", "<eos>", *singles, *pairs][:vocab_size]
        self.index = {p: i for i, p in enumerate(self.pieces)}
        self.eos_ids, self.pad_id = [1], 0

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            n = 2 if text[i : i + 2] in self.index else 1
            ids.append(self.index[text[i : i + n]])
            i += n
        return ids

    def decode(self, ids) -> str:
        return "".join(self.pieces[int(i)] for i in ids if int(i) > 1)


@pytest.fixture(scope="module")
def hf_model(hf_dirs):
    return load_hf_model(hf_dirs["qwen2"])


@pytest.fixture(scope="module")
def sampler(hf_model):
    return Sampler(
        hf_model, tokenizer=PieceTokenizer(), max_prompt_len=16, max_new_tokens=12,
        prompt_buckets=(8, 16),
    )  # fmt: skip


def recompute_greedy(model, prompts, n, eos_ids=()):
    """Greedy decoding that reruns the full forward pass (no cache) on right-padded rows."""
    graphdef, state = nnx.split(model)
    b, t = len(prompts), max(map(len, prompts)) + n
    ids = np.zeros((b, t), np.int32)
    lens = np.array([len(p) for p in prompts])
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p

    @jax.jit
    def last_logits(state, ids, lens):
        mask = jnp.arange(t)[None] < lens[:, None]
        pos = jnp.broadcast_to(jnp.arange(t), (b, t))
        logits = nnx.merge(graphdef, state)(ids, pos, causal_mask(mask))[0]
        return logits[jnp.arange(b), lens - 1]

    out = [[] for _ in prompts]
    done = np.zeros(b, bool)
    for _ in range(n):
        nxt = np.argmax(np.asarray(last_logits(state, ids, lens)), -1)
        for i in np.flatnonzero(~done):
            out[i].append(int(nxt[i]))
            ids[i, lens[i]] = nxt[i]
            lens[i] += 1
            done[i] = nxt[i] in eos_ids
    return out


@nnx.jit
def _full_forward(model, ids, mask):
    return model(ids, positions_from_mask(mask), causal_mask(mask))[0]


def forward_logits(model, out, g):
    """Full-sequence logits ``[R, N, V]`` predicting each completion token of ``out``."""
    p = out.prompt_ids.shape[1]
    ids = np.concatenate([np.repeat(out.prompt_ids, g, 0), out.tokens], 1)
    mask = np.concatenate([np.repeat(out.prompt_mask, g, 0), out.completion_mask], 1)
    logits = _full_forward(model, jnp.asarray(ids), jnp.asarray(mask))
    return np.asarray(logits[:, p - 1 : -1], np.float64)


def completions(out):
    return [list(out.tokens[r, : out.lengths[r]]) for r in range(len(out.lengths))]


def test_greedy_matches_torch_full_recompute(hf_dirs, hf_model, sampler):
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dirs["qwen2"]).eval()
    out = sampler.generate(hf_model, PROMPTS, params=SamplingParams(0, ignore_eos=True))
    for r, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(12):
                seq.append(int(hf(torch.tensor([seq])).logits[0, -1].argmax()))
        assert completions(out)[r] == seq[len(prompt) :], r
    assert out.finish_reason == ["length"] * 4
    assert out.prompt_ids.shape == (4, 16) and out.tokens.shape == (4, 12)
    np.testing.assert_array_equal(out.prompt_mask.sum(1), [len(p) for p in PROMPTS])
    np.testing.assert_array_equal(out.logp_sampling, 0)


def test_greedy_with_eos_matches_recompute_and_pads_after(hf_model, sampler):
    free = recompute_greedy(hf_model, PROMPTS, 12)
    eos = free[1][3]  # a token that the second prompt produces at step 3
    ref = recompute_greedy(hf_model, PROMPTS, 12, eos_ids=(eos,))
    assert len(ref[1]) <= 4 and any(len(r) == 12 and eos not in r for r in ref)
    # built from (graphdef, config); same settings as the shared sampler: programs are reused
    graphdef = nnx.split(hf_model)[0]
    s = Sampler((graphdef, hf_model.cfg), max_prompt_len=16, max_new_tokens=12, eos_ids=[eos])
    out = s.generate(nnx.state(hf_model), PROMPTS, params=SamplingParams(temperature=0))
    assert completions(out) == ref
    for r, row in enumerate(ref):
        assert out.finish_reason[r] == ("eos" if row[-1] == eos else "length")
        assert out.lengths[r] == len(row)
        assert not out.completion_mask[r, len(row) :].any()
        assert (out.tokens[r, len(row) :] == eos).all()  # no pad id given: pad with eos
        assert (out.logp_policy[r, len(row) :] == 0).all()
    # ignore_eos: the same rows run to the length limit
    out2 = s.generate(hf_model, PROMPTS, params=SamplingParams(temperature=0, ignore_eos=True))
    assert completions(out2) == free


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.01, seed=1),
        SamplingParams(temperature=1.4, top_p=1.0, top_k=20, min_p=0.05, seed=2),
        SamplingParams(temperature=0.8, seed=3),  # untruncated: the two-level draw
    ],
)
def test_logprobs_match_full_forward(hf_model, sampler, params):
    g = 3
    out = sampler.generate(nnx.state(hf_model), PROMPTS, num_samples=g, params=params)
    assert out.tokens.shape == (12, 12)
    np.testing.assert_array_equal(out.prompt_index, np.repeat(np.arange(4), g))
    logits = forward_logits(hf_model, out, g)
    m = out.completion_mask
    lp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    lp -= logits.max(-1, keepdims=True)
    ref = np.take_along_axis(lp, out.tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logp_policy[m], ref[m], atol=1e-5)
    ref_s = np.zeros_like(ref)
    for r, t in zip(*np.nonzero(m), strict=True):
        probs = reference_probs(logits[r, t], params)
        assert probs[out.tokens[r, t]] > 0, "sampled outside the truncated support"
        ref_s[r, t] = np.log(probs[out.tokens[r, t]])
    np.testing.assert_allclose(out.logp_sampling[m], ref_s[m], atol=1e-4)
    assert (out.logp_policy[~m] == 0).all() and (out.logp_sampling[~m] == 0).all()
    # the G samples of a prompt share its prefix but differ
    assert len({tuple(c) for c in completions(out)[:g]}) > 1


def test_fused_projections_change_nothing(hf_model, sampler):
    """Decoding with q/k/v and gate/up fused (the default; the model has qkv biases) gives
    the tokens and log-probs of the separate weights."""
    assert hf_model.cfg.qkv_bias and sampler.fuse_projections
    plain = Sampler(
        hf_model, tokenizer=PieceTokenizer(), max_prompt_len=16, max_new_tokens=12,
        prompt_buckets=(8, 16), fuse_projections=False,
    )  # fmt: skip
    params = SamplingParams(temperature=0.9, seed=4)
    a = sampler.generate(hf_model, PROMPTS, num_samples=2, params=params)
    b = plain.generate(hf_model, PROMPTS, num_samples=2, params=params)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logp_policy, b.logp_policy, atol=1e-5)
    np.testing.assert_allclose(a.logp_sampling, b.logp_sampling, atol=1e-5)


def test_decode_segments_change_nothing(hf_model, sampler):
    """The segmented decode loop (the default, 4 segments: each attends only over the slots
    its steps can have written) samples the tokens and log-probs of one loop over all
    slots, also with more segments than steps, a length limit inside a segment and rows
    that stop early."""
    assert sampler.decode_segments == 4
    assert segment_ends(12, 4) == [4, 7, 10, 12] and segment_ends(12, 20) == list(range(2, 13))
    base = SamplingParams(temperature=0.9, seed=4)
    runs, stop_id = {}, None
    for segments in (1, 4, 20):
        s = Sampler(
            hf_model, tokenizer=PieceTokenizer(), max_prompt_len=16, max_new_tokens=12,
            prompt_buckets=(8, 16), decode_segments=segments,
        )  # fmt: skip
        full = s.generate(hf_model, PROMPTS, num_samples=2, params=base)
        if stop_id is None:  # a token that row 0 samples at step 5
            stop_id = int(full.tokens[0, 5])
        cut = replace(base, max_new_tokens=9, stop_token_ids=(stop_id,))
        runs[segments] = (full, s.generate(hf_model, PROMPTS, num_samples=2, params=cut))
    assert "stop" in runs[1][1].finish_reason and runs[1][1].lengths.max() == 9
    for segments in (4, 20):
        for out, ref in zip(runs[segments], runs[1], strict=True):
            np.testing.assert_array_equal(out.tokens, ref.tokens)
            np.testing.assert_array_equal(out.lengths, ref.lengths)
            assert out.finish_reason == ref.finish_reason
            np.testing.assert_allclose(out.logp_policy, ref.logp_policy, atol=1e-5)
            np.testing.assert_allclose(out.logp_sampling, ref.logp_sampling, atol=1e-5)


def test_seed_controls_the_draws(hf_model, sampler):
    p = SamplingParams()  # temperature 1, no truncation: the RL rollout default
    run = lambda seed: sampler.generate(hf_model, PROMPTS, 3, replace(p, seed=seed)).tokens
    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3
    key = jax.random.fold_in(jax.random.key(0), 5)
    np.testing.assert_array_equal(sampler.generate(hf_model, PROMPTS, 3, p, key=key).tokens, a)


def test_draw_ids_make_a_prompts_samples_independent_of_the_rest_of_the_call(hf_model, sampler):
    """Sample j of a prompt depends on the key, the prompt's draw id and j only: not on the
    other prompts of the call, their number or order, the batch padding, or G."""
    p = SamplingParams(seed=4, top_p=0.9)  # the truncated path too
    by_place = sampler.generate(hf_model, PROMPTS, 3, p)
    assert (by_place.tokens[0] != by_place.tokens[3]).any()  # different rows, different draws
    np.testing.assert_array_equal(
        sampler.generate(hf_model, PROMPTS, 3, p, draw_ids=[0, 1, 2, 3]).tokens, by_place.tokens
    )  # default: places in the batch
    ids = [7, 100, 3, 2**31 - 1]
    full = sampler.generate(hf_model, PROMPTS, 3, p, draw_ids=ids)
    some = sampler.generate(hf_model, [PROMPTS[3], PROMPTS[1]], 5, p, draw_ids=[ids[3], ids[1]])
    for i, q in ((0, 3), (1, 1)):  # other rows, order, batch bucket and G
        np.testing.assert_array_equal(
            some.tokens[i * 5 : i * 5 + 3], full.tokens[q * 3 : q * 3 + 3]
        )
        np.testing.assert_allclose(some.logp_sampling[i * 5 : i * 5 + 3],
                                   full.logp_sampling[q * 3 : q * 3 + 3], atol=1e-5)  # fmt: skip
    same = sampler.generate(hf_model, [PROMPTS[0]] * 2, 3, p, draw_ids=[5, 6])
    assert (same.tokens[:3] != same.tokens[3:]).any()  # one prompt, two ids: two sets of draws
    for bad, why in (([1, 2], "4 ints"), ([0, 1, 2, -1], r"ints in \[0, 2\*\*31\)"),
                     ([0, 1, 2, 2**31], "ints in"), ([0.5, 1, 2, 3], "4 ints")):  # fmt: skip
        with pytest.raises(ValueError, match=f"draw_ids: need {why}"):
            sampler.generate(hf_model, PROMPTS, 3, p, draw_ids=bad)


def test_stop_token_ids_and_stop_strings_truncate(hf_model, sampler):
    base = SamplingParams(seed=3)
    tok = sampler.tokenizer
    ref = sampler.generate(hf_model, PROMPTS, 3, base)
    # device path: a stop id taken from row 0's completion
    stop_id = int(ref.tokens[0, 4])
    out = sampler.generate(hf_model, PROMPTS, 3, replace(base, stop_token_ids=(stop_id,)))
    for r, row in enumerate(completions(ref)):
        k = row.index(stop_id) + 1 if stop_id in row else len(row)
        assert completions(out)[r] == row[:k]
        assert out.finish_reason[r] == ("stop" if stop_id in row else ref.finish_reason[r])
    # host path: a two-character string that row 0 produced across a token boundary
    pieces = [tok.decode([t]) for t in completions(ref)[0]]
    j = next(j for j in range(2, len(pieces)) if pieces[j - 1] and pieces[j])
    stop = pieces[j - 1][-1] + pieces[j][0]
    out = sampler.generate(hf_model, PROMPTS, 3, replace(base, stop_strings=(stop,)))
    cut_rows = 0
    for r, row in enumerate(completions(ref)):
        k = next((k for k in range(1, len(row) + 1) if stop in tok.decode(row[:k])), None)
        if k is None:
            assert completions(out)[r] == row and out.finish_reason[r] == ref.finish_reason[r]
            continue
        cut_rows += 1
        assert completions(out)[r] == row[:k] and out.finish_reason[r] == "stop"
        assert out.texts[r] == tok.decode(row[:k]) and stop in out.texts[r]
        assert stop not in tok.decode(row[: k - 1])
        assert not out.completion_mask[r, k:].any() and (out.tokens[r, k:] == 0).all()
        assert (out.logp_policy[r, k:] == 0).all() and (out.logp_sampling[r, k:] == 0).all()
        np.testing.assert_array_equal(out.logp_policy[r, :k], ref.logp_policy[r, :k])
    assert cut_rows >= 1 and out.lengths[0] <= j + 1
    assert out.texts[1] == tok.decode(completions(out)[1])


def test_string_prompts_use_the_tokenizer(hf_model, sampler):
    tok = sampler.tokenizer
    texts = ["hello", "ab12", "sea", "zoo"]
    greedy = SamplingParams(temperature=0, ignore_eos=True)
    out = sampler.generate(hf_model, texts, params=greedy)
    pieces = [["h", "el", "l", "o"], ["ab", "1", "2"], ["s", "ea"], ["z", "o", "o"]]
    ids = [[tok.index[p] for p in row] for row in pieces]
    ref = sampler.generate(hf_model, ids, params=greedy)
    for i, row in enumerate(ids):
        assert out.prompt_ids[i, -len(row) :].tolist() == row
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    assert out.texts == [tok.decode(c) for c in completions(out)]


def _compiles_during(fn):
    with backend_compiles() as events:
        fn()
    return len(events)


@pytest.mark.parametrize(
    "g,first,second",
    [
        (1, SamplingParams(temperature=0), SamplingParams(temperature=0, max_new_tokens=6)),
        (3, SamplingParams(seed=1), SamplingParams(temperature=0.6, seed=9)),  # RL default
    ],
)
def test_no_recompilation_within_buckets(hf_model, sampler, g, first, second):
    state = nnx.state(hf_model)
    sampler.generate(state, PROMPTS, g, first)
    count = sampler.compile_count()
    new_prompts = [[1] * 16, [7], [8, 9, 10]]  # other lengths and count, same buckets
    out = []
    assert (
        _compiles_during(lambda: out.append(sampler.generate(state, new_prompts, g, second))) == 0
    )
    assert out[0].tokens.shape == (3 * g, second.max_new_tokens or 12)
    assert sampler.compile_count() == count
    if g > 1:
        return
    # a shorter prompt bucket has its own programs, also compiled only once
    sampler.generate(state, [[3, 4], [1], [2], [5, 6, 7]], g, first)
    count = sampler.compile_count()
    new_prompts = [[6] * 8, [5], [1, 2], [7]]
    assert _compiles_during(lambda: sampler.generate(state, new_prompts, g, second)) == 0
    assert sampler.compile_count() == count and sampler._prefill._cache_size() >= 2


def test_bfloat16_runs_and_logprobs_are_close(hf_dirs, hf_model):
    model = load_hf_model(hf_dirs["qwen2"], dtype="bfloat16", param_dtype="bfloat16")
    s = Sampler(model, max_prompt_len=16, max_new_tokens=12)
    out = s.generate(model, PROMPTS, 3, SamplingParams(seed=1))
    ones = np.ones((4, 16), np.int32)
    cache, _, _ = s._prefill(nnx.state(model), ones, ones.astype(bool), 3)
    slots = 16 + segment_ends(12, s.decode_segments)[0] - 1  # the first decode segment's
    assert cache[0]["k"].dtype == jnp.bfloat16 and cache[0]["k"].size == 12 * slots * 2 * 8
    assert cache[0]["k"].shape[0] == 12  # 4 prompts x 3 samples
    logits = forward_logits(hf_model, out, 3)  # fp32 model on the bf16 samples
    lp = logits - logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    ref = np.take_along_axis(lp, out.tokens[..., None], -1)[..., 0]
    m = out.completion_mask
    assert m.any() and np.abs(out.logp_policy[m] - ref[m]).max() < 0.25


def test_bad_settings_fail_before_compiling(hf_model):
    s = Sampler(hf_model, max_prompt_len=16, max_new_tokens=7, prompt_buckets=(8,))
    cases = [
        (lambda: s.generate(hf_model, PROMPTS, params=SamplingParams(top_p=0)), "top_p=0"),
        (lambda: s.generate(hf_model, PROMPTS, params=SamplingParams(temperature=-1)), "temp"),
        (lambda: s.generate(hf_model, []), "prompts is empty"),
        (lambda: s.generate(hf_model, [[1], []]), "prompt 1 is empty"),
        (lambda: s.generate(hf_model, [[1] * 17]), "prompt 0 has 17 tokens > .*16"),
        (lambda: s.generate(hf_model, [[96]]), "token id 96 outside"),
        (lambda: s.generate(hf_model, ["hi"]), "no tokenizer"),
        (lambda: s.generate(hf_model, [[1]], 0), "num_samples=0"),
        (lambda: s.generate(hf_model, [[1]], params=SamplingParams(stop_strings=("x",))), "tok"),
        (lambda: s.generate(hf_model, [[1]], params=SamplingParams(max_new_tokens=8)), "sampler"),
    ]
    with backend_compiles() as events:
        for fn, msg in cases:
            with pytest.raises(ValueError, match=msg):
                fn()
    assert events == []
    with pytest.raises(ValueError, match="max_new_tokens=250 exceeds .*max_position_embeddings"):
        Sampler(hf_model, max_prompt_len=16, max_new_tokens=250)
    with pytest.raises(ValueError, match="batch_buckets"):
        Sampler(hf_model, batch_buckets=(0, 4))
    assert s.compile_count() == 0


def test_text_prompts_without_a_tokenizer_say_where_none_was_found():
    from r1jax.sampling.command import parse_prompts

    with pytest.raises(ValueError, match="model.hf_path='/m' holds no tokenizer.json or tok"):
        parse_prompts(["hello"], None, hf_path="/m")
    assert parse_prompts(["1 2", "3"], None, hf_path="/m") == [[1, 2], [3]]


def test_sample_command_prints_ids_without_tokenizer(tmp_path):
    from r1jax.config import base_config
    from r1jax.sampling.command import sample_command

    c = base_config()
    c.run_dir = str(tmp_path / "run")
    c.sampling.max_prompt_len, c.sampling.max_new_tokens, c.sampling.prompt_buckets = 8, 4, (8,)
    with pytest.raises(ValueError, match="the config has no tokenizer .* space-separated token"):
        sample_command(c, ["not ids"], 1)
    lines = []
    out = sample_command(c, ["1 2 3", "7"], 2, emit=lines.append)
    assert lines.pop(0) == f"weights: random init (seed {c.seed}) (no checkpoint in {c.run_dir})"
    assert not os.path.exists(c.run_dir)  # looking for checkpoints creates nothing
    assert out.tokens.shape == (4, 4) and out.prompt_ids[0, -3:].tolist() == [1, 2, 3]
    assert [ln.split("\n")[0] for ln in lines][:2] == [
        f"--- prompt 0 sample {j} ({out.finish_reason[j]}, {out.lengths[j]} tokens)" for j in (0, 1)
    ]
    assert lines[3].split("\n")[1] == " ".join(map(str, out.tokens[3, : out.lengths[3]]))


def test_sample_command_formats_prompts_like_the_run_unless_raw(tmp_path):
    from r1jax.build import build_tokenizer
    from r1jax.config import base_config
    from r1jax.sampling.command import sample_command

    c = base_config()
    c.run_dir = str(tmp_path / "run")
    c.tokenizer.chars = "0123456789+=?\n Question:"
    c.prompt.style, c.prompt.suffix = "plain", "="
    c.sampling.max_prompt_len, c.sampling.max_new_tokens, c.sampling.prompt_buckets = 16, 2, (16,)
    tok = build_tokenizer(c)

    def prompt_ids(raw):
        out = sample_command(c, ["1+2"], 1, emit=lambda _: None, raw=raw)
        return out.prompt_ids[0][out.prompt_ids[0] != tok.pad_id].tolist()

    assert prompt_ids(raw=False) == tok.encode("1+2\n=")  # the run's suffix is appended
    assert prompt_ids(raw=True) == tok.encode("1+2")
    # a prompt too long, or with a character the vocabulary lacks: one line, before any model
    import r1jax.build
    from r1jax.config import ConfigError

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(r1jax.build, "load_run_model", lambda *a, **k: pytest.fail("model loaded"))
        with pytest.raises(ConfigError, match=r"--prompt 1 is 2\d tokens .* > config.sampling."
                           "max_prompt_len=16"):  # fmt: skip
            sample_command(c, ["1", "1+2+3+4+5+6+7+8+9+10"], 1, raw=True)
        with pytest.raises(ConfigError, match="^--prompt 0: .*'x'"):
            sample_command(c, ["1x"], 1, raw=True)


def test_sample_command_uses_the_runs_checkpoint(tmp_path):
    """After training, ``r1jax sample`` samples the run's policy (the newest checkpoint, or
    ``--step``), not the config's initial weights."""
    from r1jax.checkpoint import CheckpointError, RunCheckpointer
    from r1jax.config import base_config
    from r1jax.model import create_model
    from r1jax.optim import init_opt_state, make_optimizer
    from r1jax.sampling.command import sample_command

    c = base_config()
    c.run_dir = str(tmp_path / "run")
    c.sampling.max_prompt_len, c.sampling.max_new_tokens, c.sampling.prompt_buckets = 8, 6, (8,)
    c.sampling.temperature = 0.0
    mesh = shd.make_mesh((8, 1, 1))
    trained = create_model(get_preset(c.model.preset), mesh, seed=c.seed + 1)
    params = nnx.state(trained)
    ck = RunCheckpointer(os.path.join(c.run_dir, "checkpoints"))
    opt = make_optimizer(1e-3, 10)
    ck.save(5, params, init_opt_state(opt, params, mesh), {"step": 5})
    ck.close()
    lines = []
    out = sample_command(c, ["1 2 3"], 1, emit=lines.append)
    assert lines[0] == f"weights: {c.run_dir} step 5"
    s = Sampler(trained, mesh=mesh, max_prompt_len=8, max_new_tokens=6, prompt_buckets=(8,))
    ref = s.generate(params, [[1, 2, 3]], 1, SamplingParams(temperature=0.0))
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    with pytest.raises(CheckpointError, match="no checkpoint of step 4"):
        sample_command(c, ["1 2 3"], 1, emit=lines.append, step=4)


def test_cache_layout_and_grow_cache():
    """Keys are cached [B, K, Dh, S], values [B, K, S, Dh]; grow_cache repeats rows and pads
    each array along its own slot axis."""
    from r1jax.model import ModelConfig, init_cache
    from r1jax.sampling.decode import cache_axes, grow_cache

    cfg = ModelConfig(num_kv_heads=2, head_dim=16, num_layers=1)
    assert cache_axes(cfg) == {"k": (3, 1), "v": (2, 1)}
    cache = init_cache(cfg, 2, 5)
    cache = [{n: x + jnp.arange(2.0)[:, None, None, None] for n, x in cache[0].items()}]
    grown = grow_cache(cfg, cache, 3, 4)[0]
    assert grown["k"].shape == (6, 2, 16, 9) and grown["v"].shape == (6, 2, 9, 16)
    np.testing.assert_array_equal(grown["k"][:, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    assert not grown["k"][..., 5:].any() and not grown["v"][:, :, 5:].any()


def test_ids_past_the_tokenizers_vocabulary_decode_to_no_text(caplog):
    """A model may embed more ids than its tokenizer has (Qwen2.5: 151,936 vs 151,665); the
    sampler draws from all of them, and those ids decode to nothing (as HF tokenizers do)
    instead of failing the whole call."""
    from r1jax.model import Transformer
    from r1jax.tokenizer import CharTokenizer

    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    model = Transformer(get_preset("tiny", vocab_size=256), rngs=nnx.Rngs(0))
    s = Sampler(model, tokenizer=tok, max_prompt_len=8, max_new_tokens=8, prompt_buckets=(8,))
    params = SamplingParams(seed=0, ignore_eos=True)
    with caplog.at_level("WARNING", logger="r1jax.sampling.sampler"):
        out = s.generate(model, ["hello", "abc"], 4, params)
        again = s.generate(model, ["hello", "abc"], 4, params)
    rows = completions(out)
    past = sum(t >= tok.vocab_size for row in rows for t in row)
    assert 0 < past < sum(map(len, rows))  # random weights: both kinds drawn
    assert out.texts == [tok.decode([t for t in row if t < tok.vocab_size]) for row in rows]
    assert again.texts == out.texts
    warnings = [r.getMessage() for r in caplog.records if "past the tokenizer" in r.message]
    assert warnings == [f"sampled {past} ids past the tokenizer's {tok.vocab_size} (the model "
                        "embeds 256): they decode to no text (said once per sampler)"]  # fmt: skip
    # stop strings are found in the same text
    stop = next(t for t in out.texts if len(t) >= 2)[:2]
    cut = s.generate(model, ["hello", "abc"], 4, replace(params, stop_strings=(stop,)))
    for r, row in enumerate(completions(cut)):
        assert cut.texts[r] == tok.decode([t for t in row if t < tok.vocab_size])
        assert cut.finish_reason[r] == ("stop" if stop in out.texts[r] else "length")
