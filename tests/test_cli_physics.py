import hashlib
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from irisml_tf.catalog import read_table
from irisml_tf.cli.main import main
from irisml_tf.data.observation import DEFAULT_OBSERVATION as OBS
from irisml_tf.physics.bands import BAND_NAMES, BANDS

COLUMNS = ["teff", "logg", "mh", "av", "rv"] + [c for b in BAND_NAMES for c in (b, f"{b}_err")]


def _run(*args):
    r = CliRunner().invoke(main, list(args))
    return r


def test_bands_table():
    r = _run("bands")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 + 25
    assert lines[2].split()[:3] == ["Gaia_G", "Gaia", "Vega"]
    assert "w1mpro/w1sigmpro" in r.output


def test_bands_lists_every_matched_column():
    from irisml_tf.columns import match_columns

    lines = _run("bands").output.strip().splitlines()[2:]
    for b, line in zip(BANDS, lines):
        assert line.split()[0] == b.name
        names = [b.name, f"{b.name}_err", *b.mag_cols, *b.err_cols, *b.flux_cols, *b.flux_err_cols,
                 *b.flux_over_error_cols]
        assert set(names) <= set(re.split(r"[\s,/;]+", line)), (b.name, line)
        assert {bc.band for bc in match_columns(names).bands} == {b.name}  # names infer matches
    assert "phot_g_mean_flux_over_error" in lines[0] and "phot_rp_mean_flux_error" in lines[2]


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".fits"])
def test_simulate_round_trip(tmp_path, ext):
    out = tmp_path / f"sim{ext}"
    r = _run("simulate", "--n", "300", "--seed", "5", "--out", str(out))
    assert r.exit_code == 0, r.output
    df = read_table(out)
    assert list(df.columns) == COLUMNS and len(df) == 300
    _run("simulate", "--n", "300", "--seed", "5", "--out", str(tmp_path / "ref.parquet"))
    ref = pd.read_parquet(tmp_path / "ref.parquet")
    np.testing.assert_allclose(df.to_numpy(float), ref.to_numpy(float), rtol=1e-6)
    # observed: errors from the observation model wherever a band is present
    mags, errs = df[list(BAND_NAMES)].to_numpy(float), df[[f"{b}_err" for b in BAND_NAMES]].to_numpy(float)
    assert (np.isfinite(mags) == np.isfinite(errs)).all()
    assert ((errs >= OBS["err_min"]) & (errs <= OBS["err_max"]))[np.isfinite(errs)].all()


def test_same_seed_identical_file(tmp_path):
    digests = []
    for name in ("a.csv", "b.csv"):
        assert _run("simulate", "--n", "200", "--seed", "9", "--out", str(tmp_path / name)).exit_code == 0
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    _run("simulate", "--n", "200", "--seed", "10", "--out", str(tmp_path / "c.csv"))
    assert hashlib.sha256((tmp_path / "c.csv").read_bytes()).hexdigest() != digests[0]


def test_noiseless_and_fix(tmp_path, sim):
    out = tmp_path / "n.parquet"
    r = _run("simulate", "--n", "500", "--seed", "1", "--out", str(out), "--noiseless", "--fix", "av=0",
             "--fix", "teff=6000")
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out)
    assert (df["av"] == 0).all() and (df["teff"] == 6000).all()
    assert df[[f"{b}_err" for b in BAND_NAMES]].eq(0).all().all()
    assert df[list(BAND_NAMES)].notna().all().all()
    theta = df[["teff", "logg", "mh", "av", "rv"]].to_numpy(np.float32)
    np.testing.assert_allclose(df[list(BAND_NAMES)].to_numpy(), sim(theta)[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("args, match", [
    (["--fix", "foo=1"], "NAME=VALUE"),
    (["--fix", "av=abc"], "not a number"),
    (["--fix", "teff=100"], "outside the grid"),
    (["--out", "x.txt"], "unknown extension"),
])
def test_simulate_bad_input(tmp_path, args, match):
    base = ["simulate", "--n", "10", "--out", str(tmp_path / "x.csv")]
    r = _run(*(base + args))
    assert r.exit_code != 0 and match in r.output


def test_simulate_looks_like_training_data(tmp_path):
    """Observation model: brightness in ref_mag, survey errors, missing bands; every magnitude in
    infer's accepted range and every row `ok` through infer's column matching."""
    from irisml_tf.columns import MAG_RANGE, match_columns, prepare_rows

    out = tmp_path / "obs.parquet"
    assert _run("simulate", "--n", "3000", "--seed", "3", "--out", str(out)).exit_code == 0
    df = pd.read_parquet(out)
    mags, errs = df[list(BAND_NAMES)].to_numpy(float), df[[f"{b}_err" for b in BAND_NAMES]].to_numpy(float)
    present = np.isfinite(mags)
    assert (present == np.isfinite(errs)).all()
    assert present.sum(axis=1).min() >= OBS["min_bands"] and 0.2 < present.mean() < 0.9
    assert MAG_RANGE[0] <= mags[present].min() and mags[present].max() <= MAG_RANGE[1]
    assert OBS["err_min"] <= errs[present].min() and errs[present].max() <= OBS["err_max"]
    mean = np.nanmean(mags, axis=1)  # of the bands kept: the faint ones are missing more often
    assert 5.0 < np.percentile(mean, 1) < 9.0 and 17.0 < np.percentile(mean, 99) < 21.0
    prepared = prepare_rows(df, match_columns(df.columns), min_bands=OBS["min_bands"], err_min=OBS["err_min"],
                            err_max=OBS["err_max"])
    assert set(prepared.status) == {"ok"}
    assert (prepared.n_bands == present.sum(axis=1)).all()


def test_simulate_all_bands_and_ref_mag(tmp_path):
    out = tmp_path / "all.csv"
    r = _run("simulate", "--n", "300", "--seed", "2", "--out", str(out), "--all-bands", "--ref-mag", "10", "12")
    assert r.exit_code == 0, r.output
    df = read_table(out)
    mags = df[list(BAND_NAMES)].to_numpy(float)
    assert np.isfinite(mags).all() and df[[f"{b}_err" for b in BAND_NAMES]].notna().all().all()
    assert np.all((mags.mean(axis=1) > 9.9) & (mags.mean(axis=1) < 12.1))  # mean magnitude in --ref-mag
    # same seed, same stars: only the band set differs from the default draw
    _run("simulate", "--n", "300", "--seed", "2", "--out", str(tmp_path / "some.csv"), "--ref-mag", "10", "12")
    some = read_table(tmp_path / "some.csv")
    np.testing.assert_allclose(some[["teff", "logg", "mh", "av", "rv"]], df[["teff", "logg", "mh", "av", "rv"]])
    kept = some[list(BAND_NAMES)].notna().to_numpy()
    np.testing.assert_allclose(some[list(BAND_NAMES)].to_numpy(float)[kept], mags[kept], rtol=1e-6)


def test_simulate_help_documents_seed():
    r = _run("simulate", "--help")
    assert r.exit_code == 0 and "same seed gives an identical file" in " ".join(r.output.split())
