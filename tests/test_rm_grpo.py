"""A learned reward in GRPO (R1's all-scenario RL): scoring completions with a reward model on
the mesh (``r1jax.rm_scoring``), routing it next to the rule rewards, and ``r1jax rm``
(Bradley-Terry training, resume, HF export) feeding a GRPO run that then learns the task the
preference pairs encode."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from trainer_fixtures import (
    CHARS,
    config_file,
    make_config,
    rm_changes,
    sevens,
    start_two_cli_processes,
    start_two_processes,
    wait_all,
)

from r1jax import build
from r1jax import sharding as shd
from r1jax.checkpoint import CheckpointError
from r1jax.config import ConfigError, validate
from r1jax.model import ModelConfig, create_model
from r1jax.model.hf import config_to_hf, load_hf_model, save_hf_model
from r1jax.rewards import RewardScorer
from r1jax.rm import encode_scored
from r1jax.rm_command import rm_command
from r1jax.rm_scoring import RewardModelTerm, WithRewardModel
from r1jax.tokenizer import CharTokenizer, load_tokenizer

SEVENS = "trainer_fixtures:sevens"
WIDE_CHARS = CHARS + "<>/abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def mesh():
    return shd.make_mesh((4, 2, 1))


def _random_rm(tok, mesh, seed: int = 0):
    """A random one-layer reward model whose score head is scaled up (scores of order 1, so
    rows score clearly differently)."""
    cfg = ModelConfig(vocab_size=tok.vocab_size, num_layers=1, num_labels=1)
    model = create_model(cfg, mesh, seed=seed)
    model.score.set_value(model.score.get_value() * 50.0)
    return model


def _reference(model):
    """``ids -> score``: the model's ``sequence_scores`` on one unpadded row (a host copy of
    its weights on one device: no mesh, no padding, no batching; one compile per length)."""
    graphdef, state = nnx.split(model)
    state = jax.device_get(state)

    @jax.jit
    def one(tokens):
        return nnx.merge(graphdef, state).sequence_scores(tokens, jnp.ones(tokens.shape, bool))

    return lambda ids: float(one(jnp.asarray([ids], jnp.int32))[0, 0])


def _rows(sources, texts=None):
    texts = texts or [f"{i % 10} {(3 * i) % 10}" for i in range(len(sources))]
    return [
        {"text": t, "prompt": t, "source": s, "answer": "7"}
        for t, s in zip(texts, sources, strict=True)
    ]


def _completions(seed):
    """8 random completions over CHARS of 4 or 7 characters (few distinct lengths: the
    reference compiles once per length)."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(CHARS), n)) for n in (4, 7, 7, 4, 4, 7, 4, 7)]


@pytest.fixture(scope="module")
def char_rm(mesh):
    """``(tokenizer, model, reference)`` of a random reward model over CHARS. Its vocabulary
    is that of WIDE_CHARS, whose ids extend CHARS's: the answer-scope test uses it too."""
    tok = CharTokenizer(CHARS)
    wide = CharTokenizer(WIDE_CHARS)
    assert wide.encode(CHARS) == tok.encode(CHARS) and wide.eos_id == tok.eos_id
    model = _random_rm(wide, mesh)
    return tok, model, _reference(model)


@pytest.fixture(scope="module")
def general_term(char_rm, mesh):
    """The reward model of ``char_rm`` for rows of source "general", weight 0.5."""
    tok, model, _ = char_rm
    return RewardModelTerm(model, tok, mesh, weight=0.5, sources=("general",), max_len=32)


SOURCES = ["general", "math"] * 4  # 8 rows: the batch splits over data * fsdp = 8


# ---------------------------------------------------------------- scoring


def test_reward_model_term_scores_match_unpadded_reference(char_rm, general_term):
    tok, _, ref = char_rm
    rows, completions = _rows(SOURCES), _completions(0)
    expected = []
    for row, comp in zip(rows, completions, strict=True):
        ids = tok.encode(row["text"] + comp) + [tok.eos_id]  # BOS + prompt + response + EOS
        assert encode_scored(tok, row["text"], comp) == ids
        expected.append(ref(ids))
    expected = np.array(expected, np.float32)
    assert np.std(expected) > 0.05, expected  # the rows really score differently

    host = RewardScorer([(SEVENS, 1.0)], num_workers=0)
    with WithRewardModel(host, [general_term]) as scorer:
        assert scorer.keys == [SEVENS, "reward_model"]
        res = scorer.score(completions, rows)
        plain = host.score(completions, rows)
    routed = np.array([s == "general" for s in SOURCES])
    np.testing.assert_array_equal(res.applied["reward_model"], routed)
    got = res.per_function["reward_model"]
    np.testing.assert_allclose(got[routed], expected[routed], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[~routed], 0.0)
    rule = [sevens(c, {}) for c in completions]
    np.testing.assert_allclose(res.per_function[SEVENS], rule)
    assert res.applied[SEVENS].all() and max(rule) > 0
    np.testing.assert_allclose(res.total, plain.total + 0.5 * got, rtol=1e-6, atol=1e-6)
    assert res.errors["reward_model"] == 0 and res.timeouts["reward_model"] == 0
    m = res.metrics()
    assert m["rewards/reward_model/mean"] == pytest.approx(float(expected[routed].mean()),
                                                           rel=1e-4, abs=1e-4)  # fmt: skip


def test_answer_scope_and_max_len_truncation(mesh, char_rm):
    _, model, ref = char_rm
    tok = CharTokenizer(WIDE_CHARS)  # room for "<think>...</think>"
    completions = [
        "<think>1 + 2</think> 3 45",
        "<think>a</think>b<think>cd</think>  7777 ",  # the text after the LAST </think>
        "abcd",  # no </think>: scored whole
        "<think>",  # unclosed: scored whole
    ] * 2
    answers = ["3 45", "7777", "abcd", "<think>"] * 2
    rows = _rows(["x"] * 8)  # no sources: every row is scored

    def scores(term, comps):
        out, applied = term.dispatch(comps, rows)
        assert applied.all()
        return np.asarray(jax.device_get(out))

    answer = RewardModelTerm(model, tok, mesh, scope="answer", max_len=16)
    got = scores(answer, completions)
    want = [ref(tok.encode(r["text"] + a) + [tok.eos_id])
            for r, a in zip(rows, answers, strict=True)]  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.std(want) > 0.05

    # a row longer than max_len keeps its LAST max_len ids (the score is read at the EOS)
    short = RewardModelTerm(model, tok, mesh, scope="response", max_len=6)
    full_ids = [tok.encode(r["text"] + c) + [tok.eos_id]
                for r, c in zip(rows, completions, strict=True)]  # fmt: skip
    assert all(len(ids) > 6 for ids in full_ids)
    for r, c, ids in zip(rows, completions, full_ids, strict=True):
        assert short.encode(c, r) == ids[-6:]
    np.testing.assert_allclose(scores(short, completions), [ref(ids[-6:]) for ids in full_ids],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_chat_input_renders_the_question_and_the_scored_answer(mesh, char_rm):
    """input="chat": the reward model tokenizer's chat template on [user: the record's raw
    prompt (not the policy's templated text), assistant: the scored part]; the template's
    own BOS is not doubled."""
    _, model, ref = char_rm
    template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'][0] }} {{ m['content'] }}/"
        "{% endfor %}{{ eos_token }}"
    )
    tok = CharTokenizer(WIDE_CHARS, chat_template=template)
    term = RewardModelTerm(model, tok, mesh, scope="answer", input="chat", max_len=40)
    rows = [{"text": "templated 12", "prompt": "12", "source": "x"}] * 8
    completions = ["<think>ab</think>3", "cd"] * 4
    want = ["<bos>u 12/a 3/<eos>", "<bos>u 12/a cd/<eos>"] * 4
    for c, r, w in zip(completions, rows, want, strict=True):
        assert term.encode(c, r) == tok.encode(w, add_bos=False)
    got, _ = term.dispatch(completions, rows)
    np.testing.assert_allclose(np.asarray(got), [ref(tok.encode(w, add_bos=False)) for w in want],
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="chat_template"):
        RewardModelTerm(model, CharTokenizer(WIDE_CHARS), mesh, input="chat")


def test_rm_training_reads_pairs_as_grpo_scores_completions(tmp_path, mesh, char_rm):
    """`r1jax rm` trains on the text that GRPO's scoring will show the model: with
    reward_model.scope="answer" only the answers, with input="chat" the chat template on the
    plain prompt (the pairs were prompt text + whole response + EOS whatever the settings)."""
    from r1jax.rm import tokenize_pairs
    from r1jax.rm_command import load_pairs

    _, model, _ = char_rm
    template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'][0] }} {{ m['content'] }}/"
        "{% endfor %}{{ eos_token }}"
    )
    tok = CharTokenizer(WIDE_CHARS, chat_template=template)
    pair = {"prompt": "12", "chosen": "<think>ab</think>3", "rejected": "cd"}
    path = _write_jsonl(tmp_path / "pairs.jsonl", [pair])
    c = make_config(str(tmp_path), "rm_layout")
    c.reward_model.train_path = path
    c.reward_model.scope = "answer"
    text = build.prompt_formatter(c, tok)({"prompt": "12"})
    assert load_pairs(c, "train_path", tok) == [(text, "3", "cd")]
    for layout in ("prompt", "chat"):
        c.reward_model.input = layout
        pairs = load_pairs(c, "train_path", tok)
        assert pairs[0][0] == ("12" if layout == "chat" else text)
        term = RewardModelTerm(model, tok, mesh, scope="answer", input=layout, max_len=40)
        row = {"text": text, "prompt": "12"}
        assert tokenize_pairs(tok, pairs, layout) == [
            (term.encode("<think>ab</think>3", row), term.encode("cd", row))]  # fmt: skip
    # prompts that end with <think> (prompt.prefill): the pairs' responses start with it
    # (written by hand) or not (sampled traces); GRPO scores completions sampled after it.
    # Both layouts read one <think>: the prompt's, or the assistant turn's in the chat one.
    c.prompt.prefill = "<think>"
    c.reward_model.scope = "response"
    text = build.prompt_formatter(c, tok)({"prompt": "12"})
    row = {"text": text, "prompt": "12"}
    for layout in ("prompt", "chat"):
        c.reward_model.input = layout
        term = RewardModelTerm(model, tok, mesh, input=layout, max_len=40)
        pairs = load_pairs(c, "train_path", tok)
        want = (term.encode("ab</think>3", row), term.encode("cd", row))
        assert tokenize_pairs(tok, pairs, layout) == [want]
        assert tok.decode(want[0]).count("<think>") == 1, (layout, tok.decode(want[0]))


def test_non_finite_scores_become_zero_and_are_counted(char_rm, general_term, monkeypatch):
    rows, completions = _rows(SOURCES), _completions(1)
    host = RewardScorer([(SEVENS, 1.0)], num_workers=0)
    clean = WithRewardModel(host, [general_term]).score(completions, rows)
    real_score = general_term.score
    # NaN on a routed row (0) and on a row the model does not score (1): only row 0 counts
    monkeypatch.setattr(general_term, "score",
                        lambda *a: real_score(*a).at[jnp.array([0, 1])].set(jnp.nan))  # fmt: skip
    res = WithRewardModel(host, [general_term]).score(completions, rows)
    assert res.errors["reward_model"] == 1 and clean.errors["reward_model"] == 0
    assert res.error_messages["reward_model"] == ["1 non-finite reward-model scores"]
    values = res.per_function["reward_model"]
    assert values[0] == 0.0 and res.applied["reward_model"][0]
    assert clean.per_function["reward_model"][0] != 0.0
    np.testing.assert_array_equal(values[1:], clean.per_function["reward_model"][1:])
    assert np.isfinite(res.total).all()
    assert res.total[0] == pytest.approx(res.per_function[SEVENS][0])  # the rule reward alone
    np.testing.assert_allclose(res.total[1:], clean.total[1:], rtol=1e-6)
    assert res.metrics()["rewards/reward_model/errors"] == 1.0


# ---------------------------------------------------------------- config: routing, errors


@pytest.fixture(scope="module")
def char_rm_dir(tmp_path_factory, char_rm):
    """``char_rm`` exported as a HF directory with its tokenizer."""
    path = str(tmp_path_factory.mktemp("char_rm"))
    tok, model, _ = char_rm
    save_hf_model(model, path, pad_token_id=tok.pad_id)
    tok.save(path)
    return path


def test_routes_send_general_rows_to_the_model_only(tmp_path, mesh, char_rm, char_rm_dir):
    tok, _, ref = char_rm
    c = make_config(str(tmp_path), rewards__num_workers=0)
    c.rewards.routes = ml_collections.ConfigDict({"general": ()})  # no rule for these rows
    c.reward_model.path = char_rm_dir
    c.reward_model.sources = ("general",)
    c.reward_model.weight = 2.0
    validate(c, jax.device_count())
    sources = ["general", "math", "math", "general", "other", "general", "math", "general"]
    rows, completions = _rows(sources), _completions(2)
    expected = np.array([ref(encode_scored(tok, r["text"], comp))
                         for r, comp in zip(rows, completions, strict=True)])  # fmt: skip
    rule = np.array([sevens(comp, {}) for comp in completions])
    general = np.array([s == "general" for s in sources])
    assert rule[~general].max() > 0

    scorer = build.with_reward_model(c, build.build_scorer(c), mesh, build.build_tokenizer(c))
    with scorer:
        assert isinstance(scorer, WithRewardModel)
        res = scorer.score(completions, rows)
    np.testing.assert_array_equal(res.applied["reward_model"], general)
    np.testing.assert_array_equal(res.applied[SEVENS], ~general)
    np.testing.assert_allclose(res.per_function["reward_model"][general], expected[general],
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    np.testing.assert_array_equal(res.per_function["reward_model"][~general], 0.0)
    np.testing.assert_array_equal(res.per_function[SEVENS][general], 0.0)
    want = np.where(general, 2.0 * expected, rule)
    np.testing.assert_allclose(res.total, want, rtol=1e-4, atol=1e-4)

    # without a reward model path the host scorer is returned unchanged
    c.reward_model.path = ""
    host = build.build_scorer(c)
    assert build.with_reward_model(c, host, mesh, tok) is host
    host.close()


def test_reward_model_sources_that_no_prompt_has_are_refused(tmp_path, char_rm_dir, monkeypatch):
    """reward_model.sources naming no training prompt's source: the learned reward would
    score no rollout (old code: it ran, reward/fn/reward_model 0 throughout)."""
    from r1jax.rl.trainer import GRPOTrainer

    monkeypatch.setattr(build, "build_model", lambda *a, **k: pytest.fail("model built first"))
    c = make_config(str(tmp_path), rewards__num_workers=0)
    c.reward_model.path, c.reward_model.sources = char_rm_dir, ("general", "chat")
    said = r"^config.reward_model.sources=\('general', 'chat'\): no training prompt has any "
    theirs = r"training prompts' sources: \['custom'\]"
    with pytest.raises(ConfigError, match=said + rf"of these sources \({theirs}"):
        GRPOTrainer(c)


def test_reward_model_settings_that_do_nothing_are_warned_of(caplog):
    """reward_model.weight / sources without reward_model.path do nothing."""
    from r1jax.config import base_config
    from r1jax.rl.checks import check_reward_model

    c = base_config()
    records = [{"prompt": "p", "source": "countdown"}]
    with caplog.at_level("WARNING"):
        check_reward_model(c, records)
    assert caplog.text == ""
    c.reward_model.weight = 0.05
    with caplog.at_level("WARNING"):
        check_reward_model(c, records)
    assert (
        "reward_model.weight=0.05 / sources=() do nothing: reward_model.path is empty"
        in caplog.text
    )


def test_routes_keys_no_prompt_has_are_warned_of_and_a_table_routing_nothing_refused(caplog):
    """A rewards.routes key that neither a training prompt nor a run-scored eval row has (a
    misspelt source keeps its rows on the default terms) is warned of; a route for eval rows
    alone is fine; a table none of whose keys any row has is an error."""
    from r1jax.config import base_config
    from r1jax.eval_sets import EvalSet
    from r1jax.rl.checks import check_routes

    c = base_config()
    train = [{"prompt": "p", "source": "countdown"}]
    held_out = EvalSet("", "held-out", [{"prompt": "q", "source": "gsm8k"}], None, 1)
    benchmark = EvalSet("mbpp", "mbpp", [{"prompt": "q", "source": "code"}], None, 1,
                        accuracy=("code_tests", 1.0))  # fmt: skip
    terms = (("countdown", 1.0),)
    c.rewards.routes = {"countdown": terms, "gsm8k": terms}
    with caplog.at_level("WARNING"):
        check_routes(c, train, [held_out])
    assert caplog.text == ""
    c.rewards.routes = {"countdown": terms, "coutndown": terms, "code": terms}
    with caplog.at_level("WARNING"):
        check_routes(c, train, [held_out, benchmark])  # (mbpp is scored by its own reward)
    assert (
        "rewards.routes ['code', 'coutndown']: no training or evaluation prompt has these "
        "sources (training prompts' sources: ['countdown']; evaluation rows': ['gsm8k']); "
        "they route nothing" in caplog.text
    )
    c.rewards.routes = {"coutndown": terms}
    with pytest.raises(ConfigError, match=r"rewards.routes keys \['coutndown'\]: no training "):
        check_routes(c, train, [])


@pytest.mark.parametrize(
    "field, value",
    [("scope", "summary"), ("input", "raw"), ("batch_size", 0)],
)
def test_bad_reward_model_config_names_the_field(tmp_path, field, value):
    c = make_config(str(tmp_path))
    validate(c, jax.device_count())
    c.reward_model[field] = value
    with pytest.raises(ConfigError, match=rf"reward_model\.{field}="):
        validate(c, jax.device_count())


@pytest.mark.parametrize("num_labels", [0, 2])
def test_only_a_one_label_classifier_is_a_reward_model(tmp_path, mesh, num_labels):
    """A causal LM (num_labels 0) or a 2-class classifier at reward_model.path is refused
    before any weight is read."""
    path = tmp_path / "hf"
    path.mkdir()
    cfg = ModelConfig(vocab_size=len(CHARS) + 3, num_labels=num_labels)
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, "float32")))
    c = make_config(str(tmp_path))
    c.reward_model.path = str(path)
    with pytest.raises(ConfigError, match=rf"reward_model\.path=.*num_labels={num_labels}"):
        build.with_reward_model(c, object(), mesh, CharTokenizer(CHARS))


def test_rm_command_needs_train_path(tmp_path):
    c = make_config(str(tmp_path))
    c.reward_model.steps = 5
    with pytest.raises(ConfigError, match=r"reward_model\.train_path"):
        rm_command(c, emit=lambda s: None)
    assert not os.path.exists(os.path.join(c.run_dir, "rm"))
    # a missing pairs file is named before any model loads (old code: after the model)
    c.reward_model.train_path = str(tmp_path / "no_pairs.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "load_run_model", lambda *a, **k: pytest.fail("model loaded first"))
        with pytest.raises((ConfigError, FileNotFoundError), match="no_pairs.jsonl"):
            rm_command(c, emit=lambda s: None)


# ---------------------------------------------------------------- r1jax rm -> GRPO


def _preference_pairs(n: int, seed: int) -> list[dict]:
    """``chosen`` has a clearly larger fraction of '7' than ``rejected`` (random strings over
    CHARS of 3-7 characters; prompts like the GRPO fixture's)."""
    rng = np.random.default_rng(seed)
    others = [ch for ch in CHARS if ch != "7"]

    def text():
        p7 = rng.uniform(0.0, 1.0)
        return "".join("7" if rng.uniform() < p7 else rng.choice(others)
                       for _ in range(rng.integers(3, 8)))  # fmt: skip

    out = []
    while len(out) < n:
        a, b = text(), text()
        if abs(sevens(a, {}) - sevens(b, {})) < 0.2:
            continue
        chosen, rejected = (a, b) if sevens(a, {}) > sevens(b, {}) else (b, a)
        prompt = f"{rng.integers(10)} {rng.integers(10)}"
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def _write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


RM_STEPS = 40
# Exported weights of 2 processes vs 1, x lr: AdamW amplifies the rounding differences of the
# collectives (tests/test_multihost.py); measured 2.9e-4 x lr after 40 steps, a wrong shard or
# row would be off by ~0.1.
TWO_PROCESS_ATOL = 2e-3
GRPO_STEPS = 20


def _rm_config(root: str):
    return make_config(root, "rm_run", **rm_changes(root, RM_STEPS))


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    """``r1jax rm`` once for the module: ``(root dir, result, emitted lines)``."""
    root = str(tmp_path_factory.mktemp("rm"))
    _write_jsonl(os.path.join(root, "pairs.jsonl"), _preference_pairs(256, seed=0))
    _write_jsonl(os.path.join(root, "held_out.jsonl"), _preference_pairs(32, seed=1))
    c = _rm_config(root)
    lines: list[str] = []
    result = rm_command(c, emit=lines.append)
    return root, result, lines


def _safetensors(path):
    from r1jax.model.safetensors_io import SafetensorsFile

    f = SafetensorsFile(os.path.join(path, "model.safetensors"))
    names = f.keys()
    return {name: np.asarray(f.get(name)) for name in names}


def test_rm_command_trains_then_grpo_learns_from_it(trained_rm):
    root, result, lines = trained_rm
    c = _rm_config(root)
    folder = os.path.join(c.run_dir, "rm")
    hf_dir = result["hf_dir"]
    assert hf_dir == os.path.join(folder, "hf") and result["step"] == RM_STEPS
    assert any(line.startswith(f"reward model: 256 pairs, {RM_STEPS} steps, from random init")
               for line in lines), lines  # fmt: skip
    saved = json.load(open(os.path.join(folder, "eval.json")))
    before, after = saved["eval_before"], saved["eval_after"]
    assert after["pairs"] == 32 and after == result["eval_after"]
    assert after["accuracy"] >= 0.9 and after["accuracy"] > before["accuracy"], saved
    assert after["loss"] < before["loss"]
    metrics = [json.loads(x) for x in open(os.path.join(folder, "metrics.jsonl"))]
    assert metrics[-1]["step"] == RM_STEPS and "rm/loss" in metrics[-1]
    assert os.listdir(os.path.join(folder, "checkpoints")) == [str(RM_STEPS)]
    # the layout it was trained on goes with it; GRPO refuses to score another one
    layout = json.load(open(os.path.join(hf_dir, "r1jax_reward_layout.json")))
    assert layout == {"input": "prompt", "scope": "response"}
    other = make_config(root, "other_scope")
    other.reward_model.update(dict(path=hf_dir, scope="answer"))
    with pytest.raises(ConfigError, match=r"config.reward_model.scope='answer', but the reward "
                       r"model at .* was trained by r1jax rm with scope='response'"):  # fmt: skip
        build.check_reward_layout(other)

    # GRPO with the learned reward only (the rule's weight is 0): the true objective rises
    from r1jax.rl.trainer import GRPOTrainer

    g = make_config(root, "grpo", train__steps=GRPO_STEPS, train__checkpoint_every=0)
    g.reward_model.path = hf_dir
    g.rewards.functions = ((SEVENS, 0.0),)
    g.rl.share_prompt = False  # the same update, compiled faster on CPU
    trainer = GRPOTrainer(g)
    try:
        assert isinstance(trainer.rollout_scorer, WithRewardModel)
        assert trainer.scorer is not trainer.rollout_scorer  # evaluation: rules only
        history = trainer.train()
    finally:
        trainer.close()
    true = np.array([h[f"reward/fn/{SEVENS}/mean"] for h in history])
    learned = np.array([h["reward/fn/reward_model/mean"] for h in history])
    total = np.array([h["reward/mean"] for h in history])
    np.testing.assert_allclose(total, learned, rtol=1e-4, atol=1e-4)  # weight 1 and 0
    assert np.mean(true[-4:]) > np.mean(true[:4]) + 0.2, true
    assert np.mean(learned[-4:]) > np.mean(learned[:4]), learned
    assert all(h["reward/errors/reward_model"] == 0 for h in history)
    rows = [json.loads(x) for x in open(os.path.join(g.run_dir, "metrics.jsonl"))]
    assert "reward/fn/reward_model/mean" in rows[-1]


def test_two_processes_train_and_export_the_reward_model_like_one(trained_rm, tmp_path):
    """`r1jax rm` on 2 processes x 4 CPU devices with FSDP over both (every parameter split
    across them) ends like the module's run on 1 process x 8 devices: the same held-out pair
    metrics, training curve and exported weights up to the rounding of the different
    collectives; process 0 alone writes the export, its tokenizer and the results."""
    root, result, _ = trained_rm
    cfg = config_file(root, "rm_two", "c.mesh.shape = (1, 8, 1)", **rm_changes(root, RM_STEPS))
    procs, logs = start_two_cli_processes(tmp_path, "rm", cfg)
    wait_all(procs, logs, time.monotonic() + 240)
    one, two = (os.path.join(root, run, "rm") for run in ("rm_run", "rm_two"))
    said = [open(log).read() for log in logs]
    assert f"reward model: wrote {two}/hf" in said[0] and "reward model:" not in said[1]

    got = json.load(open(os.path.join(two, "eval.json")))
    want = json.load(open(os.path.join(one, "eval.json")))
    assert got["hf_dir"] == os.path.join(two, "hf") and got["step"] == want["step"]
    for when in ("eval_before", "eval_after"):
        assert got[when]["pairs"] == want[when]["pairs"] == 32
        for k, v in want[when].items():
            assert got[when][k] == pytest.approx(v, rel=1e-3, abs=1e-4), (when, k)
    curve = lambda d: [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    a, b = curve(one), curve(two)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    np.testing.assert_allclose([r["rm/loss"] for r in b], [r["rm/loss"] for r in a], rtol=1e-3)

    w1, w2 = _safetensors(os.path.join(one, "hf")), _safetensors(os.path.join(two, "hf"))
    assert sorted(w2) == sorted(w1) and "score.weight" in w1
    atol = TWO_PROCESS_ATOL * _rm_config(root).reward_model.lr
    for name, v in w1.items():
        np.testing.assert_allclose(w2[name], v, rtol=1e-4, atol=atol, err_msg=name)
    for name in ("config.json", *sorted(f for f in os.listdir(os.path.join(one, "hf"))
                                        if f.startswith("tokenizer"))):  # fmt: skip
        assert (
            open(os.path.join(two, "hf", name)).read() == open(os.path.join(one, "hf", name)).read()
        ), name


def test_rm_export_loads_in_r1jax_and_transformers_alike(trained_rm, mesh):
    """<run_dir>/rm/hf: a HF reward model with the run's tokenizer, that r1jax and
    transformers load and score alike."""
    root, result, _ = trained_rm
    c = _rm_config(root)
    hf_dir = result["hf_dir"]
    tok = build.build_tokenizer(c)
    assert load_tokenizer(hf_dir).encode("3 5+7") == tok.encode("3 5+7")
    model = load_hf_model(hf_dir, mesh)
    assert model.cfg.num_labels == 1
    ref = _reference(model)
    fmt = build.prompt_formatter(c, tok)
    probe = [("3 5", "7777"), ("1 2", "0120"), ("9 9", "7 +7")]  # one length: one compile
    ids = [encode_scored(tok, fmt({"prompt": p}), r) for p, r in probe]
    ours = np.array([ref(x) for x in ids])
    assert ours[0] > ours[2] > ours[1]  # more sevens, more reward
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir)
    hf.eval()
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == tok.pad_id
    assert (hf.config.bos_token_id, hf.config.eos_token_id) == (tok.bos_id, tok.eos_id)
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(hf_dir)  # the char vocab
    assert [hf_tok(fmt({"prompt": p}) + r)["input_ids"] for p, r in probe] == [
        tok.encode(fmt({"prompt": p}) + r) for p, r in probe]  # fmt: skip
    with torch.no_grad():
        theirs = np.array([float(hf(input_ids=torch.tensor([x])).logits[0, 0]) for x in ids])
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def test_rm_command_rerun_finds_the_finished_checkpoint(trained_rm, capsys):
    root, result, _ = trained_rm
    hf_dir = result["hf_dir"]
    exported = _safetensors(hf_dir)
    metrics = os.path.join(root, "rm_run", "rm", "metrics.jsonl")
    logged = open(metrics).read()
    capsys.readouterr()

    lines: list[str] = []
    again = rm_command(_rm_config(root), emit=lines.append)
    assert any(f"resuming {os.path.join(root, 'rm_run', 'rm', 'checkpoints')} at step "
               f"{RM_STEPS}" in line for line in lines), lines  # fmt: skip
    assert "nothing to" in capsys.readouterr().out
    assert open(metrics).read() == logged  # no step was trained
    assert again["eval_before"] == result["eval_before"]  # kept from the first run (was None)
    assert again["eval_after"]["accuracy"] == pytest.approx(result["eval_after"]["accuracy"])
    now = _safetensors(hf_dir)
    assert now.keys() == exported.keys()
    for name, value in exported.items():
        np.testing.assert_array_equal(now[name], value, err_msg=name)

    other = _rm_config(root)
    other.reward_model.batch_size = 8
    with pytest.raises(CheckpointError, match="batch_size"):
        rm_command(other, emit=lambda s: None)


def test_each_process_gets_its_own_rows_scores_on_a_mesh_out_of_process_order(tmp_path):
    """Two processes whose batch blocks are not in process order (process 1 holds the first):
    each process's learned rewards are its own completions' scores (they were the other
    process's: the scores were sliced by process index)."""
    worker = os.path.join(os.path.dirname(__file__), "rm_scoring_worker.py")
    procs, logs = start_two_processes(tmp_path, [sys.executable, worker, str(tmp_path)])
    wait_all(procs, logs, time.monotonic() + 240)
    scores = [json.load(open(tmp_path / f"scores{p}.json")) for p in range(2)]
    assert np.abs(np.subtract(scores[0]["want"], scores[1]["want"])).max() > 1e-2
    for p, s in enumerate(scores):
        np.testing.assert_allclose(s["got"], s["want"], atol=1e-5, err_msg=f"process {p}")


@pytest.mark.parametrize("room", [3, 0], ids=["free_id", "no_free_id"])
def test_rm_export_with_pad_equal_to_eos_scores_alike_in_transformers(tmp_path, room, caplog):
    """A tokenizer that pads with its EOS (Qwen2.5 base, Llama 3): transformers pools at the
    last token that is not the pad id, which was the token before the scored EOS. The export
    adds a pad token of its own at the first free id of the embedding, and a right-padded HF
    batch scores like r1jax; with no free id config.json has no pad id (single rows right)."""
    from r1jax.config import base_config
    from r1jax.rm_export import PAD_TOKEN, export_reward_model

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = CharTokenizer("ab?= ", specials=("<bos>", "<eos>"), pad_token=None)
    assert tok.pad_id == tok.eos_id
    cfg = ModelConfig(vocab_size=tok.vocab_size + room, num_labels=1)
    model = create_model(cfg, None, seed=0)
    hf_dir = str(tmp_path / "hf")
    export_reward_model(base_config(), model, tok, hf_dir, primary=True)
    rows = [encode_scored(tok, "a?", "abba"), encode_scored(tok, "b?", "a")]  # end in EOS
    ours = [float(model.sequence_scores(jnp.asarray([x]), jnp.ones((1, len(x)), bool))[0, 0])
            for x in rows]  # fmt: skip
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        if room:
            assert hf.config.pad_token_id == tok.vocab_size
            hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(hf_dir)
            assert (hf_tok.pad_token, hf_tok.pad_token_id) == (PAD_TOKEN, tok.vocab_size)
            batch = hf_tok.pad({"input_ids": rows}, return_tensors="pt")  # right padding
            theirs = hf(**batch).logits[:, 0].numpy()
            assert load_tokenizer(hf_dir).pad_id == tok.vocab_size
            assert load_tokenizer(hf_dir).encode("a?abba") == tok.encode("a?abba")
        else:
            assert hf.config.pad_token_id is None
            assert "no free id for a pad token" in caplog.text
            theirs = [float(hf(input_ids=torch.tensor([x])).logits[0, 0]) for x in rows]
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
