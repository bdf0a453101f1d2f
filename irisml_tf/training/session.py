"""Devices, strategy and the training session: everything built from one resolved config.

Strategy: ``tf.distribute.MirroredStrategy`` over the visible GPUs if there are several, else
over the logical CPU devices if there are several (see :func:`split_cpu`), else the default
strategy. Data: the simulation stream is a pure function of (seed, step): global step k (0-based)
trains on stream batch k of ``training.batch_size`` stars, cut into equal per-replica slices, so
the global batch does not depend on the number of replicas and a resumed run (restarting the
stream at the checkpoint's step) sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from irisml_tf.training.optim import TrainingModel, make_optimizer

__all__ = ["TrainingSession", "select_strategy", "split_cpu"]

#: second word of the stateless seed of the standardisation's prior draws
_STANDARDIZATION_SEED = 0x57D


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
        self._complete_model_config()
        self._build_model()
        self.checkpoint = tf.train.Checkpoint(posterior=self.posterior, optimizer=self.optimizer,
                                              global_step=self.trainer.global_step,
                                              skipped_steps=self.trainer.skipped_steps)

    def _complete_model_config(self) -> None:
        """Fill a null support box (the prior's) and standardisation (fitted on prior draws)."""
        from irisml_tf.model import fit_standardization

        m, t = self.config["model"], self.config["training"]
        if m["lower"] is None:
            m["lower"] = [float(v) for v in self.prior.lower]
        if m["upper"] is None:
            m["upper"] = [float(v) for v in self.prior.upper]
        if m["param_loc"] is None:
            seed = tf.constant([t["seed"], _STANDARDIZATION_SEED], tf.int32)
            draws = self.prior.sample(t["standardization_samples"], seed).numpy()
            m["param_loc"], m["param_scale"] = fit_standardization(draws, m["lower"], m["upper"])

    def _build_model(self) -> None:
        from irisml_tf.model import PosteriorModel

        t = self.config["training"]
        keras.utils.set_random_seed(t["seed"])  # reproducible initial weights
        with self.strategy.scope():
            self.posterior = PosteriorModel.from_config(
                dict(self.config["model"], num_bands=len(self.simulator.bands)))
            self.trainer = TrainingModel(self.posterior, t["clip_norm"])
            self.optimizer = make_optimizer(t, self.posterior.trainable_variables)
            self.trainer.compile(optimizer=self.optimizer, jit_compile=False)
            self.optimizer.build(self.posterior.trainable_variables)

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
