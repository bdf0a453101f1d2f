"""Training: config loading and validation, the session (devices, model, optimiser), the guarded
training step, validation metrics, and the driver, :func:`train`.

Importing this package loads only the config module: the run directory's readers
(:mod:`irisml_tf.rundir`, serving) read configs without building anything, and the session and
driver (TensorFlow, plots) load on first use of their names.
"""
from irisml_tf.training.config import (
    DEFAULT_MODEL,
    DEFAULT_TRAINING,
    ConfigError,
    dump_config,
    load_config,
    parse_override,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "ConfigError",
    "TrainingModel",
    "TrainingSession",
    "Validator",
    "WarmupCosine",
    "dump_config",
    "load_config",
    "make_optimizer",
    "parse_override",
    "select_strategy",
    "split_cpu",
    "train",
]

#: name → module of the names loaded on first use
_LAZY = {
    "train": "driver",
    "TrainingSession": "session", "select_strategy": "session", "split_cpu": "session",
    "TrainingModel": "optim", "WarmupCosine": "optim", "make_optimizer": "optim",
    "Validator": "validation",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
