"""The engine with a parallax, on the shipped model: main-sequence stars (and one giant) built from
the simulator with Gaia + 2MASS + WISE photometry and a 1 % parallax (issue 11's acceptance test)."""
from __future__ import annotations

import numpy as np
import pytest

BANDS = ("Gaia_G", "Gaia_BP", "Gaia_RP", "2MASS_J", "2MASS_H", "2MASS_Ks", "WISE_W1", "WISE_W2")
# teff, logg, mh, av, rv; mass (M☉); distance (pc)
STARS = np.array([[5772, 4.44, 0.0, 0.1, 3.1], [4500, 4.6, -0.2, 0.2, 3.1], [6500, 4.2, 0.1, 0.3, 3.1],
                  [4800, 2.5, -0.3, 0.2, 3.1]], np.float32)
MASS = np.array([1.0, 0.75, 1.3, 1.2])
DISTANCE = np.array([100.0, 50.0, 200.0, 800.0])


@pytest.fixture(scope="module")
def shipped():
    from irisml_tf.serving import load_model

    model = load_model()
    sim, prior = model.physics()
    return model, sim, prior, model.posterior()


def _photometry(model, sim, rng):
    import tensorflow as tf

    radius = np.sqrt(MASS / 10 ** (STARS[:, 1] - 4.438))
    mu = 5 * np.log10(DISTANCE / 10) - 5 * np.log10(radius)
    bi = np.array([[model.bands.index(b) for b in BANDS]] * len(STARS), np.int32)
    mags, _ = sim(tf.constant(STARS))
    mag = mags.numpy()[np.arange(len(STARS))[:, None], bi] + mu[:, None] + rng.normal(0, 0.01, bi.shape)
    return {"band_index": bi, "mag": mag.astype(np.float32), "mag_err": np.full(bi.shape, 0.01, np.float32)}, radius


def test_a_one_percent_parallax_separates_dwarfs_from_giants(shipped):
    from irisml_tf.inference.engine import DERIVED_NAMES, run_engine
    from irisml_tf.rowseed import call_seeds

    model, sim, prior, posterior = shipped
    x, radius = _photometry(model, sim, np.random.default_rng(1))
    plx = 1000.0 / DISTANCE

    def run(**kw):
        return run_engine(posterior, sim, prior, x, call_seeds(3, len(STARS)), model.observation.sys_floor,
                          options=model.meta.engine_options, num_samples=256, target_ess=300.0, **kw)

    colours = run()
    both = run(plx=plx, plx_err=0.01 * plx)
    logg, logg_colours = both["median"].numpy()[:, 1], colours["median"].numpy()[:, 1]
    assert np.all(np.abs(logg - STARS[:, 1]) <= 0.2), logg
    assert np.all(both["std"].numpy()[:, 1] < 0.6 * colours["std"].numpy()[:, 1])
    assert np.max(np.abs(logg_colours - STARS[:, 1])) > 0.5  # colours alone cannot tell
    derived = both["derived_median"].numpy()
    at = {k: i for i, k in enumerate(DERIVED_NAMES)}
    np.testing.assert_allclose(derived[:, at["radius"]], radius, rtol=0.10)
    np.testing.assert_allclose(derived[:, at["distance"]], DISTANCE, rtol=0.03)
    lo, hi = both["derived_p16"].numpy(), both["derived_p84"].numpy()
    assert np.all((lo <= derived) & (derived <= hi))
    assert np.all(np.isnan(colours["derived_median"].numpy()))  # no parallax, no derived quantities


def test_a_star_without_parallax_keeps_its_colour_posterior(shipped):
    """Rows without a parallax in a batch with one: the same posterior, bit for bit, as in a batch
    without any (row 0 takes another number of rounds, so the others share their later rounds with
    another set of rows)."""
    from irisml_tf.inference.engine import run_engine
    from irisml_tf.rowseed import call_seeds

    model, sim, prior, posterior = shipped
    x, _ = _photometry(model, sim, np.random.default_rng(2))
    seeds = call_seeds(5, len(STARS))
    kw = dict(options=model.meta.engine_options, num_samples=64, target_ess=100.0)
    plain = run_engine(posterior, sim, prior, x, seeds, model.observation.sys_floor, **kw)
    plx = np.array([10.0, np.nan, np.nan, np.nan], np.float32)
    mixed = run_engine(posterior, sim, prior, x, seeds, model.observation.sys_floor, plx=plx,
                       plx_err=np.full(4, 0.1, np.float32), **kw)
    for name in ("median", "p16", "p84", "ess", "samples"):
        np.testing.assert_array_equal(mixed[name].numpy()[1:], plain[name].numpy()[1:], err_msg=name)
    assert np.all(np.isnan(mixed["derived_median"].numpy()[1:]))
    assert mixed["std"].numpy()[0, 1] < 0.6 * plain["std"].numpy()[0, 1]  # row 0's log g: the parallax
