"""Column matching, row preparation and chunked table I/O (no TensorFlow)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irisml_tf.catalog import TableWriter, count_rows, iter_table, read_table
from irisml_tf.columns import DEFAULT_ERR, count_status, flux_to_mag, match_columns, prepare_rows, status_key
from irisml_tf.physics.bands import BAND_NAMES, GAIA_ZERO_POINTS, get_band

DATA = Path(__file__).parent / "data"
#: the default observation model's input limits (what a model trained on it passes)
LIMITS = {"min_bands": 3, "err_min": 0.002, "err_max": 0.3}

#: bad_catalogue.csv: expected status per row (flags of a model aside), see tests/data/README.md
BAD_EXPECTED = [
    "ok", "ok", "dropped:Gaia_RP=inf", "dropped:2MASS_Ks=inf", "default_err:2MASS_J=nonpositive_err",
    "default_err:2MASS_H=nonpositive_err", "dropped:WISE_W1=sentinel", "dropped:2MASS_Ks=sentinel",
    "dropped:Gaia_RP=sentinel", "dropped:SDSS_u=sentinel", "default_err:SDSS_u=sentinel_err",
    "default_err:WISE_W1=sentinel_err", "default_err:2MASS_Ks=nan_err", "dropped:2MASS_H=err_above_max",
    "ok", "dropped:2MASS_J=out_of_range", "dropped:WISE_W1=out_of_range", "dropped:2MASS_H=text",
    "default_err:2MASS_Ks=text_err", "default_err:WISE_W2=no_err_column", "dropped:Gaia_BP=nonpositive_flux",
    "default_err:Gaia_G=nonpositive_err", "skipped:too_few_bands(2<3)", "skipped:too_few_bands(0<3)",
    "dropped:Gaia_BP=text;dropped:Gaia_RP=sentinel;skipped:too_few_bands(1<3)", "ok", "ok"]
BAD_COUNTS = {"ok": 5, "dropped:sentinel": 5, "default_err:nonpositive_err": 3, "skipped:too_few_bands": 3,
              "dropped:inf": 2, "default_err:sentinel_err": 2, "dropped:out_of_range": 2, "dropped:text": 2,
              "default_err:nan_err": 1, "dropped:err_above_max": 1, "default_err:text_err": 1,
              "default_err:no_err_column": 1, "dropped:nonpositive_flux": 1}


def _pairs(match):
    return {b.band: (b.mag or b.flux, b.err or b.flux_over_error or b.flux_err) for b in match.bands}


def test_survey_names():
    cols = ["source_id", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_bp_mean_mag_error", "j_m", "j_msigcom",
            "w1mpro", "w1sigmpro", "gMeanPSFMag", "gMeanPSFMagErr", "psfMag_u", "psfMagErr_u", "u_psf",
            "e_u_psf", "nuv_mag", "nuv_magerr", "Ksmag", "e_Ksmag", "RPmag", "e_RPmag"]
    m = match_columns(cols)
    assert _pairs(m) == {
        "Gaia_G": ("phot_g_mean_mag", None), "Gaia_BP": ("phot_bp_mean_mag", "phot_bp_mean_mag_error"),
        "Gaia_RP": ("RPmag", "e_RPmag"), "GALEX_NUV": ("nuv_mag", "nuv_magerr"),
        "PS1_g": ("gMeanPSFMag", "gMeanPSFMagErr"), "SDSS_u": ("psfMag_u", "psfMagErr_u"),
        "SkyMapper_u": ("u_psf", "e_u_psf"), "2MASS_J": ("j_m", "j_msigcom"), "2MASS_Ks": ("Ksmag", "e_Ksmag"),
        "WISE_W1": ("w1mpro", "w1sigmpro")}
    assert m.band_names == tuple(b for b in BAND_NAMES if b in _pairs(m))  # registry order
    assert m.ignored == {"source_id": "not a band column"} and not m.duplicates
    report = m.report()
    assert "matched 10 band(s)" in report and "phot_g_mean_mag ± none (default error)" in report
    assert "not a band column: source_id" in report


def test_case_insensitive_and_blanks():
    m = match_columns(["PHOT_G_MEAN_MAG", " J_M ", "gaia_bp", "GAIA_BP_ERR", "W2MPRO", "w2SigMpro"])
    assert _pairs(m) == {"Gaia_G": ("PHOT_G_MEAN_MAG", None), "Gaia_BP": ("gaia_bp", "GAIA_BP_ERR"),
                         "2MASS_J": (" J_M ", None), "WISE_W2": ("W2MPRO", "w2SigMpro")}


def test_duplicates_preference():
    cols = ["Gmag", "phot_g_mean_mag", "Gaia_G", "j_m", "J_M", "Jmag", "h_m", "h_m.1", "e_Hmag", "h_msigcom",
            "Kmag", "Ksmag", "mystery.1"]
    m = match_columns(cols)
    # canonical beats every alias; then registry order (phot_g_mean_mag before Gmag, j_m before Jmag,
    # h_msigcom before e_Hmag, Kmag before Ksmag); the same alias twice: the first in the table
    assert _pairs(m) == {"Gaia_G": ("Gaia_G", None), "2MASS_J": ("j_m", None), "2MASS_H": ("h_m", "h_msigcom"),
                         "2MASS_Ks": ("Kmag", None)}
    assert m.duplicates == {"Gmag": "Gaia_G", "phot_g_mean_mag": "Gaia_G", "J_M": "j_m", "Jmag": "j_m",
                            "h_m.1": "h_m", "e_Hmag": "h_msigcom", "Ksmag": "Kmag"}
    assert m.ignored == {"mystery.1": "not a band column"}
    assert "h_m.1  (using h_m)" in m.report()


def test_error_without_magnitude_and_unused_fluxes():
    m = match_columns(["e_Jmag", "phot_g_mean_mag", "phot_g_mean_mag_error", "phot_g_mean_flux",
                       "phot_g_mean_flux_over_error", "phot_g_mean_flux_error"])
    assert _pairs(m) == {"Gaia_G": ("phot_g_mean_mag", "phot_g_mean_mag_error")}
    assert m.ignored["e_Jmag"] == "no magnitude or flux column for 2MASS_J"
    assert set(m.ignored) == {"e_Jmag", "phot_g_mean_flux", "phot_g_mean_flux_over_error",
                              "phot_g_mean_flux_error"}


def test_gaia_zero_points_in_registry():
    # Riello et al. 2021 (A&A 649, A3), Table 3, Vega system, fluxes in e-/s
    assert GAIA_ZERO_POINTS == {"G": 25.6874, "BP": 25.3385, "RP": 24.7479}
    assert get_band("Gaia_RP").flux_zero_point == 24.7479
    assert get_band("2MASS_J").flux_zero_point is None


def test_gaia_flux_conversion_by_hand():
    # G flux 1e4 e-/s: 25.6874 − 2.5·4 = 15.6874 mag; F/σ_F = 500: σ = 2.5/ln10/500 = 0.00217147 mag
    mag, err = flux_to_mag([1e4, 0.0, -3.0], 25.6874, [500.0, 500.0, 500.0])
    assert mag[0] == pytest.approx(15.6874, abs=1e-9)
    assert err[0] == pytest.approx(0.0021714724, rel=1e-7)
    assert np.isnan(mag[1:]).all()
    # through prepare_rows: G from flux + flux_over_error, BP from flux + flux_error, RP magnitude
    # with its error from the flux columns (no magnitude error column)
    df = pd.DataFrame({"phot_g_mean_flux": [1e4], "phot_g_mean_flux_over_error": [50.0],
                       "phot_bp_mean_flux": [2000.0], "phot_bp_mean_flux_error": [40.0],
                       "phot_rp_mean_mag": [14.0], "phot_rp_mean_flux": [9000.0],
                       "phot_rp_mean_flux_over_error": [100.0]})
    m = match_columns(df.columns)
    p = prepare_rows(df, m, **dict(LIMITS, min_bands=1))
    assert p.band_index.tolist() == [[0, 1, 2]] and p.status == ["ok"]
    k = 2.5 / np.log(10)
    np.testing.assert_allclose(p.mag[0], [15.6874, 25.3385 - 2.5 * np.log10(2000.0), 14.0], rtol=1e-6)
    np.testing.assert_allclose(p.mag_err[0], [k / 50, k * 40 / 2000, k / 100], rtol=1e-6)


def test_bad_catalogue_statuses():
    df = pd.read_csv(DATA / "bad_catalogue.csv")
    m = match_columns(df.columns)
    assert m.duplicates == {"Jmag": "j_m", "w1mpro.1": "w1mpro"}
    assert list(m.ignored) == ["case", "source_id", "ra", "dec", "status"]
    assert m.band_names == ("Gaia_G", "Gaia_BP", "Gaia_RP", "SDSS_u", "2MASS_J", "2MASS_H", "2MASS_Ks",
                            "WISE_W1", "WISE_W2")
    p = prepare_rows(df, m, **LIMITS)
    assert p.status == BAD_EXPECTED
    assert dict(count_status(p.status)) == BAD_COUNTS
    assert p.skip.tolist() == [s.endswith(")") for s in BAD_EXPECTED]
    assert p.n_bands.tolist()[:3] == [8, 6, 7]
    # clean row: all eight bands, left-packed in registry order, G error raised to err_min
    assert p.band_index[0].tolist() == [0, 1, 2, 9, 20, 21, 22, 23, -1]
    assert p.mag_err[0, 0] == pytest.approx(0.002)
    assert p.mag[0, 1] == pytest.approx(25.3385 - 2.5 * np.log10(67021.9), abs=1e-5)
    row = BAD_EXPECTED.index("default_err:2MASS_J=nonpositive_err")
    assert p.mag_err[row, p.band_index[row].tolist().index(20)] == pytest.approx(DEFAULT_ERR)
    row = BAD_EXPECTED.index("default_err:WISE_W2=no_err_column")
    assert p.band_index[row].tolist()[-1] == 24 and p.mag_err[row, -1] == pytest.approx(DEFAULT_ERR)


def test_prepare_rows_model_band_subset_and_options():
    df = pd.DataFrame({"Gaia_G": [12.0, 13.0], "Gaia_G_err": [0.01, 0.01], "2MASS_J": [11.0, 11.5],
                       "2MASS_J_err": [0.2, 0.02], "WISE_W1": [10.0, np.nan], "WISE_W1_err": [0.03, 0.03]})
    m = match_columns(df.columns)
    p = prepare_rows(df, m, bands=("WISE_W1", "2MASS_J", "Gaia_G"), min_bands=2, err_min=0.002, err_max=0.1,
                     default_err=0.07)
    # indices refer to the given band order; J's 0.2 mag error exceeds err_max = 0.1
    assert p.band_index.tolist() == [[2, 0, -1], [2, 1, -1]]
    assert p.status == ["dropped:2MASS_J=err_above_max", "ok"]
    assert p.mag[1].tolist() == pytest.approx([13.0, 11.5, 0.0])
    with pytest.raises(ValueError, match="`default_err` = 0.5 mag"):
        prepare_rows(df, m, **LIMITS, default_err=0.5)
    empty = prepare_rows(df, match_columns(["ra"]), **dict(LIMITS, min_bands=1))
    assert empty.band_index.shape == (2, 0) and empty.status == ["skipped:too_few_bands(0<1)"] * 2


def test_status_keys():
    assert status_key("dropped:SDSS_u=sentinel") == "dropped:sentinel"
    assert status_key("skipped:too_few_bands(2<3)") == "skipped:too_few_bands"
    assert status_key("flag:high_khat") == "flag:high_khat" and status_key("ok") == "ok"
    assert dict(count_status(["ok", "dropped:A=inf;dropped:B=inf;flag:x", "flag:x"])) == \
        {"ok": 1, "dropped:inf": 1, "flag:x": 2}


def test_no_tensorflow_import():
    import subprocess

    code = "import sys, irisml_tf.columns, irisml_tf.catalog; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- chunked catalogue I/O (irisml_tf.catalog) ---------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits", ".ecsv", ".vot"])
def test_iter_table_exact_chunks(tmp_path, suffix):
    from irisml_tf.catalog import write_table

    df = pd.DataFrame({"x": np.arange(23, dtype=np.float32), "name": [f"s{i}" for i in range(23)]})
    path = tmp_path / f"t{suffix}"
    write_table(df, path)
    reader = iter_table(path, 10)
    chunks = list(reader)
    assert [len(c) for c in chunks] == [10, 10, 3]
    assert [c.index[0] for c in chunks] == [0, 10, 20]
    back = pd.concat(chunks)
    np.testing.assert_array_equal(back["x"].to_numpy(np.float32), df["x"].to_numpy())
    assert back["name"].tolist() == df["name"].tolist()
    assert count_rows(path) in (23, None)
    # the row count, where reading told it (formats read whole, Parquet metadata): a progress total
    assert reader.rows == (None if suffix == ".csv" else 23)


def test_iter_table_empty_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("Gaia_G,Gaia_G_err\n")
    assert [(len(c), list(c.columns)) for c in iter_table(tmp_path / "empty.csv", 5)] == [(0, [])]
    chunks = iter_table(tmp_path / "header.csv", 5)
    assert [(len(c), list(c.columns)) for c in chunks] == [(0, ["Gaia_G", "Gaia_G_err"])]
    assert count_rows(tmp_path / "empty.csv") == 0
    with pytest.raises(ValueError, match="unknown table format `.txt`"):
        next(iter_table(tmp_path / "x.txt", 5))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".fits"])
def test_table_writer_mixed_chunk_types(tmp_path, suffix):
    # a CSV column numeric in one chunk and text in another, ints then floats
    a = pd.DataFrame({"v": [1.5, 2.5], "n": [1, 2]})
    b = pd.DataFrame({"v": ["3.5", "oops"], "n": [3.0, np.nan]})
    parts = []
    for i, df in enumerate((a, b)):
        parts.append(tmp_path / f"p{i}.parquet")
        df.to_parquet(parts[-1])
    schema = TableWriter.unify_parquet_schemas(parts) if suffix == ".parquet" else None
    out = tmp_path / f"out{suffix}"
    with TableWriter(out, schema) as w:
        for p in parts:
            w.write(pd.read_parquet(p))
    back = read_table(out)
    assert [str(v) for v in back["v"]] == ["1.5", "2.5", "3.5", "oops"]
    assert back["n"].tolist()[:3] == [1, 2, 3]
