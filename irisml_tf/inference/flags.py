"""Per-star quality flags, in TensorFlow (bool / int32 tensors; names are attached in Python later).

- ``low_efficiency``: importance-sampling efficiency below ``min_efficiency`` (the engine passes
  ESS / target ESS with ``min_efficiency`` = 1: the star stopped short of its target ESS).
- ``high_khat``: Pareto k̂ above ``max_khat`` (0.7: the weights cannot be trusted).
- ``bad_chi2``: the best (maximum-likelihood) sample's χ² is improbable: p-value of χ² with
  n_bands − 1 degrees of freedom (μ is fitted) below ``chi2_pvalue_threshold``. Conservative: θ is fitted
  too, and the best of N samples is used.
- ``outside_grid``: the posterior piles up at the edge of the prior box in the grid dimensions
  (weighted fraction of samples within ``edge_margin`` of a bound above ``max_edge_fraction``),
  or most flow samples fall outside the simulator's support (unweighted fraction of samples
  with zero prior or no valid model magnitudes above ``max_unsupported_fraction``).
- ``outlier``: leave-one-band-out at the best sample: dropping band k (μ refitted without it)
  lowers χ² by Δ_k = w_k e_k² / (1 − w_k/W) (e_k the residual about μ̂, W = Σ w; Δ_k ~ χ²₁ if
  the band fits). If max_k Δ_k > ``outlier_delta_chi2`` the band is named in ``outlier_band``
  (its band index; −1 otherwise). Needs at least ``min_outlier_bands`` observed bands (with two
  bands the two Δ are equal and no band can be blamed), and the band must carry at least
  ``outlier_min_fraction`` of the best sample's χ² (Δ_k ≤ χ² always): a fit that is bad
  everywhere is ``bad_chi2``, not one band's fault.
- ``no_weight``: every importance weight is zero (no sample fits at all; summaries are NaN).

``bits`` packs them into one int32 with the ``FLAG_*`` values below.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from irisml_tf.inference.likelihood import LikelihoodTerms

__all__ = ["compute_flags", "best_sample_index", "leave_one_band_out", "chi2_pvalue",
           "edge_fraction", "FLAG_BITS", "FLAG_OUTSIDE_GRID", "FLAG_LOW_EFFICIENCY",
           "FLAG_HIGH_KHAT", "FLAG_BAD_CHI2", "FLAG_OUTLIER", "FLAG_NO_WEIGHT", "flag_names",
           "DEFAULT_FLAG_OPTIONS"]

FLAG_OUTSIDE_GRID = 1
FLAG_LOW_EFFICIENCY = 2
FLAG_HIGH_KHAT = 4
FLAG_BAD_CHI2 = 8
FLAG_OUTLIER = 16
FLAG_NO_WEIGHT = 32
#: name → bit, in the order of the bits.
FLAG_BITS = {"outside_grid": FLAG_OUTSIDE_GRID, "low_efficiency": FLAG_LOW_EFFICIENCY,
             "high_khat": FLAG_HIGH_KHAT, "bad_chi2": FLAG_BAD_CHI2, "outlier": FLAG_OUTLIER,
             "no_weight": FLAG_NO_WEIGHT}

#: Thresholds of :func:`compute_flags` (keyword arguments of the same names).
DEFAULT_FLAG_OPTIONS = {
    "min_efficiency": 0.01,
    "max_khat": 0.7,
    "chi2_pvalue_threshold": 1e-3,
    "outlier_delta_chi2": 25.0,
    "min_outlier_bands": 3,
    "outlier_min_fraction": 0.5,
    "edge_margin": 0.02,
    "edge_dims": (0, 1, 2),
    "max_edge_fraction": 0.5,
    "max_unsupported_fraction": 0.5,
}


def flag_names(bits: int) -> list[str]:
    """Python helper: the names of the flags set in ``bits``."""
    return [name for name, bit in FLAG_BITS.items() if int(bits) & bit]


def best_sample_index(log_lik):
    """Index [B] (int32) of the maximum-likelihood sample of each row (0 if all are −inf)."""
    return tf.argmax(log_lik, axis=-1, output_type=tf.int32)


def chi2_pvalue(chi2, dof):
    """P(χ²_dof > chi2), elementwise; 1 where dof ≤ 0, 0 where chi2 = inf."""
    chi2 = tf.convert_to_tensor(chi2, tf.float32)
    dof = tf.cast(dof, tf.float32)
    ok = dof > 0
    p = tf.math.igammac(tf.where(ok, dof, 1.0) / 2.0, tf.maximum(chi2, 0.0) / 2.0)
    p = tf.where(tf.math.is_inf(chi2), 0.0, p)
    return tf.where(ok, p, 1.0)


def leave_one_band_out(terms: LikelihoodTerms, best, band_index,
                       threshold=DEFAULT_FLAG_OPTIONS["outlier_delta_chi2"],
                       min_bands=DEFAULT_FLAG_OPTIONS["min_outlier_bands"],
                       min_fraction=DEFAULT_FLAG_OPTIONS["outlier_min_fraction"]):
    """Leave-one-band-out test at the sample ``best`` [B] of each row (see the module docstring).

    Returns (outlier_band int32 [B]: band index or −1, delta_chi2 float32 [B, K]: χ² drop when
    each slot is left out, 0 on pads).
    """
    resid = tf.gather(terms.residual, best[:, None], batch_dims=1)[:, 0]  # [B, K]
    supported = tf.gather(terms.supported, best[:, None], batch_dims=1)[:, 0]  # [B]
    w = terms.weight
    w_sum = tf.reduce_sum(w, axis=-1, keepdims=True)
    rest = w_sum - w
    usable = terms.observed & (rest > 0) & supported[:, None]
    delta = tf.where(usable, w * tf.square(resid) * w_sum / tf.where(usable, rest, 1.0), 0.0)
    slot = tf.argmax(delta, axis=-1, output_type=tf.int32)
    largest = tf.reduce_max(delta, axis=-1)
    chi2 = tf.gather(terms.chi2, best[:, None], batch_dims=1)[:, 0]
    hit = ((largest > threshold) & (terms.n_bands >= min_bands) & supported
           & (largest >= min_fraction * chi2))
    band = tf.gather(tf.cast(band_index, tf.int32), slot[:, None], batch_dims=1)[:, 0]
    return tf.where(hit, band, -1), delta


def edge_fraction(samples, weights, lower, upper, margin=DEFAULT_FLAG_OPTIONS["edge_margin"],
                  dims: Sequence[int] = DEFAULT_FLAG_OPTIONS["edge_dims"], log_dims: Sequence[int] = (0,)):
    """Weighted fraction [B] of samples within ``margin`` (a fraction of the range; log range
    for ``log_dims``) of the box [lower, upper] in ``dims``. Rows without weight give 0."""
    samples = tf.convert_to_tensor(samples, tf.float32)
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    near = tf.zeros(tf.shape(samples)[:2], tf.bool)
    for d in dims:
        x = samples[..., d]
        lo, hi = float(lower[d]), float(upper[d])
        if d in log_dims:
            x, lo, hi = tf.math.log(tf.maximum(x, 1e-30)), float(np.log(lo)), float(np.log(hi))
        band = margin * (hi - lo)
        near = near | (x <= lo + band) | (x >= hi - band)
    weights = tf.convert_to_tensor(weights, tf.float32)
    total = tf.reduce_sum(weights, axis=-1)
    frac = tf.reduce_sum(tf.where(near, weights, 0.0), axis=-1) / tf.where(total > 0, total, 1.0)
    return tf.where(total > 0, frac, 0.0)


def compute_flags(terms: LikelihoodTerms, band_index, samples, weights, log_prior, efficiency,
                  khat, lower, upper, **options) -> dict:
    """All flags for one batch.

    Args:
      terms: :class:`LikelihoodTerms` of the samples; band_index: int32 [B, K].
      samples: θ [B, N, 5]; weights: normalised importance weights [B, N];
      log_prior: [B, N]; efficiency, khat: [B];
      lower, upper: the prior box (5 entries each).
      options: overrides of :data:`DEFAULT_FLAG_OPTIONS` (thresholds; module docstring).

    Returns dict of [B] tensors: the bool flags (``outside_grid``, ``low_efficiency``,
    ``high_khat``, ``bad_chi2``, ``outlier``, ``no_weight``), ``bits`` int32, ``outlier_band``
    int32 (band index, −1 = none), ``chi2`` and ``mu`` of the best sample, ``chi2_pvalue``,
    ``n_bands`` int32, ``edge_fraction``, ``unsupported_fraction``, ``best_index`` int32,
    ``max_delta_chi2`` (largest leave-one-band-out χ² drop).
    """
    unknown = sorted(set(options) - set(DEFAULT_FLAG_OPTIONS))
    if unknown:
        raise ValueError(f"unknown flag option(s) {unknown}; known: {', '.join(DEFAULT_FLAG_OPTIONS)}")
    o = {**DEFAULT_FLAG_OPTIONS, **options}
    best = best_sample_index(terms.log_lik)
    chi2_best = tf.gather(terms.chi2, best[:, None], batch_dims=1)[:, 0]
    mu_best = tf.gather(terms.mu, best[:, None], batch_dims=1)[:, 0]
    pval = chi2_pvalue(chi2_best, terms.n_bands - 1)
    outlier_band, delta = leave_one_band_out(terms, best, band_index, o["outlier_delta_chi2"],
                                             o["min_outlier_bands"], o["outlier_min_fraction"])
    weights = tf.convert_to_tensor(weights, tf.float32)
    total = tf.reduce_sum(weights, axis=-1)
    no_weight = ~(total > 0)
    edge = edge_fraction(samples, weights, lower, upper, o["edge_margin"], o["edge_dims"])
    unsupported = ~(terms.supported & tf.math.is_finite(log_prior))
    unsup_frac = tf.reduce_mean(tf.cast(unsupported, tf.float32), axis=-1)
    flags = {
        "outside_grid": (edge > o["max_edge_fraction"]) | (unsup_frac > o["max_unsupported_fraction"]),
        "low_efficiency": tf.convert_to_tensor(efficiency, tf.float32) < o["min_efficiency"],
        "high_khat": tf.convert_to_tensor(khat, tf.float32) > o["max_khat"],
        "bad_chi2": pval < o["chi2_pvalue_threshold"],
        "outlier": outlier_band >= 0,
        "no_weight": no_weight,
    }
    bits = tf.add_n([tf.cast(flags[name], tf.int32) * bit for name, bit in FLAG_BITS.items()])
    return dict(flags, bits=bits, outlier_band=outlier_band, chi2=chi2_best, mu=mu_best,
                chi2_pvalue=pval, n_bands=terms.n_bands, edge_fraction=edge,
                unsupported_fraction=unsup_frac, best_index=best,
                max_delta_chi2=tf.reduce_max(delta, axis=-1))
