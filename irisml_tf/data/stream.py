"""The training stream: an infinite tf.data pipeline of simulated, observed batches.

Batch ``step`` of replica ``r`` is a pure function of (seed, step, r): prior draws, simulation and
observation all use stateless RNG keyed by ``stateless_fold_in``, so the stream is deterministic
under AUTOTUNE, resumable at any step and distinct per replica.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ..physics.prior import Prior
from ..physics.simulator import Simulator
from .observation import ObservationModel

__all__ = ["SimulationStream", "save_arrays", "load_arrays"]

_KEYS = ("band_index", "mag", "mag_err", "theta")


class SimulationStream:
    def __init__(self, prior: Prior, simulator: Simulator, observation: ObservationModel,
                 batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be ≥ 1, got {batch_size}")
        self.prior, self.simulator, self.observation = prior, simulator, observation
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def _key(self, step, replica):
        key = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0x5EED], tf.int32),
                                                       tf.cast(replica, tf.int32))
        return tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))

    def simulate(self, n, key):
        """n observed stars from a stateless key (int32 [2]): (inputs dict, theta)."""
        k_prior, k_obs = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        theta = self.prior._sample(tf.cast(n, tf.int32), k_prior)
        mags, valid = self.simulator._simulate(theta)
        return self.observation(mags, valid, k_obs), theta

    def batch(self, step, replica=0, batch_size: int | None = None):
        return self.simulate(batch_size or self.batch_size, self._key(step, replica))

    def dataset(self, start_step: int = 0, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Infinite dataset; element i is ``batch(start_step + i, replica)``."""
        replica, size = 0, self.batch_size
        if input_context is not None:
            replica = input_context.input_pipeline_id
            size = input_context.get_per_replica_batch_size(self.batch_size)
        ds = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
        ds = ds.map(lambda step: self.batch(step, replica, size), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def validation_set(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """A fixed set of n stars from its own seed (independent of the training stream)."""
        inputs, theta = [], []
        key = tf.constant([int(seed), 0x0FA1], tf.int32)
        for i, s in enumerate(range(0, n, 65536)):
            x, t = self.simulate(min(65536, n - s), tf.random.experimental.stateless_fold_in(key, i))
            inputs.append(x)
            theta.append(t.numpy())
        out = {k: np.concatenate([x[k].numpy() for x in inputs]) for k in ("band_index", "mag", "mag_err")}
        out["theta"] = np.concatenate(theta)
        return out


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
