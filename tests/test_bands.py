import numpy as np
import pytest

from irisml_tf.physics.bands import BAND_NAMES, BANDS, band_index, get_band
from irisml_tf.physics.filters import FilterCurve, load_filter, stored_filter, write_filter

CANONICAL = ["Gaia_G", "Gaia_BP", "Gaia_RP", "GALEX_NUV", "PS1_g", "PS1_r", "PS1_i", "PS1_z", "PS1_y",
             "SDSS_u", "SDSS_g", "SDSS_r", "SDSS_i", "SDSS_z", "SkyMapper_u", "SkyMapper_v", "SkyMapper_g",
             "SkyMapper_r", "SkyMapper_i", "SkyMapper_z", "2MASS_J", "2MASS_H", "2MASS_Ks", "WISE_W1", "WISE_W2"]


def test_registry_names_and_systems():
    assert list(BAND_NAMES) == CANONICAL
    vega = {b.name for b in BANDS if b.system == "Vega"}
    assert vega == {n for n in CANONICAL if n.startswith(("Gaia", "2MASS", "WISE"))}
    assert {b.system for b in BANDS} == {"Vega", "AB"}


def test_catalogue_columns():
    assert "phot_g_mean_mag" in get_band("Gaia_G").mag_cols
    assert get_band("2MASS_J").err_cols[0] == "j_msigcom"
    assert get_band("WISE_W1").mag_cols[0] == "w1mpro" and get_band("WISE_W1").err_cols[0] == "w1sigmpro"
    assert get_band("PS1_g").mag_cols == ("gMeanPSFMag",) and get_band("PS1_g").err_cols == ("gMeanPSFMagErr",)
    assert get_band("SDSS_u").mag_cols == ("psfMag_u",)
    assert get_band("SkyMapper_v").err_cols == ("e_v_psf",)
    assert get_band("GALEX_NUV").err_cols[0] == "nuv_magerr"
    cols = [c.lower() for b in BANDS for c in b.mag_cols + b.err_cols]
    assert len(cols) == len(set(cols)), "a catalogue column may map to one band only"


def test_unknown_band():
    with pytest.raises(KeyError, match="unknown band `Gaia_X`"):
        band_index("Gaia_X")


@pytest.mark.parametrize("name", CANONICAL)
def test_stored_curves(name):
    f = stored_filter(name)
    assert f.wavelength[0] < f.pivot < f.wavelength[-1]
    zp = f.zero_flux(get_band(name).system)
    assert 1e-13 < zp < 1e-6


def test_pivots_match_pyphot():
    from pyphot import get_library

    lib = get_library()
    for b in BANDS:
        assert stored_filter(b.name).pivot == pytest.approx(lib[b.pyphot].lpivot.to("AA").value, rel=1e-4)


def test_filter_sources(tmp_path):
    assert load_filter("SDSS_g").name == "SDSS_g"
    assert load_filter("GaiaDR2v2_G").pivot == pytest.approx(stored_filter("Gaia_G").pivot, rel=1e-6)
    sl = load_filter("twomass-J")
    assert 12000 < sl.pivot < 12600
    path = tmp_path / "tophat.dat"
    w = np.linspace(5000, 6000, 101)
    np.savetxt(path, np.c_[w, np.ones_like(w)], header="wavelength_AA throughput")
    f = load_filter(str(path))
    assert f.name == "tophat"
    assert f.pivot == pytest.approx(np.sqrt((6000**2 - 5000**2) / 2 / np.log(6000 / 5000)), rel=1e-4)
    write_filter(f, tmp_path / "tophat.ecsv")
    g = load_filter(str(tmp_path / "tophat.ecsv"))
    np.testing.assert_array_equal(g.wavelength, f.wavelength)
    # AB zero point of a top hat: <c·3631 Jy/λ²> photon-weighted
    expect = 2.99792458e18 * 3631e-23 * np.trapezoid(w ** -1, w) / np.trapezoid(w, w)
    assert f.zero_flux("AB") == pytest.approx(expect, rel=2e-3)


def test_filter_errors(tmp_path):
    with pytest.raises(KeyError, match="not a file, a band"):
        load_filter("no_such_filter")
    bad = tmp_path / "bad.dat"
    bad.write_text("1 2\nfoo bar\n")
    with pytest.raises(ValueError, match="two numeric columns"):
        load_filter(str(bad))
    with pytest.raises(ValueError, match="strictly increasing"):
        FilterCurve("x", np.array([2.0, 1.0]), np.array([1.0, 1.0]))
