"""The prior p(θ), θ = (teff, logg, mh, av, rv), in TensorFlow: stateless sampling and log_prob.

    logg ~ U(logg.low, logg.high)
    mh | logg ~ disc/halo Gaussian mixture, truncated to [M/H] cells that hold a complete grid cell
                at that log g
    teff | logg, mh ~ log-uniform over the complete grid cells at that (log g, [M/H]) cell
    av ~ av.offset + Exp(mean av.mean), truncated at av.max
    rv ~ N(rv.mean, rv.std) truncated to [rv.low, rv.high]

Its support is exactly the simulator's (cells whose 8 corners exist) intersected with these ranges.
Defaults follow the reference design (science.md); everything is configurable (configs/prior.yaml).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import tensorflow as tf
from scipy.special import ndtr

from ..yaml_io import load_yaml
from .grid import StellarGrid, load_grid
from .simulator import locate, uniform_index

__all__ = ["Prior", "DEFAULT_PRIOR", "load_prior_config"]

DEFAULT_PRIOR = {
    "logg": {"low": 0.1, "high": 5.5},
    "mh": {"components": [{"weight": 0.75, "mean": -0.1, "std": 0.2},
                          {"weight": 0.25, "mean": -1.49, "std": 0.4}]},
    "av": {"offset": 0.003, "mean": 1.5, "max": 15.0},
    "rv": {"mean": 3.13, "std": 0.18, "low": 2.5, "high": 4.5},
}
_LN10 = np.log(10.0)
_MH_STEP = 1e-3  # resolution of the tabulated [M/H] inverse CDF


def load_prior_config(source: str | Path | dict | None = None) -> dict:
    """Validated prior config: defaults overridden by a YAML file or dict; unknown keys, wrong
    types and impossible values raise ValueError naming the key."""
    cfg = copy.deepcopy(DEFAULT_PRIOR)
    if source is None:
        return cfg
    user = source if isinstance(source, dict) else load_yaml(Path(source).read_text()) or {}
    if "prior" in user and isinstance(user["prior"], dict) and set(user) == {"prior"}:
        user = user["prior"]
    for key, value in user.items():
        if key not in cfg:
            raise ValueError(f"prior: unknown key `{key}`; known: {', '.join(cfg)}")
        if not isinstance(value, dict):
            raise ValueError(f"prior: `{key}` must be a mapping")
        for sub, v in value.items():
            if sub not in cfg[key]:
                raise ValueError(f"prior: unknown key `{key}.{sub}`; known: {', '.join(cfg[key])}")
            cfg[key][sub] = v
    _check(cfg)
    return cfg


def _num(cfg, path):
    d = cfg
    for p in path.split("."):
        d = d[p]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not np.isfinite(d):
        raise ValueError(f"prior: `{path}` must be a finite number, got {d!r}")
    return float(d)


def _check(cfg):
    if not _num(cfg, "logg.low") < _num(cfg, "logg.high"):
        raise ValueError("prior: `logg.low` must be below `logg.high`")
    if _num(cfg, "av.mean") <= 0 or _num(cfg, "av.offset") < 0 or _num(cfg, "av.max") <= _num(cfg, "av.offset"):
        raise ValueError("prior: need `av.mean` > 0, `av.offset` ≥ 0 and `av.max` > `av.offset`")
    if _num(cfg, "rv.std") <= 0 or not _num(cfg, "rv.low") < _num(cfg, "rv.high"):
        raise ValueError("prior: need `rv.std` > 0 and `rv.low` < `rv.high`")
    comps = cfg["mh"]["components"]
    if not isinstance(comps, list) or not comps:
        raise ValueError("prior: `mh.components` must be a non-empty list of {weight, mean, std}")
    for i, c in enumerate(comps):
        if not isinstance(c, dict) or set(c) != {"weight", "mean", "std"}:
            raise ValueError(f"prior: `mh.components[{i}]` needs exactly weight, mean, std")
        for k in ("weight", "mean", "std"):
            _num({"c": c}, f"c.{k}")
        if c["weight"] <= 0 or c["std"] <= 0:
            raise ValueError(f"prior: `mh.components[{i}]` needs weight > 0 and std > 0")


class Prior(tf.Module):
    """``sample(n, seed)`` → θ float32 (n, 5); ``log_prob(theta)`` → float32 (n,), −inf outside."""

    def __init__(self, config: dict | str | Path | None = None, grid: StellarGrid | str | None = None,
                 name: str = "prior"):
        super().__init__(name=name)
        self.config = load_prior_config(config)
        grid = grid if isinstance(grid, StellarGrid) else load_grid(grid)
        c = self.config
        b = grid.bounds
        self.logg_low = max(c["logg"]["low"], b["logg"][0])
        self.logg_high = min(c["logg"]["high"], b["logg"][1])
        self.av_low, self.av_high = max(c["av"]["offset"], b["av"][0]), min(c["av"]["max"], b["av"][1])
        self.rv_low, self.rv_high = max(c["rv"]["low"], b["rv"][0]), min(c["rv"]["high"], b["rv"][1])
        if self.logg_low >= self.logg_high or self.av_low >= self.av_high or self.rv_low >= self.rv_high:
            raise ValueError("prior: its ranges do not overlap the grid's")
        self.lower = np.array([grid.teff[0], self.logg_low, grid.mh[0], self.av_low, self.rv_low], np.float32)
        self.upper = np.array([grid.teff[-1], self.logg_high, grid.mh[-1], self.av_high, self.rv_high], np.float32)
        self._build_tables(grid)

    # -- tables ----------------------------------------------------------------------------------
    def _build_tables(self, grid: StellarGrid):
        ok = grid.cell_ok  # (T-1, G-1, M-1)
        log_t = np.log10(grid.teff)
        width = np.diff(log_t)[:, None, None] * ok  # log-teff width of complete cells
        z_teff = width.sum(0)  # (G-1, M-1)
        mh_has = z_teff > 0
        g0, dg = grid.logg[0], grid.logg[1] - grid.logg[0]
        m0, dm = grid.mh[0], grid.mh[1] - grid.mh[0]
        self._g = (float(g0), float(dg), len(grid.logg))
        self._m = (float(m0), float(dm), len(grid.mh))
        # mh | logg cell: mixture density on a fine grid, zero in cells without complete teff cells
        mh_fine = np.arange(grid.mh[0], grid.mh[-1] + _MH_STEP / 2, _MH_STEP)
        comps = self.config["mh"]["components"]
        wsum = sum(cp["weight"] for cp in comps)
        mix = sum(cp["weight"] / wsum * np.exp(-0.5 * ((mh_fine - cp["mean"]) / cp["std"]) ** 2)
                  / (cp["std"] * np.sqrt(2 * np.pi)) for cp in comps)
        mcell = np.clip(np.floor((mh_fine - m0) / dm), 0, len(grid.mh) - 2).astype(int)
        dens = mix[None, :] * mh_has[:, mcell]  # (G-1, F)
        cdf = np.concatenate([np.zeros((dens.shape[0], 1)),
                              np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * _MH_STEP, axis=1)], axis=1)
        norm = cdf[:, -1]
        if np.any(norm <= 0):
            bad = grid.logg[:-1][norm <= 0]
            raise ValueError(f"prior: no [M/H] mass on the grid at log g cells starting {bad}")
        self._mh_fine = tf.constant(mh_fine, tf.float32)
        self._mh_cdf = tf.constant(cdf / norm[:, None], tf.float32)
        self._mh_lognorm = tf.constant(np.log(norm), tf.float32)
        self._mix = [(float(cp["weight"] / wsum), float(cp["mean"]), float(cp["std"])) for cp in comps]
        # teff | (logg cell, mh cell): piecewise log-uniform over complete cells
        cum = np.concatenate([np.zeros((1,) + width.shape[1:]), np.cumsum(width, 0)], 0)  # (T, G-1, M-1)
        zsafe = np.where(z_teff > 0, z_teff, 1.0)
        self._teff_cdf = tf.constant(np.transpose(cum / zsafe, (1, 2, 0)), tf.float32)  # (G-1, M-1, T)
        self._teff_logz = tf.constant(np.log(zsafe), tf.float32)
        self._log_teff = tf.constant(log_t, tf.float32)
        self._cell_ok = tf.constant(ok)
        # av, rv truncation constants
        c = self.config
        self._av_mean = float(c["av"]["mean"])
        self._av_mass = float(1 - np.exp(-(self.av_high - self.av_low) / self._av_mean))
        self._rv = (float(c["rv"]["mean"]), float(c["rv"]["std"]))
        self._rv_cdf = (float(ndtr((self.rv_low - self._rv[0]) / self._rv[1])),
                        float(ndtr((self.rv_high - self._rv[0]) / self._rv[1])))
        self._lo, self._hi = tf.constant(self.lower), tf.constant(self.upper)

    def _cells(self, theta):
        it, _, ig, _, im, _ = locate(theta[:, 0], theta[:, 1], theta[:, 2], self._log_teff, self._g, self._m)
        return it, ig, im

    # -- log_prob --------------------------------------------------------------------------------
    @tf.function(reduce_retracing=True)
    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        theta = tf.convert_to_tensor(theta, tf.float32)
        inside = (tf.reduce_all(tf.math.is_finite(theta), -1)
                  & tf.reduce_all((theta >= self._lo) & (theta <= self._hi), -1))
        safe = tf.where(inside[:, None], theta, 0.5 * (self._lo + self._hi))
        teff, logg, mh, av, rv = tf.unstack(safe, axis=-1)
        it, ig, im = self._cells(safe)
        cell = tf.gather_nd(self._cell_ok, tf.stack([it, ig, im], -1))
        lp = -tf.math.log(self.logg_high - self.logg_low) * tf.ones_like(logg)
        mix = tf.add_n([w * tf.exp(-0.5 * tf.square((mh - mu) / sd)) / (sd * np.sqrt(2 * np.pi))
                        for w, mu, sd in self._mix])
        lp += tf.math.log(mix) - tf.gather(self._mh_lognorm, ig)
        # log-uniform teff: p(teff) = 1 / (teff ln10 Z)
        lp += -tf.math.log(teff * _LN10) - tf.gather_nd(self._teff_logz, tf.stack([ig, im], -1))
        lp += -(av - self.av_low) / self._av_mean - np.log(self._av_mean * self._av_mass)
        z = (rv - self._rv[0]) / self._rv[1]
        lp += -0.5 * tf.square(z) - np.log(self._rv[1] * np.sqrt(2 * np.pi) * (self._rv_cdf[1] - self._rv_cdf[0]))
        return tf.where(inside & cell, lp, -np.inf)

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, n: int, seed) -> tf.Tensor:
        """θ (n, 5) float32 from a stateless seed (int32 [2] or an int): same seed, same draws."""
        if isinstance(seed, (int, np.integer)):
            seed = tf.constant([0, int(seed)], tf.int32)
        return self._sample(tf.convert_to_tensor(n, tf.int32), tf.cast(seed, tf.int32))

    @tf.function(reduce_retracing=True)
    def _sample(self, n, seed):
        u = tf.random.stateless_uniform(tf.stack([n, 5]), seed, minval=1e-7, maxval=1 - 1e-7)
        logg = self.logg_low + (self.logg_high - self.logg_low) * u[:, 0]
        ig, _ = uniform_index(logg, *self._g)
        # [M/H]: inverse of the tabulated CDF of its logg row
        rows = tf.gather(self._mh_cdf, ig)  # (n, F)
        j = tf.clip_by_value(tf.searchsorted(rows, u[:, 1:2], side="right")[:, 0] - 1, 0, rows.shape[1] - 2)
        c0 = tf.gather(rows, j, batch_dims=1)
        c1 = tf.gather(rows, j + 1, batch_dims=1)
        frac = tf.clip_by_value((u[:, 1] - c0) / tf.maximum(c1 - c0, 1e-12), 0.0, 1.0)
        mh = tf.gather(self._mh_fine, j) + _MH_STEP * frac
        im, _ = uniform_index(mh, *self._m)
        # teff: inverse CDF of the piecewise log-uniform density
        tcdf = tf.gather_nd(self._teff_cdf, tf.stack([ig, im], -1))  # (n, T)
        k = tf.clip_by_value(tf.searchsorted(tcdf, u[:, 2:3], side="right")[:, 0] - 1, 0, tcdf.shape[1] - 2)
        a0 = tf.gather(tcdf, k, batch_dims=1)
        a1 = tf.gather(tcdf, k + 1, batch_dims=1)
        f = tf.clip_by_value((u[:, 2] - a0) / tf.maximum(a1 - a0, 1e-12), 1e-6, 1 - 1e-6)
        lt = tf.gather(self._log_teff, k) + f * (tf.gather(self._log_teff, k + 1) - tf.gather(self._log_teff, k))
        teff = tf.pow(10.0, lt)
        av = self.av_low - self._av_mean * tf.math.log1p(-u[:, 3] * self._av_mass)
        p = self._rv_cdf[0] + u[:, 4] * (self._rv_cdf[1] - self._rv_cdf[0])
        rv = self._rv[0] + self._rv[1] * tf.math.ndtri(p)
        theta = tf.stack([teff, logg, mh, av, rv], -1)
        return tf.clip_by_value(theta, self._lo, self._hi)
