"""Fitzpatrick (1999) extinction integrated through filter curves over a star's spectrum.

A_V is defined exactly as the monochromatic F99 extinction at 5414 Å, the law's V normalisation
point: A_λ = A_V · k(λ; R_V) / k(5414 Å; R_V) with k from ``extinction.fitzpatrick99`` (whose own
normalisation drifts by ~1e-4 with R_V; we divide it out). Band extinction is

    A_b = −2.5 log10( ∫F_λ S_b λ 10^(−0.4 A_λ) dλ / ∫F_λ S_b λ dλ ),

computed here in numpy on spectra (real BOSZ spectra, or proxy spectra rebuilt from band fluxes when
only photometry exists); the TF simulator interpolates the tables these functions fill.
"""
from __future__ import annotations

import numpy as np

from .filters import FilterCurve

__all__ = ["V_WAVELENGTH", "f99_curve", "band_extinction", "band_k", "planck", "proxy_spectra", "PROXY_WAVE"]

V_WAVELENGTH = 5414.0  # Å; A_V ≡ A(5414 Å)
# proxy spectra live on this log-spaced grid (R ≈ 1000), 900 Å – 8 µm, wide enough for all curves
PROXY_WAVE = np.geomspace(900.0, 80000.0, 4500)


def f99_curve(wave: np.ndarray, rv: float) -> np.ndarray:
    """A_λ / A_V of F99 at ``wave`` [Å] for one R_V, exactly 1 at 5414 Å."""
    import extinction

    w = np.concatenate([np.asarray(wave, float), [V_WAVELENGTH]])
    # F99 is defined 0.1–3.5 µm^-1 in the IR/optical and 3.5–10 µm^-1 in the UV; `extinction`
    # refuses outside 910 Å – 6 µm, so extrapolate with the λ^-1.84-like IR tail held by the last value
    inside = (w >= 910.0) & (w <= 60000.0)
    k = np.empty_like(w)
    k[inside] = extinction.fitzpatrick99(w[inside], 1.0, rv)
    if np.any(w > 60000.0):
        k_edge = extinction.fitzpatrick99(np.array([60000.0]), 1.0, rv)[0]
        k[w > 60000.0] = k_edge * (w[w > 60000.0] / 60000.0) ** -1.84
    if np.any(w < 910.0):
        k[w < 910.0] = extinction.fitzpatrick99(np.array([910.0]), 1.0, rv)[0]
    return k[:-1] / k[-1]


def band_extinction(wave: np.ndarray, flam: np.ndarray, curves: list[FilterCurve],
                    av: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """Direct integration: A_b for spectra ``flam`` (N, L) on ``wave`` (L,) [Å].

    Returns shape (N, len(curves), len(av), len(rv)) in mag. Spectra with zero flux in a band give
    NaN there (the band is invalid for that star).
    """
    rv = np.atleast_1d(np.asarray(rv, float))
    k = np.stack([f99_curve(wave, r) for r in rv])  # (R, L)
    return _band_extinction(np.atleast_2d(np.asarray(flam, float)), [c.weights(wave) for c in curves],
                            np.asarray(av, float), k)


def _band_extinction(flam: np.ndarray, weights: list[np.ndarray], av: np.ndarray, k: np.ndarray) -> np.ndarray:
    """band_extinction on precomputed curve weights (each (L,)) and F99 curves k (R, L)."""
    out = np.full((flam.shape[0], len(weights), av.size, k.shape[0]), np.nan)
    for j, w in enumerate(weights):
        sel = w > 0
        fw = flam[:, sel] * w[sel]  # (N, Ls)
        f0 = fw.sum(1)
        ok = f0 > 0
        for r in range(k.shape[0]):
            att = 10.0 ** (-0.4 * np.outer(av, k[r, sel]))  # (A, Ls)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[ok, j, :, r] = -2.5 * np.log10((fw[ok] @ att.T) / f0[ok, None])
    return out


def band_k(wave: np.ndarray, flam: np.ndarray, curves: list[FilterCurve],
           av: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """k_b = A_b / A_V on (av, rv) nodes, shape (N, B, A, R); at A_V = 0 its limit, the
    photon-weighted mean of A_λ/A_V over the band."""
    flam = np.atleast_2d(np.asarray(flam, float))
    av = np.asarray(av, float)
    rv = np.atleast_1d(np.asarray(rv, float))
    k = np.stack([f99_curve(wave, r) for r in rv])  # (R, L)
    weights = [c.weights(wave) for c in curves]
    pos = av > 0
    out = np.empty((flam.shape[0], len(curves), av.size, rv.size))
    out[:, :, pos] = _band_extinction(flam, weights, av[pos], k) / av[pos, None]
    if np.any(~pos):
        k_lr = np.ascontiguousarray(k.T)  # (L, R), C-ordered as before so the BLAS sums are unchanged
        for j, w in enumerate(weights):
            fw = flam * w
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, j, ~pos] = ((fw @ k_lr) / fw.sum(1, keepdims=True))[:, None, :]
    return out


def planck(wave: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Black-body B_λ shape (arbitrary scale) at ``wave`` [Å] for each ``teff`` [K], shape (N, L)."""
    x = 1.4387769e8 / (np.asarray(wave, float)[None, :] * np.asarray(teff, float)[:, None])
    return wave[None, :] ** -5 / np.expm1(np.minimum(x, 700.0))


def proxy_spectra(teff: np.ndarray, band_flux: np.ndarray, curves: list[FilterCurve],
                  wave: np.ndarray = PROXY_WAVE, smooth: float = 1e-3) -> np.ndarray:
    """Spectra rebuilt from band fluxes, for stars known only through photometry.

    The proxy is a black body of the star's Teff times a non-negative correction, piecewise linear
    in log λ with knots at the bands' pivot wavelengths (pivots closer than 4 % merged) and at the
    ends of ``wave``. The correction is linear in its knot values, so they are fitted by
    non-negative least squares to the band fluxes (N, M) in relative units, with a small
    second-difference penalty ``smooth``. Bands with non-positive flux are left out for that star.
    Returns F_λ (N, L) on ``wave``.
    """
    from scipy.optimize import nnls

    teff = np.atleast_1d(np.asarray(teff, float))
    band_flux = np.atleast_2d(np.asarray(band_flux, float))
    weights = np.stack([c.weights(wave) for c in curves], axis=1)  # (L, M)
    pivots = np.sort([c.pivot for c in curves])
    knots = [pivots[0]]
    for p in pivots[1:]:
        if p / knots[-1] > 1.04:
            knots.append(p)
    knots = np.log(np.concatenate([[wave[0]], knots, [wave[-1]]]))
    nk = len(knots)
    hat = np.stack([np.interp(np.log(wave), knots, row) for row in np.eye(nk)], axis=1)  # (L, K)
    bb = planck(wave, teff)
    # band flux of star n from knot k: A[n, m, k] = Σ_l bb[n, l] hat[l, k] weights[l, m]
    design = (bb @ (hat[:, :, None] * weights[:, None, :]).reshape(len(wave), -1)).reshape(-1, nk, len(curves))
    second = np.diff(np.eye(nk), 2, axis=0)
    out = np.empty_like(bb)
    for n in range(len(teff)):
        ok = band_flux[n] > 0
        a = design[n][:, ok].T / band_flux[n, ok, None]  # relative residuals
        scale = np.median(a.sum(1))
        pen = smooth * np.sqrt(ok.sum()) * scale * second
        coef, _ = nnls(np.vstack([a, pen]), np.concatenate([np.ones(ok.sum()), np.zeros(nk - 2)]))
        out[n] = bb[n] * (hat @ coef)
    return out
