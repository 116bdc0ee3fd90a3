"""Build the pieces a run needs from its config: mesh, tokenizer, model, prompt formatter."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections
from jax.sharding import Mesh

from r1jax import config as cfgmod
from r1jax import sharding as shd
from r1jax.config import ConfigError, model_config
from r1jax.model import Transformer, create_model
from r1jax.model.config import ModelConfig


def configure_devices(c: ml_collections.ConfigDict) -> None:
    """Applies ``c.mesh.cpu_devices`` (see :func:`r1jax.distributed.configure_cpu_devices`)
    and ``c.mesh.cpu_keep_memory`` (see :mod:`r1jax.host_memory`; undone when the backend
    turns out not to be the CPU). Call it before the first JAX computation."""
    import jax

    from r1jax import host_memory
    from r1jax.config import ConfigError
    from r1jax.distributed import configure_cpu_devices

    kept = c.mesh.cpu_keep_memory and host_memory.keep_freed_memory()
    try:
        configure_cpu_devices(c.mesh.cpu_devices)
    except ValueError as e:  # a bad mesh.cpu_devices, before validate() could name it
        raise ConfigError(f"config.{e}") from None
    backend = jax.default_backend()
    if kept and backend != "cpu":
        host_memory.restore_defaults()
    if c.model.attention == "cudnn" and backend != "gpu":
        raise ConfigError(
            f"config.model.attention='cudnn' needs an NVIDIA GPU (this backend: {backend}); "
            "use 'einsum' (any device) or 'splash' (TPU)"
        )


def tokenizer_source(c: ml_collections.ConfigDict) -> str:
    """The directory or file holding the run's tokenizer files ("" for a character vocabulary
    or none): what an exported HF directory copies next to its weights."""
    return c.tokenizer.path or ("" if c.tokenizer.chars else c.model.hf_path)


def save_tokenizer_files(c: ml_collections.ConfigDict, tokenizer: Any, dst: str) -> list[str]:
    """Writes the run's tokenizer next to a HF model exported to ``dst``: the tokenizer and
    generation files of its source directory, or a character vocabulary as Hugging Face
    files (:meth:`r1jax.tokenizer.CharTokenizer.save_hf`). Returns the names written."""
    from r1jax.model.hf import copy_tokenizer_files
    from r1jax.tokenizer import CharTokenizer

    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.save_hf(dst)
    source = tokenizer_source(c)
    return copy_tokenizer_files(source, dst) if source else []


def token_ids(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's BOS/EOS/pad ids, as ``config.json`` names them (what an exported
    preset model's config gets: ``r1jax.model.hf.config_to_hf``'s ``token_ids``)."""
    eos = tokenizer.eos_ids
    try:
        pad = tokenizer.pad_id
    except ValueError:  # neither a pad nor an eos token
        pad = None
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
        "pad_token_id": pad,
    }


def build_mesh(c: ml_collections.ConfigDict) -> Mesh:
    return shd.make_mesh(tuple(c.mesh.shape))


def sharding_rules(c: ml_collections.ConfigDict) -> dict[str, Any]:
    return {**shd.DEFAULT_RULES, **c.mesh.rules.to_dict()}


def build_tokenizer(c: ml_collections.ConfigDict):
    """The tokenizer named by ``c.tokenizer`` (a path, or a character vocabulary)."""
    from r1jax.tokenizer import CharTokenizer, load_tokenizer

    def load(field: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except (OSError, ValueError) as e:
            value = cfgmod.field_value(c, field)
            raise ConfigError(f"config.{field}={value!r}: no usable tokenizer ({e})") from None

    if c.tokenizer.path:
        return load("tokenizer.path", lambda: load_tokenizer(c.tokenizer.path))
    if c.tokenizer.chars:
        return load("tokenizer.chars", lambda: CharTokenizer(c.tokenizer.chars))
    if c.model.hf_path:
        return load("model.hf_path", lambda: load_tokenizer(c.model.hf_path))
    raise ConfigError(
        "config.tokenizer.path='' and config.tokenizer.chars='': set one of them "
        "(or model.hf_path to a directory that has a tokenizer)"
    )


def resolve_model_config(c: ml_collections.ConfigDict, tokenizer=None) -> ModelConfig:
    """Model config; a preset without an explicit vocab takes the tokenizer's vocabulary."""
    cfg = model_config(c)
    if (
        not c.model.hf_path
        and tokenizer is not None
        and "vocab_size" not in c.model.overrides
        and cfg.vocab_size != tokenizer.vocab_size
    ):
        cfg = cfg.replace(vocab_size=tokenizer.vocab_size)
    return cfg


def build_model(c: ml_collections.ConfigDict, mesh: Mesh, tokenizer=None) -> Transformer:
    """Loads ``model.hf_path`` or randomly initialises the preset, sharded over ``mesh``; the
    ``model`` fields and ``model.overrides`` apply to both, as in :func:`model_config`. With
    ``lora.rank`` > 0 the model gets fresh LoRA adapters (:func:`r1jax.model.lora.add_lora`)."""
    rules = sharding_rules(c)
    if c.model.hf_path:
        from r1jax.model.hf import load_hf_model

        m = c.model
        overrides = dict(
            dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention=m.attention,
            **m.overrides.to_dict(),
        )  # fmt: skip
        model = load_hf_model(c.model.hf_path, mesh, rules, **overrides)
    else:
        model = create_model(resolve_model_config(c, tokenizer), mesh, seed=c.seed, rules=rules)
    if tokenizer is not None and model.cfg.vocab_size < tokenizer.vocab_size:
        source = f"model.hf_path={c.model.hf_path!r}" if c.model.hf_path else "the model config"
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} ids but {source} embeds only "
            f"{model.cfg.vocab_size} (vocab_size): its ids past that would read no embedding. "
            "Use the model's own tokenizer (config.tokenizer.path / chars), or a model with a "
            "vocabulary at least as large"
        )
    add_lora_adapters(c, model, mesh)
    return model


def add_lora_adapters(c: ml_collections.ConfigDict, model: Transformer, mesh: Mesh) -> None:
    """Fresh LoRA adapters of ``c.lora`` on ``model`` in place (none with ``lora.rank=0``)."""
    if c.lora.rank:
        from r1jax.model.lora import add_lora

        lora = c.lora
        add_lora(model, lora.rank, lora.alpha, tuple(lora.targets), c.seed, mesh, sharding_rules(c))


def load_run_model(
    c: ml_collections.ConfigDict,
    mesh: Mesh,
    tokenizer=None,
    step: int | None = None,
    fresh_adapters: bool = False,
) -> tuple[Transformer, int | None, str]:
    """``(model, step, label)``: the config's model with the weights of the run's checkpoint
    ``step`` (default: the newest; the SFT stage's when the run has no GRPO checkpoint), or
    those the run starts from when it has none (step None): the newest of
    ``train.init_checkpoint``, else its own (``model.hf_path``, or the random init);
    ``label`` names them for the user. ``fresh_adapters``: a run checkpoint without LoRA
    adapters fills a LoRA model's base (:func:`r1jax.run_weights.restore_init_checkpoint`)."""
    from r1jax.run_weights import restore_init_checkpoint, restore_run_params, weights_label

    model = build_model(c, mesh, tokenizer)
    own = None  # a LoRA run's checkpoints hold its adapters alone: their base first
    if c.lora.rank:
        own = restore_init_checkpoint(model, c.train.init_checkpoint)
    restored = restore_run_params(model, c.run_dir, step, fresh_adapters)
    if restored is not None:
        return model, restored, weights_label(c.run_dir, restored)
    own = own or restore_init_checkpoint(model, c.train.init_checkpoint)
    own = own or c.model.hf_path or f"random init (seed {c.seed})"
    return model, None, f"{own} (no checkpoint in {c.run_dir})"


def prompt_formatter(c: ml_collections.ConfigDict, tokenizer=None) -> Callable[[dict], str]:
    """Record -> model input text, following ``c.prompt.style``."""
    from r1jax.prompts import format_prompt

    p = c.prompt
    kwargs = dict(
        style=p.style,
        system=p.system or None,
        suffix=p.suffix or None,
        prefill=p.prefill,
        tokenizer=tokenizer if p.style == "chat" else None,
    )
    return lambda record: format_prompt(record, **kwargs)


def source_config(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The ``load_source`` arguments of the training data (``c.data``)."""
    d = c.data
    cfg = {
        k: v
        for k, v in dict(
            name=d.name,
            split=d.split,
            path=d.path,
            data_dir=d.data_dir,
            manual_dir=d.manual_dir,
            on_bad_row=d.on_bad_row,
            field_map=d.field_map.to_dict(),
        ).items()
        if v
    }
    if d.name in ("jsonl", "parquet"):  # a recipe's tfds settings do not apply to files
        for key in ("split", "data_dir", "manual_dir"):
            cfg.pop(key, None)
        cfg |= {k: v for k, v in dict(answer_parser=d.answer_parser, source=d.source).items() if v}
        unjudged = sorted(src for src, terms in c.rewards.routes.items() if not terms)
        if unjudged:  # rows no rule judges need no answer
            cfg["no_answer_sources"] = unjudged
    if d.name == "countdown":
        cfg["countdown"] = d.countdown.to_dict()
    return cfg


def eval_source_config(
    c: ml_collections.ConfigDict, needed_by: str, hint: str = ""
) -> dict[str, Any]:
    """The ``load_source`` arguments of the held-out data: ``data.eval_split`` of the training
    dataset, or the file ``data.eval_path`` for jsonl/parquet data (``needed_by`` and ``hint``
    complete the error when that is empty)."""
    d = c.data
    cfg = dict(source_config(c), split=d.eval_split)
    if d.name in ("jsonl", "parquet"):
        if not d.eval_path:
            raise ConfigError(
                f"data.eval_path is empty: {needed_by} needs a held-out {d.name} file{hint}"
            )
        cfg = dict(source_config(c), path=d.eval_path)
    return cfg


def load_prompt_source(c: ml_collections.ConfigDict, cfg: dict[str, Any], source=None):
    """Rows of ``load_source(cfg)`` (or ``source``) with ``data.prompt_builder`` applied.
    With several processes, process 0 prepares a missing TFDS dataset first (no race)."""
    from r1jax import distributed as dist
    from r1jax.data import load_source
    from r1jax.data.files import DataFileNotFoundError
    from r1jax.recipes import PromptMappedSource

    if source is None:
        try:
            source = dist.primary_first(lambda: load_source(cfg))
        except DataFileNotFoundError as e:  # name the field that gave the path
            raise DataFileNotFoundError(f"config.data.path: {e}") from None
    builder = c.data.prompt_builder
    return PromptMappedSource(source, builder) if builder else source


def fitting_prompts(c: ml_collections.ConfigDict, source, tokenizer, fmt, what: str):
    """``source`` without the prompts that have more tokens than ``sampling.max_prompt_len``
    once formatted by ``fmt`` (skipped and reported, with ``data.drop_long_prompts``), or a
    ConfigError naming the first of them (``what``: "training", "eval")."""
    from r1jax import distributed as dist
    from r1jax.data.lengths import split_long_prompts

    limit = c.sampling.max_prompt_len

    def length(record: dict) -> int:
        try:
            return len(tokenizer.encode(fmt(record)))
        except ValueError as e:  # e.g. a character outside a char vocabulary
            why = f"{what} record {record.get('id')!r}: cannot be tokenized ({e})"
            raise ConfigError(f"{why}; fix the data, or use a tokenizer that covers it") from None

    fitting, long = split_long_prompts(source, length, limit)
    if not long:
        return source
    first = long[0]
    detail = (
        f"{len(long)} of {len(source)} {what} prompts have more than "
        f"sampling.max_prompt_len={limit} tokens (the first: record {first['id']!r}, "
        f"{first['tokens']} tokens)"
    )
    if not c.data.drop_long_prompts or len(fitting) == 0:
        raise ConfigError(
            f"{detail}; raise sampling.max_prompt_len (and sampling.prompt_buckets)"
            + ("" if len(fitting) else ": no prompt fits")
            + ("" if c.data.drop_long_prompts else ", or set data.drop_long_prompts")
        )
    if dist.is_primary():
        print(f"{detail}: skipped (data.drop_long_prompts)")
    return fitting


def eval_records(
    c: ml_collections.ConfigDict,
    tokenizer,
    num_prompts: int,
    needed_by: str,
    hint: str = "",
    source=None,
) -> list[dict]:
    """The first ``num_prompts`` held-out rows (all of them when 0) that fit the sampler, each
    with its model input in ``"text"`` (formatted by ``c.prompt``). ``source``: rows to use
    instead of the configured held-out data."""
    cfg = None if source is not None else eval_source_config(c, needed_by, hint)
    return records_with_text(c, tokenizer, load_prompt_source(c, cfg, source), num_prompts, "eval")


def training_records(c: ml_collections.ConfigDict, tokenizer, num_prompts: int) -> list[dict]:
    """:func:`eval_records` of the training data (``c.data``, in the order of the source)."""
    source = load_prompt_source(c, source_config(c))
    return records_with_text(c, tokenizer, source, num_prompts, "training")


def records_with_text(c, tokenizer, source, num_prompts: int, what: str) -> list[dict]:
    """The first ``num_prompts`` rows of ``source`` (0: all) that fit the sampler (see
    :func:`fitting_prompts`; ``what`` names them in its messages), each with its model input
    in ``"text"``."""
    fmt = prompt_formatter(c, tokenizer)
    rows = fitting_prompts(c, source, tokenizer, fmt, what)
    n = len(rows) if num_prompts == 0 else min(num_prompts, len(rows))
    return [dict(rows[i], text=fmt(rows[i])) for i in range(n)]


def eval_task(c: ml_collections.ConfigDict):
    """The :class:`r1jax.eval_run.EvalTask` of ``c.rewards``: the accuracy reward
    (``rewards.accuracy``, default the first function), ``rewards.correct_threshold`` and the
    answer extraction of that reward for majority votes. Rows of a source that
    ``rewards.routes`` gives other terms are judged by the route's term of that label, else
    by the route's first term (a route without terms judges nothing)."""
    from r1jax.rewards.registry import parse_specs

    specs = parse_specs(c.rewards.functions)
    label = c.rewards.accuracy or specs[0].label
    spec = next((s for s in specs if s.label == label), None)
    if spec is None:
        raise ConfigError(
            f"config.rewards.accuracy={label!r} is not one of the rewards.functions "
            f"{[s.label for s in specs]}"
        )
    threshold = c.rewards.correct_threshold
    routes = {}
    for source, terms in c.rewards.routes.items():
        route = parse_specs(terms)
        chosen = next((s for s in route if s.label == label), route[0] if route else None)
        if chosen is None:  # a route without terms: its rows cannot be judged
            routes[source] = None
        else:
            task = accuracy_task(chosen, threshold)
            routes[source] = (task.accuracy, task.answer_of)
    return dataclasses.replace(accuracy_task(spec, threshold), routes=routes)


def accuracy_task(item: Any, threshold: float):
    """The :class:`r1jax.eval_run.EvalTask` of one reward (a ``rewards.functions`` item or
    a ``RewardSpec``): correct when it is ``>= threshold``, votes read answers as it does.
    Raises KeyError for a reward that is not registered or importable."""
    from r1jax.eval_run import EvalTask
    from r1jax.evaluate import vote_key
    from r1jax.rewards.registry import RewardSpec, reward_info

    spec = RewardSpec.from_config(item)
    reward_info(spec.name)
    return EvalTask(spec.label, threshold, vote_key(spec.name, **spec.kwargs))


def build_sampler(c: ml_collections.ConfigDict, model: Transformer, mesh: Mesh, tokenizer=None):
    """The :class:`r1jax.sampling.Sampler` of ``c.sampling`` on ``mesh``, with the run's
    sharding rules (so it reads the weights where they already are)."""
    from r1jax.sampling.sampler import Sampler

    s = c.sampling
    return Sampler(
        model,
        mesh=mesh,
        tokenizer=tokenizer,
        max_prompt_len=s.max_prompt_len,
        max_new_tokens=s.max_new_tokens,
        prompt_buckets=tuple(b for b in s.prompt_buckets if b <= s.max_prompt_len)
        or (s.max_prompt_len,),
        cache_dtype=s.cache_dtype or None,
        fuse_projections=s.fuse_projections,
        decode_segments=s.decode_segments,
        rules=sharding_rules(c),
    )


def sampling_params(c: ml_collections.ConfigDict, seed: int, **changes: Any):
    """:class:`r1jax.sampling.SamplingParams` of ``c.sampling`` with ``seed`` and ``changes``
    (e.g. the eval ``temperature`` and ``top_p``)."""
    from r1jax.sampling.params import SamplingParams

    s = c.sampling
    fields = dict(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        stop_strings=tuple(s.stop_strings),
        seed=seed,
    )
    return SamplingParams(**(fields | changes))


def eval_sampling_params(c: ml_collections.ConfigDict, seed: int):
    """:func:`sampling_params` of evaluation and trace sampling: ``train.eval_temperature``
    and ``train.eval_top_p`` (R1's 0.6 / 0.95) instead of the rollout ones."""
    t = c.train
    return sampling_params(c, seed, temperature=t.eval_temperature, top_p=t.eval_top_p)


def build_scorer(c: ml_collections.ConfigDict):
    """The host :class:`r1jax.rewards.RewardScorer` of ``c.rewards`` (close it when done)."""
    from r1jax.rewards import RewardScorer

    r = c.rewards
    routes = {src: reward_terms(f"rewards.routes.{src}", terms) for src, terms in r.routes.items()}
    try:
        return RewardScorer(
            reward_terms("rewards.functions", r.functions), routes=routes, **scorer_options(c)
        )
    except ValueError as e:  # (bad kwargs or a failed start-up check, naming the spec)
        raise ConfigError(f"config.rewards: {e}") from None


def scorer_options(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The :class:`r1jax.rewards.RewardScorer` keywords of ``c.rewards``' worker settings."""
    r = c.rewards
    return dict(
        num_workers=r.num_workers,
        timeout_s=r.timeout_s,
        worker_memory_mb=r.worker_memory_mb or None,
        max_calls_per_worker=r.worker_max_calls or None,
    )


def reward_terms(field: str, terms: Any) -> list[Any]:
    """The reward terms of the config field ``field`` (items of
    :meth:`r1jax.rewards.registry.RewardSpec.from_config`), each checked to build and to name
    a registered reward or an importable ``"module:function"`` (ConfigError naming the term)."""
    from r1jax.rewards.registry import RewardSpec, reward_info

    if isinstance(terms, str) or not isinstance(terms, (tuple, list)):
        raise ConfigError(f"config.{field}={terms!r}: a list of reward terms, e.g. "
                          "(('math_accuracy', 1.0), ('format_strict', 0.5))")  # fmt: skip
    out = [tuple(t) if isinstance(t, list) else t for t in terms]
    for i, term in enumerate(out):
        try:
            reward_info(RewardSpec.from_config(term).name)
        except (KeyError, ImportError, AttributeError, TypeError, ValueError) as e:
            said = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise ConfigError(f"config.{field}[{i}]={term!r}: {said}") from None
    return out


def reward_model_max_len(c: ml_collections.ConfigDict) -> int:
    """Tokens per reward-model row: ``reward_model.max_len``, or prompt + completion + EOS."""
    s = c.sampling
    return c.reward_model.max_len or s.max_prompt_len + s.max_new_tokens + 1


def check_reward_layout(c: ml_collections.ConfigDict) -> None:
    """A ConfigError when ``reward_model.input`` / ``scope`` differ from what the reward
    model at ``reward_model.path`` was trained on (recorded by ``r1jax rm``; a reward model
    from elsewhere records nothing): it would score text laid out as it never saw."""
    import json

    from r1jax import storage
    from r1jax.rm_export import LAYOUT_FILE

    rm = c.reward_model
    path = os.path.join(rm.path, LAYOUT_FILE)
    if not storage.exists(path):
        return
    trained = json.loads(storage.read_text(path))
    for key in ("input", "scope"):
        if key in trained and trained[key] != rm[key]:
            raise ConfigError(
                f"config.reward_model.{key}={rm[key]!r}, but the reward model at {rm.path!r} "
                f"was trained by r1jax rm with {key}={trained[key]!r}: score what it learned "
                f"(--config.reward_model.{key}={trained[key]}) or train it again with "
                f"{key}={rm[key]!r}"
            )


def with_reward_model(c: ml_collections.ConfigDict, scorer, mesh: Mesh, tokenizer=None):
    """``scorer`` plus the learned reward of ``c.reward_model.path`` (loaded on ``mesh``), or
    ``scorer`` itself when the path is empty (see :mod:`r1jax.rm_scoring`)."""
    rm = c.reward_model
    if not rm.path:
        return scorer
    from r1jax.model.hf import load_hf_model, read_hf_config
    from r1jax.rm_scoring import RewardModelTerm, WithRewardModel
    from r1jax.tokenizer import load_tokenizer

    cfg = read_hf_config(rm.path, field="reward_model.path")
    if cfg.num_labels != 1:
        raise ConfigError(
            f"config.reward_model.path={rm.path!r}: num_labels={cfg.num_labels}, a reward model "
            "has one score (a *ForSequenceClassification with one label, e.g. written by "
            "`r1jax rm`)"
        )
    check_reward_layout(c)
    try:
        rm_tokenizer = load_tokenizer(rm.path)
    except FileNotFoundError:
        if tokenizer is None:
            raise
        rm_tokenizer = tokenizer  # a reward model trained on the policy's tokens
    dt, rules = c.model.dtype, sharding_rules(c)
    model = load_hf_model(rm.path, mesh, rules, dtype=dt, param_dtype=dt,
                          attention=c.model.attention)  # fmt: skip
    term = RewardModelTerm(
        model,
        rm_tokenizer,
        mesh,
        rules,
        weight=rm.weight,
        sources=tuple(rm.sources),
        scope=rm.scope,
        input=rm.input,
        max_len=reward_model_max_len(c),
    )
    return WithRewardModel(scorer, [term])
