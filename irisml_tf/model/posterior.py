"""The posterior model q(θ | x): set encoder + conditional MAF + parameter transform.

θ = (teff, logg, mh, av, rv) in physical units; the flow models the standardised unconstrained
z = T⁻¹(θ) (see :mod:`irisml_tf.model.transform`), so

    log q(θ | x) = log q_flow(z | context(x)) + log |det ∂z/∂θ|,

a density in physical units, and every sample lies inside the support box.

The model is built at construction (all variables exist, so ``load_weights`` works right away)
and owns every variable: optimise ``model.trainable_variables``.

Example::

    model = PosteriorModel(embed_dim=32)  # the other sizes from DEFAULT_SIZES
    log_q = model.log_prob(theta, band_index, mag, mag_err)          # [B]
    samples = model.sample(1000, band_index, mag, mag_err, seed=[1, 2])  # [B, 1000, 5]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf

from irisml_tf.model.encoder import SetEncoder
from irisml_tf.model.flow import ConditionalMAF
from irisml_tf.model.transform import DEFAULT_LOWER, DEFAULT_UPPER, NUM_PARAMS, ParameterTransform
from irisml_tf.physics.bands import NUM_BANDS

__all__ = ["DEFAULT_SIZES", "PosteriorModel"]

#: The model's sizes and settings by default (a small model), the one place they are written:
#: the constructor's defaults and the training config's ``model`` section both read them
#: (configs/*.yaml set their own sizes).
DEFAULT_SIZES: Mapping = MappingProxyType({
    "embed_dim": 64,
    "num_heads": 4,
    "num_blocks": 2,
    "mlp_dim": 128,
    "flow_blocks": 5,
    "made_hidden": (128, 128),
    "mixture_components": 0,
    "dropout": 0.0,
    "activation": "tanh",
    "log_scale_bound": 3.0,
})


def _floats(values, name: str) -> list[float] | None:
    if values is None:
        return None
    values = [float(v) for v in (values if isinstance(values, Sequence) else list(values))]
    if len(values) != NUM_PARAMS:
        raise ValueError(f"`{name}` must have {NUM_PARAMS} entries, got {len(values)}")
    return values


def _stateless_seed(seed):
    """None stays None (fresh samples); an int s becomes [s, 0]; else int32 [2] (the batch) or
    [B, 2] (one per star)."""
    if seed is None:
        return None
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros([], tf.int32)])
    if seed.shape.rank not in (1, 2) or seed.shape[-1] not in (None, 2):
        raise ValueError(f"`seed` must be an int or have shape [2] or [B, 2], got shape {seed.shape}")
    return seed


@keras.saving.register_keras_serializable(package="irisml_tf")
class PosteriorModel(keras.Model):
    """Amortised posterior q(θ | band_index, mag, mag_err).

    Args:
      num_bands: band vocabulary size (band indices 0..num_bands−1, −1 = padding).
      embed_dim, num_heads, num_blocks, mlp_dim, dropout: :class:`SetEncoder` sizes; the
        context has embed_dim entries.
      flow_blocks, made_hidden, mixture_components, activation, log_scale_bound:
        :class:`ConditionalMAF` settings (mixture_components = 0: standard normal base).
      lower, upper: support box of θ (5 entries each, physical units).
      param_loc, param_scale: standardisation of the unconstrained parameters (5 entries each;
        None = 0 and 1); see :func:`irisml_tf.model.transform.fit_standardization`.

    Inputs everywhere: band_index int [B, K] (−1 = padding), mag float32 [B, K],
    mag_err float32 [B, K]; theta float32 [B, 5] in the order (teff, logg, mh, av, rv).
    """

    def __init__(self, num_bands: int = NUM_BANDS,
                 embed_dim: int = DEFAULT_SIZES["embed_dim"],
                 num_heads: int = DEFAULT_SIZES["num_heads"],
                 num_blocks: int = DEFAULT_SIZES["num_blocks"],
                 mlp_dim: int = DEFAULT_SIZES["mlp_dim"],
                 flow_blocks: int = DEFAULT_SIZES["flow_blocks"],
                 made_hidden: Sequence[int] = DEFAULT_SIZES["made_hidden"],
                 mixture_components: int = DEFAULT_SIZES["mixture_components"],
                 dropout: float = DEFAULT_SIZES["dropout"],
                 activation: str = DEFAULT_SIZES["activation"],
                 log_scale_bound: float = DEFAULT_SIZES["log_scale_bound"],
                 lower: Sequence[float] = DEFAULT_LOWER, upper: Sequence[float] = DEFAULT_UPPER,
                 param_loc: Sequence[float] | None = None,
                 param_scale: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_bands = int(num_bands)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.num_blocks = int(num_blocks)
        self.mlp_dim = int(mlp_dim)
        self.flow_blocks = int(flow_blocks)
        self.made_hidden = [int(h) for h in made_hidden]
        self.mixture_components = int(mixture_components)
        self.dropout = float(dropout)
        self.activation = activation
        self.log_scale_bound = float(log_scale_bound)
        self.lower = _floats(lower, "lower")
        self.upper = _floats(upper, "upper")
        self.param_loc = _floats(param_loc, "param_loc")
        self.param_scale = _floats(param_scale, "param_scale")
        self.parameter_transform()  # validates the box and the standardisation now

        self.encoder = SetEncoder(self.num_bands, self.embed_dim, self.num_heads,
                                  self.num_blocks, self.mlp_dim, self.dropout, name="encoder")
        self.flow = ConditionalMAF(NUM_PARAMS, self.embed_dim, self.flow_blocks,
                                   self.made_hidden, self.mixture_components,
                                   activation=self.activation,
                                   log_scale_bound=self.log_scale_bound, name="flow")
        self.build()

    def build(self, input_shape=None):
        if self.encoder.built and self.flow.built:
            return
        self.encoder.build()
        self.flow.build()

    def parameter_transform(self) -> ParameterTransform:
        """The bijector z → θ (standardised unconstrained → physical)."""
        return ParameterTransform(
            self.lower, self.upper,
            loc=0.0 if self.param_loc is None else self.param_loc,
            scale=1.0 if self.param_scale is None else self.param_scale)

    # -- context, density, samples -----------------------------------------------------------
    def context(self, band_index, mag, mag_err, training=False):
        """Context vectors [B, embed_dim]."""
        return self.encoder(band_index, mag, mag_err, training=training)

    def log_prob(self, theta, band_index, mag, mag_err, training=False):
        """log q(θ | x) [B] of theta [B, 5] in physical units (transform log-det included).

        θ outside the support box gets −inf; θ exactly on a bound is clamped just inside it
        (see ParameterTransform) and gets a finite value.
        """
        theta = tf.cast(theta, tf.float32)
        context = self.context(band_index, mag, mag_err, training=training)
        transform = self.parameter_transform()
        z = transform.inverse(theta)
        log_q = (self.flow.log_prob(z, context)
                 + transform.inverse_log_det_jacobian(theta, event_ndims=1))
        outside = tf.reduce_any((theta < tf.constant(self.lower, tf.float32))
                                | (theta > tf.constant(self.upper, tf.float32)), axis=-1)
        return tf.where(outside, tf.constant(-np.inf, log_q.dtype), log_q)

    def sample_and_log_prob(self, num_samples, band_index, mag, mag_err, seed=None):
        """``num_samples`` draws per star and their log q.

        Returns (theta [B, num_samples, 5] in physical units, log_q [B, num_samples]).
        ``seed``: stateless int32 [2] (an int s means [s, 0]) or [B, 2] (one per star: a star's
        draws then depend on its own seed, not on the rows it shares the batch with); the same
        seed gives the same samples; None draws fresh samples each call.
        """
        seed = _stateless_seed(seed)
        context = self.context(band_index, mag, mag_err)
        z, log_q_z = self.flow.sample_and_log_prob(context, num_samples, seed=seed)  # [B, N, 5], [B, N]
        transform = self.parameter_transform()
        theta = transform.forward(z)
        log_q = log_q_z - transform.forward_log_det_jacobian(z, event_ndims=1)
        return theta, log_q

    def sample(self, num_samples, band_index, mag, mag_err, seed=None):
        """``num_samples`` draws per star: theta [B, num_samples, 5] in physical units."""
        return self.sample_and_log_prob(num_samples, band_index, mag, mag_err, seed)[0]

    # -- training ----------------------------------------------------------------------------
    def nll(self, theta, batch: Mapping, training=True):
        """Mean negative log q(θ | x) over the batch: the training loss (scalar).

        ``batch`` maps ``band_index``, ``mag`` and ``mag_err`` to the padded arrays.
        """
        log_q = self.log_prob(theta, batch["band_index"], batch["mag"], batch["mag_err"],
                              training=training)
        return -tf.reduce_mean(log_q)

    def call(self, inputs: Mapping, training=None):
        """``model({"theta", "band_index", "mag", "mag_err"})`` → log q [B]."""
        return self.log_prob(inputs["theta"], inputs["band_index"], inputs["mag"],
                             inputs["mag_err"], training=bool(training))

    # -- serialisation -----------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(num_bands=self.num_bands, embed_dim=self.embed_dim,
                      num_heads=self.num_heads, num_blocks=self.num_blocks,
                      mlp_dim=self.mlp_dim, flow_blocks=self.flow_blocks,
                      made_hidden=list(self.made_hidden),
                      mixture_components=self.mixture_components, dropout=self.dropout,
                      activation=self.activation, log_scale_bound=self.log_scale_bound,
                      lower=list(self.lower), upper=list(self.upper),
                      param_loc=None if self.param_loc is None else list(self.param_loc),
                      param_scale=None if self.param_scale is None else list(self.param_scale))
        return config

    @classmethod
    def from_config(cls, config: Mapping):
        """Build from a plain dict of constructor arguments (sizes), e.g. a YAML config."""
        return cls(**dict(config))

    def get_build_config(self):
        return None  # built in __init__: nothing to rebuild on load

    def build_from_config(self, config):
        pass
