"""RewardScorer: routing, weighted sums, and survival of hanging or crashing rewards."""

import sys
import time

import numpy as np
import pytest
import reward_fixtures  # noqa: F401  (registers the fixture rewards)

from r1jax.rewards import RewardScorer, get_reward

TIMEOUT = 1.0
GRACE = 0.5
MARGIN = 1.5  # scheduling, pipe and worker-restart slack on a loaded 2-core machine

DEFAULT = [("math_accuracy", 1.0), ("format_tags", 0.5)]
ROUTES = {
    "gsm8k": [("gsm8k_accuracy", 1.0), ("format_tags", 0.25)],
    "countdown": [("countdown", 2.0)],
}
COMPLETIONS = [
    "<think>x</think><answer>\\boxed{\\frac12}</answer>",
    "<think>x</think> \\boxed{3}",
    "#### 72",
    "<answer>72</answer> <think>",
    "<answer>3*5+7</answer>",
    "<answer>3*5</answer>",
    "\\boxed{0.5}",
]
ROWS = [
    {"answer": "0.5", "source": "math"},
    {"answer": "4"},
    {"answer": "#### 72", "source": "gsm8k"},
    {"answer": "#### 72", "source": "gsm8k"},
    {"numbers": [3, 5, 7], "target": 22, "source": "countdown"},
    {"numbers": [3, 5, 7], "target": 22, "source": "countdown"},
    {"answer": "\\frac{1}{2}", "source": "unrouted"},
]


def reference(completions, rows):
    """Loop reference: per-key raw values, masks and weighted totals."""
    keys = ["math_accuracy", "format_tags", "gsm8k_accuracy", "countdown"]
    values = {k: np.zeros(len(rows)) for k in keys}
    applied = {k: np.zeros(len(rows), bool) for k in keys}
    total = np.zeros(len(rows))
    for i, (c, r) in enumerate(zip(completions, rows, strict=True)):
        for name, weight in ROUTES.get(r.get("source"), DEFAULT):
            v = get_reward(name)(c, r)
            values[name][i] = v
            applied[name][i] = True
            total[i] += weight * v
    return keys, values, applied, total


@pytest.mark.parametrize("num_workers", [0, 2])
def test_routing_and_weighted_sum_match_reference(num_workers):
    keys, values, applied, total = reference(COMPLETIONS, ROWS)
    # Hand check of the reference itself for a few samples.
    np.testing.assert_allclose(total, [1.5, 0.25, 1.0, 1.1875, 2.0, 0.2, 1.0])
    with RewardScorer(DEFAULT, routes=ROUTES, num_workers=num_workers, timeout_s=10) as scorer:
        result = scorer.score(COMPLETIONS, ROWS)
    assert scorer.keys == keys
    assert result.total.dtype == np.float32 and result.total.shape == (len(ROWS),)
    np.testing.assert_allclose(result.total, total, rtol=1e-6)
    for k in keys:
        np.testing.assert_allclose(result.per_function[k], values[k])
        np.testing.assert_array_equal(result.applied[k], applied[k])
    assert result.timeouts == dict.fromkeys(keys, 0) and result.errors == dict.fromkeys(keys, 0)
    metrics = result.metrics()
    assert metrics["rewards/countdown/mean"] == pytest.approx(0.55)  # (1.0 + 0.1) / 2
    assert metrics["rewards/total/mean"] == pytest.approx(total.mean())


def test_module_path_specs_and_duplicate_keys():
    specs = [
        ("reward_fixtures:scaled", 1.0, {"factor": 2.0}),
        {
            "name": "reward_fixtures:scaled",
            "key": "scaled3",
            "weight": 0.5,
            "kwargs": {"factor": 3},
        },
    ]
    with RewardScorer(specs, num_workers=1) as scorer:
        result = scorer.score(["", ""], [{"x": "ab"}, {"x": "abcd"}])
    np.testing.assert_allclose(result.per_function["reward_fixtures:scaled"], [4.0, 8.0])
    np.testing.assert_allclose(result.per_function["scaled3"], [6.0, 12.0])
    np.testing.assert_allclose(result.total, [7.0, 14.0])


def test_configuration_errors():
    with pytest.raises(KeyError, match="unknown reward"):
        RewardScorer([("no_such_reward", 1.0)], num_workers=0)
    with pytest.raises(ValueError, match="bad kwargs"):
        RewardScorer([("overlong_penalty", 1.0, {"max_length": 3})], num_workers=0)
    with pytest.raises(ValueError, match="differs from an earlier spec"):
        RewardScorer(
            [("overlong_penalty", 1.0, {"max_len": 10, "cache_len": 2})],
            routes={"x": [("overlong_penalty", 1.0)]},
            num_workers=0,
        )


def test_functions_not_importable_by_workers_are_rejected():
    from r1jax.rewards import register_reward

    register_reward("test_scorer_closure", lambda c, r: 1.0)
    with pytest.raises(ValueError, match="cannot be imported by worker"):
        RewardScorer(["test_scorer_closure"], num_workers=1)
    with RewardScorer(["test_scorer_closure"], num_workers=0) as scorer:
        assert scorer.score(["a"], [{}]).total[0] == 1.0


def test_submit_validation():
    with RewardScorer(["format_tags"], num_workers=0) as scorer:
        with pytest.raises(ValueError, match="2 completions but 1 rows"):
            scorer.submit(["a", "b"], [{}])
        with pytest.raises(TypeError, match=r"completions\[1\]"):
            scorer.submit(["a", None], [{}, {}])
        with pytest.raises(TypeError, match=r"rows\[0\]"):
            scorer.submit(["a"], ["row"])
        assert scorer.score([], []).total.shape == (0,)


@pytest.fixture(scope="module")
def bad_scorer():
    specs = [
        ("fixture_length", 1.0),
        ("fixture_sleep_forever", 1.0),
        ("fixture_c_hang", 1.0),
        ("fixture_stubborn", 1.0),
        ("fixture_segfault", 1.0),
        ("fixture_raises", 1.0),
    ]
    with RewardScorer(specs, num_workers=2, timeout_s=TIMEOUT, kill_grace_s=GRACE) as scorer:
        scorer.score(["warm"], [{}])
        yield scorer


def check_healthy(scorer):
    result = scorer.score(["ok"] * 6, [{}] * 6)
    np.testing.assert_allclose(result.total, [2 + 1 + 1 + 1 + 1 + 0.5] * 6)
    assert sum(result.timeouts.values()) == 0 and sum(result.errors.values()) == 0


@pytest.mark.parametrize(
    ("word", "key", "kind", "budget"),
    [
        ("hang", "fixture_sleep_forever", "timeouts", TIMEOUT),  # worker's own timer
        ("hang", "fixture_c_hang", "timeouts", TIMEOUT + GRACE),  # killed by the parent
        ("hang", "fixture_stubborn", "timeouts", TIMEOUT + GRACE),  # swallows the timer
        ("crash", "fixture_segfault", "errors", 0.0),  # os.kill(SIGSEGV)
        ("null", "fixture_segfault", "errors", 0.0),  # ctypes.string_at(0)
        ("boom", "fixture_raises", "errors", 0.0),
        ("nan", "fixture_raises", "errors", 0.0),
    ],
)
def test_misbehaving_reward_scores_zero_and_pool_recovers(word, key, kind, budget):
    """``key`` misbehaves on ``word`` (scored alone: several fixtures react to a word)."""
    with RewardScorer([(key, 1.0)], num_workers=1, timeout_s=TIMEOUT, kill_grace_s=GRACE) as one:
        one.score(["warm"], [{}])
        start = time.monotonic()
        result = one.score(["ok", word, "ok"], [{}] * 3)
        elapsed = time.monotonic() - start
        assert elapsed < budget + MARGIN, elapsed
        assert result.per_function[key][1] == 0.0
        assert getattr(result, kind)[key] == 1
        assert len(result.error_messages[key]) == 1
        ok_value = 0.5 if key == "fixture_raises" else 1.0
        np.testing.assert_allclose(result.per_function[key][[0, 2]], [ok_value, ok_value])
        next_batch = one.score(["ok"] * 4, [{}] * 4)  # the pool still works
        np.testing.assert_allclose(next_batch.total, [ok_value] * 4)


def test_mixed_failures_in_one_batch(bad_scorer):
    start = time.monotonic()
    result = bad_scorer.score(["ok", "hang", "crash", "null", "boom", "str"], [{}] * 6)
    elapsed = time.monotonic() - start
    # One hang of each of the 3 kinds may run back to back in one worker.
    assert elapsed < TIMEOUT + 2 * (TIMEOUT + GRACE) + 2 * MARGIN, elapsed
    assert result.timeouts == {
        "fixture_length": 0,
        "fixture_sleep_forever": 1,
        "fixture_c_hang": 1,
        "fixture_stubborn": 1,
        "fixture_segfault": 0,
        "fixture_raises": 0,
    }
    assert result.errors["fixture_segfault"] == 2 and result.errors["fixture_raises"] == 2
    np.testing.assert_allclose(result.per_function["fixture_length"], [2, 4, 5, 4, 4, 3])
    assert result.total[0] == pytest.approx(2 + 1 + 1 + 1 + 1 + 0.5)
    assert result.total[1] == pytest.approx(4 + 0 + 0 + 0 + 1 + 0.5)
    assert bad_scorer.restarts >= 4  # c_hang, stubborn, 2 segfaults
    check_healthy(bad_scorer)


def test_submit_is_non_blocking_and_handles_overlap(bad_scorer):
    start = time.monotonic()
    slow = bad_scorer.submit(["hang"], [{}])
    fast = bad_scorer.submit(["ok"], [{}])
    assert time.monotonic() - start < 0.2
    assert not slow.done()
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.01)
    assert fast.result(timeout=30).total[0] == pytest.approx(2 + 1 + 1 + 1 + 1 + 0.5)
    slow_result = slow.result(timeout=30)
    assert slow.done() and slow_result.timeouts["fixture_sleep_forever"] == 1


def test_unpicklable_row_is_an_error_not_a_crash(bad_scorer):
    result = bad_scorer.score(["ok", "ok", "ok"], [{}, {"fn": lambda: 1}, {}])
    assert result.errors == dict.fromkeys(bad_scorer.keys, 1)
    assert "cannot send" in result.error_messages["fixture_length"][0]
    np.testing.assert_allclose(result.total, [6.5, 0.0, 6.5])  # other samples unaffected
    check_healthy(bad_scorer)


def test_sympy_hang_returns_within_timeout():
    with RewardScorer(["math_accuracy"], num_workers=1, timeout_s=TIMEOUT, kill_grace_s=GRACE) as s:
        s.score(["\\boxed{1}"], [{"answer": "1"}])  # start the worker, import sympy
        start = time.monotonic()
        result = s.score(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{5}"], [{"answer": "5"}] * 2)
        elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT + GRACE + MARGIN, elapsed
    np.testing.assert_array_equal(result.total, [0.0, 1.0])
    assert result.timeouts["math_accuracy"] == 1


def test_serial_mode_timeout_and_errors():
    with RewardScorer(
        ["fixture_sleep_forever", "fixture_raises"], num_workers=0, timeout_s=0.5
    ) as scorer:
        start = time.monotonic()
        result = scorer.score(["hang", "boom"], [{}, {}])
        assert time.monotonic() - start < 0.5 + MARGIN
    assert result.timeouts == {"fixture_sleep_forever": 1, "fixture_raises": 0}
    assert result.errors == {"fixture_sleep_forever": 0, "fixture_raises": 1}
    np.testing.assert_allclose(result.total, [0.5, 1.0])


def test_close_is_idempotent_and_final():
    scorer = RewardScorer(["format_tags"], num_workers=1)
    assert scorer.score(["<think>"], [{}]).total[0] == 0.25
    scorer.close()
    scorer.close()
    with pytest.raises(RuntimeError, match="closed"):
        scorer.submit(["a"], [{}])


def test_worker_memory_limit():
    with RewardScorer(["fixture_alloc"], num_workers=1, worker_memory_mb=1024) as scorer:
        result = scorer.score(["ok", "alloc", "ok"], [{}] * 3)
    np.testing.assert_array_equal(result.total, [1.0, 0.0, 1.0])
    assert result.errors["fixture_alloc"] == 1
    assert "MemoryError" in result.error_messages["fixture_alloc"][0]


def test_what_reaches_a_result_pipe_is_parsed_not_unpickled(tmp_path):
    """A worker's answers are JSON: a pickle written to its result pipe (code that a reward
    runs can reach it) runs nothing in the trainer; the call fails, the worker is replaced and
    the next calls score (old code: the pickle ran, creating the marker file)."""
    marker = tmp_path / "ran_in_the_trainer"
    with RewardScorer(["fixture_forge", "fixture_length"], num_workers=1) as scorer:
        result = scorer.score(["abc"], [{"marker": str(marker)}])
        again = scorer.score(["abcd"], [{"marker": str(marker), "plain": True}])
    assert not marker.exists()
    assert result.errors["fixture_forge"] == 1 and again.errors["fixture_forge"] == 1
    assert (result.total[0], again.total[0]) == (3.0, 4.0)  # (fixture_length's)


def test_workers_are_replaced_after_max_calls_per_worker():
    """State a reward keeps in its worker (a leaking cache) lives for at most
    max_calls_per_worker calls: the idle worker is replaced, and no call is lost or failed."""
    kw = dict(num_workers=1, chunk_size=2)
    with RewardScorer(["fixture_served"], max_calls_per_worker=4, **kw) as scorer:
        served = [scorer.score(["x"] * 3, [{}] * 3).total for _ in range(6)]
        recycled = scorer._pool.recycled
    served = np.concatenate(served)
    assert served.max() <= 4 + 2 and served.min() == 1, served  # (+ the chunk in flight)
    assert recycled >= 3 and np.all(served > 0)
    with RewardScorer(["fixture_served"], **kw) as scorer:  # default: never replaced
        served = np.concatenate([scorer.score(["x"] * 3, [{}] * 3).total for _ in range(6)])
    np.testing.assert_array_equal(served, np.arange(1, 19))


def test_workers_that_cannot_import_the_reward_break_the_pool_cleanly(monkeypatch):
    """A module that exists only in the parent: workers fail to start, calls get errors."""
    import types

    from r1jax.rewards import register_reward

    module = types.ModuleType("phantom_rewards_module")
    exec("def reward(completion, row):\n    return 1.0", module.__dict__)
    monkeypatch.setitem(sys.modules, "phantom_rewards_module", module)
    register_reward("test_phantom", module.reward)
    scorer = RewardScorer(["test_phantom"], num_workers=1)
    try:
        # The worker needs ~0.3 s to fail, so this batch is normally queued before the
        # pool breaks; its calls then complete as errors instead of hanging.
        try:
            result = scorer.submit(["a", "b"], [{}, {}]).result(timeout=30)
            assert result.errors == {"test_phantom": 2}
            assert "phantom_rewards_module" in result.error_messages["test_phantom"][0]
        except RuntimeError as e:  # the pool broke first: submit refuses instead
            assert "phantom_rewards_module" in str(e)
        with pytest.raises(RuntimeError, match="phantom_rewards_module"):
            scorer.submit(["a"], [{}])
    finally:
        scorer.close()


def test_a_failing_reward_is_reported_once_with_an_example(caplog):
    """A reward that raises scores 0 and was only counted in the metrics (a host whose
    environment broke the term trained on silently): the trainer's rollouts warn the first
    time each term fails, naming it with an example message."""
    import logging

    from r1jax.rl.rollout import warn_reward_failures

    warned: set[str] = set()
    with RewardScorer([("fixture_raises", 1.0), ("fixture_length", 1.0)], num_workers=0) as s:
        for _ in range(2):
            result = s.score(["ok", "boom", "boom"], [{}] * 3)
            with caplog.at_level(logging.WARNING):
                warn_reward_failures(result, 3, warned)
    said = [r.getMessage() for r in caplog.records if "failed on" in r.getMessage()]
    assert len(said) == 1 and warned == {"fixture_raises"}
    assert said[0].startswith("reward 'fixture_raises' failed on 2 of 3 rows of this process")
    assert "boom" in said[0]
