"""Posteriors for a whole HATS catalogue on Dask through LSDB (``irisml-tf survey``).

:func:`survey_catalog` takes an LSDB catalogue (or a HATS path) and a model and returns a *lazy*
LSDB catalogue of posteriors: ``infer``'s per-chunk function (:class:`~irisml_tf.app.infer.ChunkInference`)
mapped over the HEALPix partitions with ``map_partitions``. Every input column is kept (renamed
``<name>_in`` where it collides with an output column, as in ``infer``), the columns of
:func:`~irisml_tf.app.infer.output_columns` are added with the same per-row statuses, and the
partitioning, the spatial index ``_healpix_29`` and the row order are those of the input. A margin
cache of the input is dropped (posteriors are per row; a margin would be inferred twice).

* The model is loaded once per Dask worker process, not once per partition: the mapped function
  (:class:`PartitionInference`) carries the model's *path* and :func:`worker_model` keeps one
  loaded model per path in each process. Workers need the model directory on a path they can
  read (a shared file system on a cluster).
* Reproducible whatever the partitioning: each row's seed comes from its ``source_id``, else from
  the spatial index and its occurrence (:mod:`irisml_tf.rowseed`), the rule ``infer`` uses; the
  exported model draws each star from its own seed and pads its batches, so a row's numbers do
  not depend on the partition or sub-batch it lands in, bit for bit.
* Bad rows get ``infer``'s statuses. A partition whose columns differ from the catalogue's (its
  parquet file lacks a column the catalogue's schema lists, or LSDB hands over other columns)
  stops the run with :class:`SurveyError` naming the pixel.

:func:`write_survey` writes the lazy catalogue as HATS with LSDB's ``write_catalog`` (a progress bar on a
terminal, a line per finished partition in a log). LSDB marks each written partition; a run that
stops (a failed partition, a lost cluster, Ctrl-C) keeps them and the run's settings in
``<out>.survey/``, and ``resume=True`` writes only the partitions missing, then the catalogue's
metadata. It ends by counting the output's rows per status on the cluster
(:class:`SurveySummary`). :func:`run_survey` is the whole job: a Dask ``LocalCluster`` (or a
running scheduler), the lazy catalogue, the write.

Needs the ``survey`` extra (``pip install "irisml-tf[survey]"``: lsdb, hats, dask[distributed]).
"""
from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from irisml_tf.app.infer import (
    DEFAULT_MAX_BATCH_ELEMENTS,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_TARGET_ESS,
    ChunkInference,
    InferOptions,
    output_columns,
    prior_key,
    report_columns,
    require_bands,
    status_table,
    training_warning,
)
from irisml_tf.columns import DEFAULT_ERR, count_status
from irisml_tf.extras import require
from irisml_tf.physics.parallax import DEFAULT_ZERO_POINT
from irisml_tf.progress import tqdm_kwargs
from irisml_tf.rowseed import SPATIAL_INDEX
from irisml_tf.workdir import WorkDir

__all__ = ["survey_catalog", "write_survey", "run_survey", "open_catalog", "SurveyOptions", "SurveySummary",
           "SurveyError", "PartitionInference", "worker_model", "model_loads", "dask_client",
           "available_cores"]
#: the settings file's layout (2: the adaptive engine, user prior); a run of another format is not resumed
_FORMAT = 2


class SurveyError(ValueError):
    """A survey that cannot run or could not finish; the message says why and what to do."""


def _lsdb():
    require("survey")
    import lsdb

    return lsdb


# --- options and result --------------------------------------------------------------------------

@dataclass(frozen=True)
class SurveyOptions:
    """The settings of a survey run.

    num_samples, seed, default_err, max_batch_elements, target_ess, max_draws, prior,
    parallax_zero_point: as for
    ``infer`` (:class:`~irisml_tf.app.infer.InferOptions`). workers: processes of the ``LocalCluster``
    (default: one per core); scheduler: the address of a running Dask scheduler to use instead
    (``tcp://host:8786``); tf_threads: TensorFlow intra-/inter-op threads per ``LocalCluster``
    worker (default: cores // workers); resume: continue the run whose ``<out>.survey/`` exists.
    """

    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = 0
    default_err: float = DEFAULT_ERR
    max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS
    workers: int | None = None
    scheduler: str | None = None
    tf_threads: int | None = None
    resume: bool = False
    target_ess: float = DEFAULT_TARGET_ESS
    max_draws: int | None = None
    prior: Path | dict | None = None
    parallax_zero_point: float = DEFAULT_ZERO_POINT

    def infer_options(self) -> InferOptions:
        """The per-chunk settings ``infer`` would run with."""
        return InferOptions(num_samples=self.num_samples, seed=self.seed, default_err=self.default_err,
                            max_batch_elements=self.max_batch_elements, target_ess=self.target_ess,
                            max_draws=self.max_draws, prior=self.prior,
                            parallax_zero_point=self.parallax_zero_point)

    def validate(self, model=None) -> SurveyOptions:
        """These options, checked (ValueError naming the option; with ``model`` also against its
        limits, as ``infer`` checks them) and normalised."""
        checked = self.infer_options().validate(model)
        for name in ("workers", "tf_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be ≥ 1 or None, got {value}")
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("give `workers` (a LocalCluster) or `scheduler` (a running cluster), not both")
        return replace(self, seed=checked.seed, default_err=checked.default_err)


@dataclass
class SurveySummary:
    """What :func:`write_survey` did. counts: output rows per status key; rows_in: the input's
    rows when its metadata knows them; partitions_resumed: written by an earlier session."""

    out: Path
    rows: int
    inferred: int
    skipped: int
    counts: dict[str, int]
    seconds: float
    partitions: int
    partitions_resumed: int = 0
    rows_in: int | None = None
    workers: int | None = None

    def table(self) -> str:
        """Rows per status, as ``infer`` prints them."""
        return status_table(self.counts, self.rows, self.inferred, self.skipped)


# --- the model, once per worker process ----------------------------------------------------------

_MODELS: dict[str, object] = {}
_MODELS_LOCK = threading.Lock()
_LOADS: Counter = Counter()


def worker_model(path: str):
    """The :class:`~irisml_tf.serving.ExportedModel` at ``path``, loaded once per process (its graph
    too, by a one-star run under the lock: a worker's threads share it)."""
    with _MODELS_LOCK:
        model = _MODELS.get(path)
        if model is None:
            from irisml_tf.serving import load_model

            model = load_model(path)
            one = np.ones((1, 1), np.float32)
            model.run(np.zeros((1, 1), np.int32), 15 * one, 0.05 * one, 1, seed=0)
            _MODELS[path] = model
            _LOADS[path] += 1
    return model


def model_loads() -> dict[str, int]:
    """How many times this process loaded each model (``client.run(model_loads)`` asks every worker)."""
    return dict(_LOADS)


# --- the per-partition function ------------------------------------------------------------------

_STRING = pd.ArrowDtype(pa.large_string())


def _output_dtypes(params) -> dict[str, object]:
    kinds = {"n_bands": np.dtype(np.int32), "outlier_band": _STRING, "status": _STRING}
    return {c: kinds.get(c, np.dtype(np.float32)) for c in output_columns(params)}


@dataclass(frozen=True)
class PartitionInference:
    """The function ``map_partitions`` runs on each partition (with its HEALPix pixel): ``infer``'s
    per-chunk function on the partition's rows, the input index kept. Picklable: it holds the model's
    path, and each worker process loads the model once (:func:`worker_model`).

    columns: the catalogue's columns, which every partition must have; dtypes: of the output
    columns; source: the HATS catalogue's directory when read from disk (each partition's parquet
    file is checked for the catalogue's columns: LSDB fills a missing one with nulls, which would
    read as "not observed").
    """

    model_path: str
    columns: tuple[str, ...]
    options: InferOptions
    dtypes: Mapping[str, object]
    source: str | None = None
    npix_suffix: str = ".parquet"

    def __call__(self, df: pd.DataFrame, pixel) -> pd.DataFrame:
        self._check_columns(list(df.columns), pixel)
        runner = ChunkInference.for_columns(worker_model(self.model_path), self.columns, self.options)
        table = runner(df).table  # no start: rows without source_id are keyed by the spatial index
        table.index = df.index
        return table.astype(dict(self.dtypes))

    def _check_columns(self, got: list, pixel) -> None:
        if got != list(self.columns):
            _differ(pixel, "LSDB handed over", got, self.columns)
        if self.source is None or self.npix_suffix != ".parquet":
            return
        from hats.io import file_io, pixel_catalog_file

        path = pixel_catalog_file(self.source, pixel, npix_suffix=self.npix_suffix)
        names = file_io.read_parquet_metadata(path).schema.to_arrow_schema().names
        if not set(self.columns) <= set(names):
            _differ(pixel, f"its file {path} has", [n for n in names if n != SPATIAL_INDEX], self.columns)


def _differ(pixel, where: str, got, expected) -> None:
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    raise SurveyError(f"partition {pixel}: its columns differ from the catalogue's ({where} "
                      f"{len(got)} columns; missing: {', '.join(map(str, missing)) or '-'}; not in the catalogue: "
                      f"{', '.join(map(str, extra)) or '-'}). Rebuild the catalogue so every partition has the "
                      "same columns (lsdb's write_catalog or hats-import), then rerun")


# --- the lazy catalogue --------------------------------------------------------------------------

def open_catalog(path):
    """The HATS catalogue (or collection) at ``path`` with all its columns: (catalogue, the directory
    its partition files are in). SurveyError when ``path`` holds no HATS object catalogue."""
    lsdb = _lsdb()
    try:
        catalog = lsdb.open_catalog(path, columns="all")
    except (OSError, ValueError, TypeError) as e:  # TypeError: a margin or other auxiliary dataset
        raise SurveyError(f"{path} is not a HATS catalogue ({e}). Make one with lsdb "
                          "(`lsdb.from_dataframe(df, ra_column=..., dec_column=...).write_catalog(path)`) or "
                          "hats-import") from None
    if not isinstance(catalog, lsdb.Catalog):
        raise SurveyError(f"{path} is a HATS {type(catalog).__name__}, not an object catalogue of stars")
    return catalog, str(catalog.hc_structure.catalog_base_dir)


def _without_margin(catalog):
    if getattr(catalog, "margin", None) is None:
        return catalog
    catalog = copy.copy(catalog)
    catalog.margin = None
    return catalog


def _load_model(model):
    from irisml_tf.serving import ExportedModel, load_model

    return model if isinstance(model, ExportedModel) else load_model(model)


def survey_catalog(catalog, model=None, options: SurveyOptions | None = None, *,
                   echo: Callable[[str], None] | None = None, **overrides):
    """The lazy LSDB catalogue of posteriors for ``catalog`` (module docstring).

    Args:
      catalog: an ``lsdb.Catalog`` (e.g. a cross-match) or the path of a HATS catalogue.
      model: an ExportedModel or the path of an exported SavedModel (default: the shipped model);
        workers load it from its path.
      options: :class:`SurveyOptions`; ``overrides`` any of its fields by keyword.
      echo: called with the column report (which column gives which band).

    Nothing runs until the result is computed or written (:func:`write_survey`). Raises
    SurveyError / ValueError naming the problem (not a HATS catalogue, no usable band, options).
    """
    options = replace(options or SurveyOptions(), **overrides)
    return _posteriors(catalog, _load_model(model), options, echo)[0]


def _posteriors(catalog, model, options: SurveyOptions, echo) -> tuple:
    """(the lazy posterior catalogue, the input catalogue without margin)."""
    lsdb = _lsdb()
    options = options.validate(model)
    source, suffix = None, ".parquet"
    if not isinstance(catalog, lsdb.Catalog):
        catalog, source = open_catalog(catalog)
        suffix = catalog.hc_structure.catalog_info.npix_suffix or suffix
    catalog = _without_margin(catalog)
    columns = list(catalog.columns)
    runner = ChunkInference.for_columns(model, columns, options.infer_options())
    if echo is not None:
        report_columns(runner, model, echo, columns)
    require_bands(runner, model, catalog.name, columns)
    dtypes = _output_dtypes(model.param_names)
    meta = catalog.meta.rename(columns=runner.renamed) if runner.renamed else catalog.meta.copy()
    for c, dtype in dtypes.items():
        meta[c] = pd.Series(dtype=dtype, index=meta.index)
    fn = PartitionInference(str(Path(model.path).resolve()), tuple(columns), options.infer_options(), dtypes,
                            source, suffix)
    return catalog.map_partitions(fn, meta=meta, include_pixel=True), catalog


# --- writing -------------------------------------------------------------------------------------

def _settings(catalog, model, options: SurveyOptions) -> dict:
    """What identifies a run (``<out>.survey/manifest.json``): a resumed run must match it."""
    info = catalog.hc_structure.catalog_info
    return {"format": _FORMAT, "input": str(catalog.hc_structure.catalog_base_dir or catalog.name),
            "input_rows": info.total_rows, "partitions": len(catalog.get_healpix_pixels()),
            "model": str(Path(model.path).resolve()), "model_step": model.meta.training.step,
            "num_samples": options.num_samples, "seed": options.seed, "default_err": options.default_err,
            "max_batch_elements": options.max_batch_elements, "target_ess": float(options.target_ess),
            "max_draws": options.max_draws, "prior": prior_key(options.prior),
            "parallax_zero_point": float(options.parallax_zero_point)}


def _open_work(out: Path, settings: Mapping, resume: bool, say) -> WorkDir:
    """The run's settings directory ``<out>.survey/``; refuses an existing finished ``out``."""
    work = WorkDir.open(out.with_name(out.name + ".survey"), settings, resume=resume, target=out, say=say)
    if out.exists() and any(out.iterdir()) and not work.path.exists():
        raise FileExistsError(f"{out} exists and holds no unfinished survey: choose another output, or "
                              "delete it to run again")
    return work


def _done_partitions(out: Path) -> int:
    from lsdb.io.to_hats import read_done_pixels  # LSDB's own record of written partitions

    return len(read_done_pixels(out)) if (out / "done").is_dir() else 0


def _status_counts(out: Path) -> tuple[int, Counter]:
    """Rows and rows per status key of the written catalogue, counted on the cluster."""
    cat = _lsdb().read_hats(out, columns=["status"])
    per_status = cat.to_dask_dataframe()["status"].value_counts(split_out=1).compute()
    counts: Counter = Counter()
    for status, n in per_status.items():
        for key in count_status([status]):
            counts[key] += int(n)
    return int(per_status.sum()), counts


def _write(posteriors, out: Path, work: WorkDir, progress: bool, say) -> SurveySummary:
    t0 = time.perf_counter()
    resumed = _done_partitions(out)
    if resumed:
        say(f"resuming: {resumed} partition(s) already written in {out}")
    work.start()
    props = {f"irisml_tf_{k}": v for k, v in work.settings.items() if k in ("model", "seed", "num_samples")}
    try:
        posteriors.write_catalog(out, as_collection=False, resume=True, progress_bar=progress,
                           tqdm_kwargs=tqdm_kwargs("survey", "partition"), addl_hats_properties=props)
    except Exception as e:  # LSDB reports a partition's error as a RuntimeError naming the pixel
        raise SurveyError(f"the survey stopped: {type(e).__name__}: {e}\n{_kept(out)}") from e
    rows, counts = _status_counts(out)
    skipped = sum(n for k, n in counts.items() if k.startswith("skipped:"))
    rows_in = work.settings.get("input_rows")
    if rows_in is not None and rows != rows_in:
        raise SurveyError(f"{out} has {rows} rows but the input has {rows_in}: rerun with --resume, or delete "
                          f"{out} and {work.path} and run again")
    work.remove()
    return SurveySummary(out, rows, rows - skipped, skipped, dict(counts), time.perf_counter() - t0,
                         len(posteriors.get_healpix_pixels()), resumed, rows_in)


def _kept(out: Path) -> str:
    return (f"finished partitions are kept in {out}; fix the cause and rerun the same command with --resume "
            "(resume=True) to write the others")


def write_survey(posteriors, out, *, settings: Mapping | None = None, resume: bool = False, progress: bool = True,
                 echo: Callable[[str], None] | None = None) -> SurveySummary:
    """Write a lazy posterior catalogue (:func:`survey_catalog`) as HATS at ``out`` on the current Dask
    scheduler, and count its rows per status. ``settings``: what identifies the run (JSON), kept in
    ``<out>.survey/`` until it finishes; ``resume``: continue that run (the settings must match)."""
    say = echo or _silent
    out = Path(out)
    work = _open_work(out, dict(settings or {}), resume, say)
    return _write(posteriors, out, work, progress, say)


def _silent(_msg: str) -> None:
    pass


# --- the job -------------------------------------------------------------------------------------

def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(options: SurveyOptions, say=_silent) -> Iterator:
    """A Dask client: on the running scheduler ``options.scheduler``, or on a new ``LocalCluster``
    of ``options.workers`` processes (one Dask thread each; TensorFlow gets ``tf_threads``)."""
    require("survey")
    from dask.distributed import Client, LocalCluster

    if options.scheduler is not None:
        with Client(options.scheduler) as client:
            say(f"Dask scheduler {options.scheduler}: {len(client.scheduler_info()['workers'])} worker(s)")
            yield client
        return
    workers = options.workers or available_cores()
    threads = options.tf_threads or max(1, available_cores() // workers)
    env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, env=env,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        say(f"Dask LocalCluster: {workers} worker(s) × {threads} TensorFlow thread(s); "
            f"dashboard {client.dashboard_link}")
        yield client


def run_survey(catalog, out, model=None, options: SurveyOptions | None = None, *, progress: bool = True,
               echo: Callable[[str], None] | None = None, **overrides) -> SurveySummary:
    """The whole ``irisml-tf survey`` job: the lazy catalogue of ``catalog`` (:func:`survey_catalog`),
    written as HATS at ``out`` (:func:`write_survey`) on a Dask cluster (:func:`dask_client`).
    Input, model, options and output are checked before the cluster starts."""
    say = echo or _silent
    model = _load_model(model)
    options = replace(options or SurveyOptions(), **overrides).validate(model)
    if warning := training_warning(model.meta):
        say(warning)
    posteriors, source = _posteriors(catalog, model, options, say)
    out = Path(out)
    work = _open_work(out, _settings(source, model, options), options.resume, say)
    with dask_client(options, say) as client:
        summary = _write(posteriors, out, work, progress, say)
        summary.workers = len(client.scheduler_info().get("workers", {})) or None
    return summary
