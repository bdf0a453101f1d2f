import dataclasses
import json

import numpy as np
import pytest

from irisml_tf.physics import grid_build as gb
from irisml_tf.physics.bands import BAND_NAMES
from irisml_tf.physics.extinction import band_extinction, planck
from irisml_tf.physics.filters import load_filter
from irisml_tf.physics.grid import GridFileError, StellarGrid, default_grid_path


def test_shipped_grid(grid):
    assert grid.bands == BAND_NAMES
    assert int(grid.node_exists.sum()) == 6343
    assert grid.bounds["teff"] == (2800.0, 16000.0)
    prov = grid.provenance
    assert prov["source"].startswith("astroariadne 1.5.2")
    assert len(prov["source_sha256"]) == 64
    assert set(prov["zero_points"]) == set(BAND_NAMES)
    assert prov["zero_points"]["2MASS_J"]["system"] == "Vega" and prov["zero_points"]["PS1_g"]["system"] == "AB"
    assert "Bohlin" in prov["citations"]["BOSZ"] and "ARIADNE" in prov["citations"]


def test_sun_like_node_is_sun_like(grid):
    """Absolute magnitudes of the 5750 K / 4.5 / 0.0 node against the Sun's (Willmer 2018)."""
    i, j, k = list(grid.teff).index(5750), list(grid.logg).index(4.5), list(grid.mh).index(0.0)
    mag = dict(zip(grid.bands, grid.mag[i, j, k]))
    assert mag["Gaia_G"] == pytest.approx(4.67, abs=0.06)
    assert mag["2MASS_Ks"] == pytest.approx(3.27, abs=0.06)
    assert mag["SDSS_g"] == pytest.approx(5.11, abs=0.06)


#: Per grid array, the absolute and relative tolerance of a rebuild on another machine (CPU, BLAS,
#: thread count change the last bits of sums, the SVD and the F99 integrals). The build rounds mag
#: to 1e-5 mag, ext_coef to 1e-6 and ext_basis to 1e-7, so a last-bit difference before rounding
#: moves a value by one rounding step: hence mag within 2e-5 mag (one step and float32; photometric
#: errors are ≥ 1e-3 mag), ext_basis within 3e-7, and ext_coef within 1e-5 (a coefficient is a dot
#: product of 61 × 13 rounded basis and mean entries with k, so one-step changes there add up to
#: ~1e-6 · √793; 1e-5 in k = A_b / A_V is ≤ 1.5e-4 mag at A_V = 15). The node axes and the
#: validity mask must agree exactly; pivot and zero_flux (filter integrals) to 1e-9 relative.
REBUILD_TOLERANCE = {"teff": (0.0, 0.0), "logg": (0.0, 0.0), "mh": (0.0, 0.0), "av_nodes": (0.0, 0.0),
                     "u_nodes": (0.0, 0.0), "valid": (0.0, 0.0), "mag": (2e-5, 0.0), "ext_coef": (1e-5, 0.0),
                     "ext_basis": (3e-7, 0.0), "pivot": (0.0, 1e-9), "zero_flux": (0.0, 1e-9)}


def grid_differences(rebuilt: StellarGrid, shipped: StellarGrid) -> list[str]:
    """What differs between two grids beyond :data:`REBUILD_TOLERANCE`: one line per array (and
    for bands, systems, provenance apart from the library versions that built it)."""
    found = []
    for name, (atol, rtol) in REBUILD_TOLERANCE.items():
        a, b = getattr(rebuilt, name), getattr(shipped, name)
        if a.shape != b.shape:
            found.append(f"{name}: shape {a.shape} != {b.shape}")
            continue
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        bad = ~(diff <= atol + rtol * np.abs(b.astype(np.float64)))
        if bad.any():
            where = np.unravel_index(np.argmax(np.where(bad, diff, -1.0)), diff.shape)
            found.append(f"{name}: {int(bad.sum())} values off, largest |Δ| {diff[where]:.3g} "
                         f"at {tuple(int(i) for i in where)}")
    for name in ("bands", "systems"):
        if getattr(rebuilt, name) != getattr(shipped, name):
            found.append(f"{name}: {getattr(rebuilt, name)} != {getattr(shipped, name)}")
    prov = [{k: v for k, v in g.provenance.items() if k != "versions"} for g in (rebuilt, shipped)]
    if json.dumps(prov[0], sort_keys=True) != json.dumps(prov[1], sort_keys=True):
        found.append("provenance differs")
    return found


def test_rebuild_matches_the_shipped_grid(ariadne_wheel, grid):
    """Rebuilding from the astroariadne wheel gives the shipped grid's values within
    :data:`REBUILD_TOLERANCE`. (On the machine that built it, the rebuild is byte-identical — the
    file is written deterministically — but float results depend on CPU and BLAS, so only the values
    are asserted.)"""
    assert grid_differences(gb.build_from_ariadne(ariadne_wheel), grid) == []


def test_grid_differences_finds_a_changed_value(grid):
    assert grid_differences(grid, grid) == []
    cases = {"mag": 3e-5, "ext_coef": 2e-5, "ext_basis": 5e-7, "zero_flux": 1e-15}
    for name, delta in cases.items():
        arr = getattr(grid, name).copy()
        arr.flat[arr.size // 2] += delta
        found = grid_differences(dataclasses.replace(grid, **{name: arr}), grid)
        assert len(found) == 1 and found[0].startswith(f"{name}: 1 values off"), found
    valid = grid.valid.copy()
    valid[0, 0, 0, 0] = not valid[0, 0, 0, 0]
    assert [d.split(":")[0] for d in grid_differences(dataclasses.replace(grid, valid=valid), grid)] == ["valid"]
    within = grid.mag.copy()
    within.flat[0] += 1e-5
    assert grid_differences(dataclasses.replace(grid, mag=within), grid) == []
    other = dataclasses.replace(grid, provenance=dict(grid.provenance, source="elsewhere"))
    assert grid_differences(other, grid) == ["provenance differs"]


def test_missing_and_corrupt_files(tmp_path, grid):
    with pytest.raises(GridFileError, match="does not exist"):
        StellarGrid.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(GridFileError, match="corrupt"):
        StellarGrid.load(bad)
    data = default_grid_path().read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GridFileError):
        StellarGrid.load(tmp_path / "truncated.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(GridFileError, match="corrupt or not an irisml-tf grid"):
        StellarGrid.load(tmp_path / "other.npz")


def test_save_load_round_trip(grid, tmp_path):
    d1 = grid.save(tmp_path / "a.npz")
    g2 = StellarGrid.load(tmp_path / "a.npz")
    assert g2.save(tmp_path / "b.npz") == d1
    np.testing.assert_array_equal(g2.mag, grid.mag)
    assert json.dumps(g2.provenance, sort_keys=True) == json.dumps(grid.provenance, sort_keys=True)


def _fake_bosz_dir(tmp_path):
    """A 3×2×2 set of BOSZ-format spectra (2024 native layout): black bodies with a [M/H]- and
    log g-dependent absorption trough, so nodes differ in shape, not only scale."""
    from irisml_tf.physics.bosz import write_bosz_spectrum

    wave = np.geomspace(900.0, 60000.0, 6000)
    nodes = []
    for teff in (5000.0, 5500.0, 6000.0):
        for logg in (4.0, 4.5):
            for mh in (-0.5, 0.0):
                depth = 0.3 * (1 + mh) * (1 + 0.1 * logg)
                trough = 1 - depth * np.exp(-0.5 * ((wave - 4000) / 300) ** 2)
                scale = planck(np.array([5500.0]), np.array([teff]))[0, 0]
                flam = 1e7 * planck(wave, np.array([teff]))[0] / scale * trough
                write_bosz_spectrum(tmp_path, teff, logg, mh, wave, flam)
                nodes.append((teff, logg, mh, flam))
    return wave, nodes


def test_build_from_bosz_spectra(tmp_path, rng):
    from irisml_tf.physics.bosz import scan_bosz_dir
    from irisml_tf.physics.simulator import Simulator

    wave, nodes = _fake_bosz_dir(tmp_path)
    tophat = tmp_path / "my_filter.dat"
    w = np.linspace(7000, 7600, 61)
    np.savetxt(tophat, np.c_[w, np.ones_like(w)])
    specs = ["Gaia_G", "SDSS_u", "2MASS_Ks", "PS1_r", f"{tophat}@Vega"]
    g = gb.build_from_spectra(scan_bosz_dir(tmp_path), specs)
    assert g.bands == ("Gaia_G", "SDSS_u", "2MASS_Ks", "PS1_r", "my_filter")
    assert g.systems == ("Vega", "AB", "Vega", "AB", "Vega")
    assert g.valid.all()
    g.save(tmp_path / "grid.npz")
    g = StellarGrid.load(tmp_path / "grid.npz")
    curves = [load_filter(s.split("@")[0]) for s in specs]
    sim = Simulator(g)
    for teff, logg, mh, flam in nodes:
        av, rv = rng.uniform(0, 15), rng.uniform(2.3, 5.1)
        mags, mask = sim(np.array([[teff, logg, mh, 0.0, rv], [teff, logg, mh, av, rv]], np.float32))
        assert mask.numpy().all()
        flux = np.array([c.band_flux(wave, flam[None])[0] for c in curves]) * gb._DILUTION
        expect = -2.5 * np.log10(flux / g.zero_flux)
        np.testing.assert_allclose(mags.numpy()[0], expect, atol=2e-4)
        a_direct = band_extinction(wave, flam[None], curves, np.array([av]), np.array([rv]))[0, :, 0, 0]
        np.testing.assert_allclose(mags.numpy()[1] - mags.numpy()[0], a_direct, atol=5e-3)


def test_bosz_cli(tmp_path):
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    _fake_bosz_dir(tmp_path / "spectra")
    out = tmp_path / "g.npz"
    r = CliRunner().invoke(main, ["grid", "build", "--bosz-dir", str(tmp_path / "spectra"), "--bands", "Gaia_G",
                                  "--bands", "2MASS_J", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "12 nodes, 2 bands" in r.output
    r = CliRunner().invoke(main, ["grid", "info", str(out)])
    assert r.exit_code == 0 and "Gaia_G, 2MASS_J" in r.output
    r = CliRunner().invoke(main, ["grid", "build", "--bosz-dir", str(tmp_path / "spectra"), "--bands", "nope",
                                  "--out", str(out)])
    assert r.exit_code != 0 and "nope" in r.output
