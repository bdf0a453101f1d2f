"""`irisml-tf`: the click group; each command is a thin function over the library."""
from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import os
import sys
import tempfile

import click

from irisml_tf.extras import MissingExtra, extra_for, missing_message


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Imports TensorFlow with file descriptor 2 sent to a temporary file. Its C++ start-up log
    (the oneDNN notice, twice; "failed call to cuInit" on machines without a GPU driver) is written
    before TF_CPP_MIN_LOG_LEVEL applies, so only the descriptor can hide it; the log is replayed
    when the import fails."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = functools.partial(_quiet_exec, spec.loader.exec_module)
        return spec


def _quiet_exec(exec_module, module) -> None:
    with _stderr_to_file():
        exec_module(module)
        module.config.list_physical_devices()  # the CUDA probe: logs cuInit failures


@contextlib.contextmanager
def _stderr_to_file():
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            os.write(2, log.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _Group(click.Group):
    """The command group; a missing optional module becomes a one-line error naming the extra."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MissingExtra as e:
            raise click.ClickException(f"`irisml-tf {ctx.invoked_subcommand}`: {e}") from None
        except ModuleNotFoundError as e:
            if not e.name or extra_for(e.name) is None:
                raise
            raise click.ClickException(f"`irisml-tf {ctx.invoked_subcommand}`: {missing_message(e.name)}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's start-up log (CUDA probe, oneDNN notice) and its C++ warnings.")
@click.version_option(package_name="irisml-tf")
def main(verbose: bool) -> None:
    """Stellar parameters (Teff, log g, [M/H], A_V, R_V) from broadband photometry by neural
    posterior estimation."""
    if verbose:
        return
    # TensorFlow's C++ chatter is not for catalogue users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


def _register() -> None:
    # importing a command module attaches its command to `main`
    from . import (  # noqa: F401
        bands_cmd,
        evaluate_cmd,
        export_cmd,
        grid_cmd,
        infer_cmd,
        mcmc_cmd,
        simulate_cmd,
        survey_cmd,
        train_cmd,
    )


_register()
