"""Tests of the training driver (irisml_tf.training, irisml_tf.app.train, `irisml-tf train`):
tiny model, CPU.

One uninterrupted 40-step run (module fixture) serves as the reference for the validation-NLL,
TensorBoard, resume and MirroredStrategy checks. Subprocesses: SIGTERM/SIGINT via the CLI, and two
logical CPU devices (they must be configured before TensorFlow initialises, so never in the
pytest process).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY
from irisml_tf.training import config as tconfig

CLI = [sys.executable, "-c", "from irisml_tf.cli.main import main; main()"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def reference(tiny_training):
    """An uninterrupted 40-step run of TINY (shared with the export/infer tests)."""
    return tiny_training


# -- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("training.batch_size=-4", "training.batch_size"),
    ("training.batch_sise=4", "training.batch_sise"),
    ("model.embed_dim=abc", "model.embed_dim"),
    ("model.embed_dim=31", "model.num_heads"),  # 31 not divisible by 2 heads
    ("model.made_hidden=[64,0]", "model.made_hidden[1]"),
    ("model.dropout=1.5", "model.dropout"),
    ("training.learning_rate=0", "training.learning_rate"),
    ("training.warmup_steps=41", "training.warmup_steps"),  # longer than the 40-step run
    ("training.calibration_levels=[0.5,1.2]", "training.calibration_levels[1]"),
    ("training.val_posterior_stars=99999", "training.val_posterior_stars"),
    ("observation.min_bands=26", "min_bands"),
    ("observation.nonsense=1", "nonsense"),
    ("prior.av.mean=-1", "av.mean"),
    ("trainng.steps=5", "trainng"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ValueError, match=re.escape(f"`{key}`")):
        tconfig.load_config(TINY, [override])


def test_config_files_resolve_and_overrides_parse(tmp_path):
    root = Path(__file__).resolve().parents[1]
    for name in ("quick.yaml", "default.yaml"):
        cfg = tconfig.load_config(root / "configs" / name)
        assert set(cfg) == set(tconfig.SECTIONS)
    cfg = tconfig.load_config(root / "configs" / "quick.yaml",
                              ["training.learning_rate=3e-4", "model.made_hidden=[8, 8]",
                               "observation.surveys.GALEX.p_north=0.1"])
    assert cfg["training"]["learning_rate"] == pytest.approx(3e-4)  # YAML 1.1 would read a str
    assert cfg["model"]["made_hidden"] == [8, 8]
    assert cfg["observation"]["surveys"]["GALEX"]["p_north"] == 0.1
    # the resolved config round-trips through YAML
    path = tmp_path / "c.yaml"
    tconfig.dump_config(cfg, path)
    assert tconfig.load_config(path) == cfg
    with pytest.raises(ValueError, match="section.key=value"):
        tconfig.load_config(None, ["steps100"])


def test_exponent_floats_load_as_floats(tmp_path):
    """`1e-3` (no dot, which YAML 1.1 reads as a string) is a float in files and in --set."""
    path = tmp_path / "c.yaml"
    path.write_text("observation: {err_min: 1e-3}\nprior: {av: {mean: 1e0}}\n")
    cfg = tconfig.load_config(path, ["observation.sys_floor=2e-2", "prior.rv.std=2E-1"])
    assert cfg["observation"]["err_min"] == 1e-3 and cfg["prior"]["av"]["mean"] == 1.0
    assert cfg["observation"]["sys_floor"] == 2e-2 and cfg["prior"]["rv"]["std"] == 0.2
    assert tconfig.parse_override("training.learning_rate=1e-3") == (["training", "learning_rate"],
                                                                      1e-3)


def test_config_documents_every_key():
    """Every key of model/training appears in both shipped configs."""
    root = Path(__file__).resolve().parents[1]
    for name in ("quick.yaml", "default.yaml"):
        user = yaml.safe_load((root / "configs" / name).read_text())
        assert set(user["model"]) == set(tconfig.DEFAULT_MODEL), name
        assert set(user["training"]) == set(tconfig.DEFAULT_TRAINING), name


def test_model_defaults_have_one_source():
    """The config's model sizes and PosteriorModel's keyword defaults are DEFAULT_SIZES."""
    import inspect

    from irisml_tf.model.posterior import DEFAULT_SIZES, PosteriorModel

    params = inspect.signature(PosteriorModel.__init__).parameters
    for key, value in DEFAULT_SIZES.items():
        assert params[key].default == value, key
        assert tconfig.DEFAULT_MODEL[key] == (list(value) if isinstance(value, tuple) else value)
    assert set(tconfig.DEFAULT_MODEL) - set(DEFAULT_SIZES) == {"lower", "upper", "param_loc",
                                                                "param_scale"}
    assert tconfig.load_config(None)["model"]["made_hidden"] == list(DEFAULT_SIZES["made_hidden"])


# -- training -------------------------------------------------------------------------------
def test_run_dir_contents_and_validation_nll_falls(reference):
    run_dir, result = reference
    assert result["status"] == "completed" and result["step"] == 40
    for name in ("config.yaml", "validation.npz", "metrics.json", "final.weights.h5"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("ckpt-40.index"))
    history = result["validation_history"]
    assert [h["step"] for h in history] == [0, 20, 40]
    assert history[-1]["nll"] < history[0]["nll"] - 0.1, history
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps_per_sec"] > 0 and metrics["skipped_steps"] == 0
    assert set(metrics["validation"]["rmse"]) == {"teff", "logg", "mh", "av", "rv"}
    assert 0 <= metrics["validation"]["calibration_error"] <= 1
    # the resolved config holds the box and standardisation actually used
    cfg = tconfig.load_config(run_dir / "config.yaml")
    assert len(cfg["model"]["param_loc"]) == 5 and cfg["model"]["lower"][3] >= 0


def test_tensorboard_has_scalars_and_images(reference):
    import tensorflow as tf

    run_dir, _ = reference
    tags = {}
    for path in (run_dir / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = value.metadata.plugin_data.plugin_name or tags.get(value.tag)
    for tag in ("train/nll", "train/learning_rate", "val/nll", "val/rmse/teff", "val/rmse/rv",
                "val/coverage_0.68/logg", "val/calibration_error_max"):
        assert tags.get(tag) == "scalars", (tag, sorted(tags))
    for tag in ("val/calibration_curves", "val/corner"):
        assert tags.get(tag) == "images", (tag, sorted(tags))


def test_resume_matches_uninterrupted(reference, tmp_path):
    from irisml_tf.training import TrainingSession, train

    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    first = train(TINY, run_dir, max_steps=17)
    assert first["status"] == "interrupted" and first["step"] == 17
    assert first["interrupted_by"] == "max_steps" and first["validation"]["step"] == 0
    second = train(None, run_dir, resume=True)
    assert second["status"] == "completed" and second["session_steps"] == 23
    losses = np.array(first["losses"] + second["losses"])
    np.testing.assert_allclose(losses, ref["losses"], rtol=1e-5, atol=1e-5)
    # same final weights (restored as a resume restores them: the session's whole checkpoint;
    # the posterior alone is no tf.train dependency, see irisml_tf.rundir)
    from irisml_tf.rundir import load_posterior

    cfg = tconfig.load_config(ref_dir / "config.yaml")
    a, b = TrainingSession(cfg), TrainingSession(cfg)
    a.checkpoint.restore(str(ref_dir / "checkpoints" / "ckpt-40")).assert_existing_objects_matched()
    b.checkpoint.restore(str(run_dir / "checkpoints" / "ckpt-40")).assert_existing_objects_matched()
    for va, vb in zip(a.posterior.weights, b.posterior.weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)
    for va, vf in zip(a.posterior.weights, load_posterior(ref_dir).weights):  # not the initial ones
        np.testing.assert_array_equal(va.numpy(), vf.numpy())
    # resuming a finished run does nothing more
    again = train(None, run_dir, resume=True)
    assert again["step"] == 40 and again["session_steps"] == 0


def test_nan_batch_is_skipped_and_changes_nothing():
    from irisml_tf.training import TrainingSession

    session = TrainingSession(tconfig.load_config(TINY))
    inputs, theta = session.stream.batch(0)
    inputs = {k: v.numpy() for k, v in inputs.items()}
    theta = theta.numpy()
    bad = dict(inputs, mag=np.where(inputs["band_index"] >= 0, np.nan, 0.0).astype(np.float32))
    before = [v.numpy().copy() for v in session.posterior.weights]
    opt_before = [v.numpy().copy() for v in session.optimizer.variables]
    logs = session.trainer.train_on_batch(bad, theta, return_dict=True)
    assert logs["applied"] == 0.0
    assert session.skipped == 1 and session.step == 1
    assert int(session.optimizer.iterations.numpy()) == 0
    for a, v in zip(before, session.posterior.weights):
        np.testing.assert_array_equal(a, v.numpy())
    for a, v in zip(opt_before, session.optimizer.variables):
        np.testing.assert_array_equal(a, v.numpy())
    # a finite batch is applied
    logs = session.trainer.train_on_batch(inputs, theta, return_dict=True)
    assert logs["applied"] == 1.0 and np.isfinite(logs["nll"])
    assert session.skipped == 1 and session.step == 2
    assert int(session.optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, session.posterior.weights))


_MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    from irisml_tf.training import split_cpu, train, TrainingSession
    from irisml_tf.training.config import load_config
    split_cpu(2)
    config = json.loads(sys.argv[1])
    result = train(config, sys.argv[2])
    # a NaN in one replica's half of the batch: both replicas must skip
    session = TrainingSession(load_config(config))
    inputs, theta = session.stream.batch(0)
    inputs = {k: v.numpy() for k, v in inputs.items()}
    half = len(theta) // 2
    inputs["mag"][:half] = np.where(inputs["band_index"][:half] >= 0, np.nan, 0.0)
    before = [v.numpy().copy() for v in session.posterior.weights]
    with session.strategy.scope():
        logs = session.trainer.train_on_batch(inputs, theta.numpy(), return_dict=True)
    unchanged = all(np.array_equal(a, v.numpy()) for a, v in zip(before, session.posterior.weights))
    print("RESULT" + json.dumps({"replicas": result["num_replicas"], "losses": result["losses"],
                                 "skipped": session.skipped, "unchanged": unchanged}))
""")


def test_mirrored_two_cpus_matches_one_device(reference, tmp_path):
    _, ref = reference
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, json.dumps(TINY), str(tmp_path / "m")],
                          check=False, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["replicas"] == 2
    np.testing.assert_allclose(out["losses"], ref["losses"], rtol=1e-4, atol=1e-4)
    assert out["skipped"] == 1 and out["unchanged"]


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_checkpoints_and_resume_continues(tmp_path, name, code):
    """SIGTERM (or Ctrl-C) checkpoints and exits 128 + signal; the report names the step it
    stopped at and the step of the last validation (step 0 here), not as if current."""
    cfg = json.loads(json.dumps(TINY))
    cfg["training"].update(steps=5000, checkpoint_every=100000, val_every=100000)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["train", "--config", str(config), "--out", str(run_dir),
                                   "--no-progress"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            if "training from step" in line or time.monotonic() > deadline:
                break
        time.sleep(2.0)
        proc.send_signal(getattr(signal, name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert "--resume" in err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    step = metrics["step"]
    assert metrics["status"] == "interrupted" and 0 < step < 5000
    assert metrics["interrupted_by"] == name and metrics["validation"]["step"] == 0
    assert (run_dir / "checkpoints" / f"ckpt-{step}.index").exists()
    assert f"interrupted ({name}) at step {step}/5000, last validation at step 0: val nll" in err
    # `irisml-tf train --resume` picks the checkpoint up: same step counter
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    res = CliRunner().invoke(main, ["train", "--out", str(run_dir), "--resume", "--max-steps", "3",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"training from step {step} to {step + 3}" in res.output
    assert (f"at step {step + 3}/5000, no validation since the resume at step {step} "
            "(last at step 0: val nll") in res.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == step + 3 and metrics["session_steps"] == 3
    assert metrics["session_start_step"] == step and metrics["interrupted_by"] == "max_steps"


# -- the report of `irisml-tf train` --------------------------------------------------------
def _metrics(**kw):
    m = {"status": "interrupted", "step": 137, "steps_total": 9000, "session_start_step": 0,
         "interrupted_by": "SIGINT", "steps_per_sec": 5.0,
         "validation": {"step": 0, "nll": 3.21, "calibration_error": 0.25}}
    return dict(m, **kw)


@pytest.mark.parametrize("metrics, expected", [
    (_metrics(), ("interrupted (SIGINT) at step 137/9000, last validation at step 0: val nll "
                  "3.210, calibration error 0.250, 5.00 steps/s; checkpoint saved at step 137")),
    (_metrics(session_start_step=100, step=120, interrupted_by="SIGTERM",
              validation={"step": 100, "nll": 1.5, "calibration_error": 0.1}),
     "interrupted (SIGTERM) at step 120/9000, last validation at step 100: val nll 1.500"),
    (_metrics(session_start_step=120, step=137,
              validation={"step": 100, "nll": 1.5, "calibration_error": 0.1}),
     ("at step 137/9000, no validation since the resume at step 120 (last at step 100: val nll "
      "1.500")),
    (_metrics(validation={}), "at step 137/9000, no validation yet"),
    (_metrics(status="completed", step=9000, interrupted_by=None,
              validation={"step": 9000, "nll": 0.5, "calibration_error": 0.02}),
     "done: step 9000/9000, val nll 0.500, calibration error 0.020, 5.00 steps/s; run in r"),
])
def test_report_says_where_the_run_stopped(metrics, expected):
    from irisml_tf.app.train import TrainResult

    result = TrainResult.from_metrics(Path("r"), metrics)
    assert expected in result.message()
    assert result.exit_code == {"SIGINT": 130, "SIGTERM": 143}.get(metrics["interrupted_by"], 0)
    assert result.completed == (metrics["status"] == "completed")


def test_train_options_need_a_config_file(tmp_path):
    from irisml_tf.app.train import TrainOptions
    from irisml_tf.training.config import ConfigError

    with pytest.raises(ConfigError, match="--config FILE is required"):
        TrainOptions(run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="does not exist"):
        TrainOptions(run_dir=tmp_path / "run", config=tmp_path / "missing.yaml")
    assert TrainOptions(run_dir=tmp_path / "run", resume=True).config is None


# -- CLI refusals ---------------------------------------------------------------------------
def test_cli_refuses_existing_run_and_unwritable_dir(reference, tmp_path):
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    run_dir, _ = reference
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    runner = CliRunner()
    before = (run_dir / "metrics.json").read_text()
    res = runner.invoke(main, ["train", "--config", str(config), "--out", str(run_dir)])
    assert res.exit_code != 0 and "already holds a run" in res.output
    assert (run_dir / "metrics.json").read_text() == before
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = runner.invoke(main, ["train", "--config", str(config), "--out", str(blocker / "run")])
    assert res.exit_code != 0 and "not writable" in res.output
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        res = runner.invoke(main, ["train", "--config", str(config), "--out", str(locked / "r")])
        assert res.exit_code != 0 and "not writable" in res.output
    res = runner.invoke(main, ["train", "--config", str(config), "--out", str(tmp_path / "new"),
                               "--set", "model.num_heads=-1"])
    assert res.exit_code != 0 and "`model.num_heads`" in res.output
    assert not (tmp_path / "new" / "config.yaml").exists()
    res = runner.invoke(main, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert res.exit_code != 0 and "nothing to resume" in res.output
