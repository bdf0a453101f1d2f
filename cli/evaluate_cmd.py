"""`irisml-tf evaluate`: accuracy and calibration of an exported model on fresh simulated stars
(the job: irisml_tf.app.evaluate)."""
from __future__ import annotations

from pathlib import Path

import click

from irisml_tf.data.testsets import BAND_SETS

from .main import main

_SETS = tuple(BAND_SETS)


@main.command(help="""Evaluate an exported model on N fresh simulated stars per band set and write
metrics.json, per-star tables (stars_<set>.parquet) and PNG figures to OUT.

Stars: θ from the model's own prior, magnitudes from the simulator, errors, noise and missing bands
from the model's training observation model (errors 0.002-0.3 mag by default, reference magnitude,
the mean over a star's bands, uniform in the run's ref_mag, 8-20 mag by default; --ref-mag
overrides it). Band sets: all (25 bands), gaia_2mass_wise (8), gaia (G, BP, RP) and random (the
observation model's own missing-band draws); every set sees the same stars and noise. A fixed
set keeps each of its bands the model can predict, a band past its detection limit with the
maximum error (0.3 mag).

Reported per set, before importance sampling (the flow's draws) and after (weighted): RMSE, bias
and MAD of the posterior median (teff in K, logg and mh in dex, av in mag), teff RMSE relative
to teff and on true teff 4000-7000 K, expected coverage of central intervals at levels 1-99 %
with the max |coverage - level|, SBC rank histograms, IS efficiency and Pareto k̂, flag rates and
stars per second. One star (star 0 of the first set) is also sampled with emcee for the corner
plot (corner_star0.png). Prints the targets table: each target ok, FAIL, or "n too small" when
the value lies within 2 σ of its limit (σ: the statistic's sampling error at this n), so that
this sample cannot decide it; values are compared at the precision shown. The same --seed gives
the same stars and numbers.""")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Exported model directory (irisml-tf export). Default: $IRISML_TF_MODEL, else the "
                   "shipped saved_models/default.")
@click.option("--n", "n", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Stars per band set.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the test stars, the posterior draws and MCMC.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (created; existing files of the same names are replaced).")
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Posterior draws per star (at most the model's max_samples).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Stars per model call (memory grows with batch size × samples).")
@click.option("--band-set", "sets", type=click.Choice(_SETS), multiple=True,
              help="Band set to evaluate (repeatable). Default: all four, in the order "
                   + ", ".join(_SETS) + ".")
@click.option("--ref-mag", type=(float, float), default=None, metavar="LO HI",
              help="Reference magnitude range [mag] of the test stars (default: the run's ref_mag).")
@click.option("--grid", "grid_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Grid file of the model (default: the shipped BOSZ grid; must be the exported one).")
@click.option("--mcmc-steps", type=click.IntRange(min=2), default=2000, show_default=True,
              help="emcee steps per walker (32 walkers, first quarter burn-in) for the corner star.")
@click.option("--no-mcmc", is_flag=True, help="Skip the MCMC reference (the corner plot shows the flow only).")
@click.option("--corner-samples", type=click.IntRange(min=10), default=5000, show_default=True,
              help="Posterior draws of the corner star (capped at the model's max_samples).")
@click.option("--parallax", "parallax", default=None, metavar="ERRORS",
              help="Run every band set again with simulated parallaxes, as <set>+plx: ERRORS is 'gaia' "
                   "(Gaia DR3 errors at each star's G) or a fraction of the true parallax (0.1: S/N 10). "
                   "Distances from each star's magnitude offset and a mass from the model's mass prior; "
                   "those sets also report distance, radius, mass and luminosity.")
@click.option("--no-plots", is_flag=True, help="Write metrics.json and the tables only.")
@click.option("--strict", is_flag=True,
              help="Exit with status 1 if any target of the first band set is judged FAIL (one the "
                   "sample is too small to judge does not count).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_dir, n, seed, out_dir, samples, batch_size, sets, ref_mag, grid_path, mcmc_steps, no_mcmc,
             corner_samples, parallax, no_plots, strict, quiet) -> None:
    from irisml_tf.app.evaluate import EvaluateOptions, evaluate as run

    try:
        options = EvaluateOptions(n=n, seed=seed, samples=samples, batch_size=batch_size, sets=sets or _SETS,
                                  ref_mag=ref_mag, grid=grid_path, mcmc_steps=None if no_mcmc else mcmc_steps,
                                  corner_samples=corner_samples, plots=not no_plots, progress=not quiet,
                                  parallax=parallax)
        result = run(model_dir, out_dir, options)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(result.targets_table())
    click.echo(f"wrote {out_dir / 'metrics.json'} and {len(result.files)} files in {result.wall_seconds:.1f} s")
    if strict and result.failed_targets():
        raise SystemExit(1)
