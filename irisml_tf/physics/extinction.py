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
    flam = np.atleast_2d(np.asarray(flam, float))
    av = np.asarray(av, float)
    rv = np.atleast_1d(np.asarray(rv, float))
    out = np.full((flam.shape[0], len(curves), av.size, rv.size), np.nan)
    k = np.stack([f99_curve(wave, r) for r in rv])  # (R, L)
    for j, curve in enumerate(curves):
        w = curve.weights(wave)
        sel = w > 0
        fw = flam[:, sel] * w[sel]  # (N, Ls)
        f0 = fw.sum(1)
        ok = f0 > 0
        for r in range(rv.size):
            att = 10.0 ** (-0.4 * np.outer(av, k[r, sel]))  # (A, Ls)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[ok, j, :, r] = -2.5 * np.log10((fw[ok] @ att.T) / f0[ok, None])
    return out


def band_k(wave: np.ndarray, flam: np.ndarray, curves: list[FilterCurve],
           av: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """k_b = A_b / A_V on (av, rv) nodes, shape (N, B, A, R); at A_V = 0 its limit, the
    photon-weighted mean of A_λ/A_V over the band."""
    av = np.asarray(av, float)
    rv = np.atleast_1d(np.asarray(rv, float))
    pos = av > 0
    out = np.empty((np.atleast_2d(flam).shape[0], len(curves), av.size, rv.size))
    out[:, :, pos] = band_extinction(wave, flam, curves, av[pos], rv) / av[pos, None]
    if np.any(~pos):
        flam = np.atleast_2d(np.asarray(flam, float))
        k = np.stack([f99_curve(wave, r) for r in rv], axis=1)  # (L, R)
        for j, curve in enumerate(curves):
            fw = flam * curve.weights(wave)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, j, ~pos] = ((fw @ k) / fw.sum(1, keepdims=True))[:, None, :]
    return out


def planck(wave: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Black-body B_λ shape (arbitrary scale) at ``wave`` [Å] for each ``teff`` [K], shape (N, L)."""
    x = 1.4387769e8 / (np.asarray(wave, float)[None, :] * np.asarray(teff, float)[:, None])
    return wave[None, :] ** -5 / np.expm1(np.minimum(x, 700.0))


def proxy_spectra(teff: np.ndarray, band_flux: np.ndarray, curves: list[FilterCurve],
                  wave: np.ndarray = PROXY_WAVE, iterations: int = 30) -> np.ndarray:
    """Spectra rebuilt from band fluxes, for stars known only through photometry.

    The proxy is a black body of the star's Teff times a correction that is piecewise linear in
    (log λ, log ratio) through the bands' pivot wavelengths and constant beyond the outermost ones;
    the ratios are iterated until the proxy's own band fluxes reproduce ``band_flux`` (N, M).
    Bands with non-positive flux are left out for that star. Returns F_λ (N, L) on ``wave``.
    """
    teff = np.asarray(teff, float)
    band_flux = np.asarray(band_flux, float)
    pivots = np.array([c.pivot for c in curves])
    order = np.argsort(pivots)
    pivots, band_flux = pivots[order], band_flux[:, order]
    weights = np.stack([curves[i].weights(wave) for i in order], axis=1)  # (L, M)
    bb = planck(wave, teff)
    valid = band_flux > 0
    log_ratio = np.where(valid, np.log(np.where(valid, band_flux, 1.0) / (bb @ weights)), 0.0)
    logl, logp = np.log(wave), np.log(pivots)
    for _ in range(iterations):
        corr = np.stack([np.interp(logl, logp[v], lr[v]) for lr, v in zip(log_ratio, valid)])
        spec = bb * np.exp(corr)
        log_ratio = log_ratio + np.where(valid, np.log(np.where(valid, band_flux, 1.0) / (spec @ weights)), 0.0)
    corr = np.stack([np.interp(logl, logp[v], lr[v]) for lr, v in zip(log_ratio, valid)])
    return bb * np.exp(corr)
