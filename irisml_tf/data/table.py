"""Simulated catalogues as tables: θ from the prior (optionally pinned), magnitudes from the
simulator, optional Gaussian noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from ..physics.bands import BANDS
from ..physics.grid import load_grid
from ..physics.prior import Prior
from ..physics.simulator import PARAM_NAMES, Simulator

__all__ = ["simulate_table"]

_BATCH = 65536
_MAX_ROUNDS = 200


def _fixed_thetas(prior: Prior, sim: Simulator, n: int, seed: int, fixed: dict[str, float]) -> np.ndarray:
    """n prior draws with ``fixed`` parameters pinned, keeping only rows inside the simulator's support."""
    lo, hi = sim.lower, sim.upper
    for name, value in fixed.items():
        i = PARAM_NAMES.index(name)
        if not lo[i] <= value <= hi[i]:
            raise ValueError(f"--fix {name}={value}: outside the grid's range {lo[i]:g} – {hi[i]:g}")
    out, have = [], 0
    for r in range(_MAX_ROUNDS):
        th = prior.sample(_BATCH if fixed else min(_BATCH, n - have), tf.constant([seed, r], tf.int32)).numpy()
        for name, value in fixed.items():
            th[:, PARAM_NAMES.index(name)] = value
        if fixed:
            th = th[sim.in_support(th).numpy()]
        out.append(th)
        have += len(th)
        if have >= n:
            return np.concatenate(out)[:n]
    raise ValueError(f"found only {have} of {n} stars inside the grid's support with {fixed}")


def simulate_table(n: int, seed: int = 0, fixed: dict[str, float] | None = None,
                   noise: dict[str, float] | None = None, prior: str | Path | dict | None = None,
                   grid: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """A table of n simulated stars: teff, logg, mh, av, rv, then ``<band>``, ``<band>_err``.

    noise: per-survey 1σ [mag] for Gaussian noise, or None for noiseless (errors 0). Same seed →
    identical table. Bands invalid for a star (zero flux in the grid) are NaN.
    """
    g = load_grid(grid)
    sim, pri = Simulator(g), Prior(prior, g)
    theta = _fixed_thetas(pri, sim, n, seed, fixed or {})
    mags = np.empty((n, sim.num_bands), np.float32)
    mask = np.empty((n, sim.num_bands), bool)
    starts = range(0, n, _BATCH)
    if progress and n > _BATCH:
        from tqdm import tqdm

        starts = tqdm(starts, desc="simulate", unit="batch")
    for s in starts:
        m, v = sim(theta[s:s + _BATCH])
        mags[s:s + _BATCH], mask[s:s + _BATCH] = m.numpy(), v.numpy()
    bands = list(sim.bands)  # the grid's order: the simulator's columns
    survey = {b.name: b.survey for b in BANDS}
    # a band outside the registry (a custom filter) gets the largest survey error
    sigma = np.array([(noise.get(survey.get(b), max(noise.values())) if noise else 0.0) for b in bands],
                     np.float32)
    if noise:
        eps = tf.random.stateless_normal((n, len(bands)), tf.constant([seed, -1], tf.int32)).numpy()
        mags = mags + sigma * eps
    mags = np.where(mask, mags, np.nan)
    errs = np.where(mask, sigma, np.nan)
    cols = {name: theta[:, i] for i, name in enumerate(PARAM_NAMES)}
    for j, b in enumerate(bands):
        cols[b] = mags[:, j]
        cols[f"{b}_err"] = errs[:, j]
    return pd.DataFrame(cols)
