"""`irisml-tf survey`: posteriors for a whole HATS catalogue on a Dask cluster, through LSDB."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main
from .options import engine_options


@main.command(help="""Posterior of Teff, log g, [M/H], A_V and R_V for every row of the HATS
catalogue INPUT_HATS (a directory or URL, e.g. a cross-match written with lsdb), computed on a Dask
cluster and written as a HATS catalogue to --out.

\b
The output keeps every input column, the partitioning and the spatial index, and adds the
columns and per-row statuses of `irisml-tf infer` (see `irisml-tf infer --help`). Columns are
matched as `infer` matches them (the surveys' own names work).

\b
Runs on a LocalCluster of --workers processes (default: one per core), or on a running Dask
scheduler (--scheduler tcp://host:8786, e.g. started by dask-jobqueue on SLURM); workers need
irisml-tf with the survey extra and the model directory on a path they can read. Each worker
loads the model once. Each row's random seed comes from its source_id column (else its HEALPix
index), as in `infer`.

\b
A progress bar on a terminal (a line per finished partition in a log). A run that stops keeps its
finished partitions in --out and its settings in <out>.survey/; rerun the same command with
--resume to write only the others. Ends with the rows per status, as `infer` does.
Needs the survey extra: pip install "irisml-tf[survey]".""")
@click.argument("input_hats", metavar="INPUT_HATS")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output HATS catalogue directory.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Exported SavedModel directory (`irisml-tf export`). Default: the shipped model.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the LocalCluster. Default: one per core.")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler to use instead of a LocalCluster.")
@click.option("--tf-threads", type=click.IntRange(min=1), default=None,
              help="TensorFlow threads per LocalCluster worker. Default: cores / workers.")
@click.option("--samples", "num_samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Posterior draws per star resampled from the weighted draws (the flags use them).")
@engine_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--default-err", type=float, default=0.05, show_default=True,
              help="1σ error (mag) assumed for a good magnitude whose error is missing.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (its settings are in <out>.survey/).")
@click.option("--quiet", is_flag=True, help="No progress bar (or progress lines).")
def survey(input_hats, out, model_dir, workers, scheduler, tf_threads, num_samples, target_ess, max_draws,
           parallax_zero_point, prior_file, seed, default_err, resume, quiet) -> None:
    from irisml_tf.app.survey import SurveyError, SurveyOptions, run_survey
    from irisml_tf.extras import MissingExtra
    from irisml_tf.serving import default_model_path

    if model_dir is None:
        model_dir = default_model_path()
        if not model_dir.exists():
            raise click.UsageError(f"no --model given and no shipped model at {model_dir}: pass --model DIR "
                                   "(an `irisml-tf export` directory) or set $IRISML_TF_MODEL")
    options = SurveyOptions(num_samples=num_samples, seed=seed, default_err=default_err, workers=workers,
                            scheduler=scheduler, tf_threads=tf_threads, resume=resume, target_ess=target_ess,
                            max_draws=max_draws, prior=prior_file,
                            parallax_zero_point=parallax_zero_point)
    try:
        summary = run_survey(input_hats, out, model_dir, options, progress=not quiet, echo=click.echo)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: finished partitions are kept in {out}; rerun the same command "
                                   "with --resume to write the others") from None
    except (MissingExtra, SurveyError, ValueError, FileNotFoundError, FileExistsError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.table())
    resumed = f", {summary.partitions_resumed} written earlier" if summary.partitions_resumed else ""
    click.echo(f"wrote {summary.rows} rows in {summary.partitions} partitions{resumed} to {summary.out} "
               f"in {summary.seconds:.1f} s")
