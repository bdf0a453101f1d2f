"""Simulated catalogues as tables: θ from the prior (optionally pinned), magnitudes from the
simulator, then the observation model (brightness, errors, noise, missing bands) — the stars the
model is trained on — or, noiseless, the simulator's magnitudes at μ = 0."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from ..physics.bands import BAND_NAMES
from ..physics.grid import load_grid
from ..physics.prior import Prior
from ..physics.simulator import PARAM_NAMES, Simulator
from .observation import ObservationConfig, ObservationModel

__all__ = ["simulate_table"]

_BATCH = 65536
_MAX_ROUNDS = 200
_OBSERVATION_KEY = 0x0B5  # second word of the observation draws' key (θ uses [seed, round])


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


def _observation_model(config, bands) -> ObservationModel:
    unknown = [b for b in bands if b not in BAND_NAMES]
    if unknown:
        raise ValueError(f"the observation model knows the 25 registry bands only, not {', '.join(unknown)}: "
                         "simulate this grid noiseless")
    return ObservationModel(config, bands=bands)


def simulate_table(n: int, seed: int = 0, fixed: dict[str, float] | None = None,
                   prior: str | Path | dict | None = None, grid: str | Path | None = None,
                   observe: bool = True, observation: Mapping | ObservationConfig | None = None,
                   all_bands: bool = False, progress: bool = False) -> pd.DataFrame:
    """A table of n simulated stars: teff, logg, mh, av, rv, then ``<band>``, ``<band>_err`` in the
    grid's band order; NaN where a band is absent. Same arguments → identical table.

    observe: True → :class:`~irisml_tf.data.observation.ObservationModel` with config
    ``observation`` (default: the training default) draws each star's brightness, errors, noise
    and missing bands; ``all_bands`` keeps every band the grid models for the star (its
    ``force_bands``: a band beyond the survey's limit keeps σ = ``err_max``). False → noiseless
    magnitudes at μ = 0 (1 R☉ at 10 pc), errors 0, every valid band.
    """
    g = load_grid(grid)
    sim, pri = Simulator(g), Prior(prior, g)
    bands = list(sim.bands)  # the grid's order: the simulator's columns
    obs = _observation_model(observation, bands) if observe else None
    force = np.ones(len(bands), bool) if all_bands else None
    theta = _fixed_thetas(pri, sim, n, seed, fixed or {})
    mags = np.full((n, len(bands)), np.nan, np.float32)
    errs = np.full((n, len(bands)), np.nan, np.float32)
    starts = range(0, n, _BATCH)
    if progress and n > _BATCH:
        from tqdm import tqdm

        starts = tqdm(starts, desc="simulate", unit="batch")
    key = tf.constant([seed, _OBSERVATION_KEY], tf.int32)
    for i, s in enumerate(starts):
        m, valid = sim(theta[s:s + _BATCH])
        if obs is None:
            m, e, present = m.numpy(), np.zeros(m.shape, np.float32), valid.numpy()
        else:
            x = obs(m, valid, tf.random.experimental.stateless_fold_in(key, i), force_bands=force)
            m, e, present = x["mag"].numpy(), x["mag_err"].numpy(), x["band_index"].numpy() >= 0
        mags[s:s + _BATCH] = np.where(present, m, np.nan)
        errs[s:s + _BATCH] = np.where(present, e, np.nan)
    cols = {name: theta[:, i] for i, name in enumerate(PARAM_NAMES)}
    for j, b in enumerate(bands):
        cols[b] = mags[:, j]
        cols[f"{b}_err"] = errs[:, j]
    return pd.DataFrame(cols)
