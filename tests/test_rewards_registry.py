"""Reward registry and spec parsing."""

import ml_collections
import pytest
import reward_fixtures

from r1jax.rewards import (
    RewardSpec,
    get_reward,
    list_rewards,
    math_accuracy,
    parse_specs,
    register_reward,
    reward_info,
)
from r1jax.rewards.registry import check_worker_importable, resolve_ref

BUILTINS = {
    "math_accuracy",
    "gsm8k_accuracy",
    "format_strict",
    "format_tags",
    "countdown",
    "language_consistency",
    "overlong_penalty",
    "cosine_length",
    "repetition_penalty",
    "code_tests",
}


def test_builtins_are_registered_with_ranges():
    assert set(list_rewards()) >= BUILTINS
    for name in BUILTINS:
        info = reward_info(name)
        assert info.value_range is not None and info.value_range[0] < info.value_range[1]
        assert resolve_ref(info.ref) is info.fn
    assert get_reward("math_accuracy") is math_accuracy


def test_register_decorator_direct_and_conflicts():
    register_reward("test_registry_len", reward_fixtures.length)
    assert get_reward("test_registry_len") is reward_fixtures.length
    register_reward("test_registry_len", reward_fixtures.length)  # same function: no-op
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_registry_len", reward_fixtures.raises)
    register_reward("test_registry_len", reward_fixtures.raises, overwrite=True)
    assert get_reward("test_registry_len") is reward_fixtures.raises

    @register_reward("test_registry_decorated", value_range=(0.0, 2.0))
    def decorated(completion, row):
        return 2.0

    assert get_reward("test_registry_decorated") is decorated
    assert reward_info("test_registry_decorated").value_range == (0.0, 2.0)
    with pytest.raises(ValueError, match="cannot be imported by worker"):
        check_worker_importable(reward_info("test_registry_decorated"))  # a closure
    for bad in ["", "a:b", None]:
        with pytest.raises(ValueError, match="reward name"):
            register_reward(bad, reward_fixtures.length)


def test_module_path_references():
    assert get_reward("reward_fixtures:scaled") is reward_fixtures.scaled
    with pytest.raises(KeyError, match="unknown reward 'nope'.*math_accuracy"):
        get_reward("nope")
    with pytest.raises(ModuleNotFoundError):
        get_reward("no_such_module_xyz:fn")
    with pytest.raises(AttributeError):
        get_reward("reward_fixtures:missing")
    with pytest.raises(ValueError, match="form"):
        resolve_ref("reward_fixtures:")


def test_spec_from_config():
    assert RewardSpec.from_config("format_tags") == RewardSpec("format_tags", 1.0)
    assert RewardSpec.from_config(("math_accuracy", 0.5)) == RewardSpec("math_accuracy", 0.5)
    spec = RewardSpec.from_config(("overlong_penalty", 1.0, {"max_len": 10, "cache_len": 2}))
    assert spec.kwargs == {"max_len": 10, "cache_len": 2} and spec.label == "overlong_penalty"
    spec = RewardSpec.from_config({"name": "code_tests", "key": "code", "timeout_s": 20})
    assert (spec.label, spec.timeout_s, spec.weight) == ("code", 20, 1.0)
    config = ml_collections.ConfigDict({"name": "overlong_penalty", "kwargs": {"max_len": 9}})
    spec = RewardSpec.from_config(config)
    assert spec.name == "overlong_penalty" and spec.kwargs == {"max_len": 9}
    spec = RewardSpec.from_config(("cosine_length", 2.0, ml_collections.ConfigDict({"max_len": 5})))
    assert spec.kwargs == {"max_len": 5} and isinstance(spec.kwargs, dict)
    with pytest.raises(ValueError, match="unknown fields"):
        RewardSpec.from_config({"name": "x", "wieght": 1})
    with pytest.raises(ValueError, match="weight"):
        RewardSpec("x", "heavy")
    with pytest.raises(ValueError, match="finite"):
        RewardSpec("x", float("nan"))
    with pytest.raises(ValueError, match="timeout_s"):
        RewardSpec("x", 1.0, timeout_s=0)
    with pytest.raises(ValueError, match="cannot build"):
        RewardSpec.from_config(42)


def test_parse_specs():
    specs = parse_specs([("math_accuracy", 1.0), ("format_strict", 0.5)])
    assert [(s.name, s.weight) for s in specs] == [("math_accuracy", 1.0), ("format_strict", 0.5)]
    with pytest.raises(ValueError, match="duplicate reward keys"):
        parse_specs(["format_tags", ("format_tags", 2.0)])
    specs = parse_specs(["format_tags", {"name": "format_tags", "key": "tags2"}])
    assert [s.label for s in specs] == ["format_tags", "tags2"]
    with pytest.raises(ValueError, match="must be a list"):
        parse_specs("math_accuracy")
