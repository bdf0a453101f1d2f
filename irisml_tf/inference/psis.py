"""Pareto-smoothed importance sampling (PSIS; Vehtari, Simpson, Gelman, Yao & Gabry 2015/2024).

Per star (row) of S log importance weights:

1. Tail size M = ceil(min(S/5, 3√S)) (independent draws, relative efficiency 1). The tail is
   the M largest weights, capped at (number of finite weights − 1); the threshold u is the next
   largest weight.
2. A generalized Pareto distribution is fitted to the exceedances x = w − u of the tail with the
   Zhang & Stephens (2009, Technometrics 51, 316) empirical-Bayes estimator: a grid of
   m = 30 + ⌊√n⌋ values θ_j = 1/x₍ₙ₎ + (1 − √(m/(j − ½))) / (3 x_q), x_q = x₍⌊n/4+½⌋₎ the
   first quartile (weights rescaled so that the largest is 1), their profile
   log-likelihoods ℓ(θ_j) = n (log(−θ_j/k_j) − k_j − 1) with k_j = mean log(1 − θ_j x),
   posterior-mean θ̂ = Σ_j θ_j softmax(ℓ)_j, then k = mean log(1 − θ̂ x), σ = −k/θ̂.
3. The weakly informative prior of the PSIS paper: k̂ = (n k + 10 · 0.5) / (n + 10).
4. Smoothing: the tail weights are replaced, in their order, by u + GPD⁻¹((i − ½)/n; k̂, σ),
   truncated at the largest raw weight.

k̂ > 0.7 means the weights cannot be trusted (the variance of the estimate is effectively
infinite); k̂ < 0.5 is good. Rows with fewer than ``MIN_TAIL`` + 1 finite weights get k̂ = +inf
(too few to fit) and are not smoothed; rows whose tail has no spread at all (the largest M + 1
weights equal, e.g. constant weights) get k̂ = −inf (no tail) and are not smoothed.

Pure TensorFlow (float64 inside the fit, like the reference implementations), batched over
rows, S may be dynamic: graph-only, no tensorflow_probability needed.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["psis", "pareto_khat", "tail_length", "MIN_TAIL"]

#: A row needs more than this many tail weights for a GPD fit (else k̂ = inf).
MIN_TAIL = 4
_PRIOR_BS = 3.0  # Zhang & Stephens' grid scale
_PRIOR_K = 10.0  # weakly informative prior: 10 pseudo-observations at k = 0.5
_MIN_GRID = 30


def tail_length(num_samples):
    """M = ceil(min(S/5, 3√S)) as int32 (a tensor when S is one)."""
    s = tf.cast(num_samples, tf.float64)
    return tf.cast(tf.math.ceil(tf.minimum(0.2 * s, 3.0 * tf.sqrt(s))), tf.int32)


def _gpd_fit(x_desc, n):
    """Zhang–Stephens fit per row.

    x_desc: float64 [B, M] exceedances, largest first, valid in the first n[b] columns.
    n: int32 [B] (> MIN_TAIL where the result is used).
    Returns (k̂ with the prior adjustment, σ, k without the adjustment), each float64 [B].
    """
    m_cols = tf.shape(x_desc)[1]
    n_safe = tf.maximum(n, 1)
    nf = tf.cast(n_safe, tf.float64)
    col = tf.range(m_cols)[None, :]
    in_tail = col < n_safe[:, None]  # [B, M]
    x = tf.where(in_tail, x_desc, 0.0)
    x_max = x[:, 0]
    # first quartile of the ascending sample: ascending index ⌊n/4 + ½⌋ − 1
    q_asc = tf.cast(tf.floor(nf / 4.0 + 0.5), tf.int32) - 1
    q_desc = tf.clip_by_value(n_safe - 1 - q_asc, 0, m_cols - 1)
    x_star = tf.gather(x, q_desc[:, None], batch_dims=1)[:, 0]
    tiny = tf.constant(1e-300, tf.float64)
    x_max_safe = tf.maximum(x_max, tiny)
    x_star = tf.maximum(x_star, tiny * 1e10)
    # θ grid, m = 30 + ⌊√n⌋ points per row (padded to the largest m of the batch)
    m_grid = _MIN_GRID + tf.cast(tf.floor(tf.sqrt(nf)), tf.int32)  # [B]
    m_max = tf.reduce_max(m_grid)
    j = tf.cast(tf.range(1, m_max + 1), tf.float64)[None, :]  # [1, J]
    mg = tf.cast(m_grid, tf.float64)[:, None]
    in_grid = tf.range(m_max)[None, :] < m_grid[:, None]  # [B, J]
    theta = (1.0 / x_max_safe[:, None]
             + (1.0 - tf.sqrt(mg / tf.maximum(j - 0.5, 0.5))) / (_PRIOR_BS * x_star[:, None]))
    theta = tf.where(in_grid, theta, -1.0 / x_max_safe[:, None])  # harmless filler
    # k_j = mean over the tail of log(1 − θ_j x)
    logs = tf.math.log1p(-theta[:, :, None] * x[:, None, :])  # [B, J, M]
    logs = tf.where(in_tail[:, None, :], logs, 0.0)
    k_grid = tf.reduce_sum(logs, axis=-1) / nf[:, None]  # [B, J]
    prof = nf[:, None] * (tf.math.log(-theta / k_grid) - k_grid - 1.0)
    prof = tf.where(in_grid & tf.math.is_finite(prof), prof, tf.constant(-np.inf, tf.float64))
    w = tf.nn.softmax(prof, axis=-1)
    w = tf.where(in_grid & tf.math.is_finite(w), w, 0.0)
    theta_hat = tf.reduce_sum(w * theta, axis=-1)  # [B]
    k_raw = tf.reduce_sum(tf.where(in_tail, tf.math.log1p(-theta_hat[:, None] * x), 0.0), -1) / nf
    sigma = -k_raw / theta_hat
    k_hat = (nf * k_raw + _PRIOR_K * 0.5) / (nf + _PRIOR_K)
    k_hat = tf.where(tf.math.is_nan(k_hat), tf.constant(np.inf, tf.float64), k_hat)
    return k_hat, sigma, k_raw


def _gpd_quantile(p, k, sigma):
    """Inverse CDF of GPD(0, σ, k) at p (float64, broadcasting): σ/k ((1 − p)^(−k) − 1)."""
    log1m = tf.math.log1p(-p)
    small = tf.abs(k) < 1e-10
    k_safe = tf.where(small, tf.ones_like(k), k)
    q = sigma * tf.math.expm1(-k_safe * log1m) / k_safe
    return tf.where(small, -sigma * log1m, q)


def psis(log_weights):
    """Pareto-smoothed importance sampling per row.

    Args:
      log_weights: float [B, S] log importance weights (unnormalised; −inf = zero weight; NaN is
        treated as −inf).

    Returns:
      (smoothed_log_weights [B, S] in the input dtype, unnormalised on the input's scale,
      k̂ [B] in the input dtype). Rows that are not smoothed (k̂ = ±inf) return their input.
    """
    log_weights = tf.convert_to_tensor(log_weights)
    dtype = log_weights.dtype
    lw = tf.cast(log_weights, tf.float64)
    lw = tf.where(tf.math.is_nan(lw), tf.constant(-np.inf, tf.float64), lw)
    finite = tf.math.is_finite(lw)
    lw = tf.where(finite, lw, tf.constant(-np.inf, tf.float64))  # +inf is not a weight either
    num = tf.shape(lw)[1]
    n_finite = tf.reduce_sum(tf.cast(finite, tf.int32), axis=-1)  # [B]
    row_max = tf.reduce_max(tf.where(finite, lw, tf.constant(-np.inf, tf.float64)), axis=-1)
    row_max = tf.where(n_finite > 0, row_max, 0.0)
    shifted = lw - row_max[:, None]  # ≤ 0

    # pad with zero weights so that top_k and the tail always have columns, even for S < 2
    pad = MIN_TAIL + 2
    padded = tf.concat([shifted, tf.fill(tf.stack([tf.shape(lw)[0], pad]),
                                         tf.constant(-np.inf, tf.float64))], axis=1)
    m_tail = tf.minimum(tail_length(num), tf.maximum(num - 1, 1))
    top = tf.math.top_k(padded, k=m_tail + 1, sorted=True)
    values, index = top.values[:, :-1], top.indices[:, :-1]  # [B, M], largest first
    n_tail = tf.clip_by_value(n_finite - 1, 0, m_tail)  # [B]
    # threshold u: the largest weight outside the tail
    cutoff = tf.gather(top.values, n_tail[:, None], batch_dims=1)[:, 0]
    cutoff = tf.where(n_tail > 0, cutoff, tf.zeros_like(cutoff))
    exp_cut = tf.exp(cutoff)
    in_tail = tf.range(m_tail)[None, :] < n_tail[:, None]
    x_desc = tf.where(in_tail, tf.maximum(tf.exp(values) - exp_cut[:, None], 0.0),
                      tf.zeros_like(values))

    enough = n_tail > MIN_TAIL
    spread = x_desc[:, 0] > 0.0
    k_hat, sigma, _ = _gpd_fit(x_desc, tf.where(enough, n_tail, MIN_TAIL + 1))
    inf = tf.constant(np.inf, tf.float64)
    k_hat = tf.where(enough, tf.where(spread, k_hat, -inf), inf)

    # smoothing: order statistics of the fitted GPD, placed by rank, capped at the raw maximum
    smooth = enough & spread & tf.math.is_finite(k_hat)
    nf = tf.cast(tf.maximum(n_tail, 1), tf.float64)
    rank_asc = tf.cast(n_tail[:, None] - 1 - tf.range(m_tail)[None, :], tf.float64)  # 0 = smallest
    p = tf.clip_by_value((rank_asc + 0.5) / nf[:, None], 0.0, 1.0 - 1e-16)
    sigma_safe = tf.where(smooth, sigma, tf.ones_like(sigma))
    k_safe = tf.where(smooth, k_hat, tf.zeros_like(k_hat))
    q = _gpd_quantile(p, k_safe[:, None], sigma_safe[:, None]) + exp_cut[:, None]
    new_tail = tf.minimum(tf.math.log(tf.maximum(q, 1e-300)), 0.0)
    new_tail = tf.where(in_tail & smooth[:, None], new_tail, values)
    rows = tf.broadcast_to(tf.range(tf.shape(lw)[0])[:, None], tf.shape(index))
    smoothed = tf.tensor_scatter_nd_update(padded, tf.stack([rows, index], -1), new_tail)[:, :num]
    smoothed = smoothed + row_max[:, None]
    return tf.cast(smoothed, dtype), tf.cast(k_hat, dtype)


def pareto_khat(log_weights):
    """k̂ [B] of :func:`psis` (see there)."""
    return psis(log_weights)[1]
