"""Metrics: one JSON line per step (``metrics.jsonl``), TensorBoard, optional W&B, plots."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from r1jax import storage

log = logging.getLogger(__name__)


def _scalar(v: Any) -> float | None:
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        return None
    return f


class MetricsWriter:
    """Appends per-step scalars to ``<run_dir>/metrics.jsonl`` and TensorBoard.

    On resume, lines with a step greater than the restored step ``resume_step`` are dropped
    first, so the file of a resumed run equals that of an uninterrupted one. With
    ``resume_step=None`` (a fresh start, or a caller that learns the restored step only as
    the loop starts) the first row written decides: lines from its step on are dropped
    then. In a bucket (``gs://...``, which cannot append) the rows are kept in memory and
    the file is rewritten at most every :data:`UPLOAD_EVERY_S` seconds and on :meth:`flush`
    (the trainer flushes before each checkpoint) and :meth:`close`.
    """

    UPLOAD_EVERY_S = 30.0
    WANDB_ID_FILE = "wandb_run_id"
    """Holds the W&B run id of the run directory, so that a resumed run logs to the same run."""

    def __init__(
        self,
        run_dir: str,
        resume_step: int | None = None,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        wandb_config: Mapping[str, Any] | None = None,
    ):
        storage.makedirs(run_dir)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._remote = storage.is_remote(run_dir)
        self._tb_dir = os.path.join(run_dir, "tb") if tensorboard else None
        self._remote_rows: list[str] | None = None
        self._file, self._tb = None, None
        if resume_step is not None:
            self._start(resume_step + 1)
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                log.warning(
                    "wandb_project=%r but wandb is not installed (pip install wandb): metrics go "
                    "to metrics.jsonl and TensorBoard only",
                    wandb_project,
                )
            else:
                self._wandb = _wandb_run(wandb, wandb_project, run_dir, wandb_config)

    def _start(self, first: int) -> None:
        """Drops the rows of steps ``first`` and later (a line cut short by a crash too, with
        a warning), and opens the file and TensorBoard for the rows to come."""
        kept = []
        if storage.exists(self.path):
            rows = _parse_rows(self.path, storage.read_text(self.path))
            kept = [json.dumps(row) + "\n" for row in rows if row["step"] < first]
        if self._remote:
            self._remote_rows, self._uploaded = kept, time.monotonic()
        else:
            if storage.exists(self.path):
                storage.write_text(self.path, "".join(kept))
            self._file = open(self.path, "a", encoding="utf-8")
        if self._tb_dir is not None:
            self._tb = _tensorboard(self._tb_dir, first)
        self.flush()

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._file is None and self._remote_rows is None:  # (not started yet)
            self._start(step)
        row = {"step": step}
        for k, v in sorted(metrics.items()):
            f = _scalar(v)
            if f is not None:
                row[k] = f if math.isfinite(f) else str(f)
        line = json.dumps(row) + "\n"
        if self._remote_rows is not None:
            self._remote_rows.append(line)
            if time.monotonic() - self._uploaded >= self.UPLOAD_EVERY_S:
                self.flush()
        else:
            self._file.write(line)
            self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float):
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(row, step=step)

    def flush(self) -> None:
        """Makes every row written so far visible in ``metrics.jsonl`` (and TensorBoard)."""
        if self._remote_rows is not None:
            storage.write_text(self.path, "".join(self._remote_rows))
            self._uploaded = time.monotonic()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wandb_run(wandb: Any, project: str, run_dir: str, config: Mapping[str, Any] | None) -> Any:
    """The W&B run of ``run_dir``: its id is kept in ``<run_dir>/wandb_run_id``, so a resumed
    run continues the same W&B run (named after the run directory, with the config)."""
    id_file = os.path.join(run_dir, MetricsWriter.WANDB_ID_FILE)
    if storage.exists(id_file):
        run_id = storage.read_text(id_file).strip()
    else:
        run_id = secrets.token_hex(4)
        storage.write_text(id_file, run_id + "\n")
    return wandb.init(
        project=project,
        id=run_id,
        resume="allow",
        name=os.path.basename(run_dir.rstrip("/")),
        dir=None if storage.is_remote(run_dir) else run_dir,
        config=dict(config) if config is not None else None,
    )


def _tensorboard(log_dir: str, purge_step: int) -> Any:
    """tensorboardX's writer of ``log_dir``; it writes to ``gs://`` with google-cloud-storage
    (and ``s3://`` with boto3), and says which it needs otherwise."""
    from tensorboardX import SummaryWriter

    try:
        return SummaryWriter(log_dir, purge_step=purge_step)
    except ImportError as e:
        raise ImportError(
            f"TensorBoard files in {log_dir}: {e} (pip install 'r1jax[gcs]' for gs://), or "
            "--config.train.tensorboard=False to write metrics.jsonl only"
        ) from None


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """All rows of ``<run_dir>/metrics.jsonl``."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no metrics found (is {run_dir!r} a run directory?)")
    return _parse_rows(path, storage.read_text(path))


def _parse_rows(path: str, text: str) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` text; lines that are not a JSON object with a ``step``
    (a line cut short when the process was killed while writing it) are left out, with a
    warning naming them."""
    rows, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            bad.append(number)
    if bad:
        log.warning("%s: left out line(s) %s, not a metrics row (cut short by a crash?)",
                    path, bad[:10])  # fmt: skip
    return rows


PLOTS = (
    ("reward", ("reward/mean",), "reward (total) and per function"),
    ("accuracy", ("eval/pass@1", "reward/accuracy_mean"), "accuracy"),
    ("length", ("completion/length_mean", "completion/length_max"), "completion length"),
    ("kl", ("loss/kl", "loss/policy_drift_kl"), "KL"),
)
SFT_PLOTS = (
    ("sft_loss", ("sft/loss", "sft/eval_loss"), "SFT loss (training, held-out)"),
    ("sft_accuracy", ("sft/accuracy", "sft/eval_accuracy"), "SFT token accuracy"),
)


def _extra_curves(plot: str, rows: list[dict[str, Any]]) -> list[str]:
    """Metrics drawn next to a plot's own: each reward function's mean on the reward plot,
    each benchmark's pass@1 (``eval/<name>/pass@1``) on the accuracy plot."""
    keys = dict.fromkeys(k for row in rows for k in row)
    if plot == "reward":
        return [k for k in keys if k.startswith("reward/fn/") and k.endswith("/mean")]
    if plot == "accuracy":
        return [
            k
            for k in keys
            if k.startswith("eval/") and k.endswith("/pass@1") and k != "eval/pass@1"
        ]
    return []


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Draws reward, accuracy, length and KL curves of a run (``metrics.jsonl``) and the loss
    and token accuracy of its SFT stage (``sft/metrics.jsonl``), those it has, to PNG files
    in ``out_dir`` (default ``<run_dir>/plots``); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")

    sources = [
        (read_metrics(d), plots)
        for d, plots in ((run_dir, PLOTS), (os.path.join(run_dir, "sft"), SFT_PLOTS))
        if storage.exists(os.path.join(d, "metrics.jsonl"))
    ]
    if not sources:
        read_metrics(run_dir)  # raises: names the missing file
    out_dir = out_dir or os.path.join(run_dir, "plots")
    storage.makedirs(out_dir)
    return [
        path
        for rows, plots in sources
        for name, keys, title in plots
        if (path := _draw(rows, name, (*keys, *_extra_curves(name, rows)), title, out_dir))
    ]


def _draw(rows: list[dict[str, Any]], name: str, keys: Sequence[str], title: str,
          out_dir: str) -> str | None:  # fmt: skip
    """``<out_dir>/<name>.png`` with a curve per key that has values; None if none has."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = 0
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{name}.png")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.path(path).write_bytes(png.getvalue())
    return path
