"""Base distributions of the flow: standard normal, or a trainable Gaussian mixture (a Keras layer).

TFP distributions do not see Keras 3 variables as their own (their ``trainable_variables`` come
back empty), so the mixture's variables live in :class:`GaussianMixtureBase`, a Keras layer that
builds a fresh ``tfd.MixtureSameFamily`` from them on every call of :meth:`distribution`.
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["standard_normal", "GaussianMixtureBase"]


def standard_normal(event_dim: int, dtype=tf.float32) -> tfd.Distribution:
    """Standard normal distribution with event shape [event_dim]."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([event_dim], dtype=dtype))


@keras.saving.register_keras_serializable(package="irisml_tf")
class GaussianMixtureBase(keras.layers.Layer):
    """Trainable mixture of ``num_components`` diagonal Gaussians with event shape [event_dim].

    Starts with equal weights, unit scales and locations drawn from N(0, ``init_spread``²).
    ``layer(z)`` with z [..., D] returns log-densities [...]; ``layer.distribution()`` returns the
    TFP distribution (sampling with stateless seeds, no reparameterisation gradients).
    """

    def __init__(self, num_components: int, event_dim: int, init_spread: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_components) < 1 or int(event_dim) < 1:
            raise ValueError(f"`num_components` and `event_dim` must be >= 1, got "
                             f"{num_components}, {event_dim}")
        self.num_components = int(num_components)
        self.event_dim = int(event_dim)
        self.init_spread = float(init_spread)

    def build(self, input_shape=None):
        m, d = self.num_components, self.event_dim
        self.logits = self.add_weight(shape=(m,), initializer="zeros", name="logits")
        self.locs = self.add_weight(
            shape=(m, d), name="locs",
            initializer=keras.initializers.RandomNormal(stddev=self.init_spread))
        # softplus(0.5413) = 1: unit scales at the start.
        self.raw_scales = self.add_weight(
            shape=(m, d), name="raw_scales",
            initializer=keras.initializers.Constant(0.5413248546129181))

    def distribution(self) -> tfd.Distribution:
        if not self.built:
            self.build()
        scales = tf.math.softplus(tf.convert_to_tensor(self.raw_scales)) + 1e-3
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.convert_to_tensor(self.logits)),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=tf.convert_to_tensor(self.locs), scale_diag=scales))

    def call(self, z):
        return self.distribution().log_prob(z)

    def get_config(self):
        config = super().get_config()
        config.update(num_components=self.num_components, event_dim=self.event_dim,
                      init_spread=self.init_spread)
        return config
