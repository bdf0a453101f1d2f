"""The exported SavedModel (irisml_tf.serving, `irisml-tf export`): TF's own loaders run it.

`saved_model_cli run` uses the C++ session loader that TF Serving uses; the clean-process check
loads it in a Python that imports only TensorFlow and compares with the library.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY
from irisml_tf.serving import OUTPUT_KEYS, check_export, load_model

BI = [[0, 1, 2, 13, 14, 15, -1], [0, 1, 2, -1, -1, -1, -1]]
MAG = [[4.7, 5.0, 4.2, 3.6, 3.3, 3.3, 0.0], [4.7, 5.0, 4.2, 0.0, 0.0, 0.0, 0.0]]
ERR = [[0.01, 0.02, 0.02, 0.03, 0.03, 0.03, 0.0], [0.01, 0.02, 0.02, 0.0, 0.0, 0.0, 0.0]]


def test_meta_and_outputs(tiny_model):
    from irisml_tf.physics.bands import BAND_NAMES
    from irisml_tf.physics.simulator import PARAM_NAMES

    assert tiny_model.bands == tuple(BAND_NAMES) and tiny_model.param_names == tuple(PARAM_NAMES)
    assert tiny_model.observation.min_bands == 3 and tiny_model.meta.training.step == TINY["training"]["steps"]
    out = tiny_model.run(BI, MAG, ERR, 100, seed=3)
    assert set(out) == set(OUTPUT_KEYS)
    assert out["samples"].shape == (2, 100, 5) and out["median"].shape == (2, 5)
    assert out["n_bands"].tolist() == [6, 3]
    np.testing.assert_allclose(out["weights"].sum(1), 1.0, rtol=1e-5)
    lo, hi = np.array(tiny_model.meta.lower), np.array(tiny_model.meta.upper)
    assert np.all((out["samples"] >= lo) & (out["samples"] <= hi))


def test_export_carries_the_run(tiny_model, tiny_run):
    """assets/run rebuilds the library model with the exported weights."""
    from irisml_tf.rundir import load_posterior

    a, b = load_posterior(tiny_model.run_dir), load_posterior(tiny_run)
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_seeds_and_bad_entries_as_pads(tiny_model):
    a = tiny_model.run(BI, MAG, ERR, 64, seed=[5, 6])
    b = tiny_model.run(BI, MAG, ERR, 64, seed=[5, 6])
    c = tiny_model.run(BI, MAG, ERR, 64, seed=[5, 7])
    for k in OUTPUT_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["samples"], c["samples"])
    # the 3 pad slots of star 1 filled with junk: out-of-range band, NaN magnitude, zero error
    bi = np.array(BI)
    mag, err = np.array(MAG, np.float32), np.array(ERR, np.float32)
    bi[1, 3:6] = [99, 13, 14]
    mag[1, 3:6] = [5.0, np.nan, 3.3]
    err[1, 3:6] = [0.02, 0.02, 0.0]
    d = tiny_model.run(bi, mag, err, 64, seed=[5, 6])
    for k in OUTPUT_KEYS:
        np.testing.assert_allclose(d[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_run_validates_and_handles_empty(tiny_model):
    with pytest.raises(ValueError, match="num_samples"):
        tiny_model.run(BI, MAG, ERR, tiny_model.meta.max_samples + 1)
    with pytest.raises(ValueError, match="band_index"):
        tiny_model.run([0, 1], [1.0, 2.0], [0.1, 0.1], 10)
    empty = tiny_model.run(np.zeros((0, 3), np.int32), np.zeros((0, 3)), np.zeros((0, 3)), 10)
    assert empty["samples"].shape == (0, 10, 5) and empty["median"].shape == (0, 5)


def test_clean_process_matches_library(tiny_export):
    result = check_export(tiny_export)
    assert result["modules"] == []
    assert result["ok"], result


def test_saved_model_cli_run(tiny_export, tiny_model):
    """The C++ loader path (TF Serving's): `saved_model_cli run` with Python-literal inputs."""
    exprs = (f"band_index={BI};mag={MAG};mag_err={ERR};num_samples=50;seed=[1,2]")
    proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
                           "--dir", str(tiny_export), "--tag_set", "serve", "--signature_def",
                           "serving_default", "--input_exprs", exprs],
                          capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"Result for output key median:\n(\[\[.*?\]\])", proc.stdout, re.S)
    assert match, proc.stdout[-2000:]
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    median = np.array([float(v) for v in re.findall(number, match.group(1))]).reshape(2, 5)
    ref = tiny_model.run(BI, MAG, ERR, 50, seed=[1, 2])["median"]
    np.testing.assert_allclose(median, ref, rtol=1e-5)


def test_cli_export(tiny_run, tmp_path):
    from irisml_tf.cli.main import main

    out = tmp_path / "m"
    res = CliRunner().invoke(main, ["export", str(tiny_run), str(out), "--no-check", "--max-samples", "500"])
    assert res.exit_code == 0, res.output
    assert (out / "saved_model.pb").exists() and load_model(out).meta.max_samples == 500
    res = CliRunner().invoke(main, ["export", str(tiny_run), str(out), "--no-check"])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path), str(tmp_path / "x")])
    assert res.exit_code != 0 and "config.yaml" in res.output
