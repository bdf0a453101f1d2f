"""`irisml-tf train`: train (or continue) a run, and say honestly where it stopped.

:func:`run_training` takes :class:`TrainOptions` (config file and ``--set`` overrides, run
directory, resume/overwrite, step limit, CPU replicas, progress bar), runs
:func:`irisml_tf.training.train` and returns a :class:`TrainResult`, whose :meth:`~TrainResult.
message` says at which step the run stopped and from which step its last validation is, and
whose :attr:`~TrainResult.exit_code` is the command's exit status.
"""
from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from irisml_tf.rundir import COMPLETED
from irisml_tf.training.config import ConfigError

__all__ = ["INTERRUPTED_EXIT_CODES", "TrainOptions", "TrainResult", "Validation", "run_training"]

#: exit status of `irisml-tf train` stopped by a signal: 128 + the signal's number
INTERRUPTED_EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


@dataclass(frozen=True)
class TrainOptions:
    """What to train and where. ``config`` may be None only with ``resume`` (the run's own)."""

    run_dir: Path
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    resume: bool = False
    overwrite: bool = False
    max_steps: int | None = None
    cpu_replicas: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.config is None and not self.resume:
            raise ConfigError("--config FILE is required (except with --resume)")
        if self.config is not None and not Path(self.config).is_file():
            raise ConfigError(f"--config: {self.config} does not exist or is not a file")


@dataclass(frozen=True)
class Validation:
    """The last validation of a run: at ``step``, its NLL and calibration error."""

    step: int
    nll: float
    calibration_error: float


@dataclass(frozen=True)
class TrainResult:
    """Where a run stands after this session of training."""

    run_dir: Path
    status: str  # completed / interrupted
    step: int
    steps_total: int
    session_start_step: int
    interrupted_by: str | None  # SIGTERM / SIGINT / max_steps
    validation: Validation | None
    steps_per_sec: float | None

    @classmethod
    def from_metrics(cls, run_dir: Path, metrics: Mapping) -> TrainResult:
        val = metrics.get("validation") or {}
        return cls(run_dir=Path(run_dir), status=metrics["status"], step=metrics["step"],
                   steps_total=metrics["steps_total"],
                   session_start_step=metrics["session_start_step"],
                   interrupted_by=metrics.get("interrupted_by"),
                   validation=Validation(val["step"], val["nll"], val["calibration_error"])
                   if val else None,
                   steps_per_sec=metrics.get("steps_per_sec"))

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal's number for a run stopped by SIGTERM / SIGINT."""
        return INTERRUPTED_EXIT_CODES.get(self.interrupted_by, 0)

    def validation_note(self) -> str:
        """Which validation the numbers are from: current, earlier, or from before a resume."""
        val = self.validation
        if val is None:
            return "no validation yet"
        numbers = f"val nll {val.nll:.3f}, calibration error {val.calibration_error:.3f}"
        if val.step == self.step:
            return numbers
        if val.step < self.session_start_step:
            return (f"no validation since the resume at step {self.session_start_step} "
                    f"(last at step {val.step}: {numbers})")
        return f"last validation at step {val.step}: {numbers}"

    def message(self) -> str:
        summary = f"step {self.step}/{self.steps_total}, {self.validation_note()}"
        if self.steps_per_sec:
            summary += f", {self.steps_per_sec:.2f} steps/s"
        if self.completed:
            return f"done: {summary}; run in {self.run_dir}"
        return (f"interrupted ({self.interrupted_by}) at {summary}; checkpoint saved at step "
                f"{self.step}, continue with: irisml-tf train --out {self.run_dir} --resume")


def split_devices(cpu_replicas: int | None) -> None:
    """Split the CPU into ``cpu_replicas`` logical devices (before TensorFlow starts)."""
    if not cpu_replicas or cpu_replicas <= 1:
        return
    from irisml_tf.training import split_cpu

    try:
        split_cpu(cpu_replicas)
    except RuntimeError as err:
        raise ConfigError(f"--cpu-replicas: {err}") from None


def run_training(options: TrainOptions,
                 announce: Callable[[str], None] | None = None) -> TrainResult:
    """Train as ``options`` say. The config and run directory are checked before anything is
    built (:class:`ConfigError`, :class:`~irisml_tf.rundir.RunDirError`)."""
    from irisml_tf.extras import require
    from irisml_tf.training import train

    require("plots")  # validation draws TensorBoard images: say so now, not at the first validation
    split_devices(options.cpu_replicas)
    metrics = train(options.config, options.run_dir, resume=options.resume,
                    overwrite=options.overwrite, overrides=options.overrides,
                    progress=options.progress, max_steps=options.max_steps, announce=announce)
    return TrainResult.from_metrics(options.run_dir, metrics)
