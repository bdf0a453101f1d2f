"""The stellar posterior as a problem for :func:`irisml_tf.inference.adaptive.adaptive_importance_sampling`.

Everything lives in the flow's own space z (the standardised unconstrained parameters of
:meth:`~irisml_tf.model.posterior.PosteriorModel.parameter_transform`, θ = T(z)), where the
support box is all of R⁵ and the Jacobian is exact:

    log π(z) = log p(x | T(z)) + log p(T(z)) + log |det ∂T/∂z|,
    log q(z) = the flow's density of z given the star's context.

:func:`posterior_problem` returns the two callables and the per-star ``conditions`` (band
indices, magnitudes, errors and the encoder's context, computed once per star). Draws come back
in z; ``theta(z)`` maps them to physical units (weights need no change: they are a ratio of
densities in the same space).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from irisml_tf.inference.adaptive import row_normal
from irisml_tf.inference.likelihood import log_likelihood_theta, unpack_inputs
from irisml_tf.inference.rows import ROW_MULTIPLE, row_indices, scatter_rows
from irisml_tf.physics.parallax import MassPrior, parallax_log_likelihood, usable_parallax

__all__ = ["PosteriorProblem", "posterior_problem", "log_likelihood_with_parallax"]


def log_likelihood_with_parallax(simulator, theta, c: Mapping, sys_floor, mass_prior=None):
    """THE likelihood of the engine: log p(x | θ) + log p(ϖ | θ) [B, N] for θ [B, N, 5], ``c`` the
    photometry (band_index, mag, mag_err) and ``plx``/``plx_err`` [B] (NaN = none). The parallax
    term (several times the simulator's cost per draw) is computed on the rows that have a
    parallax only, gathered and scattered back: no ``tf.cond``, whose gradient made the exported
    graph 7x slower for the C++ loader to optimise (saved_model_cli: 245 s against 36 s)."""
    terms = log_likelihood_theta(simulator, theta, c, sys_floor, return_terms=True)
    rows, n = row_indices(usable_parallax(c["plx"], c["plx_err"]))
    args = (terms.mu, tf.reduce_sum(terms.weight, -1), theta, c["plx"], c["plx_err"])
    log_plx = parallax_log_likelihood(*(tf.gather(a, rows) for a in args), mass_prior or MassPrior())
    return scatter_rows(terms.log_lik, rows, n, tf.gather(terms.log_lik, rows) + log_plx)


def _pad_rows(nest):
    """Zero-pad the leading dimension of every tensor to the next power of two, at least
    :data:`~irisml_tf.inference.rows.ROW_MULTIPLE` (so a multiple of it).

    The sampler calls the target on varying numbers of rows (the stars still active, the starts
    still moving); THE simulator is XLA-compiled and compiles once per input shape, so without
    this every new row count would cost a compilation (~0.5 s). Padded rows are computed and
    dropped; their zeros only ever give finite or −inf values.
    """
    rows = tf.shape(tf.nest.flatten(nest)[0])[0]
    log2 = tf.math.log(tf.cast(tf.maximum(rows, 1), tf.float32)) / np.log(2.0)
    size = tf.maximum(tf.cast(2.0 ** tf.math.ceil(log2 - 1e-4), tf.int32), ROW_MULTIPLE)  # 8 → 8 despite round-off

    def pad(t):
        return tf.pad(t, tf.concat([[[0, size - rows]], tf.zeros([t.shape.rank - 1, 2], tf.int32)], 0))
    return tf.nest.map_structure(pad, nest)


class PosteriorProblem(NamedTuple):
    """The callables and conditions of one batch of stars, plus ``theta`` (z → θ)."""

    log_target: object
    flow_sample: object
    conditions: dict
    theta: object


def posterior_problem(model, simulator, prior, inputs: Mapping, sys_floor, *, prior_params=None,
                      av_prior=None, av_prior_err=None, av_max=None, plx=None, plx_err=None,
                      mass_prior=None) -> PosteriorProblem:
    """The adaptive sampler's problem for a batch of stars.

    Args:
      model: :class:`~irisml_tf.model.posterior.PosteriorModel` with a standard normal flow base
        (``mixture_components = 0``; the per-row seeding draws the base noise itself).
      simulator, prior: THE simulator and the :class:`~irisml_tf.physics.prior.Prior` of the target.
      inputs: band_index int32 [B, K], mag, mag_err float32 [B, K].
      sys_floor: the training's systematic floor (mag).
      prior_params: the target prior's parameters float32 [21] (:data:`~irisml_tf.physics.prior.
        PRIOR_PARAM_NAMES`; None: ``prior``'s own). av_prior, av_prior_err, av_max: per-star A_V
        priors float32 [B] (NaN = none; :meth:`~irisml_tf.physics.prior.Prior.log_prob`) or None.
      plx, plx_err: zero-point-corrected parallaxes and errors [B] (mas; NaN = none) or None: the
        parallax enters the target through :func:`~irisml_tf.physics.parallax.parallax_log_likelihood`
        under ``mass_prior`` (:class:`~irisml_tf.physics.parallax.MassPrior`; None = its default).
    """
    if model.flow.mixture is not None:
        raise ValueError("posterior_problem needs a flow with a standard normal base "
                         "(mixture_components = 0)")
    band_index, mag, mag_err = unpack_inputs(inputs)
    band_index = tf.cast(band_index, tf.int32)
    mag, mag_err = tf.cast(mag, tf.float32), tf.cast(mag_err, tf.float32)
    nan = tf.fill(tf.shape(mag)[:1], np.float32(np.nan))
    conditions = {"band_index": band_index, "mag": mag, "mag_err": mag_err,
                  "context": model.context(band_index, mag, mag_err),
                  **{k: nan if v is None else tf.cast(v, tf.float32) for k, v in
                     (("av_prior", av_prior), ("av_prior_err", av_prior_err), ("av_max", av_max),
                      ("plx", plx), ("plx_err", plx_err))}}
    transform = model.parameter_transform()
    flow = model.flow

    def log_target(c, z):
        rows = tf.shape(z)[0]
        c, z = _pad_rows((c, z))
        theta = transform.forward(z)
        log_lik = log_likelihood_with_parallax(simulator, theta, c, sys_floor, mass_prior)
        log_prior = prior.log_prob(theta, prior_params, c["av_prior"], c["av_prior_err"], c["av_max"])
        return (log_lik + log_prior + transform.forward_log_det_jacobian(z, event_ndims=1))[:rows]

    def flow_sample(c, n, seeds):
        chain = flow.bijector()
        kwargs = flow.routing(chain, c["context"][:, None, :])
        x = row_normal(seeds, n, flow.event_dim)
        z = chain.forward(x, **kwargs)
        return z, (flow.base_distribution().log_prob(x)
                   - chain.forward_log_det_jacobian(x, event_ndims=1, **kwargs))

    return PosteriorProblem(log_target, flow_sample, conditions, transform.forward)
