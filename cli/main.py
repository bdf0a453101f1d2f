"""`irisml-tf`: the click group; each command is a thin function over the library."""
from __future__ import annotations

import os

import click

# TensorFlow's C++ start-up chatter is not for catalogue users
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="irisml-tf")
def main() -> None:
    """Stellar parameters (Teff, log g, [M/H], A_V, R_V) from broadband photometry by neural
    posterior estimation."""


def _register() -> None:
    from . import bands_cmd, export_cmd, grid_cmd, simulate_cmd  # noqa: F401  (commands attach to `main`)
    from . import evaluate_cmd, infer_cmd, mcmc_cmd, train_cmd  # noqa: F401
    from . import survey_cmd  # noqa: F401


_register()
