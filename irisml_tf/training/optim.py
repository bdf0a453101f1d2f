"""Optimiser pieces: the warm-up + cosine learning-rate schedule and the guarded training model.

:class:`TrainingModel` wraps a :class:`~irisml_tf.model.PosteriorModel` for ``keras.Model.fit``
with a custom ``train_step`` that

1. computes the mean NLL of the replica's share of the global batch, divided by the number of
   replicas (Keras 3's TF optimiser SUMS gradients over replicas, see docs/stack-notes.md);
2. all-reduces the gradients itself, so that the global gradient norm, the clipping
   (``clip_by_global_norm`` on the global gradient, identical for 1 or n replicas) and the
   finiteness test are the same on every replica;
3. applies the step only if the loss and every gradient are finite: the apply runs inside a
   ``tf.cond`` in cross-replica context (a ``merge_call``, as Keras's LossScaleOptimizer does,
   because a cond in replica context may not contain the optimiser's merge_call). A skipped step
   changes neither the weights nor the optimiser state (moments, ``iterations``); it increments
   ``skipped_steps``. ``global_step`` counts every batch consumed, applied or not.

The learning-rate schedule is evaluated at ``optimizer.iterations`` (applied steps).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

__all__ = ["TrainingModel", "WarmupCosine", "make_optimizer"]


@keras.saving.register_keras_serializable(package="irisml_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to
    ``final_fraction · peak`` at ``total_steps`` (constant afterwards).

    lr(s) = peak · (s + 1) / warmup_steps                                   for s < warmup_steps
    lr(s) = peak · (f + (1 − f) · ½ (1 + cos(π · min(1, (s − w) / (T − w)))))  otherwise
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int,
                 final_fraction: float = 0.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        w = float(self.warmup_steps)
        warm = self.peak * (s + 1.0) / max(w, 1.0)
        span = max(float(self.total_steps) - w, 1.0)
        progress = tf.clip_by_value((s - w) / span, 0.0, 1.0)
        f = self.final_fraction
        cosine = self.peak * (f + (1.0 - f) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        return tf.where(s < w, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "final_fraction": self.final_fraction}


def make_optimizer(training: dict, variables) -> keras.optimizers.AdamW:
    """AdamW with the warm-up cosine schedule of a ``training`` config section.

    Weight decay skips biases, normalisation parameters, the band embedding, the CLS token and
    the mixture base (every variable of rank < 2 or with those names). No clipping here: the
    training step clips the all-reduced gradient itself.
    """
    schedule = WarmupCosine(training["learning_rate"], training["warmup_steps"],
                            training["steps"], training["final_lr_fraction"])
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=training["weight_decay"],
                                 beta_1=training["beta_1"], beta_2=training["beta_2"])
    skip = [v for v in variables
            if len(v.shape) < 2 or any(s in v.path for s in ("cls_token", "band_embedding",
                                                              "mixture_base"))]
    opt.exclude_from_weight_decay(var_list=skip)
    return opt


class TrainingModel(keras.Model):
    """``fit`` wrapper around a PosteriorModel: ``train_step`` with a NaN guard (module doc).

    Data: ``(inputs, theta)`` with inputs a dict of ``band_index``, ``mag``, ``mag_err``.
    ``train_step`` returns the step's global-batch ``nll``, the global gradient norm before
    clipping ``grad_norm``, ``applied`` (1.0 or 0.0) and the learning rate ``lr`` of the step.
    """

    def __init__(self, posterior, clip_norm: float, **kwargs):
        super().__init__(**kwargs)
        self.posterior = posterior
        self.clip_norm = float(clip_norm)
        self.global_step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, name="global_step")
        self.skipped_steps = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                             trainable=False, name="skipped_steps")
        self.built = True

    def call(self, inputs, training=None):
        return self.posterior(inputs, training=training)

    def train_step(self, data):
        inputs, theta, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.posterior.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        lr = tf.cast(self.optimizer.learning_rate, tf.float32)
        with tf.GradientTape() as tape:
            loss = self.posterior.nll(theta, inputs, training=True) / replicas
        # dense gradients (the band embedding's is IndexedSlices; it is tiny): a plain sum
        # all-reduce, whatever the per-replica number of looked-up rows
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        ctx = tf.distribute.get_replica_context()
        # the global mean-NLL gradient, identical on every replica
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        nll = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        grad_norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(grad_norm) & tf.math.is_finite(nll)
        scale = tf.where(finite, tf.minimum(1.0, self.clip_norm / tf.maximum(grad_norm, 1e-30)),
                         0.0)
        # the optimiser sums over replicas again: hand each replica its share
        grads = [g * (scale / replicas) for g in grads]
        ctx.merge_call(self._apply_or_skip, args=(finite, grads))
        return {"nll": nll, "grad_norm": grad_norm, "applied": tf.cast(finite, tf.float32),
                "lr": lr}

    def _apply_or_skip(self, strategy, finite, grads):
        # cross-replica context: every replica computed the same `finite`
        finite = strategy.experimental_local_results(finite)[0]
        variables = self.posterior.trainable_variables

        def apply():
            strategy.extended.call_for_each_replica(
                lambda g: self.optimizer.apply(g, variables), args=(grads,))
            return tf.constant(0, tf.int64)

        skipped = tf.cond(finite, apply, lambda: tf.constant(1, tf.int64))
        self.skipped_steps.assign_add(skipped)
        self.global_step.assign_add(1)
