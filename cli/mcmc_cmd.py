"""`irisml-tf mcmc`: emcee on chosen catalogue rows, the reference for single stars, with the
comparison to the exported NPE model when there is one (the job: irisml_tf.app.mcmc)."""
from __future__ import annotations

from pathlib import Path

import click

from irisml_tf.app.mcmc import DEFAULT_MAX_STEPS, MAX_ROWS_WITHOUT_SELECTION

from .main import main
from .options import target_options


@main.command(help="""Run emcee on chosen stars of CATALOG and write one row per star to OUT.

The posterior is the one `infer` samples: the photometric likelihood with the distance term μ
marginalised (THE simulator, errors ⊕ the systematic floor), the parallax term where the row has a
parallax (parallax/parallax_error or Plx/e_Plx, mas), times the prior (--prior, else the training
prior) with the row's A_V prior columns (av_prior, av_prior_err, av_max); sys_floor, prior and
mass prior are the exported model's when there is one, else the defaults. Columns
are matched as in inference (canonical band names, survey and VizieR aliases, Gaia fluxes); rows
with fewer usable bands than the model's min_bands are reported and skipped.

Each chain runs --steps steps, then is extended in segments until it has converged: the chain
after burn-in is at least 50 autocorrelation times τ long and τ is stable (τ on its first three
quarters within 10 % of τ on all of it). It stops at --max-steps; a row whose chain stopped
unconverged says so in its status (mcmc:not_converged(...), with the reason).

OUT (.parquet .csv .fits .ecsv .vot, by extension) holds the catalogue's other columns, `row`
(0-based), `status` (as in `infer`: ok, or codes joined by `;`, including flag:<name> for each
quality flag of the NPE posterior and mcmc:not_converged), `n_bands`, with a model the NPE's
importance sampling `ess`, `is_efficiency` and `khat` (as `infer` names them), then wall time [s],
steps, acceptance, `converged`, and per parameter (teff [K], logg [dex], mh [dex], av [mag], rv):
τ [steps], ESS, MCMC median/p16/p84/std and, with a model, the NPE comparison: <p>_npe_median
(importance-weighted), <p>_npe_dmed_sigma = (NPE median − MCMC median)/MCMC std, <p>_in_npe68 /
<p>_in_npe95 = fraction of MCMC samples inside the NPE central 68 % / 95 % intervals (≈ 0.68 /
0.95 when NPE is right).

The same --seed gives identical chains; each row's chain depends only on (seed, row), so a row
gives the same answer whichever other rows are chosen.""")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rows", "rows_spec", default=None, metavar="SPEC",
              help="0-based rows, e.g. 0,3,5-7 (default: all rows, at most "
                   f"{MAX_ROWS_WITHOUT_SELECTION}).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output table, one row per star.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Exported model for prior, sys_floor and the NPE comparison "
                                 "(default: the shipped model, if present).")
@click.option("--no-npe", is_flag=True, help="No model: default prior and sys_floor, no comparison.")
@click.option("--walkers", type=click.IntRange(min=10), default=32, show_default=True,
              help="emcee walkers (even).")
@click.option("--steps", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Steps per walker of the first segment, burn-in included.")
@click.option("--max-steps", type=click.IntRange(min=2), default=None,
              help=f"Cap on steps per walker while extending an unconverged chain (default "
                   f"{DEFAULT_MAX_STEPS}, or --steps if larger; = --steps: no extension).")
@click.option("--burn", type=click.IntRange(min=0), default=500, show_default=True,
              help="Burn-in steps discarded.")
@click.option("--init", "init_from", type=click.Choice(["prior", "npe"]), default="prior",
              show_default=True, help="Start walkers at the best of 4096 prior draws, or at "
                                      "importance-weighted NPE samples (needs a model).")
@click.option("--npe-samples", type=click.IntRange(min=100), default=8192, show_default=True,
              help="NPE samples per star for the comparison (capped at the model's max_samples).")
@click.option("--default-err", type=click.FloatRange(min=0, min_open=True), default=None,
              help="1σ [mag] for magnitudes without a usable error (default 0.05).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the chains and the NPE draws (row r uses seed and r).")
@click.option("--samples-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the samples to this .npz: row [R], mcmc_samples [R, M, 5] (after "
                   "burn-in) and, with a model, npe_samples [R, N, 5], npe_weights [R, N].")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a corner plot per star (MCMC vs NPE weighted and unweighted) here.")
@target_options
def mcmc(catalog, rows_spec, out, model_dir, no_npe, walkers, steps, max_steps, burn, init_from, npe_samples,
         default_err, seed, samples_out, plots_dir, parallax_zero_point, prior_file) -> None:
    from irisml_tf.app.mcmc import MCMCOptions, chain_options, run_mcmc_catalog

    try:
        chain = chain_options(walkers, steps, burn, max_steps)
        options = MCMCOptions(rows=rows_spec, use_model=not no_npe, chain=chain, init=init_from,
                              npe_samples=npe_samples, default_err=default_err, seed=seed,
                              samples_out=samples_out, plots_dir=plots_dir, prior=prior_file,
                              parallax_zero_point=parallax_zero_point)
        summary = run_mcmc_catalog(catalog, out, options, model_dir=model_dir, say=_stderr)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.report())


def _stderr(msg: str) -> None:
    click.echo(msg, err=True)
