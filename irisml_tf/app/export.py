"""The export job (`irisml-tf export`): a training run → a checked SavedModel.

:func:`export_run` writes the SavedModel (:func:`irisml_tf.serving.export_model`), verifies it in a
fresh TensorFlow-only process (:func:`irisml_tf.serving.check_export`) unless told not to, and
says how far the run trained: exporting an unfinished run (metrics.json status "interrupted" or
"running") succeeds, and :meth:`ExportResult.training_note` says so, with the step reached.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from irisml_tf.serving import ExportCheck, ExportedModel, TrainingRecord, check_export, export_model

__all__ = ["ExportOptions", "ExportResult", "export_run"]


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how (the arguments of `irisml-tf export`)."""

    run_dir: Path
    out_dir: Path
    max_samples: int = 20000  # cap on num_samples per star (memory grows as B × N)
    max_draws: int | None = None  # the engine's draw budget per star, fixed in the graph (None: default)
    weights: Path | None = None  # a .weights.h5 to export instead of the run's own weights
    overwrite: bool = False  # replace out_dir if it exists
    check: bool = True  # verify in a clean TensorFlow process


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote: the SavedModel, its size, the run's training record and the
    clean-process check (None when not asked for)."""

    run_dir: Path
    out_dir: Path
    size_bytes: int
    training: TrainingRecord
    check: ExportCheck | None

    @property
    def complete(self) -> bool:
        """Whether the run had finished training (metrics.json status "completed")."""
        return self.training.complete

    @property
    def ok(self) -> bool:
        """The check passed, or none was run."""
        return self.check is None or self.check.ok

    def training_note(self) -> str | None:
        """None for a finished run, else a sentence saying how far the exported run trained."""
        t = self.training
        if t.complete:
            return None
        if t.status is None:
            return "the run has no metrics.json: how far it trained is unknown"
        return (f"the run did not finish training (status {t.status}): the export holds the model at "
                f"step {t.step} of {t.steps_total}; `irisml-tf train --resume --out {self.run_dir}` "
                "continues the run, then export again")


def export_run(options: ExportOptions) -> ExportResult:
    """Export ``options.run_dir`` to ``options.out_dir`` (final weights, or the latest checkpoint of
    an unfinished run) and check it. Raises FileNotFoundError / FileExistsError / ValueError as
    :func:`~irisml_tf.serving.export_model` does; a failed check is in the result (``ok``)."""
    from irisml_tf.inference.adaptive import AdaptiveOptions

    engine = AdaptiveOptions() if options.max_draws is None else AdaptiveOptions(max_draws=options.max_draws)
    out = export_model(options.run_dir, options.out_dir, max_samples=options.max_samples,
                       weights=options.weights, overwrite=options.overwrite, engine=engine)
    check = check_export(out) if options.check else None
    return ExportResult(run_dir=Path(options.run_dir), out_dir=out, size_bytes=_size(out),
                        training=ExportedModel(out).meta.training, check=check)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
