"""Config validation fails before any compile, naming the field and the value."""

import importlib.util
import os
import subprocess
import sys

import pytest

from r1jax.config import ConfigError, base_config, unknown_field, validate
from r1jax.model.config import ModelConfig, get_preset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def test_base_config_validates():
    cfg = validate(base_config(), num_devices=8)
    assert cfg.family == "qwen2"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("sampling.top_p", 0.0, r"config.sampling.top_p=0.0: must be in \(0, 1\]"),
        ("sampling.top_p", 1.5, r"sampling.top_p=1.5"),
        ("rl.group_size", 1, r"config.rl.group_size=1: GRPO needs at least 2"),
        ("rl.loss_type", "ppo", r"config.rl.loss_type='ppo'"),
        ("model.preset", "gpt5", r"model.preset='gpt5' is unknown"),
        ("model.dtype", "float8", r"config.model.dtype='float8'"),
        ("sampling.max_new_tokens", 5000, r"exceeds the model context 2048"),
        ("mesh.cpu_devices", -2, r"config.mesh.cpu_devices=-2: must be >= 0, or -1"),
        ("train.eval_samples", 0, r"config.train.eval_samples=0: must be >= 1"),
        ("train.eval_prompts", -1, r"config.train.eval_prompts=-1: must be >= 0 \(0: all\)"),
        ("train.eval_top_p", 0.0, r"config.train.eval_top_p=0.0: must be in \(0, 1\]"),
        ("train.eval_temperature", -0.1, r"config.train.eval_temperature=-0.1"),
        ("rewards.timeout_s", 0.0, r"config.rewards.timeout_s=0.0: must be > 0"),
        ("rewards.num_workers", -1, r"config.rewards.num_workers=-1: must be >= 0"),
        ("rewards.worker_max_calls", -5, r"config.rewards.worker_max_calls=-5: must be >= 0"),
        # each of these ran before: SFT ascended at lr=-1, b1=1.5 diverged, warmup -5 and
        # grad_clip -1 were ignored, ref_update_every=-1 reset the reference every step
        ("optim.b1", 1.5, r"config.optim.b1=1.5: must be in \[0, 1\)"),
        ("optim.warmup_steps", -5, r"config.optim.warmup_steps=-5: must be >= 0"),
        ("optim.grad_clip", -1.0, r"config.optim.grad_clip=-1.0: must be >= 0"),
        ("rl.ref_update_every", -1, r"config.rl.ref_update_every=-1: must be >= 0 \(0: never"),
        ("rl.max_refill_rounds", -2, r"config.rl.max_refill_rounds=-2: must be >= 0"),
        ("rl.logprob_chunk", 0, r"config.rl.logprob_chunk=0: must be >= 1"),
        ("sampling.max_prompt_len", 0, r"config.sampling.max_prompt_len=0: must be >= 1"),
        ("sampling.cache_dtype", "foo", r"config.sampling.cache_dtype='foo': one of"),
        ("cold_start.lr", -1.0, r"config.cold_start.lr=-1.0: must be > 0"),
        ("cold_start.examples", 0, r"config.cold_start.examples=0: must be >= 1"),
        ("cold_start.max_len", 100000, r"config.cold_start.max_len=100000: exceeds the model"),
        ("data.countdown.min_numbers", 5, r"data.countdown.min_numbers=5: must be in \[1, max_n"),
        # ignored before: countdown's held-out split was evaluated instead of the file
        ("data.eval_path", "held.jsonl", r"data.eval_path='held.jsonl': is for jsonl/parquet"),
        ("data.answer_parser", "boxed", r"data.answer_parser='boxed': is for jsonl/parquet"),
    ],
)
def test_bad_fields_are_named(field, value, message):
    c = base_config()
    c.cold_start.update(task="countdown", steps=1)  # (its fields count only with a task)
    *sections, name = field.split(".")
    node = c
    for section in sections:
        node = node[section]
    node[name] = value
    with pytest.raises(ConfigError, match=message):
        validate(c, num_devices=8)


def test_batch_not_divisible_by_mesh():
    c = base_config()
    c.mesh.shape = (8, 1, 1)
    c.rl.prompts_per_step, c.rl.group_size = 3, 2
    with pytest.raises(ConfigError, match=r"prompts_per_step=3.*multiple of data\*fsdp=8"):
        validate(c, num_devices=8)


def test_heads_not_divisible_by_tensor():
    c = base_config()
    c.mesh.shape = (1, 1, 8)
    with pytest.raises(ConfigError, match=r"mesh.shape=\(1, 1, 8\): its tensor axis \(8\) does "
                       r"not divide the model's num_heads=4 \(a smaller tensor axis, or another "
                       r"model: model.preset / model.overrides.num_heads\)"):  # fmt: skip
        validate(c, num_devices=8)
    c.mesh.shape = ("(1,a,1)",)  # what --config.mesh.shape=(1,a,1) gives
    with pytest.raises(ConfigError, match=r"mesh.shape=\('\(1,a,1\)',\): entries must be integers"):
        validate(c, num_devices=8)


def test_impossible_mesh_shape():
    c = base_config()
    c.mesh.shape = (3, 1, 1)
    with pytest.raises(ConfigError, match=r"mesh.shape=\(3, 1, 1\): does not fit 8 devices"):
        validate(c, num_devices=8)


def test_config_is_locked_against_typos():
    c = base_config()
    c.lock()
    with pytest.raises(AttributeError, match="betaa"):
        c.rl.betaa = 1.0


def test_model_config_checks():
    with pytest.raises(ValueError, match="num_heads=6 is not a multiple of model.num_kv_heads=4"):
        ModelConfig(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({"hidden": 3})
    big = get_preset("qwen2.5-0.5b")
    assert 480e6 < big.num_params < 500e6  # Qwen2.5-0.5B has 494M parameters
    assert 7.9e9 < get_preset("llama3.1-8b").num_params < 8.1e9


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "r1jax.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "path,said",
    [
        ("rl.beta", None),
        ("mesh.rules", None),
        ("rl.betaa", "config.rl has no field 'betaa'; did you mean --config.rl.beta?"),
        # a field of that name in another group, with the rest of the path kept
        ("train.run_dir", "config.train has no field 'run_dir'; did you mean --config.run_dir?"),
        ("trainn.steps", "config has no field 'trainn'; did you mean --config.train.steps?"),
        ("train.steps.x", "config.train.steps is a value (int), not a group of fields"),
        ("rl.qqqqqq", "config.rl has no field 'qqqqqq'; its fields: advantage_scaling, beta, "),
        ("model.overrides.num_heads", "config.model.overrides has no field 'num_heads' (it is "
         "empty: --config.* only sets fields the recipe file has)"),
    ],
)  # fmt: skip
def test_unknown_field_names_the_override_and_what_it_may_mean(path, said):
    got = unknown_field(base_config(), path)
    if said is None:
        assert got is None
    else:
        assert got.startswith(f"--config.{path}: {said}")


def test_cli_unknown_override_key():
    r = _cli(
        "info", "--config=configs/tiny_smoke.py", "--config.train.steps=1", "--config.rl.betaa=1"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "r1jax info: invalid config override --config.rl.betaa: config.rl has no field 'betaa'; "
        "did you mean --config.rl.beta?"
    )


def test_cli_names_a_recipe_file_that_fails_itself(tmp_path):
    recipe = tmp_path / "bad.py"
    recipe.write_text("from r1jax.config import base_config\n\n\ndef get_config():\n"
                      "    c = base_config()\n    c.trian.steps = 3\n    return c\n")  # fmt: skip
    r = _cli("info", f"--config={recipe}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"r1jax info: error in the recipe {recipe}: 'trian' Did you mean \"train\" instead of "
        '"trian"?'
    )


def test_cli_benchmarks_are_for_the_evaluating_commands_and_checked_first():
    r = _cli("eval", "--config=configs/tiny_smoke.py", "--benchmark=m:nme=jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("r1jax eval: --benchmark='m:nme=jsonl': unknown key 'nme'")
    r = _cli("info", "--config=configs/tiny_smoke.py", "--benchmark=math500")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "r1jax info: --benchmark is for r1jax eval, train, sft"]  # fmt: skip


def test_cli_wrong_type():
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.rl.beta=abc")
    assert r.returncode != 0 and "config.rl.beta" in r.stderr


def test_cli_names_a_remote_path_it_cannot_reach():
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.model.hf_path=s9://b/m")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "r1jax info: config.model.hf_path='s9://b/m': unknown scheme (local paths, gs://, s3://)"
    ]


def test_cli_info_reports_shardings():
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.mesh.shape=(2,2,2)")
    assert r.returncode == 0, r.stderr
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in r.stdout
    assert "layers/0/mlp/gate" in r.stdout and "P('fsdp', 'tensor')" in r.stdout
    assert "(layers/1: as layers/0)" in r.stdout


def test_cli_invalid_value_is_one_line_without_traceback():
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.rl.group_size=1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "r1jax info: config.rl.group_size=1: GRPO needs at least 2 per group"
    ]


def test_cli_train_names_bad_data_settings_and_missing_files(tmp_path):
    """A recipe's tfds settings (data_dir) do not block a switch to a file dataset; a missing
    file or a wrong suffix is named in one line, before anything is written."""
    run = tmp_path / "run"
    common = ["train", "--config=configs/r1_zero_countdown_cpu.py", f"--config.run_dir={run}"]
    missing = tmp_path / "nope.jsonl"
    r = _cli(*common, "--config.data.name=jsonl", f"--config.data.path={missing}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith(f"config.data.path: data file not found: {missing}")
    r = _cli(*common, "--config.data.name=jsonl", "--config.data.path=x.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "name='jsonl' but path(s) ['x.csv'] are not .jsonl" in r.stderr
    assert not (run / "checkpoints").exists()


def test_cli_ctrl_c_outside_training_exits_130_without_traceback(monkeypatch, capsys):
    from r1jax import cli

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "boom", (interrupted, "test"))
    with pytest.raises(SystemExit) as e:
        cli.main(["r1jax", "boom"])
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "r1jax boom: interrupted"


def test_cli_errors_of_a_running_command(monkeypatch, capsys):
    """A data error is one line; a KeyError inside a command is a bug with its traceback, not
    a 'bad config override'."""
    from r1jax import cli
    from r1jax.data.records import DataError

    def bad_row() -> int:
        raise DataError("x.jsonl", 3, "prompt", "missing")

    def bug() -> int:
        return {}["settings"]

    monkeypatch.setitem(cli.COMMANDS, "data", (bad_row, "test"))
    monkeypatch.setitem(cli.COMMANDS, "bug", (bug, "test"))
    with pytest.raises(SystemExit) as e:
        cli.main(["r1jax", "data"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "r1jax data: x.jsonl, row 3: field 'prompt': missing (value: None)")  # fmt: skip
    with pytest.raises(KeyError, match="settings"):
        cli.main(["r1jax", "bug"])


@pytest.mark.parametrize(
    "terms, said",
    [
        ((("nosuch", 1.0),), "config.rewards.functions[0]=('nosuch', 1.0): unknown reward"),
        ((("os:nosuchfn", 1.0),), "[0]=('os:nosuchfn', 1.0): module 'os' has no attribute"),
        ((("countdown", 1.0), ("countdown", "x")), "[1]=('countdown', 'x'): RewardSpec"),
        ((("countdown", 1.0, {"nope": 1}),), "config.rewards: reward spec 'countdown': bad kw"),
        (
            (("code_tests", 1.0, {"isolation": "strict"}),),
            "config.rewards: reward spec 'code_tests': code_tests: isolation must be one of",
        ),
    ],
)
def test_bad_reward_terms_name_the_field(terms, said):
    from r1jax.build import build_scorer

    c = base_config()
    c.rewards.functions = terms
    with pytest.raises(ConfigError) as e:
        build_scorer(c)
    assert said in str(e.value)


def test_an_unusable_tokenizer_names_the_field(tmp_path):
    from r1jax.build import build_tokenizer

    (tmp_path / "tok.json").write_text('{"a": 1}')
    c = base_config()
    c.tokenizer.path = str(tmp_path / "tok.json")
    with pytest.raises(ConfigError, match=r"config.tokenizer.path='.*tok.json': no usable tok"):
        build_tokenizer(c)
    c.tokenizer.path, c.tokenizer.chars = "", "aa"
    with pytest.raises(ConfigError, match=r"config.tokenizer.chars='aa': .*duplicate chars"):
        build_tokenizer(c)


@pytest.mark.parametrize(
    "name", sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py") and f != "__init__.py")
)
def test_every_shipped_config_validates(name):
    """Each file of configs/ loads and validates on 8 devices (its preset's shapes stand in
    for the model directory it names)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    if c.cold_start.task == "file" and not c.cold_start.path:
        c.cold_start.path = "traces.jsonl"  # a user names the traces on the command line
    cfg = validate(c, num_devices=8)
    assert cfg.num_params > 0
    # a recipe whose template asks for <answer> pays only the number inside it (GSM8K's
    # "flexible" mode took the last number anywhere: "<answer>8</answer> so 7" was correct)
    from r1jax.build import eval_task
    from r1jax.rewards.registry import RewardSpec, get_reward, parse_specs

    task = eval_task(c)
    spec = next(s for s in parse_specs(c.rewards.functions) if s.label == task.accuracy)
    spec = RewardSpec.from_config(spec)
    if c.prompt.style == "r1_zero" and spec.name in ("gsm8k_accuracy", "math_accuracy"):
        fn = get_reward(spec.name)
        row = {"answer": "#### 7" if spec.name == "gsm8k_accuracy" else "7"}
        assert fn("<think>so 7</think> <answer>7</answer>", row, **spec.kwargs) == 1.0
        assert fn("<think>so 7</think> <answer>8</answer> so 7", row, **spec.kwargs) == 0.0


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("mesh.shape", (1, -1, -1), "at most one entry may be -1"),
        ("train.log_every", 0, "must be >= 1"),
        ("train.keep_checkpoints", 0, "must be >= 1 (the newest checkpoint"),
        ("train.steps", -5, "must be >= 0"),
        ("train.checkpoint_every", -1, "must be >= 0 (0: never)"),
        ("prompt.style", "fancy", "one of ['r1_zero', 'chat', 'plain']"),
    ],
)
def test_invalid_train_and_prompt_fields_are_named(field, value, said):
    c = base_config()
    group, name = field.split(".")
    c[group][name] = value
    with pytest.raises(ConfigError, match=f"config.{field}="):
        validate(c, 8)
    with pytest.raises(ConfigError) as e:
        validate(c, 8)
    assert said in str(e.value)


def test_cli_run_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    r = _cli("info", "--config=configs/tiny_smoke.py", f"--config.run_dir={tmp_path / 'f'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"r1jax info: config.run_dir='{tmp_path / 'f'}' is a file, not a run directory"
    ]


def test_cli_names_a_recipe_file_that_cannot_load(tmp_path):
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "imports.py").write_text("import nosuchmod\n")
    for recipe, said in (
        ("configs/nope.py", "the recipe file configs/nope.py does not exist"),
        (tmp_path / "syntax.py", f"error in the recipe {tmp_path / 'syntax.py'} (line 1): Syntax"),
        (tmp_path / "imports.py", f"error in the recipe {tmp_path / 'imports.py'}: ModuleNotFound"),
    ):
        r = _cli("info", f"--config={recipe}")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith(f"r1jax info: {said}"), r.stderr


def test_a_prompt_the_tokenizer_cannot_encode_names_the_record():
    from r1jax import build
    from r1jax.tokenizer import CharTokenizer

    c = base_config()
    c.prompt.style = "plain"
    tok = CharTokenizer("0123456789 +")
    rows = [{"id": "p.jsonl:1", "prompt": "1 + 2"}, {"id": "p.jsonl:2", "prompt": "1 w 2"}]
    fmt = build.prompt_formatter(c, tok)
    with pytest.raises(ConfigError, match=r"training record 'p.jsonl:2': cannot be tokenized "
                       r"\(.*character 'w'"):  # fmt: skip
        build.fitting_prompts(c, rows, tok, fmt, "training")


def test_a_field_the_recipe_misspells_is_refused():
    """A recipe edits an unlocked config, so ``c.rl.grup_size = 2`` added a field and the run
    trained with group_size 8; validate names it. The free-form groups take any key."""
    c = base_config()
    c.rl.grup_size = 2
    with pytest.raises(ConfigError, match=r"the recipe sets a field r1jax does not have: "
                       r"config.rl.grup_size: config.rl has no field 'grup_size'; did you mean "
                       r"config.rl.group_size\?"):  # fmt: skip
        validate(c, num_devices=8)
    c = base_config()
    c.model.overrides.num_layers = 1
    c.data.field_map.prompt = "question"
    validate(c, num_devices=8)


def test_command_help_lists_the_commands_own_flags():
    r = _cli("eval", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: r1jax eval ")
    flags_said = [line.strip() for line in r.stdout.splitlines() if line.startswith("  --")]
    assert flags_said == ["--all_steps", "--benchmark", "--config", "--dst", "--greedy",
                          "--num_prompts", "--sets", "--step"]  # fmt: skip
    assert "pairs" in _cli("traces", "-h").stdout
    said = [x.strip() for x in _cli("train", "-h").stdout.splitlines() if x.startswith("  --")]
    assert said == ["--benchmark", "--config"]  # not the eval flags whose help names train.*


def test_every_command_line_flag_names_its_commands():
    import sys

    from r1jax import cli

    names = {f.name for f in cli.FLAGS.get_key_flags_for_module(sys.modules["r1jax.cli"])}
    assert names - {"config"} == set(cli.FLAG_COMMANDS)
    assert {c for cs in cli.FLAG_COMMANDS.values() for c in cs} <= set(cli.COMMANDS)


def test_cli_names_device_settings_before_any_traceback():
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.mesh.cpu_devices=-2")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "r1jax info: config.mesh.cpu_devices=-2: must be >= 1, 0 (JAX's default) or -1 (one per "
        "core)"]  # fmt: skip
    r = _cli("info", "--config=configs/tiny_smoke.py", "--config.model.attention=cudnn")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "r1jax info: config.model.attention='cudnn' needs an NVIDIA GPU (this backend: cpu); use "
        "'einsum' (any device) or 'splash' (TPU)"]  # fmt: skip


@pytest.mark.parametrize("body, said", [
    ("    c = base_config()\n", "returned NoneType, not an ml_collections.ConfigDict (missing "
                               "`return c`?)"),
    ("    return {'run_dir': 'x'}\n", "returned dict, not an ml_collections.ConfigDict"),
])  # fmt: skip
def test_cli_names_a_recipe_that_returns_no_config(tmp_path, body, said):
    recipe = tmp_path / "r.py"
    recipe.write_text(f"from r1jax.config import base_config\n\n\ndef get_config():\n{body}")
    r = _cli("info", f"--config={recipe}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1] == f"r1jax info: the recipe {recipe}: get_config() {said}"
    )


def test_cli_info_describes_the_model_training_builds():
    """The CPU demo's preset takes its character vocabulary (36 ids), as in training."""
    r = _cli("info", "--config=configs/r1_zero_countdown_cpu.py")
    assert r.returncode == 0, r.stderr
    assert (
        "params=0.40M" in r.stdout
        and "embed                                    (36, 128)" in r.stdout
    )


def test_cli_names_the_field_of_a_model_path_with_no_model(tmp_path):
    r = _cli("info", "--config=configs/tiny_smoke.py", f"--config.model.hf_path={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"r1jax info: config.model.hf_path={str(tmp_path)!r}: config.json not found (is this a "
        "HF model directory?)")  # fmt: skip


def test_cli_export_checks_the_recipe_too(tmp_path):
    recipe = tmp_path / "r.py"
    body = "    c = base_config()\n    c.model.dtpye = 'bfloat16'\n    return c\n"
    recipe.write_text(f"from r1jax.config import base_config\n\n\ndef get_config():\n{body}")
    r = _cli("export", f"--config={recipe}", f"--dst={tmp_path / 'hf'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "r1jax export: the recipe sets a field r1jax does not have: config.model.dtpye"
    )
    assert not (tmp_path / "hf").exists()


def test_export_refuses_a_destination_that_the_run_reads_or_writes(tmp_path):
    """export --dst=<the base model> replaced its weights and deleted its other shards; the
    run directory and its checkpoint folders are refused too (an HF dir beside them is not)."""
    from absl import app

    from r1jax.export_command import refuse_dst_over_run_files

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    recipe = tmp_path / "r.py"
    body = f"    c = base_config()\n    c.model.hf_path = {str(base)!r}\n    return c\n"
    recipe.write_text(f"from r1jax.config import base_config\n\n\ndef get_config():\n{body}")
    r = _cli("export", f"--config={recipe}", f"--dst={base}/")
    assert r.returncode == 2, r.stderr
    assert f"--dst={base}/ is config.model.hf_path: the export would overwrite" in r.stderr
    assert (base / "model.safetensors").read_bytes() == b"weights"
    c = base_config()
    c.run_dir = str(tmp_path / "run")
    for dst in ("run", "run/checkpoints", "run/checkpoints/4", "run/sft/checkpoints", "run/rm"):
        with pytest.raises(app.UsageError, match="is the run directory or holds its checkpoints"):
            refuse_dst_over_run_files(c, str(tmp_path / dst))
    refuse_dst_over_run_files(c, str(tmp_path / "run" / "hf"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(app.UsageError, match="a_file is a file: export writes a directory"):
        refuse_dst_over_run_files(c, str(tmp_path / "a_file"))
    empty = tmp_path / "killed_early"  # plot of a run with no logged step yet: one line, rc 2
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    r = _cli("plot", str(empty))
    assert r.returncode == 2 and "killed_early: nothing to plot yet" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "dtype, param_dtype, said",
    [
        ("bfloat16", "bfloat16", r"^config.model.param_dtype='bfloat16': training needs float32"),
        ("float32", "float16", r"^config.model.param_dtype='float16': training needs float32"),
        ("float16", "float32", r"^config.model.dtype='float16': training in float16 needs loss"),
    ],
)
def test_training_commands_refuse_16_bit_weights_and_float16_compute(
    tmp_path, dtype, param_dtype, said
):
    """bfloat16 weights round AdamW's lr-sized steps away and float16 underflows, so GRPO, SFT
    and reward-model training refuse them before building anything (nothing written)."""
    from r1jax.rl.trainer import GRPOTrainer
    from r1jax.rm_command import rm_command
    from r1jax.sft_command import sft_command

    c = base_config()
    c.run_dir = str(tmp_path / "run")
    c.model.dtype, c.model.param_dtype = dtype, param_dtype
    for start in (GRPOTrainer, sft_command, rm_command):
        with pytest.raises(ConfigError, match=said):
            start(c)
    assert not os.path.exists(c.run_dir)
    c.model.dtype, c.model.param_dtype = "bfloat16", "float32"  # bf16 matmuls, fp32 weights
    validate(c, num_devices=8)
    from r1jax.optim import check_training_dtypes

    check_training_dtypes(c.model.dtype, c.model.param_dtype)
