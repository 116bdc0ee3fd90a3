"""The GRPO training loop (``r1jax train``): rollouts, advantages, update, eval, checkpoints.

The host loop only moves batches, calls the reward scorer and logs; everything on arrays is
a jitted pure function (:mod:`r1jax.rl.step`, the sampler). Every PRNG key is derived from
(seed, step), and checkpoints hold params, optimizer state, reference params, the data
iterator position and the metrics step, so a run killed at any moment resumes on the same
trajectory. With LoRA adapters (``lora.rank`` > 0) only they train: the optimizer state and the
reference copy hold just them (the reference policy is the frozen base with the adapters the
run started from).

Multi-process (``R1JAX_DISTRIBUTED=1``, one JAX process per host): each process reads its
share of the prompts (``rl.prompts_per_step / processes``), samples and scores their G
completions on its own, and feeds its rows into the global batch arrays
(:func:`r1jax.sharding.host_to_global`); the global rows are the processes' rows in order,
each prompt's G rows contiguous, exactly the batch one process would build. Rewards are
gathered across processes for the advantages (``batch`` scaling needs them all) and the
metrics; process 0 writes metrics and the progress bar; all processes write checkpoints
together, whose metadata holds every process's data-iterator state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from r1jax import build
from r1jax import distributed as dist
from r1jax import sharding as shd
from r1jax.checkpoint import CheckpointError, RunCheckpointer
from r1jax.config import ConfigError, config_changes, validate
from r1jax.eval_sets import EvalScorers, EvalSet, best_metric, evaluate_sets, load_eval_sets
from r1jax.interrupt import GracefulStop, Preempted
from r1jax.metrics import MetricsWriter
from r1jax.model.lora import split_trainable
from r1jax.model.lora import summary as lora_summary
from r1jax.optim import (
    applied_lr,
    check_training_dtypes,
    consecutive_nonfinite,
    init_opt_state,
    make_optimizer,
    make_schedule,
    total_nonfinite,
)
from r1jax.perf import peak_tflops, update_flops
from r1jax.rl.advantages import compute_advantages
from r1jax.rl.checks import check_reward_model, check_routes
from r1jax.rl.losses import LossConfig
from r1jax.rl.rollout import RolloutCollector, Rollouts
from r1jax.rl.rollout_metrics import gather_rollouts, rollout_metrics
from r1jax.rl.step import (
    StepConfig,
    check_rows_contiguous,
    jit_logprobs,
    jit_update,
    make_update_fn,
)
from r1jax.run_weights import restore_init_checkpoint
from r1jax.train_loop import TrainingError

log = logging.getLogger(__name__)
KILL_ENV = "R1JAX_TEST_SIGKILL_AT_STEP"  # test hook: simulate a crash after this step


def step_seed(seed: int, step: int, purpose: int) -> int:
    """A deterministic 31-bit seed for (seed, step, purpose)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), purpose)
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


class GRPOTrainer:
    """Builds every component from a config and runs GRPO. See ``configs/`` for recipes."""

    def __init__(
        self,
        c: ml_collections.ConfigDict,
        *,
        source=None,
        eval_source=None,
        scorer=None,
        tokenizer=None,
    ):
        self.c = c
        build.configure_devices(c)
        validate(c, jax.device_count(), jax.process_count())
        check_training_dtypes(c.model.dtype, c.model.param_dtype)
        if c.sampling.temperature == 0:
            raise ConfigError(
                "config.sampling.temperature=0: the G samples of a prompt would all be its "
                "greedy completion, so every advantage is 0 and GRPO learns nothing; sample with "
                "temperature > 0 (R1: 1.0; train.eval_temperature sets the eval's)"
            )
        self.mesh = build.build_mesh(c)
        # (this process's index, number of processes) in the batch; (0, 1) with one process
        self.data_shard = shd.process_batch_shard(self.mesh)
        self.tokenizer = tokenizer or build.build_tokenizer(c)
        self.metrics: MetricsWriter | _NoMetrics = _NoMetrics()
        try:  # a failure here stops what already started (reward workers, Orbax's threads)
            # the reward terms and the data files first: their errors before a model loads
            self._build_rewards(scorer)
            self._load_data(source, eval_source)
            model = build.build_model(c, self.mesh, self.tokenizer)
            self.model_cfg = model.cfg
            peak = peak_tflops(jax.devices()[0].device_kind)  # all chips' bf16 peak: perf/mfu
            self._peak_tflops = peak * jax.device_count() if peak else None
            self.graphdef, params = nnx.split(model)
            rules = build.sharding_rules(c)
            self.param_shardings = shd.state_shardings(params, self.mesh, rules)
            self._build_optimizer(params)
            self._build_step()
            self._build_sampler(model)
            self._build_collector()
            self._build_state()
            said = lora_summary(self.params)
            if said and dist.is_primary():
                print(said)
        except BaseException:
            self.close()
            raise

    def _build_state(self) -> None:
        """Checkpoints (resumed, or a fresh start) and the metrics writer."""
        c = self.c
        self.run_dir = c.run_dir
        self.ckpt = RunCheckpointer(
            os.path.join(c.run_dir, "checkpoints"), keep=c.train.keep_checkpoints
        )
        self.ref_params = None
        self.step = 0
        self.best_eval: float | None = None
        self._resumed = self._resume()
        self._cold_started = False  # set by _start_fresh: a step-0 checkpoint is then worth it
        if not self._resumed:
            self._start_fresh()
        if dist.is_primary():
            self.metrics = MetricsWriter(
                c.run_dir,
                resume_step=self.step if self._resumed else None,  # None: rows of a run that
                # died before its first checkpoint go when this one writes its first
                tensorboard=c.train.tensorboard,
                wandb_project=c.train.wandb_project or None,
                wandb_config=c.to_dict(),
            )

    # ------------------------------------------------------------------ construction

    def _build_optimizer(self, params: nnx.State) -> None:
        o = self.c.optim
        # optimizer updates per GRPO step: the schedule and the NaN guard count these
        self.updates_per_step = self.c.rl.num_iterations * self.c.rl.num_minibatches
        updates_per_step = self.updates_per_step
        total = self.c.train.steps * updates_per_step
        self.schedule = make_schedule(o.lr, o.warmup_steps * updates_per_step, total, o.schedule)
        self.optimizer = make_optimizer(
            o.lr,
            total,
            o.warmup_steps * updates_per_step,
            o.schedule,
            o.weight_decay,
            o.grad_clip,
            o.b1,
            o.b2,
        )
        self.params = params  # the whole model; the optimizer holds its trainable part's state
        self.opt_state = init_opt_state(self.optimizer, split_trainable(params)[0], self.mesh)
        self.opt_shardings = jax.tree.map(lambda x: x.sharding, self.opt_state)

    def _build_step(self) -> None:
        r, s = self.c.rl, self.c.sampling
        loss = LossConfig(
            loss_type=r.loss_type,
            eps_low=r.eps_low,
            eps_high=r.eps_high,
            beta=r.beta,
            max_completion_len=s.max_new_tokens,
        )
        self.step_cfg = StepConfig(
            loss=loss,
            prompt_len=s.max_prompt_len,
            num_iterations=r.num_iterations,
            num_minibatches=r.num_minibatches,
            grad_accum=r.grad_accum,
            logprob_chunk=r.logprob_chunk,
            group_size=self._shared_group_size(),
        )
        bs = lambda nd: shd.batch_sharding(self.mesh, nd)
        self.batch_keys = ["tokens", "input_mask", "loss_mask", "advantages", "sampler_logp"]
        if not self.step_cfg.on_policy:
            self.batch_keys.append("old_logp")
        if r.beta > 0:
            self.batch_keys.append("ref_logp")
        ndim = {"advantages": 1}
        self.batch_shardings = {k: bs(ndim.get(k, 2)) for k in self.batch_keys}
        # jitted (update, log-prob) programs per prompt width P (the sampler's bucket)
        self._programs: dict[int, tuple[Any, Any]] = {}

    def programs(self, prompt_len: int) -> tuple[Any, Any]:
        """The jitted ``(update_fn, logprob_fn)`` for batches whose prompts are padded to
        ``prompt_len`` (one of the sampler's prompt buckets; built on first use)."""
        if prompt_len not in self._programs:
            cfg = dataclasses.replace(self.step_cfg, prompt_len=prompt_len)
            update = jit_update(
                make_update_fn(self.graphdef, cfg, self.optimizer),
                self.param_shardings,
                self.opt_shardings,
                self.batch_shardings,
            )
            micro = self.c.rl.num_minibatches * self.c.rl.grad_accum
            bs = shd.batch_sharding(self.mesh, 2)
            logprob = jit_logprobs(self.graphdef, cfg, self.param_shardings, bs, micro)
            self._programs[prompt_len] = (update, logprob)
        return self._programs[prompt_len]

    def update_compiles(self) -> int:
        """Number of compiled update programs so far (one per prompt bucket seen)."""
        return sum(u._cache_size() for u, _ in self._programs.values())

    def _prompt_len(self, tokens: jax.Array | np.ndarray) -> int:
        return tokens.shape[1] - self.c.sampling.max_new_tokens

    def _shared_group_size(self) -> int:
        """G when the update can run each prompt once per group (whole groups per
        micro-batch), else 1."""
        r = self.c.rl
        parts = r.num_minibatches * r.grad_accum
        if not r.share_prompt:
            return 1
        if r.prompts_per_step % parts:
            log.warning(
                "rl.share_prompt is off: prompts_per_step=%d does not split into "
                "num_minibatches*grad_accum=%d micro-batches of whole groups",
                r.prompts_per_step,
                parts,
            )
            return 1
        return r.group_size

    def _build_sampler(self, model) -> None:
        self.sampler = build.build_sampler(self.c, model, self.mesh, self.tokenizer)
        self._sampling_params = functools.partial(build.sampling_params, self.c)

    def _build_rewards(self, scorer) -> None:
        self.scorer = scorer or build.build_scorer(self.c)
        # rollouts also get the learned reward, if any; evaluation keeps the rule rewards
        self.rollout_scorer = build.with_reward_model(
            self.c, self.scorer, self.mesh, self.tokenizer
        )
        self.eval_task = build.eval_task(self.c)

    def _load_data(self, source, eval_source) -> None:
        from r1jax.data import PromptIterator

        c = self.c
        fmt = build.prompt_formatter(c, self.tokenizer)
        cfg = None if source is not None else build.source_config(c)
        source = build.load_prompt_source(c, cfg, source)
        source = build.fitting_prompts(c, source, self.tokenizer, fmt, "training")
        check_reward_model(c, source)
        index, count = self.data_shard
        self.data = PromptIterator(
            source,
            batch_size=c.rl.prompts_per_step // count,
            seed=c.seed,
            process_index=index,
            process_count=count,
            format_prompt=fmt,
        )
        self.eval_sets: list[EvalSet] = []
        if c.train.eval_every:
            self.eval_sets = load_eval_sets(
                c,
                self.tokenizer,
                f"train.eval_every={c.train.eval_every}",
                eval_source=eval_source,
                hint=" (or set train.eval_every=0)",
            )
        check_routes(c, source, self.eval_sets)
        self.best_metric = best_metric(c, self.eval_sets)
        self.eval_scorers = EvalScorers(c, self.scorer)

    def _build_collector(self) -> None:
        self.collector = RolloutCollector(
            self.sampler,
            self.rollout_scorer,
            lambda: next(self.data),
            self.c.rl.group_size,
            None,  # rows padded to the sampler's prompt bucket
            self.tokenizer.pad_id,
            self._sampling_params,
            self.c.rl.dynamic_sampling,
            self.c.rl.max_refill_rounds,
            all_processes=dist.all_true,
        )

    # ------------------------------------------------------------------ state

    def _resume(self) -> bool:
        c = self.c
        if c.lora.rank and c.train.init_checkpoint and self.ckpt.steps():
            model = nnx.merge(self.graphdef, self.params)  # the base under the saved adapters
            restore_init_checkpoint(model, c.train.init_checkpoint)
            self.params = nnx.state(model)
        try:
            ref = split_trainable(self.params)[0] if self.c.rl.beta > 0 else None
            restored = self.ckpt.restore_latest(self.params, self.opt_state, ref)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{self._config_changes_hint()}") from None
        if restored is None:
            return False
        step, self.params, self.opt_state, ref, meta = restored
        self.step = step
        fresh_ref = ref is None and self.c.rl.beta > 0
        if fresh_ref:  # a copy: the update donates the policy's buffers
            ref = self._copy_trainable()
        self.ref_params = ref
        self.best_eval = meta.get("best_eval")
        if meta.get("best_metric", "eval/pass@1") != self.best_metric:
            self.best_eval = None  # train.best_metric changed: the old best is another metric
        changed = self._changes_since(meta.get("config"))
        saved = meta.get("tokenizer")  # (checkpoints from before r1jax stored it have none)
        if saved and saved != self._tokenizer_fingerprint():
            raise CheckpointError(
                f"checkpoint {self.ckpt.directory}/{step} was trained with another tokenizer "
                "(its weights would read other text for the same ids): resume with the run's "
                "own tokenizer (tokenizer.*, model.hf_path), or start a new run_dir; nothing was "
                f"changed there.{_changes_note(changed)}"
            )
        try:
            self.data.set_state(self._own_data_state(meta))
        except ValueError as e:  # the prompts, their batching or the seed changed
            raise CheckpointError(
                f"checkpoint {self.ckpt.directory}/{step} was written for other training data "
                f"({e}): its data position cannot continue here. Resume with the run's own "
                "data settings (data.*, rl.prompts_per_step, seed), or start a new run_dir; "
                f"nothing was changed there.{_changes_note(changed)}"
            ) from None
        said = f"resumed from {self.ckpt.directory} step {step}"
        said += f"; config fields changed since: {changed}" if changed else ""
        if fresh_ref:  # (the checkpoint of a beta = 0 run holds no reference)
            said += (f"; the checkpoint holds no reference policy (rl.beta was 0): the KL "
                     f"reference is the policy of step {step}")  # fmt: skip
        elif meta.get("has_ref") and self.c.rl.beta == 0:
            said += ("; rl.beta is 0 now: the checkpoint's reference policy is not used and "
                     "later checkpoints do not hold it (a later resume with rl.beta > 0 takes "
                     "the policy of its step as reference)")  # fmt: skip
        log.info("%s", said)
        if dist.is_primary():
            print(said)
        return True

    def _changes_since(self, saved_json: str | None) -> str:
        """``"field: old -> new; ..."`` (at most 8, then a count) of the config fields that
        differ from the checkpoint's saved config ``saved_json``; "" when none or unreadable."""
        try:
            saved = json.loads(saved_json)
        except (TypeError, ValueError):  # no or damaged metadata: nothing to compare
            return ""
        changes = config_changes(saved, json.loads(self.c.to_json_best_effort()))
        more = f" (+{len(changes) - 8} more)" if len(changes) > 8 else ""
        return "; ".join(changes[:8]) + more

    def _config_changes_hint(self) -> str:
        """The config fields that differ from those saved with the latest checkpoint."""
        try:
            saved = self.ckpt.read_meta(self.ckpt.steps()[-1])["config"]
        except Exception:  # noqa: BLE001 - a hint only; the metadata may be what is damaged
            return ""
        return _changes_note(self._changes_since(saved))

    def _own_data_state(self, meta: dict) -> dict:
        """This process's data-iterator state in checkpoint metadata."""
        index, count = self.data_shard
        if count == 1:
            return meta["data_state"]
        states = meta.get("process_data_states") or [meta["data_state"]]
        if len(states) != count:
            raise ValueError(
                f"checkpoint of step {meta.get('step')} in {self.ckpt.directory} holds the data "
                f"state of {len(states)} process(es), this run has {count}: resume with the "
                "same number of processes"
            )
        return states[index]

    def _start_fresh(self) -> None:
        c = self.c
        model = nnx.merge(self.graphdef, self.params)
        label = restore_init_checkpoint(model, c.train.init_checkpoint)
        if label and dist.is_primary():
            print(f"initialised from {label}")
        if c.cold_start.task:  # from those weights, when init_checkpoint gave some
            from r1jax.recipes import cold_start

            model = cold_start(c, model, self.tokenizer, self.mesh)
            self._cold_started = True
        self.params = nnx.state(model)
        if c.rl.beta > 0:
            self.ref_params = self._copy_trainable()

    def _tokenizer_fingerprint(self) -> str | None:
        fingerprint = getattr(self.tokenizer, "fingerprint", None)  # (tests pass their own)
        return fingerprint() if fingerprint else None

    def _copy_trainable(self) -> nnx.State:
        """A copy of the policy's trainable part (every weight, or its LoRA adapters): the
        reference policy is the frozen part with this copy (:meth:`_reference`)."""
        trainable = split_trainable(self.params)[0]
        shardings = jax.tree.map(lambda x: x.sharding, trainable)
        return jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings)(trainable)

    def _reference(self) -> nnx.State:
        """The reference policy's whole state: the reference copy of the trainable part and
        the policy's own frozen part (the base weights under LoRA adapters; none otherwise)."""
        return nnx.merge_state(self.ref_params, split_trainable(self.params)[1])

    def save(self, eval_score: float | None = None, force: bool = False) -> None:
        """Starts a checkpoint save (every process must call it; Orbax writes together)."""
        meta = {
            "step": self.step,
            "data_state": self.data.get_state(),
            "best_eval": self.best_eval,
            "best_metric": self.best_metric,
            "config": self.c.to_json_best_effort(),
            "tokenizer": self._tokenizer_fingerprint(),
        }
        if self.data_shard[1] > 1:  # process 0 writes the metadata: it holds every state,
            states = dist.allgather_json([self.data_shard[0], meta["data_state"]])
            meta["process_data_states"] = [s for _, s in sorted(states, key=lambda x: x[0])]
        ref = self.ref_params if self.c.rl.beta > 0 else None
        self.metrics.flush()  # a bucket's metrics.jsonl holds every step the checkpoint has
        self.ckpt.save(
            self.step,
            self.params,
            self.opt_state,
            meta,
            ref_params=ref,
            eval_score=eval_score,
            force=force,
        )

    # ------------------------------------------------------------------ one step

    def _dispatch_logprobs(self, tokens: np.ndarray, input_mask: np.ndarray) -> dict:
        """Puts this process's sequences (``tokens``, ``input_mask``: ``[R_local, P + N]``) into
        the global batch and starts old/ref log-prob computation (async)."""
        check_rows_contiguous(input_mask)
        batch = {
            "tokens": shd.host_to_global(tokens, self.batch_shardings["tokens"]),
            "input_mask": shd.host_to_global(input_mask, self.batch_shardings["input_mask"]),
        }
        _, logprob_fn = self.programs(self._prompt_len(tokens))
        if "old_logp" in self.batch_keys:
            batch["old_logp"] = logprob_fn(self.params, batch["tokens"], batch["input_mask"])
        if "ref_logp" in self.batch_keys:
            batch["ref_logp"] = logprob_fn(self._reference(), batch["tokens"], batch["input_mask"])
        return batch

    def _device_batch(self, roll: Rollouts, batch: dict | None = None) -> dict[str, jax.Array]:
        """The update batch: ``batch`` from :meth:`_dispatch_logprobs` plus rewards-derived
        arrays (advantages ``[R]``, loss mask ``[R, N]``), R rows over all processes."""
        if batch is None:
            batch = self._dispatch_logprobs(roll.tokens, roll.input_mask)
        # [R] over all processes (groups are whole within each process's rows)
        rewards = jnp.asarray(dist.allgather(roll.rewards))
        adv = compute_advantages(rewards, self.c.rl.group_size, self.c.rl.advantage_scaling)
        if jax.process_count() > 1:  # this process's rows of the gathered [R]
            n = len(roll.rewards)
            adv = np.asarray(adv)[jax.process_index() * n : (jax.process_index() + 1) * n]
        loss_mask = roll.completion_mask.astype(np.float32)
        if self.c.rl.mask_truncated:
            loss_mask = loss_mask * (~roll.truncated)[:, None]
        batch["loss_mask"] = shd.host_to_global(loss_mask, self.batch_shardings["loss_mask"])
        batch["advantages"] = shd.host_to_global(adv, self.batch_shardings["advantages"])
        batch["sampler_logp"] = shd.host_to_global(
            roll.logp_sampler, self.batch_shardings["sampler_logp"]
        )
        return batch

    def _rollouts(self, seed: int) -> tuple[Rollouts, dict]:
        """Samples and scores; old/ref log-probs run on device while the host scores."""
        if self.c.rl.dynamic_sampling:  # the kept rows are known only after scoring
            roll = self.collector.collect(self.params, seed)
            return roll, self._device_batch(roll)
        records = next(self.data)
        out, handle, sample_time = self.collector.sample(self.params, records, seed)
        pre = self._dispatch_logprobs(*self.collector.assemble(out))
        roll = self.collector.finish(records, out, handle, sample_time)
        roll.sampled_groups = len(records)
        return roll, self._device_batch(roll, pre)

    def train_step(self) -> dict[str, float]:
        """Collects rollouts, updates the policy, returns this step's metrics."""
        t0 = time.perf_counter()
        roll, batch = self._rollouts(step_seed(self.c.seed, self.step, 0))
        t1 = time.perf_counter()
        prompt_len = self._prompt_len(batch["tokens"])
        update_fn, _ = self.programs(prompt_len)
        self.params, self.opt_state, m = update_fn(self.params, self.opt_state, batch)
        m = jax.device_get(m)
        t2 = time.perf_counter()
        flops = self._update_flops(batch["tokens"].shape[0], prompt_len)
        self.step += 1
        bad = consecutive_nonfinite(self.opt_state)  # optimizer updates; a step makes several
        bad_steps = -(-bad // self.updates_per_step)
        if bad_steps >= self.c.optim.max_bad_steps:
            raise TrainingError(
                f"{bad_steps} consecutive steps ({bad} optimizer updates) had non-finite "
                f"loss/gradients (optim.max_bad_steps={self.c.optim.max_bad_steps}); the last "
                f"good checkpoint is in {self.ckpt.directory}. Lower optim.lr or check the "
                "data/rewards."
            )
        every = self.c.rl.ref_update_every
        if self.ref_params is not None and every and self.step % every == 0:
            self.ref_params = self._copy_trainable()
        return self._step_metrics(roll, m, t0, t1, t2, flops)

    def _update_flops(self, rows: int, prompt_len: int) -> float:
        """Model FLOPs of one update (:func:`r1jax.perf.update_flops`, ``rl.num_iterations``
        passes) over ``rows`` global rows whose prompts are padded to ``prompt_len``."""
        g = self._shared_group_size()
        new, frozen = self.c.sampling.max_new_tokens, self.c.lora.rank > 0
        one = update_flops(self.model_cfg, rows // g, g, prompt_len, new, frozen)
        return one * self.c.rl.num_iterations

    def _step_metrics(self, roll, m, t0, t1, t2, flops: float) -> dict[str, float]:
        """Metrics of one step; rollout statistics are over all processes' rows (timings are
        this process's). ``perf/update_tflops_per_s``: model FLOPs of the update (``flops``)
        per second, all chips together; ``perf/mfu``: that over the chips' bf16 peak (only
        on chips :data:`r1jax.perf.PEAK_BF16_TFLOPS` lists)."""
        correct = self.eval_task.correct_rows(roll.records, roll.per_function)
        roll = gather_rollouts(dataclasses.replace(roll, correct=correct))
        out: dict[str, float] = {f"loss/{k}": float(v) for k, v in m.items()}
        out.update(rollout_metrics(roll, self.c.rl.group_size, self.c.rl.dynamic_sampling))
        lengths = roll.lengths
        updates = self.step * self.updates_per_step
        out["optim/lr"] = applied_lr(self.schedule, updates, self.opt_state)
        out["optim/skipped_updates"] = float(total_nonfinite(self.opt_state))
        sample_tokens = float(lengths.sum())
        train_tokens = float(np.asarray(roll.input_mask).sum()) * self.c.rl.num_iterations
        out.update(
            {
                "time/sample": roll.sample_time,
                "time/score_wait": roll.score_time,
                "time/update": t2 - t1,
                "time/step": t2 - t0,
                "throughput/sample_tokens_per_s": sample_tokens / max(roll.sample_time, 1e-9),
                "throughput/train_tokens_per_s": train_tokens / max(t2 - t1, 1e-9),
                "perf/update_tflops_per_s": flops / max(t2 - t1, 1e-9) / 1e12,
            }
        )
        if self._peak_tflops:
            out["perf/mfu"] = out["perf/update_tflops_per_s"] / self._peak_tflops
        return out

    # ------------------------------------------------------------------ eval

    def evaluate(self) -> dict[str, float]:
        """pass@1 (mean over k samples per prompt), pass@k, maj@k, mean length and truncated
        fraction of every eval set (see :mod:`r1jax.eval_sets`, :mod:`r1jax.eval_run`)."""
        progress = self.c.train.progress and dist.is_primary()
        return evaluate_sets(self.c, self.eval_sets, self.sampler, self.params,
                             self.eval_scorers, self.step, self.data_shard, progress)  # fmt: skip

    # ------------------------------------------------------------------ loop

    def train(self, keep_history: bool = True) -> list[dict[str, float]]:
        """Runs until ``train.steps``; returns the metrics of the steps run by this call, each
        with its global ``"step"`` (a resumed run's first entry is not step 1). Without
        ``keep_history`` only the last step's (about 3 KB a step otherwise: 30 MB over 10k
        steps; ``metrics.jsonl`` has them all)."""
        from tqdm import tqdm

        c = self.c
        history = []
        if self.step >= c.train.steps and dist.is_primary():
            print(
                f"{self.run_dir} is at step {self.step}, train.steps={c.train.steps}: nothing to "
                "do (raise train.steps to continue the run)"
            )
        stop = GracefulStop("finishing this GRPO step, saving a checkpoint, then exiting")
        processes = self.data_shard[1]  # a signal to any process stops all after the same step
        kill_at = int(os.environ.get(KILL_ENV, "-1"))
        bar = tqdm(
            total=c.train.steps,
            initial=self.step,
            disable=not c.train.progress or not dist.is_primary(),
            desc="grpo",
            dynamic_ncols=True,
        )
        try:
            with stop:
                if self.step == 0 and not self._resumed:
                    if c.train.eval_every and self.eval_sets:
                        self.metrics.write(0, self.evaluate())  # the starting point of the curves
                    if self._cold_started:  # a crash before the first checkpoint keeps the SFT
                        self.save(force=True)
                while self.step < c.train.steps and not stop.anywhere(processes):
                    m = self.train_step()
                    eval_score, new_best = None, False
                    if c.train.eval_every and self.step % c.train.eval_every == 0:
                        m.update(self.evaluate())
                        eval_score = m[self.best_metric]
                        new_best = self.best_eval is None or eval_score > self.best_eval
                        if new_best:
                            self.best_eval = eval_score
                    if self.step % c.train.log_every == 0 or eval_score is not None:
                        self.metrics.write(self.step, m)
                    if not keep_history:
                        history.clear()
                    history.append(dict(m, step=self.step))
                    bar.update(1)
                    bar.set_postfix(
                        reward=f"{m['reward/mean']:.3f}", len=f"{m['completion/length_mean']:.0f}"
                    )
                    every = c.train.checkpoint_every  # and a new best between those steps
                    if (
                        every and (self.step % every == 0 or new_best)
                    ) or self.step == c.train.steps:
                        self.save(eval_score)
                    if self.step == kill_at:
                        self.ckpt.wait()
                        os.kill(os.getpid(), signal.SIGKILL)
                if stop.anywhere(processes):
                    self.save(force=True)
        finally:
            bar.close()
            self.ckpt.wait()
        if stop.preempted:
            raise Preempted(
                f"GRPO stopped by SIGTERM at step {self.step}; saved step {self.step} to "
                f"{self.ckpt.directory}; the same command resumes"
            )
        return history

    def close(self) -> None:
        """Stops what the trainer started (also after a failed construction: what exists)."""
        for part in ("ckpt", "metrics", "scorer", "eval_scorers"):
            if hasattr(self, part):
                getattr(self, part).close()


def _changes_note(changed: str) -> str:
    """A sentence for error messages naming the config fields changed since a checkpoint."""
    return f" Config fields changed since that checkpoint: {changed}." if changed else ""


class _NoMetrics:
    """The metrics writer of processes other than 0: writes nothing."""

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def train(c: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """Runs (or resumes) the GRPO run of ``c`` as ``r1jax train`` does; returns the metrics of
    the last step run (none: nothing to run)."""
    trainer = GRPOTrainer(c)
    try:
        return trainer.train(keep_history=False)
    finally:
        trainer.close()
