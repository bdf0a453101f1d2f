"""`irisml-tf train`: parse the arguments, call irisml_tf.app.train, print where the run stands."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .main import main


@main.command(help="""Train the amortised posterior on simulated stars and write the run to
RUN_DIR: config.yaml (the resolved config), validation.npz, logs/ (TensorBoard), checkpoints/,
metrics.json and, when done, final.weights.h5.

The config is the defaults, overridden by --config FILE, overridden by each --set KEY=VALUE
(KEY as section.key, VALUE parsed as YAML, e.g. --set training.steps=500 --set
model.made_hidden=[64,64]). Every key is documented in configs/default.yaml. Problems in the
config or RUN_DIR stop the command before training starts.

A RUN_DIR that already holds a run is refused unless --resume (continue from its last
checkpoint with the same step counter and data order) or --overwrite (replace it). SIGTERM or
Ctrl-C saves a checkpoint after the current step and exits with status 143 (130 for Ctrl-C);
--resume continues; --max-steps N stops the same way (status 0) after N steps. The last line
says at which step the run stopped and from which step its last validation is.
Uses MirroredStrategy when several GPUs (or --cpu-replicas > 1 logical CPUs) are visible.""")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Config YAML (optional with --resume: the run's own config).")
@click.option("--out", "run_dir", type=click.Path(file_okay=True, path_type=Path), required=True,
              help="Run directory.")
@click.option("--resume", is_flag=True,
              help="Continue the run in RUN_DIR from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in RUN_DIR.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. training.steps=1000 (repeatable).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop (with a checkpoint) after this many steps in this invocation.")
@click.option("--cpu-replicas", type=click.IntRange(min=1), default=None,
              help="Split the CPU into N logical devices and train under MirroredStrategy "
                   "(checks of the distributed path; no speed-up on a CPU).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar (step, steps/s, loss) on stderr.")
def train(config_path, run_dir, resume, overwrite, overrides, max_steps, cpu_replicas,
          progress) -> None:
    from irisml_tf.app.train import TrainOptions, run_training
    from irisml_tf.rundir import RunDirError
    from irisml_tf.training.config import ConfigError

    try:
        options = TrainOptions(run_dir=run_dir, config=config_path, overrides=tuple(overrides),
                               resume=resume, overwrite=overwrite, max_steps=max_steps,
                               cpu_replicas=cpu_replicas, progress=progress)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    try:
        result = run_training(options, announce=lambda msg: click.echo(msg, err=True))
    except (ConfigError, RunDirError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(result.message(), err=not result.completed)
    sys.exit(result.exit_code)
