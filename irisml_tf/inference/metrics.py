"""Accuracy and calibration metrics of posteriors against known truths, in plain NumPy.

Shapes: S stars, N draws per star, D parameters; ``samples`` [S, N, D], ``weights`` [S, N]
(≥ 0, any normalisation; None = equal weights), ``truth`` [S, D].

* Point accuracy (:func:`point_errors`): error e = estimate − truth per star; RMSE, bias (mean e),
  MAD = median |e − median(e)| and NMAD = 1.4826 · MAD (the Gaussian-equivalent σ).
* PIT (:func:`pit`): u = P(draw < truth) + ½ P(draw = truth) under the (weighted) marginal of each
  star. For a calibrated posterior u is uniform on [0, 1] (Talts et al. 2018, Cook et al. 2006).
* Coverage (:func:`coverage_from_pit`): the truth lies in the central α interval of the marginal
  iff |u − ½| ≤ α/2, so the expected coverage at level α is the fraction of stars with that; a
  calibrated posterior gives coverage ≈ α (binomial noise √(α(1−α)/S)), an overconfident one less.
* SBC ranks (:func:`sbc_ranks`, :func:`rank_histogram`): the rank of the truth among L posterior
  draws, 0 … L, from the PIT as ⌊u (L + 1)⌋ (the weighted CDF × (L + 1); with N = L unweighted
  draws and no ties it is exactly the count of draws below the truth). Uniform for a calibrated
  posterior; ∪-shaped when too narrow, ∩-shaped when too wide, sloped when biased.

* Sampling errors (:func:`rmse_standard_error`, :func:`coverage_standard_error`,
  :func:`median_standard_error`): the standard error of a statistic over S stars, so that a
  target can be judged only where the sample decides it (``irisml-tf evaluate``).

Stars whose row has no usable weight (all zero or non-finite) or no finite estimate get NaN and
are left out of every aggregate; the functions report how many were used.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["point_errors", "relative_rmse", "pit", "coverage_from_pit", "coverage",
           "max_abs_deviation", "sbc_ranks", "rank_histogram", "distribution_summary",
           "rmse_standard_error", "coverage_standard_error", "median_standard_error",
           "DEFAULT_LEVELS", "NMAD_SCALE"]

#: Nominal levels α of the central intervals: 0.01, 0.02, …, 0.99.
DEFAULT_LEVELS = np.round(np.arange(1, 100) / 100.0, 2)
#: MAD → σ of a Gaussian.
NMAD_SCALE = 1.4826


def point_errors(estimate, truth) -> dict:
    """RMSE, bias, MAD, NMAD of ``estimate`` [S, D] against ``truth`` [S, D], each [D].

    Per parameter, only stars with a finite estimate count; ``n`` [D] says how many.
    """
    est = np.asarray(estimate, np.float64)
    truth = np.asarray(truth, np.float64)
    if est.shape != truth.shape:
        raise ValueError(f"`estimate` {est.shape} and `truth` {truth.shape} must have the same shape")
    err = est - truth
    ok = np.isfinite(err)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore"):
        e = np.where(ok, err, np.nan)
        rmse = np.sqrt(np.nanmean(e ** 2, axis=0)) if e.size else np.full(e.shape[1:], np.nan)
        bias = np.nanmean(e, axis=0)
        centre = np.nanmedian(e, axis=0)
        mad = np.nanmedian(np.abs(e - centre), axis=0)
    return {"rmse": rmse, "bias": bias, "mad": mad, "nmad": NMAD_SCALE * mad, "n": n}


def relative_rmse(estimate, truth) -> float:
    """RMSE of (estimate − truth) / truth over stars with a finite estimate (e.g. Teff: 0.03 = 3 %)."""
    est = np.asarray(estimate, np.float64)
    truth = np.asarray(truth, np.float64)
    rel = (est - truth) / truth
    rel = rel[np.isfinite(rel)]
    return float(np.sqrt(np.mean(rel ** 2))) if rel.size else float("nan")


def pit(samples, truth, weights=None) -> np.ndarray:
    """Probability integral transform u [S, D] of the truth under each star's marginal draws.

    Args:
      samples: draws [S, N, D]. truth: [S, D]. weights: [S, N] or None (equal weights).

    Returns u = Σ_i w_i ([x_i < t] + ½ [x_i = t]) / Σ_i w_i; NaN for rows without usable weight.
    """
    x = np.asarray(samples, np.float64)
    t = np.asarray(truth, np.float64)
    if x.ndim != 3 or t.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"`samples` must be [S, N, D] and `truth` [S, D]; got {x.shape} and {t.shape}")
    if weights is None:
        w = np.ones(x.shape[:2])
    else:
        w = np.asarray(weights, np.float64)
        if w.shape != x.shape[:2]:
            raise ValueError(f"`weights` must have shape {x.shape[:2]}, got {w.shape}")
        w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    total = w.sum(axis=1)  # [S]
    below = (x < t[:, None, :]) + 0.5 * (x == t[:, None, :])  # [S, N, D]
    num = np.einsum("sn,snd->sd", w, below)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = num / total[:, None]
    u[~(total > 0)] = np.nan
    return u


def coverage_from_pit(u, levels: Sequence[float] = DEFAULT_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Expected coverage of central intervals from PIT values u [S, D].

    Returns (coverage [L, D], n [D]): the fraction of stars with |u − ½| ≤ α/2 at each level α,
    over the ``n`` stars whose u is finite.
    """
    u = np.asarray(u, np.float64)
    levels = np.asarray(levels, np.float64)
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError("`levels` must lie strictly between 0 and 1")
    ok = np.isfinite(u)
    n = ok.sum(axis=0)
    dev = np.abs(np.where(ok, u, 0.5) - 0.5)[None]  # [1, S, D]
    inside = (dev <= 0.5 * levels[:, None, None] + 1e-12) & ok[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inside.sum(axis=1) / n, n


def coverage(samples, truth, levels: Sequence[float] = DEFAULT_LEVELS, weights=None) -> np.ndarray:
    """Expected coverage [L, D] of central intervals of the (weighted) draws; see :func:`pit`."""
    return coverage_from_pit(pit(samples, truth, weights), levels)[0]


def max_abs_deviation(cov, levels: Sequence[float] = DEFAULT_LEVELS) -> np.ndarray:
    """max over levels of |coverage − α|, per parameter: cov [L, D] → [D]."""
    return np.nanmax(np.abs(np.asarray(cov) - np.asarray(levels, np.float64)[:, None]), axis=0)


def sbc_ranks(u, num_ranks: int) -> np.ndarray:
    """SBC ranks 0 … ``num_ranks`` (int [S, D], −1 where u is NaN) from PIT values u [S, D]."""
    u = np.asarray(u, np.float64)
    ok = np.isfinite(u)
    r = np.floor(np.where(ok, u, 0.0) * (num_ranks + 1))
    return np.where(ok, np.clip(r, 0, num_ranks), -1).astype(np.int64)


def rank_histogram(ranks, num_ranks: int, bins: int = 20, band: float = 0.99) -> dict:
    """Histogram of SBC ranks per parameter, with the uniform expectation.

    Args:
      ranks: int [S, D] in 0 … ``num_ranks`` (negative = unused star).
      bins: number of equal bins over the num_ranks + 1 possible ranks (at most that many).
      band: central probability of the per-bin binomial band drawn around the expectation.

    Returns dict: ``edges`` [bins + 1] (rank edges), ``counts`` [bins, D] (int), ``expected``
    [bins, D] (count per bin if uniform), ``band_lo`` / ``band_hi`` [bins, D] (binomial ``band``
    interval of each bin), ``pvalue`` [D] (χ² test of uniformity over the bins), ``n`` [D]
    (stars used).
    """
    ranks = np.asarray(ranks)
    bins = int(min(bins, num_ranks + 1))
    edges = np.linspace(0, num_ranks + 1, bins + 1)
    d = ranks.shape[1]
    counts = np.zeros((bins, d), np.int64)
    n = np.zeros(d, np.int64)
    for j in range(d):
        r = ranks[:, j][ranks[:, j] >= 0]
        n[j] = r.size
        counts[:, j] = np.histogram(r, bins=edges)[0]
    # bins of unequal width (ranks not divisible): expectation proportional to the ranks they hold
    held = np.diff(np.ceil(edges))
    p = held / held.sum()
    expected = n[None, :] * p[:, None]  # [bins, D]
    lo = stats.binom.ppf(0.5 * (1 - band), n[None, :], p[:, None])
    hi = stats.binom.ppf(0.5 * (1 + band), n[None, :], p[:, None])
    pvalue = np.full(d, np.nan)
    for j in range(d):
        if n[j] > 0 and bins > 1:
            pvalue[j] = stats.chisquare(counts[:, j], expected[:, j]).pvalue
    return {"edges": edges, "counts": counts, "expected": expected, "band_lo": lo, "band_hi": hi,
            "pvalue": pvalue, "n": n}


def distribution_summary(x, quantiles: Sequence[float] = (0.05, 0.16, 0.5, 0.84, 0.95)) -> dict:
    """Quantiles (keys ``p5``, ``p16``, …), ``mean`` and ``n`` of the finite values of x."""
    x = np.asarray(x, np.float64).ravel()
    x = x[np.isfinite(x)]
    out = {f"p{100 * q:g}": (float(np.quantile(x, q)) if x.size else float("nan")) for q in quantiles}
    out["mean"] = float(x.mean()) if x.size else float("nan")
    out["n"] = int(x.size)
    return out


def rmse_standard_error(errors) -> float:
    """Standard error of the RMSE of ``errors`` (finite values of any shape; NaN below 2).

    Delta method on the mean square m = mean(e²): se(m) = sd(e²) / √n and
    se(√m) = se(m) / (2 √m). Holds for any error distribution with a finite fourth moment (for
    Gaussian errors it is ≈ RMSE / √(2n)).
    """
    e = np.asarray(errors, np.float64).ravel()
    sq = e[np.isfinite(e)] ** 2
    if sq.size < 2 or not sq.mean() > 0:
        return float("nan")
    return float(sq.std(ddof=1) / np.sqrt(sq.size) / (2.0 * np.sqrt(sq.mean())))


def coverage_standard_error(level, n):
    """Binomial standard error √(α(1 − α)/n) of an empirical coverage at nominal ``level`` α over
    ``n`` stars (elementwise; NaN where n < 1)."""
    level = np.asarray(level, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(level * (1.0 - level) / np.where(n >= 1, n, np.nan))
    return float(out) if out.ndim == 0 else out


def median_standard_error(x) -> float:
    """Standard error of the median of ``x`` (finite values; NaN below 2), distribution-free.

    The count of values below the true median is Binomial(n, ½), with sd √n / 2, so the order
    statistics at levels ½ ± 1/(2√n) span ± 1 σ of the sample median: σ is half their distance.
    """
    v = np.asarray(x, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan")
    half = 0.5 / np.sqrt(v.size)
    lo, hi = np.quantile(v, [max(0.5 - half, 0.0), min(0.5 + half, 1.0)])
    return float(0.5 * (hi - lo))
