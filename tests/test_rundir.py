"""Tests of the run directory contract (irisml_tf.rundir): markers, refusals, metrics, status and
the trained posterior of a run (the shared tiny run of tests/conftest.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from irisml_tf import rundir
from irisml_tf.rundir import RunDirError


# -- markers and refusals -------------------------------------------------------------------
def test_prepare_creates_a_new_dir_and_refuses_a_run(tmp_path):
    new = rundir.prepare_run_dir(tmp_path / "a" / "run")
    assert new.is_dir() and not any(new.iterdir())
    for marker in rundir.RUN_MARKERS:
        d = tmp_path / marker.replace(".", "_")
        d.mkdir()
        (d / marker).write_text("x")
        with pytest.raises(RunDirError, match=rf"already holds a run \({marker}\); use --resume"):
            rundir.prepare_run_dir(d)


def test_overwrite_removes_only_run_files(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-1.index").write_text("x")
    (run / "config.yaml").write_text("x")
    (run / "notes.txt").write_text("mine")
    rundir.prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_refusal_messages(tmp_path):
    with pytest.raises(RunDirError, match="choose either --resume or --overwrite"):
        rundir.prepare_run_dir(tmp_path, resume=True, overwrite=True)
    with pytest.raises(RunDirError, match="nothing to resume: .* holds no run"):
        rundir.prepare_run_dir(tmp_path / "empty", resume=True)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable: it is a file"):
        rundir.prepare_run_dir(blocker)
    with pytest.raises(RunDirError, match="not writable"):
        rundir.prepare_run_dir(blocker / "run")
    with pytest.raises(RunDirError, match="holds no run"):
        rundir.read_config(tmp_path)
    (tmp_path / "config.yaml").write_text("x")
    assert rundir.prepare_run_dir(tmp_path, resume=True) == tmp_path


# -- metrics and status ---------------------------------------------------------------------
def test_read_metrics_and_status(tmp_path):
    assert rundir.read_metrics(tmp_path) == {} and rundir.run_status(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"status": rundir.INTERRUPTED, "step": 7}))
    assert rundir.read_metrics(tmp_path)["step"] == 7
    assert rundir.run_status(tmp_path) == "interrupted" and not rundir.is_complete(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": rundir.COMPLETED}))
    assert not rundir.is_complete(tmp_path)  # no final.weights.h5
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(RunDirError, match="metrics.json is not valid JSON"):
        rundir.read_metrics(tmp_path)


def test_a_finished_run_is_complete(tiny_run):
    metrics = rundir.read_metrics(tiny_run)
    assert metrics["status"] == rundir.COMPLETED == rundir.run_status(tiny_run)
    assert metrics["interrupted_by"] is None and metrics["session_start_step"] == 0
    assert rundir.is_complete(tiny_run)
    assert rundir.read_config(tiny_run)["model"]["param_loc"] is not None


# -- the trained posterior ------------------------------------------------------------------
def _log_prob(model, run_dir):
    from irisml_tf.data.stream import load_arrays

    val = load_arrays(run_dir / "validation.npz")
    return model.log_prob(val["theta"][:8], val["band_index"][:8], val["mag"][:8],
                          val["mag_err"][:8]).numpy()


def test_posterior_loads_from_run(tiny_run):
    lp = _log_prob(rundir.load_posterior(tiny_run), tiny_run)
    assert np.all(np.isfinite(lp))


def test_posterior_of_an_unfinished_run_comes_from_its_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "validation.npz"):
        shutil.copy(tiny_run / name, run / name)
    with pytest.raises(FileNotFoundError, match="neither final.weights.h5 nor a checkpoint"):
        rundir.load_posterior(run)
    shutil.copytree(tiny_run / "checkpoints", run / "checkpoints")
    # the last checkpoint (step 40) holds the final weights
    np.testing.assert_allclose(_log_prob(rundir.load_posterior(run), run),
                               _log_prob(rundir.load_posterior(tiny_run), tiny_run),
                               rtol=1e-5, atol=1e-5)


def test_rundir_does_not_load_the_training_driver(tiny_run):
    """Serving reads runs through rundir: the driver (and its callbacks, plots) stays unloaded."""
    code = ("import sys; from irisml_tf import rundir; rundir.load_posterior(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('irisml_tf.training')))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_run)], check=False,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'irisml_tf.training.config'" in proc.stdout
    assert "driver" not in proc.stdout and "session" not in proc.stdout
