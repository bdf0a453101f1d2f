"""The training driver: `irisml-tf train` as a library function, :func:`train`.

One run lives in a directory::

    RUN_DIR/config.yaml        the resolved config (model box and standardisation filled in)
    RUN_DIR/validation.npz     the fixed validation set (generated once from training.val_seed)
    RUN_DIR/logs/              TensorBoard events (scalars + images)
    RUN_DIR/checkpoints/       tf.train checkpoints: model, optimiser, global step, skip count
    RUN_DIR/metrics.json       last metrics, throughput, status (written at every validation)
    RUN_DIR/final.weights.h5   the posterior's weights when the run completes

Strategy: ``tf.distribute.MirroredStrategy`` over the visible GPUs if there are several, else
over the logical CPU devices if there are several (see :func:`split_cpu`), else the default
strategy. Data: the simulation stream is a pure function of (seed, step): global step k (0-based)
trains on stream batch k of ``training.batch_size`` stars, cut into equal per-replica slices, so
the global batch does not depend on the number of replicas and a resumed run (restarting the
stream at the checkpoint's step) sees exactly the batches the uninterrupted run would have seen.

Stopping: SIGTERM or SIGINT, or ``max_steps`` steps in this session, end the run after the
current step with a checkpoint (status ``interrupted``); ``resume=True`` continues it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from irisml_tf.training.config import (OPERATIONAL_KEYS, config_diff, dump_config, load_config)
from irisml_tf.training.optim import TrainingModel, make_optimizer
from irisml_tf.training.validation import Validator

__all__ = ["train", "TrainingSession", "select_strategy", "split_cpu", "load_posterior",
           "RunDirError", "ConfigError", "RUN_MARKERS", "prepare_run_dir", "TRAIN_STARTED"]

log = logging.getLogger(__name__)

#: files / folders whose presence means a directory holds a run
RUN_MARKERS = ("config.yaml", "checkpoints", "metrics.json", "validation.npz", "logs",
               "final.weights.h5")
#: printed (to the log / progress stream) when the first training step is about to run
TRAIN_STARTED = "training from step"
#: exit status of `irisml-tf train` stopped by a signal: 128 + the signal's number
INTERRUPTED_EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


class RunDirError(ValueError):
    """The run directory cannot be used (holds a run, not writable, nothing to resume)."""


class ConfigError(ValueError):
    """The config is invalid (the message names the key)."""


# -- devices and strategy ---------------------------------------------------------------------
def split_cpu(n: int) -> None:
    """Split the first CPU into ``n`` logical devices. Must run before TensorFlow initialises
    its devices (before any op); raises RuntimeError otherwise."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def select_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs, else several logical CPUs, else the default."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    if len(gpus) == 1:
        return tf.distribute.get_strategy()
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


# -- the session: everything built from a resolved config -------------------------------------
class TrainingSession:
    """Physics, stream, model, optimiser and checkpoint of one resolved config.

    ``config`` must be resolved (:func:`irisml_tf.training.config.load_config`); a ``model``
    section whose ``lower``/``upper``/``param_loc``/``param_scale`` are null is completed here
    (prior box; standardisation fitted on ``training.standardization_samples`` prior draws), and
    :attr:`config` holds the completed copy.
    """

    def __init__(self, config: Mapping, strategy: tf.distribute.Strategy | None = None):
        from irisml_tf.data.observation import ObservationModel
        from irisml_tf.data.stream import SimulationStream
        from irisml_tf.model import PosteriorModel, fit_standardization
        from irisml_tf.physics.prior import Prior
        from irisml_tf.physics.simulator import Simulator

        self.config = json.loads(json.dumps(config))  # deep, plain copy
        t = self.config["training"]
        self.strategy = strategy or select_strategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        if t["batch_size"] % self.num_replicas:
            raise ValueError(f"config key `training.batch_size` ({t['batch_size']}) must be a "
                             f"multiple of the number of replicas ({self.num_replicas})")
        self.simulator = Simulator()
        self.prior = Prior(self.config["prior"], self.simulator.grid)
        self.observation = ObservationModel(self.config["observation"],
                                            bands=self.simulator.bands)
        self.stream = SimulationStream(self.prior, self.simulator, self.observation,
                                       t["batch_size"], t["seed"])
        m = self.config["model"]
        if m["lower"] is None:
            m["lower"] = [float(v) for v in self.prior.lower]
        if m["upper"] is None:
            m["upper"] = [float(v) for v in self.prior.upper]
        if m["param_loc"] is None:
            draws = self.prior.sample(t["standardization_samples"],
                                      tf.constant([t["seed"], 0x57D], tf.int32)).numpy()
            m["param_loc"], m["param_scale"] = fit_standardization(draws, m["lower"], m["upper"])
        keras.utils.set_random_seed(t["seed"])  # reproducible initial weights
        with self.strategy.scope():
            self.posterior = PosteriorModel.from_config(dict(m, num_bands=len(self.simulator.bands)))
            self.trainer = TrainingModel(self.posterior, t["clip_norm"])
            self.optimizer = make_optimizer(t, self.posterior.trainable_variables)
            self.trainer.compile(optimizer=self.optimizer, jit_compile=False)
            self.optimizer.build(self.posterior.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(posterior=self.posterior, optimizer=self.optimizer,
                                              global_step=self.trainer.global_step,
                                              skipped_steps=self.trainer.skipped_steps)

    # -- data ----------------------------------------------------------------------------------
    def dataset(self, start_step: int = 0):
        """The distributed training dataset, element k = global batch ``start_step + k``."""
        start_step = int(start_step)

        def fn(ctx: tf.distribute.InputContext | None = None):
            return self.stream.dataset(start_step, ctx)

        if self.num_replicas == 1 and not isinstance(self.strategy, tf.distribute.MirroredStrategy):
            return fn(None)
        return self.strategy.distribute_datasets_from_function(fn)

    # -- state ---------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.trainer.global_step.numpy())

    @property
    def skipped(self) -> int:
        return int(self.trainer.skipped_steps.numpy())

    def fit(self, steps: int, start_step: int = 0, callbacks: Sequence = ()):
        """Run ``steps`` training steps on the stream from ``start_step``."""
        if steps <= 0:
            return None
        return self.trainer.fit(self.dataset(start_step), epochs=1, steps_per_epoch=int(steps),
                                callbacks=list(callbacks), verbose=0, shuffle=False)

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.posterior.trainable_variables))


# -- signals ----------------------------------------------------------------------------------
class _StopRequest:
    """Set by SIGTERM/SIGINT; the training callback checkpoints and stops after the step."""

    def __init__(self):
        self.signal: str | None = None
        self._old = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


# -- the per-step callback --------------------------------------------------------------------
class _TrainingCallback(keras.callbacks.Callback):
    """Logs, validates, checkpoints, shows progress and honours stop requests."""

    def __init__(self, run: "_Run", start_step: int, stop_step: int):
        super().__init__()
        self.run = run
        t = run.config["training"]
        self.t = t
        self.step = start_step
        self.start_step = start_step
        self.stop_step = stop_step
        self.total = t["steps"]
        self.window: list[float] = []
        self.window_norms: list[float] = []
        self.losses: list[float] = []
        self.train_seconds = 0.0
        self.window_seconds = 0.0
        self.window_steps = 0
        self.last_checkpoint = time.monotonic()
        self.ema: float | None = None
        self.interrupted: str | None = None
        self._t0 = 0.0
        self.bar = None

    def on_train_begin(self, logs=None):
        msg = f"{TRAIN_STARTED} {self.start_step} to {self.stop_step} of {self.total}"
        log.info(msg)
        if self.run.announce:
            self.run.announce(msg)
        if self.run.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start_step, unit="step",
                            dynamic_ncols=True, desc="train")

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        dt = time.perf_counter() - self._t0
        self.train_seconds += dt
        self.window_seconds += dt
        self.window_steps += 1
        self.step += 1
        logs = logs or {}
        nll = float(np.asarray(logs["nll"]))
        applied = float(np.asarray(logs["applied"])) > 0.5
        self.losses.append(nll)
        if applied:
            self.window.append(nll)
            self.window_norms.append(float(np.asarray(logs["grad_norm"])))
            self.ema = nll if self.ema is None else 0.98 * self.ema + 0.02 * nll
        else:
            log.warning("step %d: non-finite loss or gradient, step skipped", self.step)
        step = self.step
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.ema:.3f}" if self.ema is not None else "nan",
                                 skipped=self.run.session.skipped, refresh=False)
        if step % self.t["log_every"] == 0 or step == self.stop_step:
            self._log_train(step, float(np.asarray(logs["lr"])))
        if step % self.t["val_every"] == 0 or step == self.total:
            self.run.validate(step)
        stop = self.run.stop_request.signal
        if stop is not None or (step == self.stop_step and step < self.total):
            self.interrupted = stop or "max_steps"
            self.run.save_checkpoint(step)
            self.model.stop_training = True
            return
        minutes = self.t["checkpoint_minutes"]
        if (step % self.t["checkpoint_every"] == 0 or step == self.total
                or (minutes > 0 and time.monotonic() - self.last_checkpoint > 60 * minutes)):
            self.run.save_checkpoint(step)
            self.last_checkpoint = time.monotonic()

    def _log_train(self, step, lr):
        rate = self.window_steps / self.window_seconds if self.window_seconds > 0 else 0.0
        with self.run.writer.as_default(step=step):
            if self.window:
                tf.summary.scalar("train/nll", float(np.mean(self.window)))
                tf.summary.scalar("train/grad_norm", float(np.mean(self.window_norms)))
            tf.summary.scalar("train/learning_rate", lr)
            tf.summary.scalar("train/skipped_steps", self.run.session.skipped)
            tf.summary.scalar("train/steps_per_sec", rate)
        self.run.last_train = {"step": step, "nll": float(np.mean(self.window)) if self.window
                               else None, "learning_rate": lr, "steps_per_sec": rate}
        self.window, self.window_norms = [], []
        self.window_seconds, self.window_steps = 0.0, 0

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


# -- one run ----------------------------------------------------------------------------------
class _Run:
    def __init__(self, config, run_dir: Path, session: TrainingSession, progress: bool,
                 announce=None):
        self.config = config
        self.run_dir = run_dir
        self.session = session
        self.progress = progress
        self.announce = announce
        self.stop_request = _StopRequest()
        self.last_train: dict = {}
        self.last_val: dict = {}
        self.val_history: list = []
        self.writer = tf.summary.create_file_writer(str(run_dir / "logs"))
        self.manager = tf.train.CheckpointManager(
            session.checkpoint, str(run_dir / "checkpoints"),
            max_to_keep=config["training"]["keep_checkpoints"],
            step_counter=session.trainer.global_step)
        self.validator: Validator | None = None
        self.started = time.time()
        self.callback: _TrainingCallback | None = None
        # metrics.json of earlier sessions (a resumed run), read once: its history and last values
        self.previous_metrics: dict = {}
        path = run_dir / "metrics.json"
        if path.exists():
            try:
                self.previous_metrics = json.loads(path.read_text())
            except ValueError:
                pass

    def save_checkpoint(self, step: int):
        path = self.manager.save(checkpoint_number=step)
        log.info("checkpoint %s", path)

    def validate(self, step: int):
        t0 = time.perf_counter()
        res = self.validator.evaluate(self.session.posterior)
        figures = res.pop("figures")
        with self.writer.as_default(step=step):
            tf.summary.scalar("val/nll", res["nll"])
            for p, v in res["rmse"].items():
                tf.summary.scalar(f"val/rmse/{p}", v)
            for level, row in res["coverage"].items():
                for p, v in row.items():
                    tf.summary.scalar(f"val/coverage_{level}/{p}", v)
                tf.summary.scalar(f"val/coverage_{level}/mean", float(np.mean(list(row.values()))))
            tf.summary.scalar("val/calibration_error_max", res["calibration_error"])
            for name, image in figures.items():
                tf.summary.image(f"val/{name}", image, step=step)
        self.writer.flush()
        self.last_val = dict(res, step=step, seconds=time.perf_counter() - t0)
        self.val_history.append({"step": step, "nll": res["nll"],
                                 "calibration_error": res["calibration_error"],
                                 "rmse": res["rmse"]})
        self.write_metrics("running", step)
        log.info("step %d: val nll %.4f", step, res["nll"])

    def metrics(self, status: str, step: int) -> dict:
        cb = self.callback
        t = self.config["training"]
        trained = (step - cb.start_step) if cb is not None else 0
        return {
            "status": status,
            "step": step,
            "steps_total": t["steps"],
            "skipped_steps": self.session.skipped,
            "num_replicas": self.session.num_replicas,
            "num_parameters": self.session.num_parameters(),
            "batch_size": t["batch_size"],
            "steps_per_sec": (trained / cb.train_seconds) if cb is not None and cb.train_seconds
            else None,
            "examples_per_sec": (trained * t["batch_size"] / cb.train_seconds)
            if cb is not None and cb.train_seconds else None,
            "session_steps": trained,
            "session_wall_seconds": time.time() - self.started,
            "train": self.last_train,
            "validation": self.last_val,
            "validation_history": self.val_history,
        }

    def write_metrics(self, status: str, step: int) -> dict:
        """Write metrics.json; returns the dict written."""
        path = self.run_dir / "metrics.json"
        old = self.previous_metrics
        new = self.metrics(status, step)
        # keep the history of earlier sessions of a resumed run
        hist = [h for h in old.get("validation_history", []) if h["step"] < (
            self.callback.start_step if self.callback else step)]
        new["validation_history"] = hist + new["validation_history"]
        for key in ("validation", "train", "steps_per_sec", "examples_per_sec"):
            if not new[key] and old.get(key):  # nothing new this session: keep the last values
                new[key] = old[key]
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(new, indent=2))
        os.replace(tmp, path)
        return new


# -- run directory ----------------------------------------------------------------------------
def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"output directory {run_dir} is not writable: {err}") from None


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check (and create) the run directory before anything is built.

    A directory holding a run (any of :data:`RUN_MARKERS`) is refused unless ``resume`` (then it
    must hold one) or ``overwrite`` (its run files are deleted; other files are kept).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("choose either --resume or --overwrite, not both")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output directory {run_dir} is not writable: it is a file")
    present = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise RunDirError(f"nothing to resume: {run_dir} holds no run (no config.yaml)")
        _check_writable(run_dir)
        return run_dir
    if present and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(present)}); use --resume to continue it "
            "or --overwrite to replace it")
    _check_writable(run_dir)
    for m in present:
        p = run_dir / m
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return run_dir


def _resume_config(run_dir: Path, config) -> dict:
    saved = load_config(run_dir / "config.yaml")
    if config is None:
        return saved
    diff = [k for k in config_diff(saved, config) if k not in OPERATIONAL_KEYS]
    # keys the run filled in (box, standardisation) may be null in the given config
    diff = [k for k in diff if not (k.startswith("model.") and _get(config, k) is None)]
    if diff:
        raise RunDirError(f"the config differs from the run's config.yaml in {', '.join(diff)}; "
                          "a resumed run keeps its config (only "
                          f"{', '.join(sorted(OPERATIONAL_KEYS))} may change)")
    merged = json.loads(json.dumps(saved))
    for key in OPERATIONAL_KEYS:
        section, name = key.split(".")
        merged[section][name] = config[section][name]
    merged = load_config(merged)
    if merged != saved:  # the run's config.yaml states what the run now uses
        dump_config(merged, run_dir / "config.yaml")
    return merged


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# -- the public entry points ------------------------------------------------------------------
def train(config: Mapping | str | Path | None, run_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, overrides: Iterable[str] = (), progress: bool = False,
          max_steps: int | None = None, strategy: tf.distribute.Strategy | None = None,
          callbacks: Sequence = (), announce=None) -> dict:
    """Train (or continue) a run in ``run_dir``; returns the final metrics (also metrics.json).

    Args:
      config: YAML path, mapping or None (defaults; with ``resume``, the run's own config).
        Validated, with ``overrides`` (``key.sub=value``) applied, before anything is built.
      resume: continue the run in ``run_dir`` from its last checkpoint (same step counter, same
        data order). A given config may differ only in :data:`OPERATIONAL_KEYS`.
      overwrite: replace a run already in ``run_dir``.
      progress: show a tqdm progress bar (step, steps/s, loss).
      max_steps: stop after this many steps in this session (checkpoint, status interrupted).
      strategy: a tf.distribute strategy (default: :func:`select_strategy`).
      callbacks: extra Keras callbacks (e.g. timing, for benchmarks).
      announce: callable(str) told when training starts (used by the CLI).

    The result holds ``status`` (completed / interrupted), ``step``, ``losses`` (the global-batch
    NLL of every step of this session) and the metrics.json content.
    """
    run_dir = Path(run_dir)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"`max_steps` must be >= 1, got {max_steps}")
    try:
        if not resume or config is not None:
            config = load_config(config, overrides)
        elif overrides and (run_dir / "config.yaml").exists():
            config = load_config(run_dir / "config.yaml", overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if resume:
        config = _resume_config(run_dir, config)

    session = TrainingSession(config, strategy)
    config = session.config
    t = config["training"]
    from irisml_tf.data.stream import load_arrays, save_arrays

    start_step = 0
    if resume:
        latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        if latest is not None:
            session.checkpoint.restore(latest).assert_existing_objects_matched()
            start_step = session.step
            log.info("resumed from %s at step %d", latest, start_step)
    else:
        dump_config(config, run_dir / "config.yaml")
    val_path = run_dir / "validation.npz"
    if val_path.exists():
        arrays = load_arrays(val_path)
    else:
        arrays = session.stream.validation_set(t["val_size"], t["val_seed"])
        save_arrays(val_path, arrays)
    run = _Run(config, run_dir, session, progress, announce)
    run.validator = Validator(arrays, t["calibration_levels"], t["val_posterior_stars"],
                              t["val_posterior_samples"], t["val_batch_size"],
                              t["corner_samples"], seed=t["val_seed"])
    stop_step = t["steps"] if max_steps is None else min(t["steps"], start_step + max_steps)
    callback = _TrainingCallback(run, start_step, stop_step)
    run.callback = callback
    if start_step == 0:
        run.validate(0)  # the untrained model: the baseline of every curve
    run.stop_request.install()
    try:
        session.fit(stop_step - start_step, start_step, [callback, *callbacks])
    finally:
        run.stop_request.restore()
        run.writer.flush()
    step = session.step
    if step != callback.step:
        raise RuntimeError(f"internal: global step {step} != callback step {callback.step}")
    status = "completed" if step >= t["steps"] else "interrupted"
    if status == "completed":  # the callback has checkpointed the last step
        session.posterior.save_weights(str(run_dir / "final.weights.h5"))
    result = run.write_metrics(status, step)
    result["losses"] = callback.losses
    result["interrupted_by"] = callback.interrupted
    return result


def load_posterior(run_dir: str | Path, weights: str | Path | None = None):
    """The trained PosteriorModel of a run: its config.yaml's model with final.weights.h5 (or,
    before completion, the latest checkpoint)."""
    from irisml_tf.model import PosteriorModel
    from irisml_tf.physics.bands import NUM_BANDS

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    model = PosteriorModel.from_config(dict(config["model"], num_bands=NUM_BANDS))
    weights = Path(weights) if weights else run_dir / "final.weights.h5"
    if weights.exists():
        model.load_weights(str(weights))
    else:
        latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        if latest is None:
            raise FileNotFoundError(f"{run_dir} has neither final.weights.h5 nor a checkpoint")
        tf.train.Checkpoint(posterior=model).restore(latest).expect_partial()
    return model
