"""Options shared by commands (click decorators); no TensorFlow here, so `--help` stays fast."""
from __future__ import annotations

from pathlib import Path

import click


def target_options(fn):
    """What the posterior is conditioned on beyond the bands, for every command that samples one
    (`infer`, `survey`, `mcmc`): --parallax-zero-point, --prior (arguments parallax_zero_point,
    prior_file). Defaults as irisml_tf.app.infer.InferOptions."""
    return _apply(fn, [
        click.option("--parallax-zero-point", type=float, default=-0.017, show_default=True,
                     help="Gaia parallax zero point (mas), subtracted from the parallax column (Lindegren+2021 "
                          "global DR3 value; 0 if you applied their full recipe)."),
        click.option("--prior", "prior_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None,
                     help="Your prior (YAML, keys of configs/prior.yaml); keys left out keep the training prior."),
    ])


def engine_options(fn):
    """The engine's per-run settings of `infer` and `survey`: --target-ess, --max-draws and
    :func:`target_options` (arguments target_ess, max_draws, parallax_zero_point, prior_file)."""
    return target_options(_apply(fn, [
        click.option("--target-ess", type=click.FloatRange(min=1), default=300, show_default=True,
                     help="Stop a star once its effective sample size reaches this (300: quantiles to ~0.1 σ)."),
        click.option("--max-draws", type=click.IntRange(min=1), default=None,
                     help="Draw budget per star [default: the model's, 20000; at most that]."),
    ]))


def _apply(fn, options):
    for option in reversed(options):
        fn = option(fn)
    return fn
