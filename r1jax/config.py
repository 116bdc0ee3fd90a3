"""The run configuration: defaults for every field, and validation before any compile.

``configs/*.py`` start from :func:`base_config` and change what their recipe needs; any field
can then be overridden on the command line (``--config.rl.beta=0.0``). The config is locked,
so a misspelt key fails instead of being silently added; :func:`validate` refuses a field that
:func:`base_config` lacks (a recipe file's typo, outside the groups of :data:`FREE_FORM`).
"""

from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from r1jax.config_ranges import out_of_range
from r1jax.model.config import ATTENTION_IMPLS, DTYPES, REMAT_POLICIES, ModelConfig, get_preset

LOSS_TYPES = ("grpo", "token", "dr_grpo", "gspo")
ADV_SCALINGS = ("group", "batch", "none")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and the value."""


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``"field: old -> new"`` for every leaf that differs between two config dicts (e.g.
    the JSON saved with a checkpoint and the current config)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _leaf_paths(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every field of ``c`` as a dotted path, groups included (``train``, ``train.steps``)."""
    out = []
    for key, value in c.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, ml_collections.ConfigDict):
            out += _leaf_paths(value, f"{prefix}{key}.")
    return out


_MISSING = object()


def field_value(c: ml_collections.ConfigDict, path: str, default: Any = None) -> Any:
    """The value of the dotted field ``path`` of ``c`` (``"data.path"``), or ``default`` when
    ``c`` has no such field."""
    node: Any = c
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return default
        node = node[part]
    return node


def unknown_field(c: ml_collections.ConfigDict, path: str) -> str | None:
    """Why ``--config.<path>`` names no field of ``c`` (with the fields it may have meant: close
    names in its group and fields of that name elsewhere), or None when it names one."""
    node, parts = c, path.split(".")
    for i, part in enumerate(parts):
        group = ".".join(["config", *parts[:i]])
        if not isinstance(node, ml_collections.ConfigDict):
            kind = type(node).__name__
            return f"--config.{path}: {group} is a value ({kind}), not a group of fields"
        if part not in node:
            break
        node = node[part]
    else:
        return None
    prefix, rest = "".join(f"{p}." for p in parts[:i]), "".join(f".{p}" for p in parts[i + 1 :])
    near = [prefix + k for k in difflib.get_close_matches(part, list(node.keys()), n=3)]
    near += [q for q in _leaf_paths(c) if q.rsplit(".", 1)[-1] == part and q not in near]
    near = [q + rest if field_value(c, q + rest, _MISSING) is not _MISSING else q for q in near]
    said = f"--config.{path}: {group} has no field {part!r}"
    if near:
        return f"{said}; did you mean {' or '.join(f'--config.{q}' for q in near[:3])}?"
    if not node:
        return f"{said} (it is empty: --config.* only sets fields the recipe file has)"
    return f"{said}; its fields: {', '.join(sorted(node.keys()))}"


def base_config() -> ml_collections.ConfigDict:
    """Every field with its default. Recipes override a few of them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.run_dir = "runs/default"

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # a name in r1jax.model.config.PRESETS ...
    c.model.hf_path = ""  # ... or a Hugging Face checkpoint directory (wins)
    c.model.dtype = "float32"  # compute dtype
    c.model.param_dtype = "float32"  # weight storage (training needs float32; see optim.py)
    c.model.remat = "none"
    c.model.attention = "einsum"  # or "cudnn": fused attention for training/prefill on GPUs
    c.model.overrides = ml_collections.ConfigDict()  # extra ModelConfig fields for presets

    # LoRA adapters (r1jax.model.lora): rank > 0 trains only them (GRPO, SFT; rm: with the
    # score head) on a frozen base; the reference policy is the base with the starting
    # adapters (no second model copy); checkpoints keep each adapter's alpha / rank
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 0  # 0: train every weight
    c.lora.alpha = 16.0  # the update is scaled by alpha / rank
    c.lora.targets = ("q", "k", "v", "o", "gate", "up", "down")

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); one -1 takes the remaining devices
    c.mesh.rules = ml_collections.ConfigDict()  # overrides of r1jax.sharding.DEFAULT_RULES
    # CPU only: split the host into this many XLA devices (-1: one per core, a power of two,
    # at most 8; 0: JAX's default of one). Each holds a replica of what is not sharded.
    c.mesh.cpu_devices = 0
    # CPU backend only: malloc keeps freed memory for reuse, so XLA:CPU's per-call
    # temporaries do not page-fault in again on every call (r1jax.host_memory)
    c.mesh.cpu_keep_memory = True

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.path = ""  # dir with tokenizer.json / tokenizer.model, or a json file
    c.tokenizer.chars = ""  # character vocabulary for tiny CPU demos (no files needed)

    c.prompt = ml_collections.ConfigDict()
    c.prompt.style = "r1_zero"  # r1_zero | chat | plain
    c.prompt.system = ""
    c.prompt.suffix = ""  # appended to the question (e.g. the \\boxed{} instruction)
    # appended after the template, e.g. "<think>": format rewards count a <think> that ends
    # the prompt as the completion's, and SFT / RM texts that start with it lose it
    c.prompt.prefill = ""

    c.sampling = ml_collections.ConfigDict()
    c.sampling.max_prompt_len = 128
    c.sampling.max_new_tokens = 64
    c.sampling.temperature = 1.0
    c.sampling.top_p = 1.0
    c.sampling.top_k = 0
    c.sampling.min_p = 0.0
    c.sampling.prompt_buckets = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    c.sampling.stop_strings = ()
    c.sampling.cache_dtype = ""  # default: model.dtype
    # q/k/v and gate/up as one GEMM each while decoding (a compute-dtype copy of those
    # weights for the duration of a sampling call; False saves that memory)
    c.sampling.fuse_projections = True
    # the decode loop in this many segments, each attending over the cache slots written by
    # its last step instead of all prompt + max_new_tokens slots (more: less cache read per
    # step, one more compiled loop body each)
    c.sampling.decode_segments = 4

    c.data = ml_collections.ConfigDict()
    c.data.name = "countdown"
    c.data.split = "train"
    c.data.eval_split = "test"
    c.data.path = ""
    c.data.eval_path = ""  # jsonl / parquet: the held-out file used by train.eval_every
    c.data.data_dir = ""
    c.data.manual_dir = ""
    c.data.on_bad_row = "fail"
    c.data.drop_long_prompts = True  # skip prompts over sampling.max_prompt_len (else: error)
    c.data.field_map = ml_collections.ConfigDict()  # schema key -> column (r1jax.data.files)
    c.data.answer_parser = ""  # files: "raw" (default) | "gsm8k" | "boxed" | "integer"
    c.data.source = ""  # files: the rows' `source` (default "custom"; or field_map a column)
    c.data.prompt_builder = ""  # e.g. "countdown_compact" (r1jax.recipes.PROMPT_BUILDERS)
    c.data.countdown = ml_collections.ConfigDict(
        dict(
            seed=0,
            train_size=100_000,
            test_size=1_000,
            min_numbers=3,
            max_numbers=4,
            min_value=1,
            max_value=100,
            min_target=1,
            max_target=100,
        )
    )

    c.rewards = ml_collections.ConfigDict()
    c.rewards.functions = (("countdown", 1.0),)
    c.rewards.num_workers = 2  # reward worker processes (0: score in this process, no timeouts)
    c.rewards.timeout_s = 5.0  # per call; a call past it scores 0 and is counted
    c.rewards.worker_memory_mb = 0  # address-space limit of each worker (0: none)
    c.rewards.worker_max_calls = 0  # replace a worker after this many results (0: never)
    c.rewards.accuracy = ""  # function that defines "correct" (default: the first)
    c.rewards.correct_threshold = 1.0
    # {source: ((name, weight), ...)}: the terms for rows of that source instead of
    # `functions`; () scores those rows with no rule (e.g. general prompts judged only by
    # the reward model). Evaluation and reward/accuracy_mean judge a route's rows by its term
    # labelled like `accuracy`, else by its first term (rows with no terms cannot be judged)
    c.rewards.routes = ml_collections.ConfigDict()

    c.reward_model = ml_collections.ConfigDict()
    # A learned reward in GRPO (R1's all-scenario RL): a HF *ForSequenceClassification
    # directory, e.g. <run_dir>/rm/hf written by `r1jax rm`; "": rule rewards only
    c.reward_model.path = ""
    c.reward_model.weight = 1.0
    c.reward_model.sources = ()  # record sources it scores (empty: every row)
    c.reward_model.scope = "response"  # or "answer": only the text after </think>
    c.reward_model.input = "prompt"  # prompt text + response; or "chat": its chat template
    c.reward_model.max_len = 0  # tokens per scored row (0: max_prompt_len + max_new_tokens + 1)
    # Training one: `r1jax rm` (Bradley-Terry on preference pairs) writes <run_dir>/rm
    c.reward_model.train_path = ""  # jsonl/parquet file(s) (glob ok) of preference pairs
    c.reward_model.eval_path = ""  # held-out pairs: accuracy before and after training
    c.reward_model.prompt_field = "prompt"  # gets the run's prompt template
    c.reward_model.chosen_field = "chosen"
    c.reward_model.rejected_field = "rejected"
    c.reward_model.steps = 0
    c.reward_model.batch_size = 32  # pairs per step (2x rows)
    c.reward_model.grad_accum = 1  # micro-batches per update (batch_size / grad_accum pairs)
    c.reward_model.lr = 1e-5
    c.reward_model.center_coef = 0.0  # + coef * mean((r_chosen + r_rejected)^2)
    c.reward_model.checkpoint_every = 100  # steps between checkpoints (0: only at the end)

    c.rl = ml_collections.ConfigDict()
    c.rl.prompts_per_step = 16
    c.rl.group_size = 8  # G samples per prompt
    c.rl.num_iterations = 1  # mu: passes over one rollout batch
    c.rl.num_minibatches = 1
    c.rl.loss_type = "grpo"
    c.rl.advantage_scaling = "group"
    c.rl.eps_low = 0.2
    c.rl.eps_high = 0.2
    c.rl.beta = 0.0  # KL coefficient; 0 keeps no reference model
    c.rl.ref_update_every = 0  # reset the reference to the policy every N steps (0: never)
    c.rl.dynamic_sampling = False
    c.rl.mask_truncated = False
    c.rl.max_refill_rounds = 3  # dynamic sampling: extra sampling rounds per step
    c.rl.grad_accum = 1  # micro-batches accumulated per optimizer update
    c.rl.logprob_chunk = 256  # positions per chunk of the vocabulary projection
    # Run each prompt once per group in the update (its keys/values shared by the G
    # completions). Needs prompts_per_step divisible by num_minibatches * grad_accum.
    c.rl.share_prompt = True

    c.cold_start = ml_collections.ConfigDict()
    # SFT before RL (R1's stage 1), also run alone by `r1jax sft`; resumable, in <run_dir>/sft
    c.cold_start.task = ""  # "countdown": synthetic traces; "file": the traces of .path
    c.cold_start.path = ""  # task "file": jsonl/parquet file(s) (glob ok) of prompt/completion
    c.cold_start.prompt_field = "prompt"  # task "file": gets the run's prompt template
    c.cold_start.completion_field = "completion"  # task "file": the target text, as it is
    c.cold_start.steps = 0
    c.cold_start.epochs = 0.0  # or passes over the traces (steps = 0): steps computed from it
    c.cold_start.batch_size = 64  # rows per update
    c.cold_start.grad_accum = 1  # micro-batches per update (batch_size / grad_accum rows each)
    c.cold_start.lr = 1e-3
    c.cold_start.warmup_steps = -1  # -1: min(20, steps // 10)
    c.cold_start.schedule = "cosine"  # constant | cosine (decay to 10% at the last step)
    c.cold_start.weight_decay = 0.0
    c.cold_start.overlong = "truncate"  # traces over max_len: truncate (loses the end) | drop
    c.cold_start.examples = 4000  # task "countdown": number of synthetic traces
    c.cold_start.max_len = 0  # tokens per row (0: sampling.max_prompt_len + max_new_tokens)
    c.cold_start.pack = False  # several examples per row (segment masks)
    c.cold_start.checkpoint_every = 100  # SFT steps between checkpoints (0: only at the end)
    # held-out loss (sft/eval_loss, sft/eval_accuracy) before the SFT, every eval_every steps
    # (0: none in between) and after it: the traces of eval_path (task "file", same fields)
    # or eval_examples synthetic ones (task "countdown", another seed than the training ones)
    c.cold_start.eval_path = ""
    c.cold_start.eval_examples = 0
    c.cold_start.eval_every = 0
    # at those points also sample the run's eval sets (the held-out split, train.eval_*,
    # train.eval_benchmarks) as GRPO's eval does: sft/eval/pass@1, sft/eval/<name>/pass@1, ...
    c.cold_start.eval_sampled = False

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-6
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"  # constant | cosine
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.grad_clip = 1.0
    # stop after this many steps in a row with a non-finite (skipped) optimizer update
    c.optim.max_bad_steps = 5

    c.train = ml_collections.ConfigDict()
    c.train.steps = 100
    c.train.eval_every = 0
    c.train.eval_prompts = 64  # held-out prompts per eval (0: all); also `r1jax eval`
    c.train.checkpoint_every = 50  # (0: only at the end)
    # the last N checkpoints are kept, plus the best by train.best_metric; an eval step that
    # sets a new best is saved even between checkpoint_every steps
    c.train.keep_checkpoints = 3
    c.train.log_every = 1
    c.train.init_checkpoint = ""  # params to start from: an r1jax run dir (newest checkpoint)
    c.train.eval_samples = 4  # k samples per eval prompt (pass@1 averaged over k)
    c.train.eval_temperature = 0.6
    c.train.eval_top_p = 0.95
    # named benchmarks evaluated next to the held-out split, logged as eval/<name>/<metric>:
    # {name: {data keys (name, split, path, ...), prompts, samples, accuracy, ...}}, see
    # r1jax.eval_sets (e.g. dict(math500=dict(name="math500"), aime2024=dict(name="aime2024")))
    c.train.eval_benchmarks = ml_collections.ConfigDict()
    c.train.best_metric = ""  # eval metric of the best checkpoint (default: held_out's
    # pass@1, else that of the benchmark first by name)
    c.train.progress = True
    c.train.tensorboard = True
    c.train.wandb_project = ""
    return c


def r1_zero_settings(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets R1-Zero's published GRPO hyperparameters (the DeepSeekMath and DeepSeek-R1 papers) on
    ``c`` and returns it: G = 16 samples of 32 prompts (512 rollouts) per step in 16
    minibatches, temperature 1, lr 3e-6 after 10 warmup steps, KL beta 0.001 to a reference
    reset every 400 steps, the ``r1_zero`` prompt template; bf16 compute over fp32 master
    weights."""
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.prompt.style = "r1_zero"
    c.sampling.temperature = 1.0
    c.rl.prompts_per_step = 32
    c.rl.group_size = 16
    c.rl.num_minibatches = 16
    c.rl.beta = 0.001
    c.rl.ref_update_every = 400
    c.optim.lr = 3e-6
    c.optim.warmup_steps = 10
    return c


def _check(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"config.{field}={value!r}: {why}")


def model_config(c: ml_collections.ConfigDict) -> ModelConfig:
    """The :class:`ModelConfig` named by ``c.model`` (preset or HF directory)."""
    m = c.model
    _check(m.dtype in DTYPES, "model.dtype", m.dtype, f"must be one of {DTYPES}")
    _check(m.param_dtype in DTYPES, "model.param_dtype", m.param_dtype, f"one of {DTYPES}")
    _check(m.remat in REMAT_POLICIES, "model.remat", m.remat, f"one of {REMAT_POLICIES}")
    _check(m.attention in ATTENTION_IMPLS, "model.attention", m.attention, f"{ATTENTION_IMPLS}")
    common = dict(
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        remat=m.remat,
        attention=m.attention,
        **m.overrides.to_dict(),
    )
    if m.hf_path:
        from r1jax.model.hf import read_hf_config

        return read_hf_config(m.hf_path, field="model.hf_path", **common)
    try:
        return get_preset(m.preset, **common)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.model: {e}") from e


def load_recipe(path: str) -> ml_collections.ConfigDict:
    """The config of the recipe file ``path`` (a ``configs/*.py`` with ``get_config()``), as
    ``--config=path`` gives it (for notebooks and recipes built on other recipes)."""
    import importlib.util
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"recipe file {path} not found (cwd {os.getcwd()})")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"r1jax_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        raise ConfigError(f"recipe file {path} has no get_config()")
    return recipe_config(get_config(), path)


def recipe_config(c: Any, recipe: str) -> ml_collections.ConfigDict:
    """``c``, what ``get_config()`` of the recipe file ``recipe`` returned, when it is a
    ConfigDict; else a ConfigError saying what it returned."""
    if not isinstance(c, ml_collections.ConfigDict):
        hint = " (missing `return c`?)" if c is None else ""
        raise ConfigError(f"the recipe {recipe}: get_config() returned {type(c).__name__}, "
                          f"not an ml_collections.ConfigDict{hint}")  # fmt: skip
    return c


FREE_FORM = ("data.field_map", "mesh.rules", "model.overrides", "rewards.routes",
             "train.eval_benchmarks")  # fmt: skip
"""Groups whose keys the recipe chooses (names of fields, rules, routes, benchmarks)."""


def _check_known_fields(c: ml_collections.ConfigDict) -> None:
    """Raises naming the first field of ``c`` that :func:`base_config` lacks: a recipe file
    can add fields (it edits an unlocked config), so a misspelt one would be ignored."""
    base = base_config()
    for path in _leaf_paths(c):
        if any(path.startswith(group + ".") for group in FREE_FORM):
            continue
        why = unknown_field(base, path)
        if why is not None:
            why = why.replace("--config.", "config.")
            raise ConfigError(f"the recipe sets a field r1jax does not have: {why}")


def validate(
    c: ml_collections.ConfigDict, num_devices: int | None = None, num_processes: int = 1
) -> ModelConfig:
    """Checks cross-field constraints; returns the model config. Raises :class:`ConfigError`.

    ``num_processes``: JAX processes of the run; each samples ``rl.prompts_per_step /
    num_processes`` prompts per step.
    """
    import numpy as np

    _check_known_fields(c)
    cfg = model_config(c)
    if c.lora.rank:
        _check_lora(c.lora)
    r = c.rl
    _check(
        r.prompts_per_step >= 1 and r.prompts_per_step % num_processes == 0,
        "rl.prompts_per_step",
        r.prompts_per_step,
        f"must be a positive multiple of the number of JAX processes ({num_processes}): each "
        "process samples an equal share of the prompts",
    )
    _check(r.group_size >= 2, "rl.group_size", r.group_size, "GRPO needs at least 2 per group")
    _check(r.loss_type in LOSS_TYPES, "rl.loss_type", r.loss_type, f"one of {LOSS_TYPES}")
    _check(
        r.advantage_scaling in ADV_SCALINGS,
        "rl.advantage_scaling",
        r.advantage_scaling,
        f"one of {ADV_SCALINGS}",
    )
    _check(r.num_iterations >= 1, "rl.num_iterations", r.num_iterations, "must be >= 1")
    _check(r.beta >= 0, "rl.beta", r.beta, "must be >= 0")
    _check(
        0 <= r.eps_low < 1 and r.eps_high >= 0,
        "rl.eps_low",
        (r.eps_low, r.eps_high),
        "clip range must satisfy 0 <= eps_low < 1, eps_high >= 0",
    )
    _check(r.num_minibatches >= 1, "rl.num_minibatches", r.num_minibatches, "must be >= 1")
    _check(r.grad_accum >= 1, "rl.grad_accum", r.grad_accum, "must be >= 1")
    shape = tuple(c.mesh.shape)
    _check(
        all(isinstance(s, int) for s in shape),
        "mesh.shape",
        shape,
        "entries must be integers (data, fsdp, tensor), e.g. --config.mesh.shape='(1,-1,1)'",
    )
    _check(len(shape) == 3, "mesh.shape", shape, "needs 3 entries (data, fsdp, tensor)")
    _check(all(s == -1 or s > 0 for s in shape), "mesh.shape", shape, "entries must be >0 or -1")
    _check(shape.count(-1) <= 1, "mesh.shape", shape, "at most one entry may be -1 (the rest)")
    cpu = c.mesh.cpu_devices
    ok = isinstance(cpu, int) and cpu >= -1
    _check(ok, "mesh.cpu_devices", cpu, "must be >= 0, or -1 (one per core)")
    if num_devices is not None:
        known = int(np.prod([s for s in shape if s != -1]))
        ok = num_devices % known == 0 if -1 in shape else known == num_devices
        _check(ok, "mesh.shape", shape, f"does not fit {num_devices} devices")
        full = [num_devices // known if s == -1 else s for s in shape]
        tensor, batch = full[2], full[0] * full[1]
        for field, val in (
            ("num_heads", cfg.num_heads),
            ("num_kv_heads", cfg.num_kv_heads),
            ("intermediate_size", cfg.intermediate_size),
        ):
            _check(
                val % tensor == 0,
                "mesh.shape",
                shape,
                f"its tensor axis ({tensor}) does not divide the model's {field}={val} (a "
                f"smaller tensor axis, or another model: model.preset / model.overrides.{field})",
            )
        rollouts = r.prompts_per_step * r.group_size
        parts = r.num_minibatches * r.grad_accum
        _check(
            rollouts % (batch * parts) == 0,
            "rl.prompts_per_step",
            r.prompts_per_step,
            f"prompts_per_step*group_size={rollouts} must split into rl.num_minibatches*"
            f"rl.grad_accum={parts} micro-batches of a multiple of data*fsdp={batch}",
        )
    s = c.sampling
    _check(0.0 < s.top_p <= 1.0, "sampling.top_p", s.top_p, "must be in (0, 1]")
    _check(s.temperature >= 0.0, "sampling.temperature", s.temperature, "must be >= 0")
    _check(s.top_k >= 0, "sampling.top_k", s.top_k, "must be >= 0 (0 disables)")
    _check(0.0 <= s.min_p < 1.0, "sampling.min_p", s.min_p, "must be in [0, 1)")
    _check(s.max_new_tokens > 0, "sampling.max_new_tokens", s.max_new_tokens, "must be > 0")
    _check(s.decode_segments >= 1, "sampling.decode_segments", s.decode_segments, "must be >= 1")
    from r1jax.data.answers import ANSWER_PARSERS

    parsers = sorted(ANSWER_PARSERS)
    _check(c.data.answer_parser in ("", *parsers), "data.answer_parser", c.data.answer_parser,
           f"one of {parsers}")  # fmt: skip
    if c.data.name not in ("jsonl", "parquet"):  # (a dataset's builder sets these itself)
        for field in ("answer_parser", "source", "eval_path"):
            _check(not c.data[field], f"data.{field}", c.data[field],
                   f"is for jsonl/parquet files, not data.name={c.data.name!r}")  # fmt: skip
    total = s.max_prompt_len + s.max_new_tokens
    _check(
        total <= cfg.max_position_embeddings,
        "sampling.max_new_tokens",
        s.max_new_tokens,
        f"max_prompt_len + max_new_tokens = {total} exceeds the model context "
        f"{cfg.max_position_embeddings}",
    )
    _check(
        c.optim.schedule in ("constant", "cosine"),
        "optim.schedule",
        c.optim.schedule,
        "one of constant, cosine",
    )
    _check(c.optim.lr > 0, "optim.lr", c.optim.lr, "must be > 0")
    cs = c.cold_start
    _check(cs.task in ("", "countdown", "file"), "cold_start.task", cs.task,
           "one of '', 'countdown', 'file'")  # fmt: skip
    if cs.task:
        _check((cs.steps >= 1) != (cs.epochs > 0), "cold_start.steps", cs.steps,
               f"a cold_start.task needs steps >= 1 or epochs > 0 (one of them; epochs="
               f"{cs.epochs!r})")  # fmt: skip
        splits = cs.grad_accum >= 1 and cs.batch_size % cs.grad_accum == 0
        _check(cs.batch_size >= 1 and splits, "cold_start.batch_size", cs.batch_size,
               f"must be a positive multiple of grad_accum={cs.grad_accum!r}")  # fmt: skip
        _check(cs.schedule in ("constant", "cosine"), "cold_start.schedule", cs.schedule,
               "one of constant, cosine")  # fmt: skip
        _check(cs.warmup_steps >= -1, "cold_start.warmup_steps", cs.warmup_steps,
               "must be >= 0, or -1 (automatic)")  # fmt: skip
        _check(cs.overlong in ("truncate", "drop"), "cold_start.overlong", cs.overlong,
               "one of truncate, drop")  # fmt: skip
        _check(cs.task != "file" or bool(cs.path), "cold_start.path", cs.path,
               "task 'file' needs the jsonl/parquet file(s) of the traces")  # fmt: skip
        _check(cs.checkpoint_every >= 0, "cold_start.checkpoint_every", cs.checkpoint_every,
               "must be >= 0")  # fmt: skip
        _check(cs.eval_every >= 0, "cold_start.eval_every", cs.eval_every, "must be >= 0")
        _check(cs.eval_examples >= 0, "cold_start.eval_examples", cs.eval_examples,
               "must be >= 0")  # fmt: skip
        _check(not cs.eval_path or cs.task == "file", "cold_start.eval_path", cs.eval_path,
               "held-out trace files are for task 'file' (countdown: eval_examples)")  # fmt: skip
        _check(not cs.eval_examples or cs.task == "countdown", "cold_start.eval_examples",
               cs.eval_examples, "synthetic held-out traces are for task 'countdown' (file: "
               "cold_start.eval_path)")  # fmt: skip
    if cs.task:
        _check(cs.max_len <= cfg.max_position_embeddings, "cold_start.max_len", cs.max_len,
               f"exceeds the model context {cfg.max_position_embeddings}")  # fmt: skip
    bad = out_of_range(c)
    if bad:
        _check(False, *bad)
    _validate_reward_model(c)
    t = c.train
    _check(t.steps >= 0, "train.steps", t.steps, "must be >= 0")
    _check(t.log_every >= 1, "train.log_every", t.log_every, "must be >= 1")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints,
           "must be >= 1 (the newest checkpoint is what a resume needs)")  # fmt: skip
    for field in ("checkpoint_every", "eval_every"):
        _check(t[field] >= 0, f"train.{field}", t[field], "must be >= 0 (0: never)")
    from r1jax.prompts import STYLES

    _check(c.prompt.style in STYLES, "prompt.style", c.prompt.style, f"one of {list(STYLES)}")
    _check(t.eval_prompts >= 0, "train.eval_prompts", t.eval_prompts, "must be >= 0 (0: all)")
    _check(t.eval_samples >= 1, "train.eval_samples", t.eval_samples, "must be >= 1")
    _check(t.eval_temperature >= 0, "train.eval_temperature", t.eval_temperature, "must be >= 0")
    _check(0.0 < t.eval_top_p <= 1.0, "train.eval_top_p", t.eval_top_p, "must be in (0, 1]")
    _validate_benchmarks(t.eval_benchmarks)
    return cfg


def _validate_benchmarks(benchmarks: ml_collections.ConfigDict) -> None:
    """The shape of ``train.eval_benchmarks`` (its data keys are checked when it is loaded)."""
    import numbers

    for name, b in benchmarks.items():
        field = f"train.eval_benchmarks.{name}"
        _check(bool(name) and "/" not in name and name != "held_out", "train.eval_benchmarks",
               name, "benchmark names must be non-empty, without '/', not 'held_out'")  # fmt: skip
        _check(isinstance(b, ml_collections.ConfigDict), field, b,
               "must be a mapping of data and eval settings (see r1jax.eval_sets)")  # fmt: skip
        _check(isinstance(b.get("name"), str) and bool(b.get("name")), f"{field}.name",
               b.get("name"), "needs the dataset name (e.g. 'math500', 'jsonl')")  # fmt: skip
        for key, low in (("prompts", 0), ("samples", 1)):
            v = b.get(key, low)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= low, f"{field}.{key}",
                   v, f"must be an integer >= {low}")  # fmt: skip
        v = b.get("correct_threshold", 0.0)
        real = isinstance(v, numbers.Real) and not isinstance(v, bool)
        _check(real, f"{field}.correct_threshold", v, "must be a number")


def _validate_reward_model(c: ml_collections.ConfigDict) -> None:
    import math

    from r1jax.rm_scoring import INPUTS, SCOPES

    rm = c.reward_model
    _check(rm.scope in SCOPES, "reward_model.scope", rm.scope, f"one of {SCOPES}")
    _check(rm.input in INPUTS, "reward_model.input", rm.input, f"one of {INPUTS}")
    _check(math.isfinite(rm.weight), "reward_model.weight", rm.weight, "must be finite")
    _check(rm.max_len >= 0, "reward_model.max_len", rm.max_len, "must be >= 0 (0: automatic)")
    _check(rm.steps >= 0, "reward_model.steps", rm.steps, "must be >= 0")
    _check(rm.batch_size >= 1, "reward_model.batch_size", rm.batch_size, "must be >= 1")
    _check(rm.grad_accum >= 1 and rm.batch_size % rm.grad_accum == 0, "reward_model.grad_accum",
           rm.grad_accum, f"must divide reward_model.batch_size={rm.batch_size}")  # fmt: skip
    _check(rm.lr > 0, "reward_model.lr", rm.lr, "must be > 0")
    _check(rm.center_coef >= 0, "reward_model.center_coef", rm.center_coef, "must be >= 0")
    _check(rm.checkpoint_every >= 0, "reward_model.checkpoint_every", rm.checkpoint_every,
           "must be >= 0")  # fmt: skip
    sources = tuple(rm.sources)
    _check(all(isinstance(x, str) and x for x in sources), "reward_model.sources", sources,
           "must be a tuple of source names")  # fmt: skip


def _check_lora(lora: ml_collections.ConfigDict) -> None:
    from r1jax.model.lora import check_targets

    try:
        check_targets(tuple(lora.targets))
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
