"""A training run directory (placeholder on branch `export`: helper "train" writes the real module;
only :func:`load_posterior` is here, copied unchanged from irisml_tf/training/driver.py)."""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from irisml_tf.training.config import load_config

__all__ = ["load_posterior"]


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
