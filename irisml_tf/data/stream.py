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

__all__ = ["SimulationStream", "fixed_set", "simulate", "save_arrays", "load_arrays", "VALIDATION_KEY"]

VALIDATION_KEY = 0x0FA1  # second word of the validation set's key: independent of the training stream


def simulate(prior: Prior, simulator: Simulator, observation: ObservationModel, n, key, force_bands=None):
    """n observed stars from a stateless key (int32 [2]): (inputs dict, theta). ``force_bands``:
    observe exactly these bands (bool [NB]; :class:`ObservationModel`)."""
    k_prior, k_obs = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    theta = prior._sample(tf.cast(n, tf.int32), k_prior)
    mags, valid = simulator._simulate(theta)
    return observation(mags, valid, k_obs, force_bands=force_bands), theta


def fixed_set(prior: Prior, simulator: Simulator, observation: ObservationModel, n: int, seed: int,
              key_word: int = VALIDATION_KEY, force_bands=None) -> dict[str, np.ndarray]:
    """A fixed set of n stars from (seed, key_word), in chunks of 65 536: band_index, mag, mag_err
    (padded to all bands), theta and mu (the magnitude offset, :class:`ObservationModel`). The same
    (seed, key_word) gives the same θ and noise whatever
    ``force_bands`` is; only the observed bands differ."""
    inputs, theta = [], []
    key = tf.constant([int(seed), int(key_word)], tf.int32)
    for i, s in enumerate(range(0, n, 65536)):
        x, t = simulate(prior, simulator, observation, min(65536, n - s),
                        tf.random.experimental.stateless_fold_in(key, i), force_bands)
        inputs.append(x)
        theta.append(t.numpy())
    out = {k: np.concatenate([x[k].numpy() for x in inputs]) for k in ("band_index", "mag", "mag_err", "mu")}
    out["theta"] = np.concatenate(theta)
    return out


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

    def batch(self, step, replica=0, batch_size: int | None = None):
        return simulate(self.prior, self.simulator, self.observation, batch_size or self.batch_size,
                        self._key(step, replica))

    def dataset(self, start_step: int = 0, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Infinite dataset; global batch k is ``batch(start_step + k)`` whatever the replica count.

        Under ``distribute_datasets_from_function`` each pipeline keeps its replicas' slices of the
        global batch, in order, and they go round-robin to those replicas: 1 and 2 replicas train on
        the same data, and resuming at a step replays exactly what an uninterrupted run saw.
        """
        ds = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
        ds = ds.map(lambda step: self.batch(step), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        replicas = input_context.num_replicas_in_sync if input_context is not None else 1
        if replicas > 1:
            per_replica = input_context.get_per_replica_batch_size(self.batch_size)
            local = replicas // input_context.num_input_pipelines
            first = input_context.input_pipeline_id * local

            def part(x):
                x = tf.reshape(x, tf.concat([[replicas, per_replica], tf.shape(x)[1:]], 0))
                return x[first:first + local]

            ds = ds.map(lambda inputs, theta: ({k: part(v) for k, v in inputs.items()}, part(theta))).unbatch()
        return ds.prefetch(tf.data.AUTOTUNE)

    def validation_set(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """A fixed set of n stars from its own seed (independent of the training stream)."""
        return fixed_set(self.prior, self.simulator, self.observation, n, seed)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
