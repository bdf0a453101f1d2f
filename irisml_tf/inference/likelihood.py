"""The photometric likelihood p(x | θ) with the distance term μ marginalised analytically.

For one star with observed bands k (magnitudes m_k, catalogue errors e_k) and model magnitudes
M_k(θ) at μ = 0 (from :class:`~irisml_tf.physics.simulator.Simulator`):

    m_k = M_k(θ) + μ + ε_k,   ε_k ~ N(0, σ_k²),   σ_k² = e_k² + sys_floor²

with ``sys_floor`` the training's systematic floor
(:attr:`irisml_tf.data.observation.ObservationModel.sys_floor`). With weights w_k = 1/σ_k²,
residuals r_k = m_k − M_k(θ), W = Σ w_k and a flat prior on μ,

    μ̂ = Σ w_k r_k / W,       χ² = Σ w_k (r_k − μ̂)²
    log p(x | θ) = ∫ Π_k N(m_k | M_k + μ, σ_k²) dμ
                 = −½ χ² − ½ Σ_k log(2π σ_k²) + ½ log(2π / W).

The last two terms depend on the errors only, so the likelihood is comparable across θ (and the
one-band likelihood is exactly 1: one magnitude says nothing once μ is free). A band that is
observed but invalid in the model at θ (outside the grid's support, zero flux) gives −inf. A row
without observed bands gets log p = 0 (no information).

Inputs are padded: band_index int32 [B, K] with −1 for padding, mag / mag_err float32 [B, K].
A slot counts as observed when band_index is in [0, num_bands), mag is finite and σ² is finite
and > 0; anything else is ignored like a pad (the catalogue layer reports such values).
Everything is TensorFlow ops, batched over stars and samples; usable inside ``tf.function``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = ["LikelihoodTerms", "likelihood_terms", "log_likelihood", "log_likelihood_theta",
           "gather_bands", "default_sys_floor", "unpack_inputs"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class LikelihoodTerms(NamedTuple):
    """Per-sample and per-band pieces of the likelihood (a nest: passes through tf.function).

    Attributes:
      log_lik: log p(x | θ) [B, N], −inf where an observed band is invalid in the model.
      mu: best-fit μ̂ [B, N] (0 where unsupported).
      chi2: χ² at μ̂ [B, N] (+inf where unsupported).
      residual: m_k − M_k(θ) − μ̂ [B, N, K] (0 on pads and where unsupported).
      weight: 1/σ_k² [B, K] (0 on pads).
      observed: bool [B, K], the slots that count.
      n_bands: int32 [B], number of observed slots.
      supported: bool [B, N], every observed band valid in the model at θ.
    """

    log_lik: tf.Tensor
    mu: tf.Tensor
    chi2: tf.Tensor
    residual: tf.Tensor
    weight: tf.Tensor
    observed: tf.Tensor
    n_bands: tf.Tensor
    supported: tf.Tensor


def default_sys_floor() -> float:
    """The systematic floor of the default observation model (the one place it is defined)."""
    from irisml_tf.data.observation import DEFAULT_OBSERVATION

    return float(DEFAULT_OBSERVATION["sys_floor"])


def gather_bands(model_values, band_index):
    """Pick the observed bands: model_values [B, N, NB], band_index [B, K] → [B, N, K].

    Pads (and out-of-range indices) read band 0; mask them with the ``observed`` slots.
    """
    num_bands = tf.shape(model_values)[-1]
    idx = tf.clip_by_value(tf.cast(band_index, tf.int32), 0, num_bands - 1)
    return tf.gather(model_values, idx, axis=2, batch_dims=1)


def _observed_slots(band_index, mag, var, num_bands):
    band_index = tf.cast(band_index, tf.int32)
    return ((band_index >= 0) & (band_index < num_bands) & tf.math.is_finite(mag)
            & tf.math.is_finite(var) & (var > 0.0))


def likelihood_terms(model_mags, model_valid, band_index, mag, mag_err,
                     sys_floor) -> LikelihoodTerms:
    """All likelihood pieces for model magnitudes at N parameter samples per star.

    Args:
      model_mags: float32 [B, N, NB], simulator magnitudes (μ = 0) in every band.
      model_valid: bool [B, N, NB], the simulator's validity mask.
      band_index: int32 [B, K], observed band indices, −1 = padding.
      mag, mag_err: float32 [B, K], observed magnitudes and catalogue errors.
      sys_floor: systematic floor (mag), added in quadrature to ``mag_err``.

    Returns:
      :class:`LikelihoodTerms`.
    """
    model_mags = tf.convert_to_tensor(model_mags, tf.float32)
    model_valid = tf.convert_to_tensor(model_valid, tf.bool)
    mag = tf.convert_to_tensor(mag, tf.float32)
    mag_err = tf.convert_to_tensor(mag_err, tf.float32)
    sys_floor = tf.cast(sys_floor, tf.float32)

    var = tf.square(mag_err) + tf.square(sys_floor)
    observed = _observed_slots(band_index, mag, var, tf.shape(model_mags)[-1])  # [B, K]
    tf.cast(observed, tf.float32)
    weight = tf.where(observed, 1.0 / tf.where(observed, var, 1.0), 0.0)  # [B, K]
    n_bands = tf.reduce_sum(tf.cast(observed, tf.int32), axis=-1)  # [B]

    model_k = gather_bands(model_mags, band_index)  # [B, N, K]
    valid_k = gather_bands(model_valid, band_index)  # [B, N, K]
    # every observed band must be valid in the model
    supported = tf.reduce_all(valid_k | ~observed[:, None, :], axis=-1)  # [B, N]
    use = observed[:, None, :] & valid_k  # [B, N, K]

    resid = tf.where(use, tf.where(observed, mag, 0.0)[:, None, :] - model_k, 0.0)
    w = weight[:, None, :]  # [B, 1, K]
    w_sum = tf.reduce_sum(weight, axis=-1)  # [B]
    w_safe = tf.where(w_sum > 0, w_sum, 1.0)
    mu = tf.reduce_sum(w * resid, axis=-1) / w_safe[:, None]  # [B, N]
    centred = tf.where(use, resid - mu[..., None], 0.0)
    chi2 = tf.reduce_sum(w * tf.square(centred), axis=-1)  # [B, N], stable form

    log_var_sum = tf.reduce_sum(tf.where(observed, tf.math.log(tf.where(observed, var, 1.0)), 0.0), -1)
    norm = (-0.5 * (log_var_sum + tf.cast(n_bands, tf.float32) * _LOG_2PI)
            + 0.5 * (_LOG_2PI - tf.math.log(w_safe)))  # [B]
    norm = tf.where(n_bands > 0, norm, 0.0)
    log_lik = tf.where(supported, -0.5 * chi2 + norm[:, None], -np.inf)

    return LikelihoodTerms(
        log_lik=log_lik,
        mu=tf.where(supported, mu, 0.0),
        chi2=tf.where(supported, chi2, np.inf),
        residual=tf.where(supported[..., None], centred, 0.0),
        weight=weight,
        observed=observed,
        n_bands=n_bands,
        supported=supported,
    )


def log_likelihood(model_mags, model_valid, band_index, mag, mag_err, sys_floor):
    """log p(x | θ) [B, N], μ marginalised; see :func:`likelihood_terms` for the arguments."""
    return likelihood_terms(model_mags, model_valid, band_index, mag, mag_err, sys_floor).log_lik


def unpack_inputs(inputs: Mapping):
    """(band_index, mag, mag_err) from a mapping; a clear error if a key is missing."""
    try:
        return inputs["band_index"], inputs["mag"], inputs["mag_err"]
    except KeyError as err:
        raise ValueError(f"`inputs` needs the keys band_index, mag and mag_err; missing {err}") from None


def log_likelihood_theta(simulator, theta, inputs: Mapping, sys_floor, return_terms: bool = False):
    """log p(x | θ) for parameter samples θ [B, N, 5] (physical units, order teff … rv).

    Calls ``simulator`` once on the flattened [B·N, 5] batch and gathers the observed bands.
    ``inputs`` maps ``band_index`` [B, K], ``mag`` [B, K] and ``mag_err`` [B, K].
    Returns log_lik [B, N], or the :class:`LikelihoodTerms` if ``return_terms``.
    """
    band_index, mag, mag_err = unpack_inputs(inputs)
    theta = tf.convert_to_tensor(theta, tf.float32)
    shape = tf.shape(theta)
    mags, valid = simulator(tf.reshape(theta, [-1, 5]))
    num_bands = tf.shape(mags)[-1]
    mags = tf.reshape(mags, tf.stack([shape[0], shape[1], num_bands]))
    valid = tf.reshape(valid, tf.stack([shape[0], shape[1], num_bands]))
    terms = likelihood_terms(mags, valid, band_index, mag, mag_err, sys_floor)
    return terms if return_terms else terms.log_lik
