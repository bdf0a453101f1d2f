"""Posteriors for a whole catalogue: chunked, resumable, reproducible (``irisml-tf infer``).

:func:`infer_catalog` checks its options (:class:`InferOptions`), reads the catalogue in chunks
(:func:`irisml_tf.catalog.iter_table`), and hands each chunk to :class:`ChunkInference`, the
per-chunk function: it matches the columns to bands and cleans every row
(:mod:`irisml_tf.columns`), runs the exported model (:class:`irisml_tf.serving.ExportedModel`) in
sub-batches of at most ``max_batch_elements`` stars × samples and returns the chunk's output
frame (and samples). Each finished chunk goes to a part file in a work directory next to the
output, ``<out>.parts/``, with a manifest (:class:`irisml_tf.workdir.WorkDir`). When every chunk
is done the parts are joined, in input order, into ``out`` (format by extension) and the work
directory is removed.

* The engine: the exported model runs per-star adaptive importance sampling
  (:func:`irisml_tf.inference.engine.run_engine`) until each star's ESS reaches ``target_ess`` or
  its ``max_draws`` are spent, under the user's ``prior`` (default: the model's training prior)
  and the per-star A_V priors of the columns ``av_prior``/``av_prior_err``/``av_max``
  (:mod:`irisml_tf.prior_columns`; an unusable value falls back to the file's prior and says so in
  ``status``).
* Output: every input row, in input order, with its original columns, then for each parameter
  (teff, logg, mh, av, rv) ``_median``, ``_p16``, ``_p84`` (importance-weighted 16/50/84 %
  quantiles), ``_mean``, ``_std``; then ``n_bands`` (bands used), ``ess``, ``is_efficiency``
  (ESS per draw), ``khat`` (PSIS k̂), ``n_draws`` and ``rounds`` (the engine's draws and rounds),
  ``chi2`` and ``chi2_pvalue`` (best returned draw, n_bands − 1 dof), ``mu`` (distance modulus +
  radius term of that draw, mag), ``outlier_band`` (band name, empty if none) and ``status``
  (:mod:`irisml_tf.columns`; ``prior:…`` codes; plus ``flag:<name>`` for each quality flag).
  Skipped rows have NaN results. An input column whose name (case-insensitively) equals an
  output column is kept under ``<name>_in`` (``_in2`` … if that is taken too).
* Reproducible: every row gets a stateless seed from the run's seed and the row's key, its
  ``source_id`` when it has one, else its 0-based position in the input file
  (:func:`irisml_tf.rowseed.row_seeds`; ``irisml-tf survey`` uses the same rule). The exported
  model draws each star from its own seed and pads its batches (:mod:`irisml_tf.inference.rows`),
  so the same seed gives the same output, bit for bit, whatever the chunk size or
  ``max_batch_elements``, resumed or not.
* Resume: an interrupted run leaves ``<out>.parts/``; ``resume=True`` skips the chunks done. It
  refuses when the input file (size, mtime), the model, the seed, samples, chunk size, default
  error, batch bound, samples file, target ESS, draw budget or prior differ from the manifest.
  Without ``resume`` an existing work directory is an error (nothing is deleted).
* Memory: one chunk at a time, model calls of at most ``max_batch_elements`` stars × samples
  (~20 kB each inside the graph); ~chunk_size × samples × 24 bytes more with ``save_samples``.
  FITS, ECSV and VOTable inputs are read whole (astropy), and such outputs are assembled in
  memory; CSV and Parquet stream both ways.
* ``save_samples`` (.h5/.hdf5 via h5py, or .npz): ``samples`` float32 [R, N, 5] (physical units,
  N draws resampled from the engine's weighted draws), ``weights`` float32 [R, N] (1/N each),
  ``row`` int64 [R] (0-based input row), ``param_names``; skipped rows have NaN samples and zero weights.
* A model whose training did not complete is used, with a warning (:func:`training_warning`).
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from irisml_tf.catalog import TableChunks, TableWriter, count_rows, iter_table, table_suffix, write_table
from irisml_tf.columns import (
    DEFAULT_ERR,
    ColumnMatch,
    Prepared,
    check_default_err,
    count_status,
    match_columns,
    prepare_rows,
    status_string,
)
from irisml_tf.inference.engine import DERIVED_NAMES
from irisml_tf.inference.summaries import SUMMARY_NAMES
from irisml_tf.physics.parallax import DEFAULT_ZERO_POINT
from irisml_tf.physics.simulator import PARAM_NAMES
from irisml_tf.progress import ProgressBar, progress_bar
from irisml_tf.rowseed import row_seeds
from irisml_tf.serving import check_target_ess
from irisml_tf.workdir import WorkDir, atomic_write

__all__ = ["infer_catalog", "InferOptions", "InferSummary", "ChunkInference", "ChunkResult",
           "output_columns", "status_table", "report_columns", "require_bands", "training_warning",
           "SAMPLE_FORMATS", "DEFAULT_CHUNK_SIZE", "DEFAULT_NUM_SAMPLES", "DEFAULT_MAX_BATCH_ELEMENTS",
           "DEFAULT_TARGET_ESS", "prior_key"]

#: float output column ← model output
_FROM_MODEL = {"ess": "ess", "is_efficiency": "efficiency", "khat": "khat", "n_draws": "n_draws",
               "rounds": "rounds", "chi2": "chi2", "chi2_pvalue": "chi2_pvalue", "mu": "mu"}
_DIAGNOSTICS = ("n_bands", *_FROM_MODEL, "outlier_band", "status")
SAMPLE_FORMATS = (".h5", ".hdf5", ".npz")
DEFAULT_CHUNK_SIZE = 5000
DEFAULT_NUM_SAMPLES = 256
_DERIVED_STATS = ("median", "p16", "p84")
#: the engine stops a star at this ESS: the Monte-Carlo error of a weighted quantile is then
#: ≈ √(p(1−p)/ESS)/φ(z_p) σ, 0.07 σ for the median and 0.09 σ for p16/p84 — a tenth of the
#: posterior's width, below what a catalogue summary needs (ESS 1000 halves it at ~2x the cost)
DEFAULT_TARGET_ESS = 300.0
#: stars × draws per model call (draws: the larger of samples and the engine's draws per round).
#: The exported graph (simulator + likelihood) peaks at ~20 kB per star × draw (measured:
#: 65 536 → +1.5 GB, 262 144 → +6 GB): 64 stars per call at the engine's 1000 draws per round.
DEFAULT_MAX_BATCH_ELEMENTS = 65_536
#: the manifest's layout (3: the adaptive engine, user prior); a work directory of another format is
#: not resumed
_FORMAT = 3


def output_columns(param_names: Sequence[str] = PARAM_NAMES) -> list[str]:
    """The columns :func:`infer_catalog` appends, in order."""
    return ([f"{p}_{s}" for p in param_names for s in SUMMARY_NAMES] + list(_derived_columns())
            + list(_DIAGNOSTICS))


def _derived_columns() -> list[str]:
    """distance/radius/mass/luminosity × median/p16/p84 (NaN for rows without a parallax)."""
    return [f"{d}_{s}" for d in DERIVED_NAMES for s in _DERIVED_STATS]


# --- options -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InferOptions:
    """The settings of an ``infer`` run (see :func:`infer_catalog`).

    num_samples: posterior samples per star (1 … the model's max_samples); seed: integer ≥ 0;
    chunk_size: rows per chunk (memory bound and resume granularity); save_samples: .h5/.hdf5/.npz
    path for the weighted samples, or None; resume: continue the run whose work directory
    ``<out>.parts/`` exists; default_err: 1σ [mag] assumed for good magnitudes without a usable
    error; max_batch_elements: stars × samples per model call; stop_after: process at most this
    many chunks in this call, then stop and keep the work directory for a later ``resume`` (splits
    long runs into sessions; used by the tests). target_ess: the engine stops a star once its ESS
    reaches this; max_draws: its draw budget per star (None: the model's, fixed at export; at
    most that). prior: the user's prior, a YAML file or dict with the keys of configs/prior.yaml
    (keys left out keep the model's training prior; None: the training prior).
    parallax_zero_point: mas, subtracted from the catalogue's parallaxes (Gaia DR3: −0.017).
    """

    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    save_samples: Path | None = None
    resume: bool = False
    default_err: float = DEFAULT_ERR
    max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS
    stop_after: int | None = None
    target_ess: float = DEFAULT_TARGET_ESS
    max_draws: int | None = None
    prior: Path | dict | None = None
    parallax_zero_point: float = DEFAULT_ZERO_POINT

    def validate(self, model=None) -> InferOptions:
        """These options, checked (ValueError naming the option) and normalised (``save_samples`` a
        Path, ``seed`` an int); with ``model`` (an ExportedModel) also against its limits:
        ``num_samples`` ≤ its max_samples, ``default_err`` within its training error range,
        ``max_draws`` within its draw budget (:meth:`~irisml_tf.serving.ModelMeta.engine_budget`)."""
        save_samples = _check_save_samples(self.save_samples)
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be an integer ≥ 0, got {seed!r}")
        for name in ("chunk_size", "max_batch_elements"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be ≥ 1, got {getattr(self, name)}")
        if self.stop_after is not None and self.stop_after < 0:
            raise ValueError(f"`stop_after` must be ≥ 0 or None, got {self.stop_after}")
        max_n = int(model.meta.max_samples) if model is not None else None
        if max_n is not None and not 1 <= self.num_samples <= max_n:
            raise ValueError(f"`num_samples` must be in 1 … {max_n} (the model's max_samples), "
                             f"got {self.num_samples}")
        if self.num_samples < 1:
            raise ValueError(f"`num_samples` must be ≥ 1, got {self.num_samples}")
        check_target_ess(self.target_ess)
        if model is not None:
            obs = model.observation
            check_default_err(self.default_err, obs.err_min, obs.err_max)
            model.meta.engine_budget(self.target_ess, self.max_draws)
        return replace(self, save_samples=save_samples, seed=int(seed), default_err=float(self.default_err))


def prior_key(prior) -> str | None:
    """What identifies the user's prior in the manifest: the file's resolved path and contents."""
    import hashlib
    import json

    if prior is None:
        return None
    if isinstance(prior, dict):
        return "dict:" + hashlib.sha256(json.dumps(prior, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(prior)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
    return f"{path.resolve()}:{digest}"


def _check_save_samples(path) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() not in SAMPLE_FORMATS:
        raise ValueError(f"`save_samples` {path}: use one of {', '.join(SAMPLE_FORMATS)}")
    if path.suffix.lower() != ".npz":
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ValueError(f"`save_samples` {path}: HDF5 needs h5py (`pip install h5py`); "
                             "or write .npz") from None
    return path


def _check_paths(catalog, out) -> tuple[Path, Path]:
    catalog, out = Path(catalog), Path(out)
    if not catalog.exists():
        raise FileNotFoundError(f"catalogue {catalog} does not exist")
    table_suffix(catalog)
    table_suffix(out)
    if out.resolve() == catalog.resolve():
        raise ValueError(f"`out` {out} is the input catalogue; choose another file")
    return catalog, out


def training_warning(meta) -> str | None:
    """One line warning that the model (its :class:`~irisml_tf.serving.ModelMeta`) was exported
    from a training run that did not complete, naming the step reached; None when it completed or
    the export records no training status."""
    training = meta.training
    if training.complete or training.status is None:
        return None
    return (f"warning: this model's training did not complete (status `{training.status}` at step "
            f"{training.step} of {training.steps_total}): its posteriors may be less accurate than "
            "a fully trained model's")


# --- results -------------------------------------------------------------------------------------

@dataclass
class InferSummary:
    """What :func:`infer_catalog` did. counts: rows per status key (:func:`~irisml_tf.columns.status_key`);
    complete: False when stopped early (``stop_after``) — the work directory is then kept.
    inferred_now / inference_seconds: rows inferred by this call (not by the earlier sessions of a
    resumed run) and the seconds it spent on them."""

    out: Path
    samples: Path | None
    rows: int
    inferred: int
    skipped: int
    counts: dict[str, int]
    seconds: float
    complete: bool
    match: ColumnMatch
    renamed: dict[str, str] = field(default_factory=dict)
    chunks_run: int = 0
    chunks_resumed: int = 0
    work_dir: Path | None = None
    inferred_now: int = 0
    inference_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float | None:
        """Rows inferred per second of inference in this call; None when it inferred none."""
        if not self.inferred_now or self.inference_seconds <= 0:
            return None
        return self.inferred_now / self.inference_seconds

    def table(self) -> str:
        """Rows per status, ``ok`` first, then by count (:func:`status_table`)."""
        return status_table(self.counts, self.rows, self.inferred, self.skipped)


def status_table(counts: dict[str, int], rows: int, inferred: int, skipped: int) -> str:
    """The end-of-run table: rows per status key (``ok`` first, then by count) and the totals."""
    keys = sorted(counts, key=lambda k: (k != "ok", -counts[k], k))
    width = max([len("status")] + [len(k) for k in keys])
    lines = [f"{'status':<{width}}  {'rows':>9}  {'%':>6}", "-" * (width + 19)]
    for k in keys:
        pct = 100.0 * counts[k] / rows if rows else 0.0
        lines.append(f"{k:<{width}}  {counts[k]:>9}  {pct:>6.2f}")
    lines.append(f"{'rows':<{width}}  {rows:>9}   (inferred {inferred}, skipped {skipped})")
    return "\n".join(lines)


@dataclass
class ChunkResult:
    """One chunk inferred: ``table`` its rows (input columns, renamed where they collide) followed
    by :func:`output_columns`; ``samples`` float32 [R, N, 5] and ``weights`` float32 [R, N] when
    asked for (NaN samples, zero weights on skipped rows); ``inferred`` rows sent to the model."""

    table: pd.DataFrame
    samples: np.ndarray | None
    weights: np.ndarray | None
    inferred: int


# --- the per-chunk function ----------------------------------------------------------------------

def _rename_collisions(columns, outputs) -> dict[str, str]:
    taken = {str(c).lower() for c in columns} | {c.lower() for c in outputs}
    out_lower = {c.lower() for c in outputs}
    renamed = {}
    for c in columns:
        if str(c).lower() in out_lower:
            new, n = f"{c}_in", 2
            while new.lower() in taken:
                new, n = f"{c}_in{n}", n + 1
            taken.add(new.lower())
            renamed[c] = new
    return renamed


@dataclass
class _ModelOutputs:
    """Per-row model results of a chunk, NaN (or −1, 0) on the rows not inferred."""

    summaries: dict[str, np.ndarray]  # <param>_<summary> column → float32 [R]
    diagnostics: dict[str, np.ndarray]  # ess, is_efficiency, … → float32 [R]
    outlier: np.ndarray
    bits: np.ndarray
    samples: np.ndarray | None
    weights: np.ndarray | None
    rows: np.ndarray  # the rows inferred


class ChunkInference:
    """The per-chunk function of ``infer``: rows of a catalogue (a DataFrame) → :class:`ChunkResult`.

    Usable on its own, e.g. mapped over the partitions of a survey catalogue
    (:mod:`irisml_tf.app.survey`): build it once from the catalogue's column names
    (:meth:`for_columns`), then call it with each chunk and the input position of the chunk's
    first row (None for a HATS partition). Each row is seeded from its key
    (:func:`irisml_tf.rowseed.row_seeds`) and the model runs in sub-batches of at most
    ``max_batch_elements`` stars × samples, each given its rows' seeds [B, 2].
    """

    def __init__(self, model, match: ColumnMatch, renamed: dict[str, str] | None = None, *,
                 num_samples: int, seed: int, default_err: float = DEFAULT_ERR,
                 max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS, want_samples: bool = False,
                 target_ess: float = DEFAULT_TARGET_ESS, max_draws: int | None = None, prior=None,
                 parallax_zero_point: float = DEFAULT_ZERO_POINT):
        from irisml_tf.physics.prior import load_user_prior

        self.obs = model.observation
        check_default_err(default_err, self.obs.err_min, self.obs.err_max)
        self.model, self.match, self.renamed = model, match, dict(renamed or {})
        self.params = model.param_names
        self.default_err = default_err
        self.num_samples, self.seed = num_samples, seed
        self.target_ess, self.max_draws = float(target_ess), max_draws
        self.parallax_zero_point = float(parallax_zero_point)
        self.prior = load_user_prior(prior, model.meta.config["prior"], model.meta.lower, model.meta.upper)
        self.prior_params = self.prior.params
        draws = max(num_samples, model.meta.engine_options.draws_per_round)
        self.batch = max(1, max_batch_elements // draws)
        self.want_samples = want_samples

    @classmethod
    def for_columns(cls, model, columns: Iterable, options: InferOptions) -> ChunkInference:
        """For a table with these columns: bands matched by name, colliding columns renamed."""
        columns = list(columns)
        return cls(model, match_columns(columns), _rename_collisions(columns, output_columns(model.param_names)),
                   num_samples=options.num_samples, seed=int(options.seed), default_err=options.default_err,
                   max_batch_elements=options.max_batch_elements,
                   want_samples=options.save_samples is not None, target_ess=options.target_ess,
                   max_draws=options.max_draws, prior=options.prior,
                   parallax_zero_point=options.parallax_zero_point)

    def __call__(self, df: pd.DataFrame, start: int | None = None) -> ChunkResult:
        """The chunk ``df`` inferred; ``start``: the 0-based input position of its first row (the
        key of rows without a source_id), or None for a HATS partition (its spatial index)."""
        from irisml_tf.parallax_columns import read_parallax
        from irisml_tf.prior_columns import read_av_prior

        prep = prepare_rows(df, self.match, bands=self.model.bands, min_bands=self.obs.min_bands,
                            err_min=self.obs.err_min, err_max=self.obs.err_max, default_err=self.default_err)
        av = read_av_prior(df, *self.prior.av_support)
        plx = read_parallax(df, self.parallax_zero_point)
        for codes, a, p in zip(prep.codes, av.codes, plx.codes):
            codes.extend(a + list(p))
        outputs = self._run_model(prep, row_seeds(df, self.seed, start), av, plx)
        return ChunkResult(self._frame(df, prep, outputs), outputs.samples, outputs.weights, len(outputs.rows))

    def _run_model(self, prep: Prepared, seeds: np.ndarray, av, plx) -> _ModelOutputs:
        r, n = len(prep.skip), self.num_samples
        res = {f"{p}_{s}": np.full(r, np.nan, np.float32) for p in self.params for s in SUMMARY_NAMES}
        res.update({c: np.full(r, np.nan, np.float32) for c in _derived_columns()})
        diag = {k: np.full(r, np.nan, np.float32) for k in _FROM_MODEL}
        outlier, bits = np.full(r, -1, np.int32), np.zeros(r, np.int64)
        samples = np.full((r, n, 5), np.nan, np.float32) if self.want_samples else None
        weights = np.zeros((r, n), np.float32) if self.want_samples else None
        rows = np.flatnonzero(~prep.skip)
        for start in range(0, len(rows), self.batch):
            idx = rows[start:start + self.batch]
            # every band slot of the file, not trimmed to this batch's widest row: the sums over
            # bands must not change length with the batch (a row's numbers would round differently)
            o = self.model.run(prep.band_index[idx], prep.mag[idx], prep.mag_err[idx], n,
                               seed=seeds[idx], target_ess=self.target_ess, max_draws=self.max_draws,
                               prior_params=self.prior_params, av_prior=av.av_prior[idx],
                               av_prior_err=av.av_prior_err[idx], av_max=av.av_max[idx],
                               parallax=plx.plx[idx], parallax_error=plx.plx_err[idx],
                               parallax_zero_point=0.0)  # read_parallax subtracted it already
            for j, p in enumerate(self.params):
                for s in SUMMARY_NAMES:
                    res[f"{p}_{s}"][idx] = o[s][:, j]
            for i, name in enumerate(DERIVED_NAMES):
                for stat in _DERIVED_STATS:
                    res[f"{name}_{stat}"][idx] = o[f"derived_{stat}"][:, i]
            for key, src in _FROM_MODEL.items():
                diag[key][idx] = o[src]
            outlier[idx], bits[idx] = o["outlier_band"], o["flag_bits"]
            if samples is not None:
                samples[idx], weights[idx] = o["samples"], o["weights"]
        return _ModelOutputs(res, diag, outlier, bits, samples, weights, rows)

    def _frame(self, df: pd.DataFrame, prep: Prepared, outputs: _ModelOutputs) -> pd.DataFrame:
        codes = prep.codes
        flag_bits = self.model.meta.flag_bits
        for i in outputs.rows:
            codes[i].extend(f"flag:{name}" for name, bit in flag_bits.items() if outputs.bits[i] & bit)
        bands = self.model.bands
        results = pd.DataFrame({
            **outputs.summaries, "n_bands": prep.n_bands, **outputs.diagnostics,
            "outlier_band": [bands[b] if b >= 0 else "" for b in outputs.outlier],
            "status": [status_string(c) for c in codes]})
        out = df.rename(columns=self.renamed) if self.renamed else df.copy()
        return pd.concat([out.reset_index(drop=True), results], axis=1)

    def empty(self, columns) -> pd.DataFrame:
        """The output frame of a table with these columns and no rows."""
        out = pd.DataFrame(columns=[self.renamed.get(c, c) for c in columns])
        for c in output_columns(self.params):
            out[c] = pd.Series(dtype=str if c in ("outlier_band", "status") else
                               (np.int32 if c == "n_bands" else np.float32))
        return out


# --- the work directory: settings, chunks, assembly ----------------------------------------------

def _settings(catalog: Path, model, options: InferOptions) -> dict:
    """What identifies a run in its manifest (JSON): a resumed run must match it."""
    stat = catalog.stat()
    save = options.save_samples
    return {"format": _FORMAT, "input": str(catalog.resolve()), "input_size": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns, "model": str(Path(model.path).resolve()),
            "model_step": model.meta.training.step,
            "num_samples": options.num_samples, "seed": options.seed, "chunk_size": options.chunk_size,
            "target_ess": float(options.target_ess), "max_draws": options.max_draws,
            "prior": prior_key(options.prior), "parallax_zero_point": float(options.parallax_zero_point),
            "default_err": options.default_err, "max_batch_elements": options.max_batch_elements,
            "save_samples": str(Path(save).resolve()) if save else None}


@dataclass(frozen=True)
class _ChunkDone:
    """A finished chunk as the manifest records it."""

    part: str
    rows: int
    inferred: int
    counts: dict[str, int]
    samples_part: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if self.samples_part is None:
            del d["samples_part"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> _ChunkDone:
        return cls(d["part"], int(d["rows"]), int(d["inferred"]), dict(d["counts"]), d.get("samples_part"))


def _write_chunk(work: WorkDir, index: int, result: ChunkResult) -> _ChunkDone:
    """The chunk's part files (output rows, and samples if any), each written atomically."""
    part = work.write_part(f"part-{index:06d}.parquet", lambda tmp: result.table.to_parquet(tmp, index=False))
    samples_part = None
    if result.samples is not None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, samples=result.samples, weights=result.weights)

        samples_part = work.write_part(f"samples-{index:06d}.npz", write)
    return _ChunkDone(part, len(result.table), result.inferred, dict(count_status(result.table["status"])),
                      samples_part)


def _fill(samples, weights, parts: list[Path]) -> None:
    at = 0
    for p in parts:
        with np.load(p) as z:
            m = len(z["weights"])
            samples[at:at + m], weights[at:at + m] = z["samples"], z["weights"]
            at += m


def _write_samples(path: Path, parts: list[Path], rows: int, num_samples: int, params, work: WorkDir,
                   attrs: dict) -> None:
    """Join the per-chunk sample files (input order) into ``path``, atomically; ``row`` is the input row."""
    row = np.arange(rows, dtype=np.int64)

    def write_h5(tmp: Path) -> None:
        import h5py

        with h5py.File(tmp, "w") as f:
            chunks = (min(256, rows), num_samples, 5) if rows else None
            samples = f.create_dataset("samples", (rows, num_samples, 5), np.float32, chunks=chunks)
            weights = f.create_dataset("weights", (rows, num_samples), np.float32,
                                       chunks=chunks[:2] if chunks else None)
            _fill(samples, weights, parts)
            f.create_dataset("row", data=row)
            f.create_dataset("param_names", data=np.array(params, dtype=h5py.string_dtype()))
            f.attrs.update(attrs)

    def write_npz(tmp: Path) -> None:  # memory maps in the work dir, streamed into the zip by np.savez
        samples = np.lib.format.open_memmap(work / "samples.npy", "w+", np.float32, (rows, num_samples, 5))
        weights = np.lib.format.open_memmap(work / "weights.npy", "w+", np.float32, (rows, num_samples))
        _fill(samples, weights, parts)
        with open(tmp, "wb") as fh:
            np.savez(fh, samples=samples, weights=weights, row=row, param_names=np.array(params),
                     **{k: np.array(v) for k, v in attrs.items()})
        del samples, weights

    atomic_write(path, write_h5 if path.suffix.lower() in (".h5", ".hdf5") else write_npz)


def _assemble(work: WorkDir, out: Path, done: list[_ChunkDone], options: InferOptions, params,
              attrs: dict) -> None:
    """Join the parts (input order) into ``out`` and the samples file, then remove the work dir."""
    parts = [work / c.part for c in done]
    schema = TableWriter.unify_parquet_schemas(parts) if out.suffix.lower() == ".parquet" else None

    def write(tmp: Path) -> None:
        with TableWriter(tmp, schema) as w:
            for p in parts:
                w.write(pd.read_parquet(p))

    atomic_write(out, write)
    save = options.save_samples
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        _write_samples(save, [work / c.samples_part for c in done], sum(c.rows for c in done),
                       options.num_samples, params, work, attrs)
    work.remove()


# --- the chunk loop ------------------------------------------------------------------------------

@dataclass
class _Loop:
    """What the chunk loop did in this call."""

    chunks: int = 0  # chunks met (all of them when complete)
    ran: int = 0
    resumed: int = 0
    complete: bool = True
    inferred_now: int = 0
    inference_seconds: float = 0.0


def _run_chunks(work: WorkDir, runner: ChunkInference, chunks: Iterator[pd.DataFrame], bar: ProgressBar,
                stop_after: int | None) -> _Loop:
    """Infer the chunks not yet done, recording each in the work directory as it finishes."""
    loop = _Loop()
    start = 0  # input position of the chunk's first row
    for index, df in enumerate(chunks):
        key = str(index)
        if key in work.chunks:
            loop.resumed += 1
        elif stop_after is not None and loop.ran >= stop_after:
            loop.complete = False
            break
        else:
            t0 = time.perf_counter()
            result = runner(df, start)
            loop.inference_seconds += time.perf_counter() - t0
            work.record(key, _write_chunk(work, index, result).to_json())
            loop.ran += 1
            loop.inferred_now += result.inferred
        bar.update(len(df))
        start += len(df)
        loop.chunks = index + 1
    return loop


def _progress_total(chunks: TableChunks, catalog: Path, progress: bool) -> int | None:
    """The table's row count for the progress bar (a line count for CSV, so only when shown)."""
    if chunks.rows is not None or not progress:
        return chunks.rows
    return count_rows(catalog)


# --- the job -------------------------------------------------------------------------------------

def report_columns(runner: ChunkInference, model, say: Callable[[str], None], columns=()) -> None:
    """Tell ``say`` which columns give which band, which are ignored, and which are renamed; the
    prior in use, its warnings, and the per-star A_V prior columns found among ``columns``."""
    from irisml_tf.parallax_columns import match_parallax_columns
    from irisml_tf.prior_columns import match_av_prior_columns

    match = runner.match
    say(match.report())
    plx, _ = match_parallax_columns(columns)
    if "parallax" in plx:
        say(f"parallax: {plx['parallax']} ± {plx.get('parallax_error', 'no error column')} (mas), zero point "
            f"{runner.parallax_zero_point:+.4f} mas subtracted; distance, radius, mass, luminosity for rows with one")
    av = match_av_prior_columns(columns)
    if av:
        say("per-star A_V prior columns: " + ", ".join(f"{v} ({k})" for k, v in av.items()))
    for warning in runner.prior.warnings:
        say(f"warning: {warning}")
    unknown = [b for b in match.band_names if b not in model.bands]
    if unknown:
        say(f"bands the model does not use (ignored): {', '.join(unknown)}")
    if runner.renamed:
        say("input columns renamed (their names are output columns): "
            + ", ".join(f"{a} → {b}" for a, b in runner.renamed.items()))


def require_bands(runner: ChunkInference, model, name, columns) -> None:
    """ValueError when no column of the catalogue ``name`` gives a band the model uses."""
    if not any(b in model.bands for b in runner.match.band_names):
        raise ValueError(f"{name}: no column names a band the model uses, so no star can be inferred. "
                         "Name columns <band> and <band>_err (e.g. Gaia_G, Gaia_G_err) or use the surveys' "
                         "own names (`irisml-tf bands` lists them). Columns: " + ", ".join(map(str, columns)))


def _write_empty(runner: ChunkInference, columns, out: Path, work: WorkDir, options: InferOptions, attrs,
                 t0: float) -> InferSummary:
    atomic_write(out, lambda tmp: write_table(runner.empty(columns), tmp))
    if options.save_samples is not None:
        work.path.mkdir(exist_ok=True)
        _write_samples(options.save_samples, [], 0, options.num_samples, runner.params, work, attrs)
        work.remove()
    return InferSummary(out, options.save_samples, 0, 0, 0, {}, time.perf_counter() - t0, True, runner.match,
                        runner.renamed)


def _summary(out: Path, options: InferOptions, work: WorkDir, runner: ChunkInference, loop: _Loop,
             t0: float) -> InferSummary:
    done = [_ChunkDone.from_json(e) for e in work.chunks.values()]
    counts: Counter = Counter()
    for c in done:
        counts.update(c.counts)
    rows = sum(c.rows for c in done)
    inferred = sum(c.inferred for c in done)
    return InferSummary(out, options.save_samples, rows, inferred, rows - inferred, dict(counts),
                        time.perf_counter() - t0, loop.complete, runner.match, runner.renamed, loop.ran,
                        loop.resumed, work.path, loop.inferred_now, loop.inference_seconds)


def _silent(_msg: str) -> None:
    pass


def infer_catalog(model, catalog, out, options: InferOptions | None = None, *, progress: bool = True,
                  echo: Callable[[str], None] | None = None, **overrides) -> InferSummary:
    """Posterior summaries (and optionally samples) for every row of a catalogue (module docstring).

    Args:
      model: an :class:`~irisml_tf.serving.ExportedModel` or the path of an exported SavedModel.
      catalog: input table (.csv .parquet .fits .ecsv .vot/.xml); out: output table (same formats).
      options: :class:`InferOptions` (default: its defaults); ``overrides``: any of its fields by
        keyword, e.g. ``num_samples=200, seed=1``.
      progress: show progress on stderr (:func:`irisml_tf.progress.progress_bar`: a bar on a
        terminal, a few plain lines in a log).
      echo: called with messages (the column report, resume notes, a model trained only part of
        the way), e.g. ``print``.

    Returns :class:`InferSummary`. Raises ValueError / FileNotFoundError / FileExistsError with a
    message naming the option or file for unusable arguments, before any work is done.
    """
    from irisml_tf.serving import ExportedModel, load_model

    say = echo or _silent
    options = replace(options or InferOptions(), **overrides)
    catalog, out = _check_paths(catalog, out)
    if not isinstance(model, ExportedModel):
        model = load_model(model)
    options = options.validate(model)
    if warning := training_warning(model.meta):
        say(warning)
    want_samples = options.save_samples is not None
    work = WorkDir.open(out.with_name(out.name + ".parts"), _settings(catalog, model, options),
                        resume=options.resume, target=out, say=say,
                        files=lambda e: [e["part"]] + ([e.get("samples_part")] if want_samples else []))

    t0 = time.perf_counter()
    chunks = iter_table(catalog, options.chunk_size)
    first = next(chunks)
    columns = list(first.columns)
    runner = ChunkInference.for_columns(model, columns, options)
    report_columns(runner, model, say, columns)
    if options.prior is not None:
        say(f"prior: {options.prior if not isinstance(options.prior, dict) else 'as given'} "
            "(keys left out keep the model's training prior)")
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"seed": options.seed, "num_samples": options.num_samples, "model": str(model.path),
             "catalog": str(catalog)}
    if not len(first):
        say(f"{catalog} has no rows: writing an empty output")
        return _write_empty(runner, columns, out, work, options, attrs, t0)
    require_bands(runner, model, catalog, columns)

    work.start()
    bar = progress_bar(_progress_total(chunks, catalog, progress), desc="infer", unit="star", enabled=progress)
    try:
        loop = _run_chunks(work, runner, itertools.chain([first], chunks), bar, options.stop_after)
    finally:
        bar.close()
    summary = _summary(out, options, work, runner, loop, t0)
    if not loop.complete:
        say(f"stopped after {loop.ran} new chunk(s); {work.path} keeps the finished ones: continue with --resume")
        return summary
    done = [_ChunkDone.from_json(work.chunks[str(i)]) for i in range(loop.chunks)]
    _assemble(work, out, done, options, model.param_names, attrs)
    summary.work_dir = None
    summary.seconds = time.perf_counter() - t0
    return summary
