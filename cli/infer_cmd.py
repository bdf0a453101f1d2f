"""`irisml-tf infer`: posterior summaries for every star of a catalogue."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main
from .options import engine_options


@main.command(help="""Posterior of Teff, log g, [M/H], A_V and R_V for every row of CATALOG
(.csv .parquet .fits .ecsv .vot/.xml), written to --out (same formats, by extension).

\b
Columns are matched case-insensitively by canonical name (Gaia_G, Gaia_G_err, …) or by the
surveys' own names (phot_g_mean_mag, j_m/j_msigcom, w1mpro/w1sigmpro, gMeanPSFMag, VizieR's
Gmag/e_Gmag, …; `irisml-tf bands` lists them); Gaia fluxes (e-/s) are converted with the DR3
zero points when a magnitude or its error is missing. The command prints which columns it used
and which it ignored.

\b
The engine: the model's flow proposes, the exact likelihood and YOUR prior decide. Per star,
adaptive importance sampling refines its proposal round by round until the effective sample size
reaches --target-ess or --max-draws are spent (then `flag:low_efficiency`). The prior is the
model's training prior unless --prior FILE.yaml gives other values (keys of configs/prior.yaml;
keys left out keep the training values; a prior reaching outside the training prior is refused).
Per-star A_V priors come from columns av_prior, av_prior_err (a 3-D dust map's A_V ± 1σ) and
av_max (a 2-D map's total column); the command says which it found.

\b
Parallaxes (Gaia's `parallax`/`parallax_error`, VizieR's `Plx`/`e_Plx`, mas) enter the likelihood
as a Gaussian in parallax, with the stellar mass marginalised under log10 M ~ N(0, 0.4²); the
--parallax-zero-point is subtracted first. Rows with one also get distance (pc), radius, mass and
luminosity (solar units) as _median, _p16, _p84; others get NaN and the colour-only posterior.

\b
Output: every input row in input order with its columns, then teff/logg/mh/av/rv each as
_median, _p16, _p84 (weighted quantiles), _mean, _std (K, dex, dex, mag, –), and n_bands, ess,
is_efficiency (ESS per draw), khat, n_draws, rounds, chi2, chi2_pvalue, mu (mag), outlier_band,
status (distance_…, radius_…, mass_…, luminosity_… after the five parameters). Input columns
named like an output column are kept as <name>_in.

\b
Bad input never stops the run or loses a row; `status` says what was wrong and what was done:
ok | dropped:<band>=<why> (unusable band: inf, sentinel ±99/±99.99/±999/±9999,
outside -5…32 mag, text, flux ≤ 0, error above the model's err_max) | default_err:<band>=<why>
(good magnitude without a usable error: --default-err assumed) | skipped:too_few_bands(n<min)
(NaN results) | prior:<column>_ignored(<why>) (an unusable A_V prior value: that row keeps the
file's prior) | parallax:<why> (an unusable parallax: text, no or non-positive error, arcsec- or
µas-sized values; colour-only posterior) | flag:<name> (quality flags). Empty cells mean "not observed" and are
not reported. A table of rows per status ends the run.

\b
Runs in chunks of --chunk-size rows (bounded memory), with a progress bar on a terminal (a few
plain progress lines when stderr goes to a file or a log). An interrupted run keeps its finished
chunks in <out>.parts/; rerun with --resume to continue. The same --seed gives identical output,
whatever the chunk size, resumed or not. A model whose training did not complete is used with a
warning.""")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Exported SavedModel directory (`irisml-tf export`). Default: the shipped model "
                   "(saved_models/default, or $IRISML_TF_MODEL).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output table (.csv .parquet .fits .ecsv .vot/.xml).")
@click.option("--samples", "num_samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Posterior draws per star written by --save-samples (resampled from the weighted "
                   "draws; the flags use them too). At most the model's max_samples.")
@engine_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed: each row draws from a seed made of this and its source_id (else its "
                   "row number), so the same seed gives the same output whatever the chunk size.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per chunk: memory bound and resume granularity.")
@click.option("--save-samples", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the weighted samples [rows, samples, 5] and weights (.h5/.hdf5 or .npz); "
                   "about rows × samples × 24 bytes.")
@click.option("--default-err", type=float, default=0.05, show_default=True,
              help="1σ error (mag) assumed for a good magnitude whose error is missing, ≤ 0, NaN or a sentinel.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from <out>.parts/.")
@click.option("--quiet", is_flag=True, help="No progress bar (or progress lines).")
def infer(catalog, model_dir, out, num_samples, target_ess, max_draws, parallax_zero_point, prior_file, seed,
          chunk_size, save_samples, default_err, resume, quiet) -> None:
    from irisml_tf.app.infer import InferOptions, infer_catalog
    from irisml_tf.serving import default_model_path, load_model

    if model_dir is None:
        model_dir = default_model_path()
        if not model_dir.exists():
            raise click.UsageError(f"no --model given and no shipped model at {model_dir}: pass --model DIR "
                                   "(an `irisml-tf export` directory) or set $IRISML_TF_MODEL")
    try:
        model = load_model(model_dir)
        options = InferOptions(num_samples=num_samples, seed=seed, chunk_size=chunk_size, save_samples=save_samples,
                               resume=resume, default_err=default_err, target_ess=target_ess,
                               max_draws=max_draws, prior=prior_file,
                               parallax_zero_point=parallax_zero_point)
        summary = infer_catalog(model, catalog, out, options, progress=not quiet, echo=click.echo)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: finished chunks are kept in {out}.parts/; "
                                   "rerun the same command with --resume to continue") from None
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.table())
    click.echo(f"wrote {summary.rows} rows to {summary.out} in {summary.seconds:.1f} s ({_speed(summary)})")
    if summary.samples is not None:
        click.echo(f"wrote samples to {summary.samples}")


def _speed(summary) -> str:
    """Rows inferred in this run per second of inference, e.g. ``40 inferred, 7.4 rows/s``."""
    rate = summary.rows_per_second
    if rate is None:
        return "no rows inferred in this run, rows/s n/a"
    if rate >= 100:
        text = f"{rate:.0f}"
    elif rate >= 1:
        text = f"{rate:.1f}"
    else:
        text = f"{rate:.2g}"
    return f"{summary.inferred_now} inferred, {text} rows/s"
