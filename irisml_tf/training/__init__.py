"""Training: config loading and validation, the guarded training step, validation metrics, and
the driver behind `irisml-tf train`."""
from irisml_tf.training.config import (DEFAULT_MODEL, DEFAULT_TRAINING, dump_config, load_config,
                                       parse_override)
from irisml_tf.training.driver import (RunDirError, TrainingSession, load_posterior,
                                       prepare_run_dir, select_strategy, split_cpu, train)
from irisml_tf.training.optim import TrainingModel, WarmupCosine, make_optimizer
from irisml_tf.training.validation import Validator

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_TRAINING", "load_config", "dump_config", "parse_override",
    "train", "TrainingSession", "load_posterior", "prepare_run_dir", "select_strategy",
    "split_cpu", "RunDirError",
    "TrainingModel", "WarmupCosine", "make_optimizer",
    "Validator",
]
