"""Batched mixtures of multivariate Student-t (or Gaussian) components: density, sampling and a
weighted EM fit, one mixture per row (star). The proposal family of the adaptive importance
sampler (:mod:`irisml_tf.inference.adaptive`).

A mixture is a :class:`Mixture` nest of float64 tensors with B rows and K components:
``log_weights`` [B, K] (−inf marks a dead component), ``loc`` [B, K, D] and ``scale_tril``
[B, K, D, D] (lower-triangular Cholesky factor of the scale matrix Σ). With ``df`` = ν the
components are t_ν(loc, Σ) (covariance ν/(ν − 2) Σ); ``df = inf`` gives Gaussians N(loc, Σ).

Randomness comes in as tensors (normals, uniforms, χ² draws) so that the caller decides how
each row's random numbers are derived (the sampler seeds each row on its own).
Every function is TensorFlow ops only, traceable, with B and N dynamic and K, D static.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = ["Mixture", "clip_covariance", "fit", "log_prob", "moments", "sample"]

_F64 = tf.float64


class Mixture(NamedTuple):
    """One mixture per row: log_weights [B, K], loc [B, K, D], scale_tril [B, K, D, D] (float64)."""

    log_weights: tf.Tensor
    loc: tf.Tensor
    scale_tril: tf.Tensor

    def covariance(self):
        """Scale matrices Σ = L Lᵀ [B, K, D, D]."""
        return tf.matmul(self.scale_tril, self.scale_tril, transpose_b=True)


def _log_norm(df: float, dim: int) -> float:
    """log normalising constant of a standard D-variate t_ν (or Gaussian for ν = inf)."""
    if math.isinf(df):
        return -0.5 * dim * math.log(2.0 * math.pi)
    return (math.lgamma(0.5 * (df + dim)) - math.lgamma(0.5 * df)
            - 0.5 * dim * math.log(df * math.pi))


def _log_kernel(maha, df: float, dim: int):
    """log density of a standard t_ν / Gaussian at squared Mahalanobis distance ``maha``."""
    if math.isinf(df):
        return _log_norm(df, dim) - 0.5 * maha
    return _log_norm(df, dim) - 0.5 * (df + dim) * tf.math.log1p(maha / df)


def _component_terms(mix: Mixture, x, df: float):
    """Per-component log densities (log weight included) and squared Mahalanobis distances.

    x [B, N, D] in the mixture's dtype → (log_terms [B, N, K], maha [B, N, K]). Components are
    looped over (K is static) so that memory stays O(B·N·D) per component.
    """
    dim = x.shape[-1]
    inv = tf.linalg.triangular_solve(
        mix.scale_tril, tf.eye(dim, batch_shape=tf.shape(mix.scale_tril)[:2], dtype=x.dtype))
    log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(mix.scale_tril)), -1)  # [B, K]
    terms, mahas = [], []
    for k in range(mix.loc.shape[1]):
        y = tf.einsum("bij,bnj->bni", inv[:, k], x - mix.loc[:, k, None, :])
        maha = tf.reduce_sum(tf.square(y), -1)  # [B, N]
        mahas.append(maha)
        terms.append(mix.log_weights[:, k, None] - log_det[:, k, None] + _log_kernel(maha, df, dim))
    return tf.stack(terms, -1), tf.stack(mahas, -1)


def log_prob(mix: Mixture, x, df: float):
    """log density [B, N] of x [B, N, D]; computed in x's dtype (params are cast to it)."""
    x = tf.convert_to_tensor(x)
    mix = Mixture(*(tf.cast(t, x.dtype) for t in mix))
    terms, _ = _component_terms(mix, x, df)
    return tf.reduce_logsumexp(terms, -1)


def sample(mix: Mixture, df: float, normals, uniforms, chi2):
    """Draws [B, n, D] from the mixtures, given the randomness:

    normals [B, n, D] standard normal; uniforms [B, n] in (0, 1) (component choice by inverse CDF);
    chi2 [B, n] χ²_ν draws (ignored for ν = inf). Dead components are never chosen.
    """
    normals = tf.cast(normals, _F64)
    probs = tf.nn.softmax(mix.log_weights, -1)  # [B, K]
    cdf = tf.cumsum(probs, -1)
    k_max = mix.loc.shape[1] - 1
    comp = tf.reduce_sum(tf.cast(tf.cast(uniforms, _F64)[:, :, None] > cdf[:, None, :], tf.int32), -1)
    # float round-off can leave the last cdf just below 1: pick the last live component then
    last_live = k_max - tf.argmax(tf.reverse(tf.cast(probs > 0, tf.int32), [1]), -1, output_type=tf.int32)
    comp = tf.minimum(comp, last_live[:, None])
    loc = tf.gather(mix.loc, comp, batch_dims=1)  # [B, n, D]
    tril = tf.gather(mix.scale_tril, comp, batch_dims=1)  # [B, n, D, D]
    step = tf.einsum("bnij,bnj->bni", tril, normals)
    if not math.isinf(df):
        step *= tf.sqrt(df / tf.maximum(tf.cast(chi2, _F64), 1e-300))[:, :, None]
    return loc + step


def clip_covariance(cov, min_var: float, max_var: float, scale=None):
    """Symmetric positive-definite copy of cov [..., D, D] whose eigenvalues, in units of
    ``scale`` (per-coordinate scales broadcastable to [..., D]; None = 1), lie in
    [min_var, max_var]."""
    cov = 0.5 * (cov + tf.linalg.matrix_transpose(cov))
    if scale is not None:
        cov = cov / (scale[..., :, None] * scale[..., None, :])
    evals, evecs = tf.linalg.eigh(cov)
    evals = tf.clip_by_value(evals, min_var, max_var)
    cov = tf.matmul(evecs * evals[..., None, :], evecs, transpose_b=True)
    if scale is not None:
        cov = cov * (scale[..., :, None] * scale[..., None, :])
    return cov


def moments(x, weights):
    """Weighted mean [B, D] and covariance [B, D, D] of x [B, N, D] (weights [B, N] ≥ 0, any scale)."""
    w = weights / tf.maximum(tf.reduce_sum(weights, -1, keepdims=True), 1e-300)
    mean = tf.einsum("bn,bnd->bd", w, x)
    diff = x - mean[:, None, :]
    return mean, tf.einsum("bn,bni,bnj->bij", w, diff, diff)


def fit(init: Mixture, anchor: Mixture, x, counts, df: float, iterations: int,
        prior_count: float, widen: float, scale, min_var: float, max_var: float) -> Mixture:
    """Weighted EM (MAP, for Student-t with fixed ν: the latent-scale EM of Peel & McLachlan 2000).

    Args:
      init: starting mixture (e.g. the previous round's fit).
      anchor: the prior's centres: each component's mean and scale are shrunk towards the
        anchor's with ``prior_count`` pseudo-draws (a normal–inverse-Wishart-like prior; this is
        what keeps a component from collapsing on a handful of draws); its weights too.
      x: float64 [B, N, D] draws; counts: float64 [B, N] ≥ 0, the draws' weights in units of
        effective draws (e.g. normalised tempered weights × their ESS).
      df: ν (inf: Gaussian EM). iterations: EM steps (static).
      widen: factor on every fitted scale (1 = none).
      scale: float64 [B, D] per-row coordinate scales; min_var, max_var: the eigenvalue floor
        and cap of each fitted Σ in those units (see :func:`clip_covariance`).

    Dead components of ``init`` (weight 0) stay dead.
    """
    dim = x.shape[-1]
    _zero, _ninf = tf.constant(0.0, _F64), tf.constant(-np.inf, _F64)
    live = tf.math.is_finite(init.log_weights)
    anchor_cov = anchor.covariance()
    anchor_w = tf.where(live, tf.exp(anchor.log_weights), _zero)

    def step(mix):
        terms, maha = _component_terms(mix, x, df)  # [B, N, K]
        resp = tf.where(live[:, None, :], tf.nn.softmax(terms, -1), _zero)
        resp = tf.where(tf.math.is_finite(resp), resp, _zero)
        tau = tf.ones_like(maha) if math.isinf(df) else (df + dim) / (df + maha)
        cr = counts[:, :, None] * resp  # [B, N, K]
        n_k = tf.reduce_sum(cr, 1)  # [B, K]
        ct = cr * tau
        s_t = tf.reduce_sum(ct, 1)
        loc = ((tf.einsum("bnk,bnd->bkd", ct, x) + prior_count * anchor.loc)
               / (s_t + prior_count)[:, :, None])
        # Σ_n ct (x − μ)(x − μ)ᵀ per component as one batched matmul ([B, K, N, D])
        y = (tf.sqrt(tf.transpose(ct, [0, 2, 1]))[..., None]
             * (x[:, None, :, :] - loc[:, :, None, :]))
        scatter = tf.matmul(y, y, transpose_a=True)
        cov = (scatter + prior_count * anchor_cov) / (n_k + prior_count)[:, :, None, None]
        w = tf.where(live, n_k + prior_count * anchor_w, _zero)
        log_w = tf.where(live, tf.math.log(tf.maximum(w, 1e-300))
                         - tf.math.log(tf.reduce_sum(w, -1, keepdims=True)), _ninf)
        cov = clip_covariance(cov, min_var, max_var, scale[:, None, :])
        return Mixture(log_w, loc, tf.linalg.cholesky(cov))

    mix = tf.while_loop(lambda i, _: i < iterations, lambda i, m: (i + 1, step(m)),
                        (tf.constant(0), init))[1]
    cov = clip_covariance(mix.covariance() * widen ** 2, min_var, max_var, scale[:, None, :])
    return Mixture(mix.log_weights, mix.loc, tf.linalg.cholesky(cov))
