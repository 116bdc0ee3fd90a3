"""``r1jax <command> --config=configs/x.py [--config.field=value ...]``.

Commands register themselves in :data:`COMMANDS`; each is a function of the parsed config
(or ``None`` when the command needs none) returning an exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Recipe file (configs/*.py), overridable with --config.<field>=<value>.",
    lock_config=True,
)
flags.DEFINE_string("src", None, "convert: the source HF model directory.")
flags.DEFINE_string(
    "dst",
    None,
    "convert, export: destination HF directory; eval: results directory; "
    "traces: the JSONL file to write.",
)
flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16", "float16"],
    "convert, export: dtype of the written weights (default: convert the source's; export "
    "the compute dtype, config.model.dtype, e.g. bfloat16 for the GPU/TPU recipes).",
)  # fmt: skip
flags.DEFINE_bool(
    "adapters", False,
    "export: write only the LoRA adapters of a run with lora.rank > 0, as a PEFT adapter "
    "directory (adapter_config.json, adapter_model.safetensors; float32 unless --dtype) for its "
    "base model, instead of the merged model.",
)  # fmt: skip
flags.DEFINE_multi_string("prompt", [], "sample: prompt text (repeatable).")
flags.DEFINE_integer("num_samples", 1, "sample, traces: completions per prompt.", lower_bound=1)
flags.DEFINE_bool(
    "raw", False, "sample: give the --prompt text to the model as is (no config prompt template)."
)
flags.DEFINE_integer(
    "step", None, "export, sample, eval, traces: checkpoint step of the run (default: latest)."
)
flags.DEFINE_integer(
    "num_prompts",
    None,
    "eval: prompts of each eval set (default train.eval_prompts for the held-out split, a "
    "benchmark's own `prompts`); traces: training prompts (default all); 0: all.",
)
flags.DEFINE_list(
    "sets",
    [],
    "eval: the eval sets to run, by name (benchmarks of train.eval_benchmarks, held_out for "
    "the held-out split; default all).",
)
flags.DEFINE_enum(
    "keep",
    "correct",
    ["correct", "all", "pairs"],
    "traces: which completions to keep (pairs: correct vs wrong, for r1jax rm).",
)
flags.DEFINE_integer(
    "max_per_prompt", 1, "traces: distinct completions (or pairs) kept per prompt."
)
flags.DEFINE_multi_string(
    "benchmark",
    [],
    "eval, train, sft: add an eval set to train.eval_benchmarks (repeatable): "
    "NAME[:key=value,...], e.g. math500, aime2024:samples=16, "
    "mine:name=jsonl,path=/data/x.jsonl,accuracy=math_accuracy (r1jax.eval_sets).",
)
flags.DEFINE_bool("greedy", True, "eval: also decode each prompt greedily (--nogreedy: skip).")
flags.DEFINE_bool(
    "all_steps", False, "eval: every checkpoint of the run, oldest first (instead of --step)."
)

FLAG_COMMANDS = {  # the commands that read each flag (their --help lists it)
    "src": ("convert",),
    "dst": ("convert", "export", "eval", "traces"),
    "dtype": ("convert", "export"),
    "adapters": ("export",),
    "prompt": ("sample",),
    "num_samples": ("sample", "traces"),
    "raw": ("sample",),
    "step": ("export", "sample", "eval", "traces"),
    "num_prompts": ("eval", "traces"),
    "sets": ("eval",),
    "keep": ("traces",),
    "max_per_prompt": ("traces",),
    "benchmark": ("eval", "train", "sft"),
    "greedy": ("eval",),
    "all_steps": ("eval",),
}

COMMANDS: dict[str, tuple[Callable[[], int], str]] = {}


def command(name: str, help_text: str):
    """Decorator registering ``fn`` as ``r1jax <name>``."""

    def deco(fn: Callable[[], int]) -> Callable[[], int]:
        COMMANDS[name] = (fn, help_text)
        return fn

    return deco


def _usage() -> str:
    lines = [
        "usage: r1jax <command> [--config=configs/<recipe>.py] [--config.<field>=<value>]",
        "",
        "commands:",
    ]
    lines += [f"  {n:<10} {h}" for n, (_, h) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def _command_help(name: str) -> str:
    """``r1jax <name> --help``: what the command does and the flags it reads
    (:data:`FLAG_COMMANDS`), not absl's and JAX's own (``--helpfull`` lists every flag)."""
    import textwrap

    if name == "plot":
        return f"usage: r1jax plot RUN_DIR\n\n{COMMANDS[name][1]}"
    usage = "[--config=configs/<recipe>.py] [--config.<field>=<value>] [flags]"
    lines = [f"usage: r1jax {name} {usage}", "", COMMANDS[name][1], "", "flags:"]
    for flag in sorted(FLAGS.get_key_flags_for_module(sys.modules[__name__]), key=lambda f: f.name):
        if flag.name == "config" or name in FLAG_COMMANDS.get(flag.name, ()):
            default = "" if flag.default in (None, [], False) else f" (default: {flag.default})"
            lines.append(f"  --{flag.name}")
            lines += textwrap.wrap(flag.help + default, 88, initial_indent="      ",
                                   subsequent_indent="      ")  # fmt: skip
    lines += ["", "Any config field can be set: --config.<section>.<field>=<value> (see "
              "r1jax/config.py and the README); --helpfull lists every flag."]  # fmt: skip
    return "\n".join(lines)


def _require_config():
    if FLAGS.config is None:
        raise app.UsageError("--config=configs/<recipe>.py is required for this command")
    return FLAGS.config


@command("info", "devices, mesh, model size and parameter shardings of a config")
def _info() -> int:
    import jax
    from flax import nnx

    from r1jax import build
    from r1jax import config as cfgmod
    from r1jax import sharding as shd
    from r1jax.model import abstract_model

    c = _require_config()
    cfgmod.validate(c, jax.device_count())
    has_tokenizer = c.tokenizer.path or c.tokenizer.chars or c.model.hf_path
    # what training builds: a preset takes the tokenizer's vocabulary
    cfg = build.resolve_model_config(c, build.build_tokenizer(c) if has_tokenizer else None)
    mesh = shd.make_mesh(c.mesh.shape)
    print(
        f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.device_count()} "
        f"processes={jax.process_count()}"
    )
    print(f"mesh {dict(mesh.shape)}")
    print(
        f"model {cfg.family} layers={cfg.num_layers} d={cfg.hidden_size} "
        f"params={cfg.num_params / 1e6:.2f}M dtype={cfg.dtype} param_dtype={cfg.param_dtype}"
    )
    model = abstract_model(cfg)
    rules = build.sharding_rules(c)
    if c.lora.rank:  # (the adapters are small: made for real, on the abstract base)
        from r1jax.model.lora import summary

        build.add_lora_adapters(c, model, mesh)
        print(summary(nnx.state(model)))
    _, state = nnx.split(model)
    specs = dict(nnx.to_flat_state(shd.state_specs(state, rules, mesh)))
    for path, var in nnx.to_flat_state(state):
        if path[0] == "layers" and path[1] != 0:
            continue
        print(f"  {'/'.join(map(str, path)):<40} {str(var.shape):<18} {specs[path]}")
    if cfg.num_layers > 1:
        rest = "" if cfg.num_layers == 2 else f" .. layers/{cfg.num_layers - 1}"
        print(f"  (layers/1{rest}: as layers/0)")
    return 0


@command(
    "convert",
    "read a HF model directory and write it again (--dtype): --src=DIR --dst=DIR "
    "(a run's checkpoint: r1jax export)",
)
def _convert() -> int:
    from r1jax import storage
    from r1jax.model.hf import copy_tokenizer_files, load_hf_model, save_hf_model, saved_dtype

    if not FLAGS.src or not FLAGS.dst:
        raise app.UsageError("convert needs --src=<dir> and --dst=<dir>")
    if storage.dir_key(FLAGS.src) == storage.dir_key(FLAGS.dst):
        raise app.UsageError(
            f"convert --src and --dst are the same directory ({FLAGS.dst}): the source's weight "
            "files would be overwritten while they are read; write to another directory"
        )
    model = load_hf_model(FLAGS.src)
    save_hf_model(model, FLAGS.dst, dtype=FLAGS.dtype or saved_dtype(FLAGS.src))
    copied = copy_tokenizer_files(FLAGS.src, FLAGS.dst) if storage.isdir(FLAGS.src) else []
    print(f"wrote {FLAGS.dst} ({model.cfg.num_params / 1e6:.2f}M params; tokenizer files: "
          f"{', '.join(copied) or 'none'})")  # fmt: skip
    return 0


@command("export", "write a checkpoint of a run as a HF directory: --config=... --dst=DIR")
def _export() -> int:
    from r1jax.export_command import export_command

    c = _require_config()
    if not FLAGS.dst:
        raise app.UsageError("export needs --dst=<dir>")
    return export_command(c, FLAGS.dst, FLAGS.step, FLAGS.dtype, FLAGS.adapters)


@command("train", "[cold-start SFT, then] GRPO; resumes automatically from the run directory")
def _train() -> int:
    from r1jax.distributed import is_primary
    from r1jax.rl.trainer import GRPOTrainer

    c = _require_config()
    trainer = GRPOTrainer(c)
    try:
        history = trainer.train(keep_history=False)  # (the last step's metrics)
        step = trainer.step
    finally:
        trainer.close()
    said = f"step {step}"
    if history:
        last = history[-1]
        evals = "".join(f" {k}={v:.3f}" for k, v in last.items()
                        if k.startswith("eval/") and k.endswith("pass@1"))  # fmt: skip
        said += f" reward/mean={last['reward/mean']:.3f}{evals}"
    if step < c.train.steps:  # Ctrl-C (also before the first step): saved, not finished
        if is_primary():
            print(f"stopped at {said} (of {c.train.steps} steps; saved, the same command "
                  f"resumes) run_dir={c.run_dir}")  # fmt: skip
        return 130  # (128 + SIGINT, as sft and rm: `r1jax train && r1jax export` stops here)
    if history and is_primary():
        print(f"done: {said} run_dir={c.run_dir}")
    return 0


@command(
    "sft",
    "only the SFT stage (config.cold_start: a file of traces, or countdown); resumable",
)
def _sft() -> int:
    from r1jax.sft_command import sft_command

    sft_command(_require_config())
    return 0


@command(
    "rm",
    "train a reward model on preference pairs (config.reward_model); resumable; exports it",
)
def _rm() -> int:
    from r1jax.rm_command import rm_command

    rm_command(_require_config())
    return 0


@command(
    "traces",
    "SFT traces sampled from the run's model (rejection sampling / distillation): --dst=FILE "
    "[--num_samples=K] [--keep=correct|all|pairs]",
)
def _traces() -> int:
    from r1jax.traces_command import traces_command

    c = _require_config()
    if not FLAGS.dst:
        raise app.UsageError("traces needs --dst=<file.jsonl>")
    traces_command(
        c,
        FLAGS.dst,
        FLAGS.num_prompts or 0,
        FLAGS.num_samples,
        FLAGS.step,
        FLAGS.keep,
        FLAGS.max_per_prompt,
    )
    return 0


@command(
    "plot",
    "draw reward, accuracy, length, KL (and SFT loss) curves of a run: r1jax plot RUN_DIR",
)
def _plot() -> int:
    from r1jax.distributed import is_primary
    from r1jax.metrics import plot_run

    if not FLAGS.src:
        raise app.UsageError("plot needs the run directory: r1jax plot --src=RUN_DIR")
    if not is_primary():  # (a launcher may run it on every host: one writes the files)
        return 0
    paths = plot_run(FLAGS.src)
    for path in paths:
        print(path)
    if not paths:  # (an empty metrics.jsonl: a run killed before its first logged step)
        raise app.UsageError(f"{FLAGS.src}: nothing to plot yet (no logged step has a plotted "
                             "metric)")  # fmt: skip
    return 0


@command(
    "sample", "print completions of the run's latest checkpoint: --prompt=TEXT [--num_samples=G]"
)
def _sample() -> int:
    from r1jax.sampling.command import sample_command

    c = _require_config()
    sample_command(c, FLAGS.prompt, FLAGS.num_samples, step=FLAGS.step, raw=FLAGS.raw)
    return 0


@command(
    "eval",
    "pass@1 of k samples, pass@k, maj@k, greedy on the held-out split and benchmarks: "
    "[--step=N | --all_steps] [--num_prompts=N] [--sets=a,b]",
)
def _eval() -> int:
    from r1jax.eval_command import eval_command

    c = _require_config()
    if FLAGS.all_steps and FLAGS.step is not None:
        raise app.UsageError("give --step=N or --all_steps, not both")
    eval_command(c, FLAGS.step, FLAGS.num_prompts, FLAGS.greedy, FLAGS.dst, only=FLAGS.sets,
                 all_steps=FLAGS.all_steps)  # fmt: skip
    return 0


BENCHMARK_COMMANDS = ("eval", "train", "sft")
"""The commands that evaluate (and so take ``--benchmark``)."""


def _run(name: str, fn: Callable[[], int]) -> int:
    """``fn()`` after the command-line benchmarks are added to the config and the config's
    device set-up, which must precede any JAX computation."""
    if FLAGS.benchmark:
        if name not in BENCHMARK_COMMANDS:
            raise app.UsageError(f"--benchmark is for r1jax {', '.join(BENCHMARK_COMMANDS)}")
        from r1jax.eval_sets import add_benchmarks

        add_benchmarks(_require_config(), FLAGS.benchmark)
    if FLAGS.config is not None:
        from r1jax.build import configure_devices

        _check_remote_paths(FLAGS.config)
        configure_devices(FLAGS.config)
    return fn()


def _check_remote_paths(c: Any) -> None:
    """:func:`r1jax.storage.check_remote_paths` of the config's paths, as a ConfigError."""
    from r1jax import storage
    from r1jax.config import ConfigError, field_value

    names = ("run_dir", "model.hf_path", "tokenizer.path", "data.path", "data.data_dir",
             "cold_start.path", "reward_model.path", "train.init_checkpoint")  # fmt: skip
    values = {f"config.{name}": field_value(c, name) for name in names}
    # (data.path may also be a list of files)
    fields = {name: value for name, value in values.items() if isinstance(value, str)}
    try:
        tb = f"{c.run_dir.rstrip('/')}/tb" if c.train.tensorboard else None
        storage.check_remote_paths(fields, tb)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if c.run_dir and storage.exists(c.run_dir) and not storage.isdir(c.run_dir):
        raise ConfigError(f"config.run_dir={c.run_dir!r} is a file, not a run directory")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the first argument is the command."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(f"r1jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    if any(a in ("-h", "--help", "--helpshort", "-?") for a in argv[2:]):
        print(_command_help(name))
        sys.exit(0)
    fn = COMMANDS[name][0]
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax/jax INFO lines drown the progress
    from r1jax.distributed import maybe_initialize

    if not maybe_initialize():
        _run_command(name, argv, fn)
        return
    from r1jax.interrupt import PREEMPTED_EXIT_CODE

    try:  # several processes: one that fails must not wait for the others at exit
        _run_command(name, argv, fn)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code not in (0, PREEMPTED_EXIT_CODE):  # (those end every process together)
            _exit_now(code)
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        _exit_now(1)


def _exit_now(code: int) -> None:
    """Ends this process without ``jax.distributed.shutdown``'s barrier, which waits (5
    minutes) for the other processes while they wait in a collective for this one; this
    process gone, their collectives fail (gloo) or the coordination service stops them."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_command(name: str, argv: list[str], fn: Callable[[], int]) -> None:
    """Runs command ``name`` with the flags of ``argv``; exits (SystemExit) with its code,
    one line naming the problem for the errors a user can fix."""
    if name == "plot" and len(argv) > 2 and not argv[2].startswith("-"):
        argv = [*argv[:2], f"--src={argv[2]}", *argv[3:]]
    from r1jax.checkpoint import CheckpointError
    from r1jax.config import ConfigError, recipe_config
    from r1jax.data.records import DataError
    from r1jax.interrupt import PREEMPTED_EXIT_CODE, Preempted
    from r1jax.model.safetensors_io import SafetensorsError
    from r1jax.train_loop import TrainingError

    started = []  # the flags parsed: the command runs

    def run(_: list[str]) -> None:
        if FLAGS.config is not None:
            FLAGS.config.get("run_dir")  # a recipe file that failed to load raises (OSError)
        if FLAGS["config"].present:  # (a ConfigError: one line, exit 2)
            recipe_config(FLAGS.config, FLAGS["config"].config_filename)
        started.append(True)
        try:
            code = _run(name, fn)
        except app.UsageError as e:  # one line, like the other errors (absl prints the usage)
            print(f"r1jax {name}: {e}", file=sys.stderr)
            sys.exit(2)
        sys.exit(code)

    named = (ConfigError, CheckpointError, DataError, SafetensorsError, TrainingError)
    try:
        app.run(run, argv=[f"r1jax {name}"] + argv[2:])
    except (
        *named,
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    ) as e:  # the message says it all (the OSErrors name their path)
        print(f"r1jax {name}: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, SyntaxError, ImportError) as e:  # ml_collections: the recipe cannot load
        if started:
            raise
        print(f"r1jax {name}: {_recipe_error(argv, e)}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:  # SIGTERM: saved; not done (a scheduler may requeue the job)
        print(f"r1jax {name}: {e}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except KeyboardInterrupt as e:  # outside train's own Ctrl-C handling (which saves first)
        said = f" ({e})" if str(e) else ""  # e.g. where an interrupted SFT stage was saved
        print(f"r1jax {name}: interrupted{said}", file=sys.stderr)
        sys.exit(130)
    except (AttributeError, KeyError) as e:  # ml_collections: unknown --config.<field>
        if started:  # not the flags: a bug, with its traceback
            raise
        print(f"r1jax {name}: {_bad_override(argv, e)}", file=sys.stderr)
        sys.exit(2)


def _recipe_error(argv: list[str], error: BaseException) -> str:
    """Why the ``--config=`` recipe file of ``argv`` cannot be loaded, on one line."""
    import os

    recipe = ([a.split("=", 1)[1] for a in argv if a.startswith("--config=")] or ["?"])[-1]
    if not os.path.exists(recipe.split(":", 1)[0]):
        return f"the recipe file {recipe} does not exist"
    while error.__cause__ is not None:  # ml_collections wraps the file's own error
        error = error.__cause__
    where = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
    return f"error in the recipe {recipe}{where}: {type(error).__name__}: {error}"


def _bad_override(argv: list[str], error: Exception) -> str:
    """What is wrong: the first ``--config.<path>=...`` of ``argv`` that names no field of the
    recipe and why, or the recipe file's own error, on one line."""
    from r1jax.config import unknown_field

    while error.args and isinstance(error.args[0], BaseException):  # ml_collections wraps
        error = error.args[0]
    keyed = isinstance(error, KeyError) and error.args and isinstance(error.args[0], str)
    said = " ".join((error.args[0] if keyed else str(error)).split())  # KeyError str(): repr
    recipe = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not recipe:
        return f"invalid config override: {said}"
    try:
        config = FLAGS["config"].parser.parse(recipe[-1])
    except (AttributeError, KeyError):  # the recipe file itself fails
        return f"error in the recipe {recipe[-1]}: {said}"
    for arg in argv:
        if arg.startswith("--config."):
            why = unknown_field(config, arg[len("--config.") :].split("=", 1)[0])
            if why is not None:
                return f"invalid config override {why}"
    return f"invalid config override: {said}"


if __name__ == "__main__":
    main()
