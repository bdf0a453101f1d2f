"""The training driver: a training run as a library function, :func:`train`.

A run lives in a run directory (:mod:`irisml_tf.rundir` describes its files). :func:`train`
resolves the config and checks the directory before anything is built, then builds in
dependency order: the :class:`~irisml_tf.training.session.TrainingSession` (restored from the
last checkpoint when resuming), the validation set, the :class:`RunLog`, the checkpoints and the
per-step :class:`TrainingCallback`, and runs the steps.

Stopping: SIGTERM or SIGINT, or ``max_steps`` steps in this session, end the run after the
current step with a checkpoint (status ``interrupted``); ``resume=True`` continues it.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf

from irisml_tf.rundir import COMPLETED, INTERRUPTED, RUNNING, RunDirError, prepare_run_dir
from irisml_tf.training.callback import Checkpoints, StopRequest, TrainingCallback
from irisml_tf.training.config import OPERATIONAL_KEYS, ConfigError, config_diff, dump_config, load_config
from irisml_tf.training.runlog import RunLog, SessionStats
from irisml_tf.training.session import TrainingSession
from irisml_tf.training.validation import Validator

__all__ = ["train"]

log = logging.getLogger(__name__)


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

    Raises :class:`ConfigError` or :class:`~irisml_tf.rundir.RunDirError` before anything is
    built. The result is the metrics.json content — ``status`` (completed / interrupted),
    ``step``, ``interrupted_by``, ``session_start_step``, ``validation`` (with its ``step``) … —
    plus ``losses``, the global-batch NLL of every step of this session.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"`max_steps` must be >= 1, got {max_steps}")
    run_dir = Path(run_dir)
    config = _load_config(config, run_dir, resume, overrides)
    run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if resume:
        config = _resume_config(run_dir, config)
    session = TrainingSession(config, strategy)
    start_step = _restore(session, run_dir) if resume else 0
    if not resume:
        dump_config(session.config, run_dir / "config.yaml")
    stats = SessionStats(start_step)
    run_log = RunLog(run_dir, session)
    validate = _validation(session, run_dir, run_log)
    stop_request = StopRequest()
    t = session.config["training"]
    stop_step = t["steps"] if max_steps is None else min(t["steps"], start_step + max_steps)
    callback = TrainingCallback(session, stats, run_log, validate, Checkpoints(session, run_dir, t),
                                stop_request, stop_step, progress, announce)
    if start_step == 0:
        validate(0, stats)  # the untrained model: the baseline of every curve
    try:
        with stop_request.installed():
            session.fit(stop_step - start_step, start_step, [callback, *callbacks])
    finally:
        run_log.close()
    return _finish(session, run_dir, run_log, stats)


def _load_config(config, run_dir: Path, resume: bool, overrides: Iterable[str]):
    """The resolved config to train with (None: a resumed run's own, read later)."""
    try:
        if not resume or config is not None:
            return load_config(config, overrides)
        if overrides and (run_dir / "config.yaml").exists():
            return load_config(run_dir / "config.yaml", overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return config


def _resume_config(run_dir: Path, config) -> dict:
    """The run's config.yaml, with a given config's :data:`OPERATIONAL_KEYS` (others must match)."""
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


def _restore(session: TrainingSession, run_dir: Path) -> int:
    """Restore the latest checkpoint (if any); the step it holds (0 without one)."""
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        return 0
    session.checkpoint.restore(latest).assert_existing_objects_matched()
    log.info("resumed from %s at step %d", latest, session.step)
    return session.step


def _validation(session: TrainingSession, run_dir: Path, run_log: RunLog):
    """``validate(step, stats)`` on the run's fixed validation set (made once, then reloaded);
    it records the result and writes metrics.json."""
    from irisml_tf.data.stream import load_arrays, save_arrays

    t = session.config["training"]
    path = run_dir / "validation.npz"
    if path.exists():
        arrays = load_arrays(path)
    else:
        arrays = session.stream.validation_set(t["val_size"], t["val_seed"])
        save_arrays(path, arrays)
    validator = Validator(arrays, t["calibration_levels"], t["val_posterior_stars"],
                          t["val_posterior_samples"], t["val_batch_size"], t["corner_samples"],
                          seed=t["val_seed"])

    def validate(step: int, stats: SessionStats) -> None:
        t0 = time.perf_counter()
        result = validator.evaluate(session.posterior)
        run_log.validation(step, result, time.perf_counter() - t0)
        run_log.write_metrics(RUNNING, stats)
        log.info("step %d: val nll %.4f", step, result["nll"])

    return validate


def _finish(session: TrainingSession, run_dir: Path, run_log: RunLog, stats: SessionStats) -> dict:
    """Final weights when complete, the last metrics.json; the result of :func:`train`."""
    if session.step != stats.step:
        raise RuntimeError(f"internal: global step {session.step} != callback step {stats.step}")
    status = COMPLETED if stats.step >= session.config["training"]["steps"] else INTERRUPTED
    if status == COMPLETED:  # the callback has checkpointed the last step
        session.posterior.save_weights(str(run_dir / "final.weights.h5"))
        stats.interrupted_by = None  # a signal during the last step stopped nothing
    result = run_log.write_metrics(status, stats)
    result["losses"] = stats.losses
    return result
