"""Weighted posterior summaries per star and parameter: median, p16, p84, mean, std.

Weighted quantiles use the midpoint rule: sort the samples of one parameter, give sample i the
cumulative position c_i = (Σ_{j<i} w_j + w_i/2) / Σ w, and interpolate linearly in c; below the
first (above the last) position the smallest (largest) sample is returned. With equal weights
this is NumPy's ``method="hazen"`` quantile. Samples with zero weight take no part.
Rows whose weights are all zero (no usable sample) get NaN summaries: there is no estimate.

Shapes: samples [B, N, D], weights [B, N] (unnormalised, ≥ 0), results [B, D].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["weighted_quantiles", "weighted_mean_std", "summarize", "SUMMARY_NAMES",
           "DEFAULT_QUANTILES"]

#: Summary names, in the order :func:`summarize` returns them.
SUMMARY_NAMES = ("median", "p16", "p84", "mean", "std")
#: The quantile levels of median, p16 and p84.
DEFAULT_QUANTILES = (0.5, 0.16, 0.84)


def _prepare(samples, weights):
    samples = tf.convert_to_tensor(samples, tf.float32)
    if weights is None:
        weights = tf.ones(tf.shape(samples)[:2], tf.float32)
    weights = tf.convert_to_tensor(weights, tf.float32)
    weights = tf.where(tf.math.is_finite(weights) & (weights > 0), weights, 0.0)
    return samples, weights


def weighted_quantiles(samples, weights=None, quantiles: Sequence[float] = DEFAULT_QUANTILES):
    """Weighted quantiles [B, Q, D] of samples [B, N, D] with weights [B, N] (None = equal)."""
    samples, weights = _prepare(samples, weights)
    q = tf.cast(quantiles if tf.is_tensor(quantiles) else list(quantiles), tf.float64)
    x = tf.transpose(samples, [0, 2, 1])  # [B, D, N]
    w = tf.broadcast_to(weights[:, None, :], tf.shape(x))
    pos = w > 0
    # zero-weight samples sort last and are never interpolated
    key = tf.where(pos, x, np.inf)
    order = tf.argsort(key, axis=-1, stable=True)
    xs = tf.gather(x, order, batch_dims=2)
    # cumulative positions in float64: float32 sums of many weights blur the extreme quantiles
    ws = tf.cast(tf.gather(w, order, batch_dims=2), tf.float64)
    total = tf.reduce_sum(ws, axis=-1, keepdims=True)  # [B, D, 1]
    total_safe = tf.where(total > 0, total, tf.ones_like(total))
    c = (tf.cumsum(ws, axis=-1) - 0.5 * ws) / total_safe
    n_pos = tf.reduce_sum(tf.cast(pos, tf.int32), axis=-1, keepdims=True)  # [B, D, 1]
    c = tf.where(tf.range(tf.shape(c)[-1]) < n_pos, c, 2.0)  # keep zero-weight tail sorted, out of reach
    q = tf.cast(q, tf.float64)
    qb = tf.broadcast_to(q, tf.concat([tf.shape(c)[:2], tf.shape(q)], 0))  # [B, D, Q]
    idx = tf.searchsorted(c, qb, side="right")  # number of positions ≤ q
    last = tf.maximum(n_pos - 1, 0)
    lo = tf.clip_by_value(idx - 1, 0, last)
    hi = tf.clip_by_value(idx, 0, last)
    x_lo, x_hi = tf.gather(xs, lo, batch_dims=2), tf.gather(xs, hi, batch_dims=2)
    c_lo, c_hi = tf.gather(c, lo, batch_dims=2), tf.gather(c, hi, batch_dims=2)
    span = c_hi - c_lo
    t = tf.where(span > 0, tf.clip_by_value((qb - c_lo) / tf.where(span > 0, span, tf.ones_like(span)),
                                            0.0, 1.0), tf.zeros_like(span))
    out = x_lo + tf.cast(t, tf.float32) * (x_hi - x_lo)
    out = tf.where(total > 0, out, np.nan)  # [B, D, Q]
    return tf.transpose(out, [0, 2, 1])


def weighted_mean_std(samples, weights=None):
    """Weighted mean and standard deviation (population form, Σw normalised), each [B, D]."""
    samples, weights = _prepare(samples, weights)
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    has = total > 0
    w = (weights / tf.where(has, total, 1.0))[..., None]  # [B, N, 1]
    x = tf.where(w > 0, samples, 0.0)
    mean = tf.reduce_sum(w * x, axis=1)
    var = tf.reduce_sum(w * tf.square(tf.where(w > 0, x - mean[:, None, :], 0.0)), axis=1)
    nan = tf.constant(np.nan, tf.float32)
    return tf.where(has, mean, nan), tf.where(has, tf.sqrt(var), nan)


def summarize(samples, weights=None, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict:
    """dict(median, p16, p84, mean, std), each [B, D]; ``weights=None`` gives the unweighted
    ("before importance sampling") summaries. ``quantiles`` are the levels of median, p16, p84."""
    qs = weighted_quantiles(samples, weights, quantiles)
    mean, std = weighted_mean_std(samples, weights)
    return {"median": qs[:, 0], "p16": qs[:, 1], "p84": qs[:, 2], "mean": mean, "std": std}
