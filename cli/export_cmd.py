"""`irisml-tf export`: a training run → a SavedModel for `irisml-tf infer` and TF Serving."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main


@main.command(help="""Export the trained model of RUN_DIR (final weights, or the latest checkpoint
of an unfinished run) to OUT_DIR as a SavedModel with one signature, `serving_default`:

\b
  inputs:  band_index int32 [B, K] (-1 pads), mag float32 [B, K], mag_err float32 [B, K],
           num_samples int32 scalar, seed int32 [B, 2], target_ess float32 scalar,
           max_draws int32 scalar (at most --max-draws),
           prior_params float32 [21], av_prior, av_prior_err, av_max float32 [B] (NaN = none)
  outputs: samples [B, N, 5] (teff K, logg dex, mh dex, av mag, rv), weights [B, N];
           ess, efficiency, khat, log_evidence, chi2, chi2_pvalue, mu [B]; n_draws, rounds,
           n_target_evals, n_modes, converged, outlier_band, flag_bits, n_bands [B];
           median, p16, p84, mean, std and the flow's own q_median ... q_std [B, 5]

Band index i is the i-th band of `irisml-tf bands`. Everything runs in the graph (the adaptive
importance sampling engine: flow, simulator with the grid and extinction tables as constants,
prior, likelihood, mixture fits, PSIS, flags), so TF Serving and `saved_model_cli run` serve it.
OUT_DIR/assets/irisml.json holds the band order, the run's config, the engine settings, the
training prior's parameter vector and the training record; a run that did not finish training
is exported with a warning that says the step it reached. Unless --no-check, the export is
loaded in a fresh Python that imports only TensorFlow and its numbers are compared with the
library's on simulated stars.""")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--max-samples", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Cap on num_samples per star (memory grows as B x N).")
@click.option("--max-draws", type=click.IntRange(min=256), default=None,
              help="The engine's draw budget per star, fixed in the graph [default: 20000].")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A .weights.h5 file to export instead of the run's own weights.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Verify the SavedModel in a clean TensorFlow process.")
def export(run_dir, out_dir, max_samples, max_draws, weights, overwrite, check) -> None:
    from irisml_tf.app.export import ExportOptions, export_run

    options = ExportOptions(run_dir=run_dir, out_dir=out_dir, max_samples=max_samples, max_draws=max_draws,
                            weights=weights,
                            overwrite=overwrite, check=check)
    try:
        result = export_run(options)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result.out_dir} ({result.size_bytes / 1e6:.1f} MB)")
    note = result.training_note()
    if note:
        click.echo(f"warning: {note}", err=True)
    if result.check is not None:
        if not result.check.ok:
            raise click.ClickException(f"the clean-process check failed: {result.check.summary()}")
        click.echo(f"checked: a TensorFlow-only process reproduces the library ({result.check.summary()})")
