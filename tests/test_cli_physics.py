import hashlib

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from irisml_tf.catalog import read_table
from irisml_tf.cli.main import main
from irisml_tf.physics.bands import BAND_NAMES

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
    # noisy: errors are the documented per-survey values
    assert df["Gaia_G_err"].iloc[0] == pytest.approx(0.005) and df["2MASS_J_err"].iloc[0] == pytest.approx(0.03)


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
