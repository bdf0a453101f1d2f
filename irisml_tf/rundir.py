"""The run directory: what `irisml-tf train` writes and what export, serving and benchmarks read.

One run lives in a directory::

    RUN_DIR/config.yaml        the resolved config (model box and standardisation filled in)
    RUN_DIR/validation.npz     the fixed validation set (generated once from training.val_seed)
    RUN_DIR/logs/              TensorBoard events (scalars + images)
    RUN_DIR/checkpoints/       tf.train checkpoints: model, optimiser, global step, skip count
    RUN_DIR/metrics.json       last metrics, throughput, status (written at every validation)
    RUN_DIR/final.weights.h5   the posterior's weights when the run completes

``metrics.json`` holds ``status``: :data:`RUNNING` while a session trains (left so by a session
that was killed), :data:`INTERRUPTED` after a signal or ``max_steps`` (a checkpoint was saved;
``--resume`` continues), :data:`COMPLETED` when the run reached ``training.steps`` and wrote
final.weights.h5. :func:`run_status` reads it.

This module is the contract between training and its readers: it must not import the training
driver (nor TensorFlow at import time).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = [
    "COMPLETED",
    "INTERRUPTED",
    "RUNNING",
    "RUN_MARKERS",
    "RunDirError",
    "is_complete",
    "load_posterior",
    "prepare_run_dir",
    "read_config",
    "read_metrics",
    "run_status",
]

#: files / folders whose presence means a directory holds a run
RUN_MARKERS = ("config.yaml", "checkpoints", "metrics.json", "validation.npz", "logs",
               "final.weights.h5")
#: ``metrics.json`` status values
COMPLETED, INTERRUPTED, RUNNING = "completed", "interrupted", "running"


class RunDirError(ValueError):
    """The run directory cannot be used (holds a run, not writable, nothing to resume)."""


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


def read_config(run_dir: str | Path) -> dict:
    """The run's resolved config (config.yaml, validated; keys added since filled by defaults)."""
    from irisml_tf.training.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} holds no run (no config.yaml)")
    return load_config(path)


def read_metrics(run_dir: str | Path) -> dict:
    """The run's metrics.json as a dict; {} if there is none yet."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RunDirError(f"{path} is not valid JSON ({err}); it is written atomically, so "
                          "something else changed it") from None


def run_status(run_dir: str | Path) -> str | None:
    """:data:`COMPLETED`, :data:`INTERRUPTED`, :data:`RUNNING` (training now, or killed without a
    word), or None when the run has written no metrics yet."""
    return read_metrics(run_dir).get("status")


def is_complete(run_dir: str | Path) -> bool:
    """True when the run reached its last step and wrote final.weights.h5."""
    return run_status(run_dir) == COMPLETED and (Path(run_dir) / "final.weights.h5").is_file()


def load_posterior(run_dir: str | Path, weights: str | Path | None = None):
    """The trained PosteriorModel of a run: its config.yaml's model with ``weights`` (default
    final.weights.h5 or, before completion, the latest checkpoint)."""
    import tensorflow as tf

    from irisml_tf.model import PosteriorModel
    from irisml_tf.physics.bands import NUM_BANDS

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = PosteriorModel.from_config(dict(config["model"], num_bands=NUM_BANDS))
    weights = Path(weights) if weights else run_dir / "final.weights.h5"
    if weights.exists():
        model.load_weights(str(weights))
        return model
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"{run_dir} has neither {weights.name} nor a checkpoint")
    _restore_weights(model, latest)
    return model


#: where a training checkpoint holds the posterior's i-th trainable variable: under its
#: optimiser's variable list (a Keras 3 model is no tf.train dependency, so the checkpoint's
#: ``posterior`` entry holds nothing; resuming restores the weights through the optimiser)
_CHECKPOINT_WEIGHT = "optimizer/_trainable_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"


def _restore_weights(model, checkpoint: str) -> None:
    """Assign a training checkpoint's weights to ``model``, checking names and shapes."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    variables = model.trainable_variables
    if (not reader.has_tensor(_CHECKPOINT_WEIGHT.format(len(variables) - 1))
            or reader.has_tensor(_CHECKPOINT_WEIGHT.format(len(variables)))):
        raise RunDirError(f"checkpoint {checkpoint} does not hold the {len(variables)} weights "
                          "of the run's model")
    for i, variable in enumerate(variables):
        value = reader.get_tensor(_CHECKPOINT_WEIGHT.format(i))
        if tuple(value.shape) != tuple(variable.shape):
            raise RunDirError(f"checkpoint {checkpoint}: weight {i} ({variable.path}) has shape "
                              f"{value.shape}, the run's model {tuple(variable.shape)}")
        variable.assign(value)
