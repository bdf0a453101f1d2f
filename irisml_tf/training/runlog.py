"""What a training session records: TensorBoard scalars and images (``logs/``) and metrics.json.

:class:`SessionStats` is this session's tally (steps, seconds, losses), kept by the training
callback; :class:`RunLog` writes it, with the last training window and validation, to the run
directory. metrics.json keeps the validation history of earlier sessions of a resumed run, and
their last values where this session has none yet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from irisml_tf.rundir import read_metrics
from irisml_tf.workdir import atomic_json

__all__ = ["RunLog", "SessionStats"]


@dataclass
class SessionStats:
    """This session's tally: it started at ``start_step`` and has reached ``step``."""

    start_step: int
    step: int = -1
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # global-batch NLL of every step
    interrupted_by: str | None = None  # SIGTERM / SIGINT / max_steps

    def __post_init__(self):
        if self.step < 0:
            self.step = self.start_step

    @property
    def steps(self) -> int:
        return self.step - self.start_step

    @property
    def steps_per_sec(self) -> float | None:
        return self.steps / self.train_seconds if self.train_seconds else None


class RunLog:
    """TensorBoard writer and metrics.json of one session of a run."""

    def __init__(self, run_dir: Path, session):
        self.path = Path(run_dir) / "metrics.json"
        self.session = session
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / "logs"))
        self.previous = read_metrics(run_dir)  # earlier sessions of a resumed run
        self.started = time.time()
        self.last_train: dict = {}
        self.last_val: dict = {}
        self.val_history: list[dict] = []

    def train_window(self, step: int, nll: list[float], grad_norm: list[float], lr: float,
                     steps_per_sec: float) -> None:
        """Scalars of the steps since the last call (``nll``/``grad_norm`` of applied steps)."""
        mean_nll = float(np.mean(nll)) if nll else None
        with self.writer.as_default(step=step):
            if nll:
                tf.summary.scalar("train/nll", mean_nll)
                tf.summary.scalar("train/grad_norm", float(np.mean(grad_norm)))
            tf.summary.scalar("train/learning_rate", lr)
            tf.summary.scalar("train/skipped_steps", self.session.skipped)
            tf.summary.scalar("train/steps_per_sec", steps_per_sec)
        self.last_train = {"step": step, "nll": mean_nll, "learning_rate": lr,
                           "steps_per_sec": steps_per_sec}

    def validation(self, step: int, result: dict, seconds: float) -> None:
        """Scalars and figures of a :meth:`Validator.evaluate` result (its figures are taken)."""
        figures = result.pop("figures")
        with self.writer.as_default(step=step):
            tf.summary.scalar("val/nll", result["nll"])
            for p, v in result["rmse"].items():
                tf.summary.scalar(f"val/rmse/{p}", v)
            for level, row in result["coverage"].items():
                for p, v in row.items():
                    tf.summary.scalar(f"val/coverage_{level}/{p}", v)
                tf.summary.scalar(f"val/coverage_{level}/mean", float(np.mean(list(row.values()))))
            tf.summary.scalar("val/calibration_error_max", result["calibration_error"])
            for name, image in figures.items():
                tf.summary.image(f"val/{name}", image, step=step)
        self.writer.flush()
        self.last_val = dict(result, step=step, seconds=seconds)
        self.val_history.append({"step": step, "nll": result["nll"],
                                 "calibration_error": result["calibration_error"],
                                 "rmse": result["rmse"]})

    def metrics(self, status: str, stats: SessionStats) -> dict:
        """The metrics.json content (earlier sessions' history and last values merged in)."""
        t = self.session.config["training"]
        rate = stats.steps_per_sec
        new = {
            "status": status,
            "step": stats.step,
            "steps_total": t["steps"],
            "interrupted_by": stats.interrupted_by,
            "skipped_steps": self.session.skipped,
            "num_replicas": self.session.num_replicas,
            "num_parameters": self.session.num_parameters(),
            "batch_size": t["batch_size"],
            "steps_per_sec": rate,
            "examples_per_sec": rate * t["batch_size"] if rate else None,
            "session_start_step": stats.start_step,
            "session_steps": stats.steps,
            "session_wall_seconds": time.time() - self.started,
            "train": self.last_train,
            "validation": self.last_val,
            "validation_history": [h for h in self.previous.get("validation_history", [])
                                   if h["step"] < stats.start_step] + self.val_history,
        }
        for key in ("validation", "train", "steps_per_sec", "examples_per_sec"):
            if not new[key] and self._previous(key, stats.start_step):
                new[key] = self.previous[key]  # nothing new this session: keep the last
        return new

    def _previous(self, key: str, start_step: int):
        """An earlier session's value, unless it is from beyond the checkpoint resumed from (a
        session killed after its last checkpoint)."""
        value = self.previous.get(key)
        if isinstance(value, dict) and value.get("step", 0) > start_step:
            return None
        return value

    def write_metrics(self, status: str, stats: SessionStats) -> dict:
        """Write metrics.json (atomically); returns the dict written."""
        metrics = self.metrics(status, stats)
        atomic_json(self.path, metrics)
        return metrics

    def close(self) -> None:
        self.writer.flush()
