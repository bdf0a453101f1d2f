"""Parallax columns → zero-point-corrected parallaxes and per-row status codes (irisml_tf.parallax_columns)."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from irisml_tf.parallax_columns import PARALLAX_STATUS, match_parallax_columns, read_parallax


def test_names_case_and_preference():
    found, dup = match_parallax_columns(["ra", " PLX ", "e_Plx", "Parallax", "parallax_error", "Gaia_G"])
    assert found == {"parallax": "Parallax", "parallax_error": "parallax_error"}
    assert dup == {" PLX ": "Parallax", "e_Plx": "parallax_error"}
    assert match_parallax_columns(["Plx", "e_Plx"]) == ({"parallax": "Plx", "parallax_error": "e_Plx"}, {})
    assert match_parallax_columns(["parallax_err", "mag"]) == ({"parallax_error": "parallax_err"}, {})
    assert match_parallax_columns(["ra", "dec"]) == ({}, {})


def test_zero_point_subtracted_and_negative_parallaxes_kept():
    table = pd.DataFrame({"parallax": [10.0, -0.5, 0.0], "parallax_error": [0.02, 0.3, 0.5]})
    out = read_parallax(table)
    np.testing.assert_allclose(out.plx, [10.017, -0.483, 0.017])
    np.testing.assert_allclose(out.plx_err, [0.02, 0.3, 0.5])
    assert out.codes == [[], [], []] and out.has_parallax.all()
    np.testing.assert_allclose(read_parallax(table, zero_point=0.0).plx, [10.0, -0.5, 0.0])
    for bad in (-17.0, float("nan")):
        with pytest.raises(ValueError, match="zero_point"):
            read_parallax(table, zero_point=bad)


def test_every_bad_value_has_its_code_and_no_row_is_lost():
    rows = [  # (parallax, error, expected code or "" for used, used?)
        (5.0, 0.1, "", True),
        (None, None, "", False),  # no parallax: nothing to say
        ("abc", 0.1, "text", False),
        (np.inf, 0.1, "inf", False),
        (1500.0, 0.1, "above_1000mas", False),
        (5.0, None, "no_error", False),
        (5.0, "n/a", "no_error", False),  # a blank word is a blank
        (5.0, "x", "text_error", False),
        (5.0, np.inf, "inf_error", False),
        (5.0, 0.0, "nonpositive_error", False),
        (5.0, -0.1, "nonpositive_error", False),
        (0.005, 2e-5, "arcsec_units?", False),
        (None, 0.1, "error_without_parallax", False),
        ("", "", "", False),
        (-3.0, 1.0, "", True),
    ]
    table = pd.DataFrame({"Plx": [r[0] for r in rows], "e_Plx": [r[1] for r in rows], "other": range(len(rows))},
                         dtype=object)
    out = read_parallax(table, zero_point=0.0)
    assert len(out.plx) == len(rows) == len(out.codes)
    for (plx, err, code, used), got_codes, got, got_err in zip(rows, out.codes, out.plx, out.plx_err):
        assert got_codes == ([f"parallax:{code}"] if code else []), (plx, err)
        assert np.isfinite(got) == used and np.isfinite(got_err) == used, (plx, err)
        assert all(c in PARALLAX_STATUS for c in got_codes)
    report = out.report()
    assert "Plx ± e_Plx" in report and "2 of 15 rows used" in report and "arcsec" in report


def test_missing_columns():
    table = pd.DataFrame({"parallax": [1.0, np.nan], "g": [1, 2]})
    out = read_parallax(table)
    assert out.codes == [["parallax:no_error"], []] and not out.has_parallax.any()
    none = read_parallax(pd.DataFrame({"g": [1.0, 2.0]}))
    assert np.all(np.isnan(none.plx)) and none.codes == [[], []] and "no parallax column" in none.report()
    only_err = read_parallax(pd.DataFrame({"parallax_error": [0.1, np.nan]}))
    assert only_err.codes == [["parallax:error_without_parallax"], []]


def test_text_columns_from_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("source_id,parallax,parallax_error\n1,2.5,0.05\n2,,\n3,--,0.1\n4,oops,0.1\n")
    out = read_parallax(pd.read_csv(path))
    assert out.codes == [[], [], ["parallax:error_without_parallax"], ["parallax:text"]]
    assert out.plx[0] == pytest.approx(2.517) and np.isnan(out.plx[1:]).all()


def test_no_tensorflow_import():
    code = "import sys, irisml_tf.parallax_columns; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
