"""Test stars: fixed, reproducible sets of simulated stars in named band sets (``irisml-tf evaluate``,
the benchmarks).

θ comes from the model's prior, magnitudes from THE simulator, catalogue errors, noise and missing
bands from the run's observation model (:class:`~irisml_tf.data.observation.ObservationModel`;
``ref_mag`` may be overridden). Every band set sees the same stars with the same brightness and
noise; only the observed bands differ:

* ``all``: the 25 bands; ``gaia_2mass_wise``: Gaia G/BP/RP + 2MASS J/H/Ks + WISE W1/W2 (8);
  ``gaia``: G/BP/RP (3). Fixed sets keep every one of their bands the model can predict, however
  faint: a band past its survey's detection limit is kept at σ = ``err_max`` (0.3 mag by default),
  so errors range from ``err_min`` to ``err_max`` (0.002–0.3 mag by default) for reference
  magnitudes (mean over the star's bands) uniform in ``ref_mag`` (8–20 mag by default).
* ``random``: the observation model's own missing-band draws (survey blocks, drops, random subsets).

The stars are :func:`~irisml_tf.data.stream.fixed_set` with their own key word, independent of the
training stream's and the validation set's keys: the same seed gives the same stars.

Parallaxes (:func:`simulate_test_parallaxes`): the stars' distances follow from their offset μ and
a mass drawn from the model's mass prior (:func:`irisml_tf.physics.parallax.simulate_parallax`),
with Gaia DR3-like errors at each star's apparent G, or a fixed fractional error.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from irisml_tf.physics.bands import BAND_NAMES

__all__ = ["BAND_SETS", "TEST_SET_KEY", "PARALLAX_KEY", "simulate_test_sets", "simulate_test_parallaxes",
           "parallax_error_model", "pack_observed"]

#: band set name → its bands (None = the observation model's random missing-band draws)
BAND_SETS: dict[str, tuple[str, ...] | None] = {
    "all": BAND_NAMES,
    "gaia_2mass_wise": ("Gaia_G", "Gaia_BP", "Gaia_RP", "2MASS_J", "2MASS_H", "2MASS_Ks", "WISE_W1", "WISE_W2"),
    "gaia": ("Gaia_G", "Gaia_BP", "Gaia_RP"),
    "random": None,
}

#: second word of the test-set key: independent of the training stream's and validation set's keys
TEST_SET_KEY = 0xE7A1
#: second word of the test parallaxes' key
PARALLAX_KEY = 0x91A7


def simulate_test_sets(sim, prior, observation, n: int, seed: int, sets: Sequence[str],
                       ref_mag: Sequence[float] | None = None) -> tuple[np.ndarray, dict]:
    """θ [n, 5] and, per band set, ``band_index`` int32 / ``mag`` / ``mag_err`` float32 [n, K] and
    ``mu`` float32 [n] (the stars' magnitude offset, the same in every set).

    ``sim``, ``prior``: the model's (:meth:`~irisml_tf.serving.ExportedModel.physics`);
    ``observation``: its :class:`~irisml_tf.data.observation.ObservationConfig` (or the plain
    dict form); ``ref_mag``: (lo, hi) overriding its reference magnitude range. Every set has the
    same stars and noise. Rows are packed by :func:`pack_observed`.
    """
    import tensorflow as tf

    from irisml_tf.data.observation import ObservationConfig, ObservationModel
    from irisml_tf.data.stream import fixed_set

    unknown = [s for s in sets if s not in BAND_SETS]
    if unknown:
        raise ValueError(f"unknown band set(s) {unknown}; known: {', '.join(BAND_SETS)}")
    config = ObservationConfig.from_dict(observation)
    if ref_mag is not None:  # through from_dict again: the override is validated like a config
        config = ObservationConfig.from_dict(dict(config.to_dict(), ref_mag=[float(v) for v in ref_mag]))
    obs = ObservationModel(config, bands=sim.bands)
    out, theta = {}, None
    for s in sets:
        mask = None if BAND_SETS[s] is None else tf.constant([b in BAND_SETS[s] for b in sim.bands])
        x = fixed_set(prior, sim, obs, n, seed, TEST_SET_KEY, mask)
        theta, mu = x.pop("theta"), x.pop("mu")
        out[s] = dict(pack_observed(x), mu=mu.astype(np.float32))
    return theta.astype(np.float32), out


def pack_observed(x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Observed bands first in each row (order kept), columns that are padding in every row
    dropped (at least one column kept): shorter sets run faster."""
    order = np.argsort(x["band_index"] < 0, axis=1, kind="stable")
    k = max(int((x["band_index"] >= 0).sum(1).max(initial=0)), 1)
    return {name: np.take_along_axis(v, order, axis=1)[:, :k] for name, v in x.items()}


def parallax_error_model(value) -> str | float:
    """``"gaia"`` or a fractional error f in (0, 1] (σ_ϖ = f ϖ_true), from a string or a number;
    ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "gaia":
        return "gaia"
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"parallax errors: 'gaia' or a fraction of the parallax in (0, 1], got {value!r}") from None
    if not 0.0 < f <= 1.0:
        raise ValueError(f"parallax errors: a fraction of the parallax must be in (0, 1], got {f}")
    return f


def simulate_test_parallaxes(sim, theta: np.ndarray, mu: np.ndarray, error, seed: int,
                             mass_prior=None) -> dict[str, np.ndarray]:
    """Parallaxes of test stars (zero-point corrected: pass ``parallax_zero_point=0``), float32 [n]:
    ``parallax``, ``parallax_error`` (mas) and the truths ``distance`` (pc), ``radius``, ``mass``,
    ``luminosity`` (solar units; L = R² (Teff / 5772 K)⁴).

    ``error``: :func:`parallax_error_model`'s ``"gaia"`` (Gaia DR3 errors at the star's apparent G,
    model G + μ) or a fraction f (σ_ϖ = f ϖ_true, S/N 1/f). ``mass_prior``: the model's
    (:class:`~irisml_tf.physics.parallax.MassPrior`; the engine assumes it, so the test is fair).
    The same (θ, μ, error, seed) give the same parallaxes.
    """
    import tensorflow as tf

    from irisml_tf.physics.parallax import MassPrior, luminosity, simulate_parallax

    error = parallax_error_model(error)
    theta = np.asarray(theta, np.float32)
    mags, valid = sim(tf.constant(theta))
    g = sim.bands.index("Gaia_G")
    g_mag = np.where(valid.numpy()[:, g], mags.numpy()[:, g], np.nan) + np.asarray(mu, np.float32)
    sp = simulate_parallax(theta, np.asarray(mu, np.float32), g_mag, tf.constant([int(seed), PARALLAX_KEY]),
                           mass_prior or MassPrior(), frac_err=None if error == "gaia" else error)
    out = {"parallax": np.asarray(sp.plx, np.float32), "parallax_error": np.asarray(sp.plx_err, np.float32),
           **{k: np.asarray(getattr(sp, k), np.float32) for k in ("distance", "radius", "mass")}}
    out["luminosity"] = luminosity(out["radius"], theta[:, 0]).astype(np.float32)
    return out
