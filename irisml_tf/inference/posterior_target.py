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

__all__ = ["PosteriorProblem", "posterior_problem"]


def _pad_rows(nest):
    """Zero-pad the leading dimension of every tensor to the next power of two (at least 1).

    The sampler calls the target on varying numbers of rows (the stars still active, the starts
    still moving); THE simulator is XLA-compiled and compiles once per input shape, so without
    this every new row count would cost a compilation (~0.5 s). Padded rows are computed and
    dropped; their zeros only ever give finite or −inf values.
    """
    rows = tf.shape(tf.nest.flatten(nest)[0])[0]
    log2 = tf.math.log(tf.cast(tf.maximum(rows, 1), tf.float32)) / np.log(2.0)
    size = tf.cast(2.0 ** tf.math.ceil(log2 - 1e-4), tf.int32)  # 8 → 8 despite round-off

    def pad(t):
        return tf.pad(t, tf.concat([[[0, size - rows]], tf.zeros([t.shape.rank - 1, 2], tf.int32)], 0))
    return tf.nest.map_structure(pad, nest)


class PosteriorProblem(NamedTuple):
    """The callables and conditions of one batch of stars, plus ``theta`` (z → θ)."""

    log_target: object
    flow_sample: object
    conditions: dict
    theta: object


def posterior_problem(model, simulator, prior, inputs: Mapping, sys_floor) -> PosteriorProblem:
    """The adaptive sampler's problem for a batch of stars.

    Args:
      model: :class:`~irisml_tf.model.posterior.PosteriorModel` with a standard normal flow base
        (``mixture_components = 0``; the per-row seeding draws the base noise itself).
      simulator, prior: THE simulator and the prior of the target (``prior.log_prob`` [n, 5] → [n]).
      inputs: band_index int32 [B, K], mag, mag_err float32 [B, K].
      sys_floor: the training's systematic floor (mag).
    """
    if model.flow.mixture is not None:
        raise ValueError("posterior_problem needs a flow with a standard normal base "
                         "(mixture_components = 0)")
    band_index, mag, mag_err = unpack_inputs(inputs)
    band_index = tf.cast(band_index, tf.int32)
    mag, mag_err = tf.cast(mag, tf.float32), tf.cast(mag_err, tf.float32)
    conditions = {"band_index": band_index, "mag": mag, "mag_err": mag_err,
                  "context": model.context(band_index, mag, mag_err)}
    transform = model.parameter_transform()
    flow = model.flow

    def log_target(c, z):
        rows = tf.shape(z)[0]
        c, z = _pad_rows((c, z))
        theta = transform.forward(z)
        log_lik = log_likelihood_theta(simulator, theta, c, sys_floor)
        log_prior = tf.reshape(prior.log_prob(tf.reshape(theta, [-1, theta.shape[-1]])),
                               tf.shape(log_lik))
        return (log_lik + log_prior + transform.forward_log_det_jacobian(z, event_ndims=1))[:rows]

    def flow_sample(c, n, seeds):
        chain = flow.bijector()
        kwargs = flow.routing(chain, c["context"][:, None, :])
        x = row_normal(seeds, n, flow.event_dim)
        z = chain.forward(x, **kwargs)
        return z, (flow.base_distribution().log_prob(x)
                   - chain.forward_log_det_jacobian(x, event_ndims=1, **kwargs))

    return PosteriorProblem(log_target, flow_sample, conditions, transform.forward)
