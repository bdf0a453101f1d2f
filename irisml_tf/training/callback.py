"""The per-step work of a training session: the Keras callback and the pieces it is built from.

Built in dependency order, each handed what it needs: :class:`StopRequest` (signals),
:class:`Checkpoints` (when and where to save), a ``validate(step, stats)`` function, the
:class:`~irisml_tf.training.runlog.RunLog` and the session's
:class:`~irisml_tf.training.runlog.SessionStats`; :class:`TrainingCallback` ties them to the steps.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from irisml_tf.training.runlog import RunLog, SessionStats

__all__ = ["TRAIN_STARTED", "Checkpoints", "StopRequest", "TrainingCallback"]

log = logging.getLogger(__name__)

#: printed (to the log / progress stream) when the first training step is about to run
TRAIN_STARTED = "training from step"
#: weight of the newest step in the progress bar's moving-average loss
_EMA_WEIGHT = 0.02


class StopRequest:
    """Set by SIGTERM/SIGINT; the training callback checkpoints and stops after the step."""

    def __init__(self):
        self.signal: str | None = None
        self._old = {}

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGTERM and SIGINT inside the block (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
            self._old.clear()

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signal.Signals(signum).name


class Checkpoints:
    """The run's tf.train checkpoints: every ``checkpoint_every`` steps, at the last step, and
    after ``checkpoint_minutes`` (0 = off) since the last save."""

    def __init__(self, session, run_dir: Path, training: dict):
        self.manager = tf.train.CheckpointManager(
            session.checkpoint, str(Path(run_dir) / "checkpoints"),
            max_to_keep=training["keep_checkpoints"], step_counter=session.trainer.global_step)
        self.every = training["checkpoint_every"]
        self.seconds = 60 * training["checkpoint_minutes"]
        self.last_step = training["steps"]
        self.last_save = time.monotonic()

    def due(self, step: int) -> bool:
        return (step % self.every == 0 or step == self.last_step
                or (self.seconds > 0 and time.monotonic() - self.last_save > self.seconds))

    def save(self, step: int) -> None:
        path = self.manager.save(checkpoint_number=step)
        self.last_save = time.monotonic()
        log.info("checkpoint %s", path)


class TrainingCallback(keras.callbacks.Callback):
    """After each step: tally, progress bar, training scalars, validation, checkpoint or stop.

    Args:
      session: the :class:`~irisml_tf.training.session.TrainingSession` (its config's
        ``training.steps``, ``log_every``, ``val_every``; skipped-step count).
      stats: this session's tally (updated here; the driver reads it at the end).
      run_log: where the training scalars go.
      validate: ``validate(step, stats)``, runs a validation and writes metrics.json.
      checkpoints, stop_request: when to save, and the signal that asks to stop.
      stop_step: the step this session stops at (``max_steps``), checkpointing.
      progress: show a tqdm bar; announce: callable(str) told when training starts.
    """

    def __init__(self, session, stats: SessionStats, run_log: RunLog,
                 validate: Callable[[int, SessionStats], None], checkpoints: Checkpoints,
                 stop_request: StopRequest, stop_step: int, progress: bool = False,
                 announce: Callable[[str], None] | None = None):
        super().__init__()
        training = session.config["training"]
        self.session = session
        self.total = training["steps"]
        self.log_every = training["log_every"]
        self.val_every = training["val_every"]
        self.stats = stats
        self.run_log = run_log
        self.validate = validate
        self.checkpoints = checkpoints
        self.stop_request = stop_request
        self.stop_step = stop_step
        self.progress = progress
        self.announce = announce
        self.bar = None
        self.ema: float | None = None
        self._window = _Window()
        self._t0 = 0.0

    def on_train_begin(self, logs=None):
        msg = f"{TRAIN_STARTED} {self.stats.start_step} to {self.stop_step} of {self.total}"
        log.info(msg)
        if self.announce:
            self.announce(msg)
        if self.progress:
            from irisml_tf.progress import progress_bar

            self.bar = progress_bar(self.total, desc="train", unit="step", initial=self.stats.start_step)

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._tally(time.perf_counter() - self._t0, logs or {})
        step = self.stats.step
        if step % self.log_every == 0 or step == self.stop_step:
            w, self._window = self._window, _Window()
            self.run_log.train_window(step, w.nll, w.grad_norm, float(np.asarray(logs["lr"])),
                                      w.steps_per_sec)
        if step % self.val_every == 0 or step == self.total:
            self.validate(step, self.stats)
        stop = self.stop_request.signal
        if stop is not None or (step == self.stop_step and step < self.total):
            self.stats.interrupted_by = stop or "max_steps"
            self.checkpoints.save(step)
            self.model.stop_training = True
        elif self.checkpoints.due(step):
            self.checkpoints.save(step)

    def _tally(self, seconds: float, logs) -> None:
        """Count the step, its time and loss; update the progress bar."""
        self.stats.step += 1
        self.stats.train_seconds += seconds
        self._window.seconds += seconds
        self._window.steps += 1
        nll = float(np.asarray(logs["nll"]))
        self.stats.losses.append(nll)
        if float(np.asarray(logs["applied"])) > 0.5:
            self._window.nll.append(nll)
            self._window.grad_norm.append(float(np.asarray(logs["grad_norm"])))
            self.ema = nll if self.ema is None else (1 - _EMA_WEIGHT) * self.ema + _EMA_WEIGHT * nll
        else:
            log.warning("step %d: non-finite loss or gradient, step skipped", self.stats.step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.ema:.3f}" if self.ema is not None else "nan",
                                 skipped=self.session.skipped, refresh=False)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Window:
    """Steps since the last training scalars: applied steps' NLL and gradient norm, time."""

    nll: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0

    @property
    def steps_per_sec(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0
