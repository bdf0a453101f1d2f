"""The exported SavedModel (irisml_tf.serving, `irisml-tf export`): TF's own loaders run it.

`saved_model_cli run` uses the C++ session loader that TF Serving uses; the clean-process check
loads it in a Python that imports only TensorFlow and compares with the library.
"""
from __future__ import annotations

import configparser
import dataclasses
import glob
import json
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY
from irisml_tf.inference.adaptive import AdaptiveOptions
from irisml_tf.serving import (
    OUTPUT_KEYS,
    compare_outputs,
    default_model_path,
    load_model,
)

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
    engine = tiny_model.meta.engine_options
    assert engine.max_draws == 1256 and len(tiny_model.meta.prior_params) == 21
    assert np.all(out["n_draws"] <= engine.max_draws) and np.all(out["rounds"] >= 1)
    assert np.array_equal(out["converged"], out["ess"] >= engine.target_ess)
    assert engine.defensive_components == AdaptiveOptions().defensive_components  # written at export
    # an export from before the defensive mixture had one defensive t: its options say so
    older = dataclasses.replace(tiny_model.meta, engine={k: v for k, v in tiny_model.meta.engine.items()
                                                         if k != "defensive_components"})
    assert older.engine_options.defensive_components == 1


def test_run_takes_the_prior_and_draw_budget(tiny_model):
    """A narrower A_V prior (file-level and per star) moves the A_V posterior; a lower budget or
    target stops stars earlier."""
    from irisml_tf.physics.prior import load_user_prior

    base = tiny_model.run(BI, MAG, ERR, 100, seed=3)
    near = load_user_prior({"av": {"mean": 0.05, "max": 0.3}}, tiny_model.meta.config["prior"],
                           tiny_model.meta.lower, tiny_model.meta.upper)
    out = tiny_model.run(BI, MAG, ERR, 100, seed=3, prior_params=near.params)
    assert np.all(out["samples"][..., 3] <= 0.3 + 1e-6) and np.all(out["median"][:, 3] < base["median"][:, 3])
    # star 1 (3 bands) is loosely constrained: a dust map's A_V ± σ sets its A_V; star 0 keeps its own
    star = tiny_model.run(BI, MAG, ERR, 100, seed=3, av_prior=[np.nan, 2.0], av_prior_err=[np.nan, 0.05])
    assert abs(star["median"][1, 3] - 2.0) < 0.1 and star["median"][0, 3] == base["median"][0, 3]
    capped = tiny_model.run(BI, MAG, ERR, 100, seed=3, av_max=[np.nan, 0.2])
    assert np.all(capped["samples"][1, :, 3] <= 0.2 + 1e-6)
    short = tiny_model.run(BI, MAG, ERR, 100, seed=3, max_draws=256, target_ess=1e9)
    assert np.all(short["n_draws"] == 256) and np.all(short["rounds"] == 1) and not short["converged"].any()
    with pytest.raises(ValueError, match="max_draws"):
        tiny_model.run(BI, MAG, ERR, 100, max_draws=10**6)
    with pytest.raises(ValueError, match="prior_params"):
        tiny_model.run(BI, MAG, ERR, 100, prior_params=[1.0, 2.0])
    with pytest.raises(ValueError, match="av_prior"):
        tiny_model.run(BI, MAG, ERR, 100, av_prior=[1.0])


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


def test_saved_model_cli_run(tiny_export, tiny_model, tmp_path):
    """The C++ loader path (TF Serving's): `saved_model_cli run` with Python-literal inputs."""
    from irisml_tf.rowseed import call_seeds

    seeds = call_seeds([1, 2], len(BI)).tolist()  # the per-star seeds ExportedModel.run derives
    meta = tiny_model.meta
    exprs = (f"band_index={BI};mag={MAG};mag_err={ERR};num_samples=50;seed={seeds};"
             f"target_ess={meta.engine_options.target_ess};max_draws={meta.engine_options.max_draws};"
             f"prior_params={list(meta.prior_params)};parallax_zero_point=0.0")
    np.save(tmp_path / "none.npy", np.full(len(BI), np.nan, np.float32))  # NaN is no Python literal
    files = ";".join(f"{k}={tmp_path / 'none.npy'}" for k in ("av_prior", "av_prior_err", "av_max", "parallax",
                                                               "parallax_error"))
    proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
                           "--dir", str(tiny_export), "--tag_set", "serve", "--signature_def",
                           "serving_default", "--input_exprs", exprs, "--inputs", files],
                          capture_output=True, text=True, timeout=900,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"Result for output key median:\n(\[\[.*?\]\])", proc.stdout, re.S)
    assert match, proc.stdout[-2000:]
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    median = np.array([float(v) for v in re.findall(number, match.group(1))]).reshape(2, 5)
    ref = tiny_model.run(BI, MAG, ERR, 50, seed=[1, 2])
    # the C++ session rounds floats unlike the Python loader, and the engine's rounds amplify it
    # (measured: 5e-4 relative); the posterior is the same on its own scale (check_export's rule)
    assert np.all(np.abs(median - ref["median"]) <= 0.25 * ref["std"] + 1e-6)


def test_cli_export_of_an_interrupted_run(tiny_run, tmp_path):
    """The CLI exports a run stopped at step 20 with a warning naming it, and the export holds the
    step-20 weights, not the finished run's (one export of the engine's graph costs ~25 s on 2
    cores: this is the test of both the CLI and the interrupted-run path)."""
    from irisml_tf.cli.main import main
    from irisml_tf.rundir import load_posterior

    run, out = _interrupted_copy(tiny_run, tmp_path / "run"), tmp_path / "m"
    res = CliRunner().invoke(main, ["export", str(run), str(out), "--no-check", "--max-samples", "500"])
    assert res.exit_code == 0, res.output
    warning = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "status interrupted" in warning[0] and "step 20 of 40" in warning[0], res.output
    assert str(run) in warning[0]
    assert (out / "saved_model.pb").exists() and load_model(out).meta.max_samples == 500
    exported = load_posterior(out / "assets" / "run").weights
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(exported, load_posterior(tiny_run).weights))
    res = CliRunner().invoke(main, ["export", str(run), str(out), "--no-check"])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path), str(tmp_path / "x")])
    assert res.exit_code != 0 and "config.yaml" in res.output


# -- the check's rule: the engine's decisions exactly, the posterior on its own scale -----------
def test_check_rule_fails_on_a_wrong_output(tiny_model):
    """compare_outputs on the SavedModel's own outputs passes; a quantile moved by a posterior σ,
    swapped p16/p84, a shifted set of draws or another draw count fails, naming that output."""
    out = tiny_model.run(BI, MAG, ERR, 400, seed=4)
    # settled stars (at target, ESS well above WEAK_ESS): the strict tolerances
    converged = dict(out, converged=np.ones_like(out["converged"]), ess=np.full_like(out["ess"], 1000.0))
    assert compare_outputs(converged, converged).ok
    noisy = dict(converged, median=out["median"] + 0.05 * out["std"], ess=converged["ess"] * 1.3)
    assert compare_outputs(converged, noisy).ok
    moved = compare_outputs(converged, dict(converged, p16=out["p16"] + out["std"]))
    assert moved.failed == ("p16",) and not moved.ok
    swapped = compare_outputs(converged, dict(converged, p16=out["p84"], p84=out["p16"]))
    assert set(swapped.failed) == {"p16", "p84"}
    samples = out["samples"] + out["std"][:, None, :]
    assert compare_outputs(converged, dict(converged, samples=samples)).failed == ("samples",)
    draws = compare_outputs(converged, dict(converged, n_draws=out["n_draws"] + 250))
    assert draws.failed == ("n_draws",)
    collapsed = dict(converged, ess=converged["ess"] / 5, efficiency=converged["efficiency"] / 5)
    assert set(compare_outputs(converged, collapsed).failed) == {"ess", "efficiency"}
    # a star out of draws has its last round's ESS, on a few heavy draws: not compared
    unsettled = dict(converged, converged=np.zeros_like(out["converged"]))
    assert "ess" not in compare_outputs(unsettled, dict(collapsed, converged=unsettled["converged"])).failed


# -- the export job (irisml_tf.app.export) ------------------------------------------------------
def _interrupted_copy(run: Path, dst: Path, step: int = 20) -> Path:
    """A copy of a finished run as `train` leaves one stopped at ``step``: no final weights, the
    checkpoint of that step the latest, metrics.json status "interrupted"."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("final.weights.h5", "logs"))
    assert (dst / "checkpoints" / f"ckpt-{step}.index").exists()
    (dst / "checkpoints" / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n')
    metrics = json.loads((dst / "metrics.json").read_text())
    (dst / "metrics.json").write_text(json.dumps(dict(metrics, status="interrupted", step=step)))
    return dst


def test_export_job_of_a_fresh_run_passes_its_check(tiny_run, tmp_path):
    from irisml_tf.app.export import ExportOptions, export_run

    result = export_run(ExportOptions(run_dir=tiny_run, out_dir=tmp_path / "m", max_samples=500, max_draws=1256))
    assert result.check is not None and result.check.modules == ()  # a TensorFlow-only process ran it
    assert result.ok and result.check.ok, result.check
    assert result.complete and result.training_note() is None
    assert result.training.step == result.training.steps_total == TINY["training"]["steps"]
    assert result.size_bytes > 0 and (result.out_dir / "saved_model.pb").exists()


# -- the shipped model as package data ----------------------------------------------------------
def test_default_model_is_package_data(monkeypatch, tmp_path):
    monkeypatch.delenv("IRISML_TF_MODEL", raising=False)
    path = default_model_path()
    assert path == Path(str(files("irisml_tf.saved_models"))) / "default"
    assert (path / "saved_model.pb").exists() and (path / "assets" / "irisml.json").exists()
    monkeypatch.setenv("IRISML_TF_MODEL", str(tmp_path))
    assert default_model_path() == tmp_path


def test_package_data_globs_ship_every_model_file():
    """setup.cfg's package_data for irisml_tf.saved_models matches every file of the shipped model
    (what `pip install .` copies into the package; a built wheel carries all 17 files of default/)."""
    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    assert "irisml_tf.saved_models = saved_models" in cfg["options"]["package_dir"]
    globs = [g.strip() for g in cfg["options.package_data"]["irisml_tf.saved_models"].split(",")]
    shipped = {p for g in globs for p in glob.glob(g, root_dir=root / "saved_models", recursive=True)
               if (root / "saved_models" / p).is_file()}
    model = {str(p.relative_to(root / "saved_models")) for p in (root / "saved_models" / "default").rglob("*")
             if p.is_file()}
    assert model and model <= shipped
