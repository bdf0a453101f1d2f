"""Conditional masked autoregressive flow (Papamakarios+2017) on z ∈ Rᴰ given a context vector.

A chain of ``num_blocks`` ``tfb.MaskedAutoregressiveFlow`` bijectors, each driven by a
:class:`~irisml_tf.model.made.ConditionalMADE`, with an order-reversing ``tfb.Permute`` between
blocks, on top of a standard normal or a trainable Gaussian-mixture base. Forward (base → z) is
the sampling direction (D sequential MADE passes per block, unrolled); density evaluation is the
inverse direction (one MADE pass per block, plus one for the log-det).

The TFP objects are rebuilt on every call from the Keras layers that own the variables, and the
context is routed by bijector name (``{name: {"conditional_input": c}}``), reading each
bijector's actual ``name``: inside a ``tf.function`` TFP uniquifies repeated names
(``maf0_1``...), so hard-coded names would silently route nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from irisml_tf.model.base import GaussianMixtureBase, standard_normal
from irisml_tf.model.made import ConditionalMADE

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["ConditionalMAF"]


@keras.saving.register_keras_serializable(package="irisml_tf")
class ConditionalMAF(keras.layers.Layer):
    """Conditional density q(z | context) with event shape [event_dim].

    Args:
      event_dim: D.
      context_dim: C, size of the context vectors.
      num_blocks: number of MAF blocks.
      hidden_units: hidden widths of each block's MADE.
      mixture_components: 0 for a standard normal base, M > 0 for a trainable M-component
        Gaussian mixture.
      activation, log_scale_bound: passed to every :class:`ConditionalMADE`.

    Shapes: z [N, D], context [N, C] (one context row per z row).
    """

    def __init__(self, event_dim: int, context_dim: int, num_blocks: int = 5,
                 hidden_units: Sequence[int] = (128, 128), mixture_components: int = 0,
                 activation: str = "tanh", log_scale_bound: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_blocks) < 1:
            raise ValueError(f"`num_blocks` must be >= 1, got {num_blocks}")
        if int(mixture_components) < 0:
            raise ValueError(f"`mixture_components` must be >= 0, got {mixture_components}")
        self.event_dim = int(event_dim)
        self.context_dim = int(context_dim)
        self.num_blocks = int(num_blocks)
        self.hidden_units = [int(h) for h in hidden_units]
        self.mixture_components = int(mixture_components)
        self.activation = activation
        self.log_scale_bound = float(log_scale_bound)
        self.mades = [
            ConditionalMADE(self.event_dim, self.context_dim, self.hidden_units,
                            activation=activation, log_scale_bound=self.log_scale_bound,
                            name=f"made_{i}")
            for i in range(self.num_blocks)]
        self.mixture = (GaussianMixtureBase(self.mixture_components, self.event_dim,
                                            name="mixture_base")
                        if self.mixture_components > 0 else None)

    def build(self, input_shape=None):
        for made in self.mades:
            made.build()
        if self.mixture is not None:
            self.mixture.build()

    # -- TFP objects -------------------------------------------------------------------------
    def base_distribution(self) -> tfd.Distribution:
        if self.mixture is not None:
            return self.mixture.distribution()
        return standard_normal(self.event_dim)

    def bijector(self) -> tfb.Bijector:
        """The chain base → z; MAF block i is named ``maf{i}`` (block 0 acts first)."""
        reverse = list(range(self.event_dim - 1, -1, -1))
        steps = []
        for i, made in enumerate(self.mades):
            if i > 0:
                steps.append(tfb.Permute(permutation=reverse, name=f"perm{i}"))
            steps.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made,
                                                      unroll_loop=True, name=f"maf{i}"))
        return tfb.Chain(steps[::-1], name="maf_chain")

    @staticmethod
    def routing(chain: tfb.Chain, context) -> dict:
        """Per-bijector kwargs that hand ``context`` to every MAF block of ``chain``."""
        return {b.name: {"conditional_input": context} for b in chain.bijectors
                if isinstance(b, tfb.MaskedAutoregressiveFlow)}

    # -- densities and samples ---------------------------------------------------------------
    def log_prob(self, z, context):
        """log q(z | context) with z [N, D], context [N, C] → [N]."""
        chain = self.bijector()
        kwargs = self.routing(chain, context)
        x = chain.inverse(z, **kwargs)
        return (self.base_distribution().log_prob(x)
                + chain.inverse_log_det_jacobian(z, event_ndims=1, **kwargs))

    def sample_and_log_prob(self, context, num_samples, seed=None):
        """``num_samples`` draws z ~ q(· | context[b]) per context row b: (z [B, N, D], log q [B, N]).

        The context enters each MADE as [B, 1, C] and broadcasts over the N samples, so its
        projections run once per star, not once per sample (the autoregressive sampling pass
        calls every MADE D times). ``seed``: None, a stateless int32 [2] for the batch, or int32
        [B, 2], one per star (then a star's draws do not depend on the other rows).
        """
        chain = self.bijector()
        kwargs = self.routing(chain, context[:, None, :])
        base = self.base_distribution()
        if seed is not None and seed.shape.rank == 2:  # one stateless seed per star: [B, 2]
            # a star's draws depend on its own seed only, not on the batch it shares
            x = tf.map_fn(lambda s: base.sample(num_samples, seed=s), seed,
                          fn_output_signature=tf.TensorSpec([None, self.event_dim], tf.float32))
        else:
            x = base.sample(tf.stack([tf.shape(context)[0], num_samples]), seed=seed)
        z = chain.forward(x, **kwargs)
        log_q = base.log_prob(x) - chain.forward_log_det_jacobian(x, event_ndims=1, **kwargs)
        return z, log_q

    def sample(self, context, num_samples, seed=None):
        """``num_samples`` draws per context row: z [B, N, D]."""
        return self.sample_and_log_prob(context, num_samples, seed)[0]

    def call(self, z, context):
        return self.log_prob(z, context)

    def get_config(self):
        config = super().get_config()
        config.update(event_dim=self.event_dim, context_dim=self.context_dim,
                      num_blocks=self.num_blocks, hidden_units=list(self.hidden_units),
                      mixture_components=self.mixture_components, activation=self.activation,
                      log_scale_bound=self.log_scale_bound)
        return config
