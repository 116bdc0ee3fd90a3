"""Orbax checkpoints of a training run: params, optimizer state, reference params, metadata.

Layout: ``<run_dir>/checkpoints/<step>/{params,opt_state,ref_params,meta}``. ``meta`` (JSON)
holds the step, the config, the data-iterator state and anything the loop needs to continue
the same trajectory (PRNG keys are derived from (seed, step), so the seed and step suffice).

Saving is asynchronous; Orbax writes into a temporary directory and renames it when complete,
so a save interrupted by ``kill -9`` never looks finished. On restore, a checkpoint that fails
to load (corrupted files) is skipped with a warning and the previous one is tried; once an
older one restores, the damaged newer ones are moved to ``<checkpoints>.damaged/<step>`` (kept,
not deleted), so that the resumed run saves those steps again. With several processes, every
process takes the same step: one whose metadata any process cannot read is skipped by all,
and so is one whose Orbax restore any process reports failed (through the coordination
service). A process whose restore failed (a shard file that it alone reads) while another
does not report in time, waiting inside the same restore, cannot go back alone: it records
the failure in ``<checkpoints>.unrestorable/`` and stops the job, and the next start skips
that step on every process.

Nothing is ever started over a run whose checkpoints cannot be used: when none restores, or
when the parameter shapes saved in ``meta`` differ from the model being restored into (the
run's config changed), :class:`CheckpointError` says so and the directory is left as it is.

A model with LoRA adapters saves only what it trains (adapters, their scales, a reward
model's score head: :data:`r1jax.model.lora.OWN_STATE`) and an exact fingerprint of the
frozen base (:mod:`r1jax.fingerprint`) in ``meta["base_fingerprint"]``: megabytes instead of
the whole model at every step. Restoring takes the base from the template (the model the
config builds: ``model.hf_path``, ``train.init_checkpoint``) and refuses one whose weights
differ from the fingerprint. Checkpoints holding the whole model (``save_base=True``, or
written before r1jax saved adapters alone) restore as before.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as cm

from r1jax import distributed as dist
from r1jax import storage
from r1jax.fingerprint import fingerprints
from r1jax.model.hf import CheckpointError
from r1jax.model.lora import ADAPTER_STATE, LORA_MARK, check_scales, has_lora, split_base

__all__ = ["CheckpointError", "RunCheckpointer", "failure_text"]

META_FILE = "metadata"  # (what orbax's JsonSave names the file of an item)
OTHER_PROCESS = "another process could not read its metadata"
OTHER_PROCESS_RESTORE = "another process could not restore it"
AGREEMENT_ENV = "R1JAX_RESTORE_AGREEMENT_S"  # how long processes wait for each other's restore
log = logging.getLogger(__name__)
EVAL_METRIC = "eval/pass@1"


def _eval_score(metrics: dict[str, float]) -> float:
    return metrics[EVAL_METRIC]


class _QuietWithoutMetrics(logging.Filter):
    """Drops Orbax's warning for a save without metrics (with ``best_fn`` set, it warns on
    every save that is not an eval step, which is most of them and expected)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietWithoutMetrics())


def _flat_params(state: nnx.State) -> dict[str, jax.Array]:
    return {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing ``tree``, the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class RunCheckpointer:
    """Saves and restores one run's checkpoints; keeps the last N plus the best by eval.
    ``read_only``: for commands that only read a run (eval, sample, export), which may run
    while it trains: they leave its half-written (in progress) saves alone. ``save_base``:
    a model with LoRA adapters is saved whole (default: its adapters and a base
    fingerprint)."""

    def __init__(
        self,
        directory: str,
        keep: int = 3,
        async_save: bool = True,
        read_only: bool = False,
        save_base: bool = False,
    ):
        self.directory = storage.absolute(directory)
        self.save_base = save_base  # LoRA models: the frozen base too (see the module doc)
        policy = cm.preservation_policy.AnyPreservationPolicy(
            [
                cm.preservation_policy.LatestN(n=keep),
                cm.preservation_policy.BestN(
                    get_metric_fn=_eval_score,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,  # decides what is kept; best_fn makes Orbax write
            # each save's metrics into its step, so that a resumed run knows the best one
            best_fn=_eval_score,
            best_mode="max",
            enable_async_checkpointing=async_save,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
        )
        if not read_only:  # (to a reader, a half-written checkpoint may be a save in progress)
            for d in (d for d in storage.listdir(self.directory) if ".orbax-checkpoint-tmp" in d):
                log.warning(
                    "ignoring half-written checkpoint %s (an interrupted save)",
                    os.path.join(self.directory, d),
                )
        self._last_saved: int | None = None  # an async save may not be listed yet
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_names=("params", "opt_state", "ref_params", "meta"),
        )

    def save(
        self,
        step: int,
        params: nnx.State,
        opt_state: Any,
        meta: dict[str, Any],
        ref_params: nnx.State | None = None,
        eval_score: float | None = None,
        force: bool = False,
    ) -> None:
        """Starts an (async) save of everything needed to continue from ``step``. A step that
        is already saved (or being saved) is left as it is: e.g. a Ctrl-C right after a
        periodic checkpoint, or before the first step of a resumed run."""
        if step == self._last_saved or step in self.steps():
            return
        self._last_saved = step
        flat = _flat_params(params)
        meta = dict(meta, has_ref=ref_params is not None,
                    param_shapes={k: list(v.shape) for k, v in flat.items()})  # fmt: skip
        if has_lora(params) and not self.save_base:
            own, base = split_base(params)
            flat, meta["base_fingerprint"] = _flat_params(own), fingerprints(_flat_params(base))
        items = dict(
            params=ocp.args.StandardSave(flat),
            opt_state=ocp.args.StandardSave(jax.tree.leaves(opt_state)),
            meta=ocp.args.JsonSave(meta),
        )
        if ref_params is not None:
            items["ref_params"] = ocp.args.StandardSave(_flat_params(ref_params))
        scored = eval_score is not None and math.isfinite(eval_score)  # (NaN: not a best)
        metrics = {EVAL_METRIC: float(eval_score)} if scored else None
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(
        self,
        params: nnx.State,
        opt_state: Any,
        ref_params: nnx.State | None = None,
    ) -> tuple[int, nnx.State, Any, nnx.State | None, dict] | None:
        """Restores the newest loadable checkpoint into the structure of the given templates.

        Returns ``(step, params, opt_state, ref_params, meta)``, or None when the directory
        holds no checkpoint. Templates give shapes, dtypes and shardings (their values are not
        used).

        Raises:
          CheckpointError: the checkpoints' parameter shapes differ from the templates' (a
            changed model config), or no checkpoint could be restored.
        """
        steps = self.steps()
        failures, damaged = [], []
        for step in reversed(steps):
            try:
                meta, unreadable = self.read_meta(step), self._unrestorable(step)
            except Exception as e:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint
                unreadable = e
            # Every process takes the same step: one that any process cannot read is skipped
            # by all, before any Orbax call (whose barriers would pair off by one otherwise).
            if not dist.all_true(unreadable is None):
                failures.append(self.skip(step, unreadable or OSError(OTHER_PROCESS)))
                damaged.append(step)
                continue
            _check_shapes(meta.get("param_shapes"), params, f"{self.directory}/{step}")
            _check_base(meta, params, f"{self.directory}/{step}")
            failed = None
            try:
                restored = (step, *self._restore(step, meta, params, opt_state, ref_params))
            except Exception as e:  # noqa: BLE001 - any failure means: try the previous one
                failed = e
            if not self._all_restored(step, failed):
                failures.append(self.skip(step, failed or OSError(OTHER_PROCESS_RESTORE)))
                damaged.append(step)
                continue
            # (outside the try: adapters of another alpha are not a damaged checkpoint)
            _check_lora_scales(params, restored[1], f"checkpoint {self.directory}/{step}")
            self._set_aside(damaged)
            return restored
        if steps:
            raise CheckpointError(
                f"{self.directory} holds checkpoints of steps {steps} and none could be "
                "restored; nothing was changed there (move them away, or use a new run_dir, "
                "to start over). " + "; ".join(failures)
            )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves the damaged checkpoints ``steps`` (newer than the one restored) to
        ``<directory>.damaged/``: kept for a look, and out of the way of the resumed run's
        saves of the same steps (process 0 moves them; every process then reloads the list)."""
        if not steps:
            return
        aside = f"{self.directory.rstrip('/')}.damaged"
        failed = ""
        if dist.is_primary():
            storage.makedirs(aside)
            for step in steps:
                src, dst = f"{self.directory}/{step}", f"{aside}/{step}"
                n = 1
                while storage.exists(dst):
                    dst, n = f"{aside}/{step}.{n}", n + 1
                try:
                    storage.path(src).rename(dst)
                except Exception as e:  # noqa: BLE001 - e.g. a store that cannot move folders
                    failed = f"checkpoint {src} could not be moved to {dst} ({e})"
                    break
                log.warning("moved the damaged checkpoint %s to %s", src, dst)
                for mark in self._marks_of(step):  # (the step will be saved anew)
                    storage.remove(mark)
        if not dist.all_true(not failed):  # every process stops, not only process 0
            raise CheckpointError(
                f"{failed or 'process 0 could not move a damaged checkpoint'}: it is damaged "
                "(an older one restored); move it away by hand, then run again"
            )
        self.manager.reload()

    def _marks(self) -> str:
        return f"{self.directory.rstrip('/')}.unrestorable"

    def _marks_of(self, step: int) -> list[str]:
        """The paths of :meth:`_fail_restore`'s records of ``step``, in process order."""
        names = storage.listdir(self._marks())
        return [f"{self._marks()}/{m}" for m in names if m.startswith(f"{step}.process")]

    def _all_restored(self, step: int, failed: Exception | None) -> bool:
        """Whether every process restored ``step`` (``failed``: this one's error, if any).
        With several processes they agree through the coordination service: when all
        report, a step that any failed is skipped by all; a process that does not report
        within ``$R1JAX_RESTORE_AGREEMENT_S`` (default 300 s) may wait inside the same restore
        for one that failed, which then cannot go back alone (:meth:`_fail_restore`)."""
        if jax.process_count() == 1:
            return failed is None
        timeout = float(os.environ.get(AGREEMENT_ENV, "300"))
        agreed = dist.agree_within(failed is None, "restore", timeout)
        if agreed is not None:
            return agreed
        if failed is not None:
            self._fail_restore(step, failed)
        raise CheckpointError(
            f"process {jax.process_index()} restored checkpoint {self.directory}/{step}, but "
            f"another process did not say within {timeout:.0f} s ({AGREEMENT_ENV}) whether it "
            "did (see its log); the same command tries again"
        )

    def _fail_restore(self, step: int, e: Exception) -> None:
        """With several processes, one whose Orbax restore of ``step`` failed while another
        did not report cannot go on to the previous step: the other may be inside the same
        restore, waiting for it in a collective. It records the failure for the next start
        (which skips ``step`` on every process, before any Orbax call) and raises; a failed
        collective (another process failed or stopped) is not the checkpoint's fault and is
        not recorded."""
        why = failure_text(step, e)
        if isinstance(e, jax.errors.JaxRuntimeError):
            raise CheckpointError(
                f"process {jax.process_index()}: the restore of checkpoint {self.directory}/"
                f"{step} failed in a collective ({why}): another process failed or stopped "
                "(see its log); the same command tries this checkpoint again"
            ) from None
        mark = f"{self._marks()}/{step}.process{jax.process_index()}"
        storage.makedirs(self._marks())
        storage.write_text(mark, why)
        raise CheckpointError(
            f"process {jax.process_index()} could not restore checkpoint {self.directory}/"
            f"{step} ({why}). The other processes may have restored it, so this one cannot "
            f"try the previous checkpoint alone; recorded in {mark}: the same command skips "
            "this checkpoint on every process at the next start."
        ) from None

    def _unrestorable(self, step: int) -> Exception | None:
        """The failure recorded by :meth:`_fail_restore` for ``step`` at an earlier start."""
        marks = self._marks_of(step)
        if not marks:
            return None
        names = ", ".join(os.path.basename(m) for m in marks)
        said = storage.read_text(marks[0])
        return OSError(f"{names} could not restore it at an earlier start: {said}")

    def skip(self, step: int, e: Exception) -> str:
        """Warns that checkpoint ``step`` cannot be restored (``e``) and the previous one is
        tried; returns :func:`failure_text`."""
        why = failure_text(step, e)
        log.warning("checkpoint %s/%d cannot be restored (%s); trying the previous one",
                    self.directory, step, why)  # fmt: skip
        return why

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata saved with ``step`` (step, config, data state, param shapes),
        read by this process alone: the file Orbax's ``JsonSave`` wrote, without Orbax's
        restore (which ends in a barrier of all processes); through it for another layout."""
        path = f"{self.directory}/{step}/meta/{META_FILE}"
        if storage.exists(path):
            return json.loads(storage.read_text(path))
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return out["meta"]

    def _restore(self, step, meta, params, opt_state, ref_params):
        leaves, treedef = jax.tree.flatten(opt_state)
        stored, base = _stored_part(params, meta)
        args = dict(
            params=ocp.args.StandardRestore(_abstract(_flat_params(stored))),
            opt_state=ocp.args.StandardRestore(_abstract(leaves)),
        )
        if meta.get("has_ref") and ref_params is not None:
            args["ref_params"] = ocp.args.StandardRestore(_abstract(_flat_params(ref_params)))
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
        new_params = _with_base(_unflat_params(stored, out["params"]), base)
        new_opt = jax.tree.unflatten(treedef, out["opt_state"])
        new_ref = None
        if "ref_params" in args:
            new_ref = _unflat_params(ref_params, out["ref_params"])
        return new_params, new_opt, new_ref, meta

    def restore_params(
        self, template: nnx.State, step: int | None = None, fresh_adapters: bool = False
    ) -> nnx.State:
        """Only the policy params (e.g. to export or to initialise another stage). With
        ``fresh_adapters``, a checkpoint without LoRA adapters fills the base weights of a
        ``template`` with adapters and keeps the template's adapters."""
        step = self.steps()[-1] if step is None else step
        meta = self.read_meta(step)
        saved = meta.get("param_shapes")
        if (
            fresh_adapters
            and saved is not None
            and has_lora(template)
            and not any(LORA_MARK in name for name in saved)
        ):  # a checkpoint without adapters: its base weights, the template's adapters
            adapters, base = nnx.split_state(template, ADAPTER_STATE, ...)
            return nnx.merge_state(self.restore_params(base, step), adapters)
        _check_shapes(saved, template, f"{self.directory}/{step}")
        _check_base(meta, template, f"{self.directory}/{step}")
        stored, base = _stored_part(template, meta)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(_flat_params(stored)))
            ),
        )
        restored = _with_base(_unflat_params(stored, out["params"]), base)
        _check_lora_scales(template, restored, f"checkpoint {self.directory}/{step}")
        return restored

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def failure_text(step: int, e: Exception) -> str:
    """One line naming why checkpoint ``step`` could not be restored (``e``)."""
    return f"step {step}: {type(e).__name__}: {str(e)[:300]}"


def _check_shapes(saved: dict[str, list[int]] | None, template: nnx.State, where: str) -> None:
    """Raises :class:`CheckpointError` naming the parameters whose shapes in the checkpoint
    ``where`` (``saved``, from its metadata; None in checkpoints written before r1jax stored
    them) differ from ``template``'s."""
    if saved is None:
        return
    now = {"/".join(map(str, p)): list(v.get_value().shape) for p, v in nnx.to_flat_state(template)}
    diffs = [f"{k}: saved {tuple(saved[k])}, now {tuple(now[k])}"
             for k in now if k in saved and saved[k] != now[k]]  # fmt: skip
    diffs += [f"{k}: not in the checkpoint" for k in now if k not in saved]
    diffs += [f"{k}: in the checkpoint only" for k in saved if k not in now]
    if diffs:
        more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
        lora = any(LORA_MARK in d for d in diffs)
        lora = (
            " (LoRA adapters differ: use the lora.* settings it was trained with)" if lora else ""
        )
        raise CheckpointError(
            f"checkpoint {where} holds a different model than this config builds: "
            f"{'; '.join(diffs[:4])}{more}{lora}. Resume with the run's own config (saved in "
            "the checkpoint's meta) or start a new run_dir; nothing was changed there."
        )


def _stored_part(template: nnx.State, meta: dict) -> tuple[nnx.State, nnx.State | None]:
    """``(stored, base)``: the part of ``template`` that the checkpoint of ``meta`` holds, and
    the base it takes from the template (None: the checkpoint holds the whole model)."""
    if "base_fingerprint" not in meta:
        return template, None
    return split_base(template)


def _with_base(restored: nnx.State, base: nnx.State | None) -> nnx.State:
    return restored if base is None else nnx.merge_state(restored, base)


def _check_base(meta: dict, template: nnx.State, where: str) -> None:
    """Raises :class:`CheckpointError` when the checkpoint ``where`` holds LoRA adapters
    trained on other base weights than ``template``'s (its ``meta["base_fingerprint"]``)."""
    saved = meta.get("base_fingerprint")
    if saved is None:
        return
    now = fingerprints(_flat_params(split_base(template)[1]))
    diffs = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if diffs:
        config = json.loads(meta.get("config") or "{}")
        fields = (("model", "hf_path"), ("train", "init_checkpoint"))
        theirs = ", ".join(f"{g}.{f}={config[g].get(f)!r}" for g, f in fields if g in config)
        raise CheckpointError(
            f"checkpoint {where} holds LoRA adapters without their base weights, and this "
            f"config's base differs from the one they were trained on ({len(diffs)} of "
            f"{len(now)} weights, e.g. {diffs[0]}). The base comes from the config "
            "(model.hf_path, train.init_checkpoint, model.param_dtype): use the run's own"
            f"{f' (saved: {theirs})' if theirs else ''}; nothing was changed there."
        )


def _check_lora_scales(template: nnx.State, restored: nnx.State, where: str) -> None:
    """:func:`r1jax.model.lora.check_scales` as a :class:`CheckpointError`."""
    try:
        check_scales(template, restored, where)
    except ValueError as e:
        raise CheckpointError(f"{e}; nothing was changed there") from None


def _unflat_params(template: nnx.State, flat: dict[str, jax.Array]) -> nnx.State:
    pairs = []
    for p, v in nnx.to_flat_state(template):
        key = "/".join(map(str, p))
        if key not in flat:
            raise KeyError(f"checkpoint has no parameter {key!r}")
        pairs.append((p, v.replace(flat[key])))
    return nnx.from_flat_state(pairs)
