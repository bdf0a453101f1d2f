"""Posteriors for a whole catalogue: chunked, resumable, reproducible (``irisml-tf infer``).

:func:`infer_catalog` reads the catalogue in chunks (:func:`irisml_tf.catalog.iter_table`), matches
its columns to bands and cleans every row (:mod:`irisml_tf.columns`), runs the exported model
(:class:`irisml_tf.serving.ExportedModel`) in sub-batches of at most ``max_batch_elements``
stars × samples, and writes each finished chunk to a part file in a work directory next to the
output, ``<out>.parts/``, with a manifest. When every chunk is done the parts are joined, in input
order, into ``out`` (format by extension) and the work directory is removed.

* Output: every input row, in input order, with its original columns, then for each parameter
  (teff, logg, mh, av, rv) ``_median``, ``_p16``, ``_p84`` (importance-weighted 16/50/84 %
  quantiles), ``_mean``, ``_std``; then ``n_bands`` (bands used), ``ess``, ``is_efficiency``
  (ESS/N), ``khat`` (PSIS k̂), ``chi2`` and ``chi2_pvalue`` (best sample, n_bands − 1 dof), ``mu``
  (distance modulus + radius term of the best sample, mag), ``outlier_band`` (band name, empty if
  none) and ``status`` (:mod:`irisml_tf.columns`; plus ``flag:<name>`` for each quality flag of the
  model). Skipped rows have NaN results. An input column whose name (case-insensitively) equals an
  output column is kept under ``<name>_in`` (``_in2`` … if that is taken too).
* Reproducible: chunk i, sub-batch j runs with the stateless seed derived from (seed, i, j), so
  the same seed, chunk size and ``max_batch_elements`` give identical output, resumed or not.
* Resume: an interrupted run leaves ``<out>.parts/``; ``resume=True`` skips the chunks done. It
  refuses when the input file (size, mtime), the model, the seed, samples, chunk size, default
  error, batch bound or samples file differ from the manifest. Without ``resume`` an existing work
  directory is an error (nothing is deleted).
* Memory: one chunk at a time, model calls of at most ``max_batch_elements`` stars × samples
  (~20 kB each inside the graph); ~chunk_size × samples × 24 bytes more with ``save_samples``.
  FITS, ECSV and VOTable inputs are read whole (astropy), and such outputs are assembled in
  memory; CSV and Parquet stream both ways.
* ``save_samples`` (.h5/.hdf5 via h5py, or .npz): ``samples`` float32 [R, N, 5] (physical units),
  ``weights`` float32 [R, N] (normalised importance weights), ``row`` int64 [R] (0-based input row),
  ``param_names``; skipped rows have NaN samples and zero weights.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from irisml_tf.catalog import TableWriter, count_rows, iter_table, table_suffix, write_table
from irisml_tf.columns import (DEFAULT_ERR, ColumnMatch, check_default_err, count_status, match_columns,
                               prepare_rows, status_string)
from irisml_tf.inference.summaries import SUMMARY_NAMES
from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["infer_catalog", "InferSummary", "output_columns", "SAMPLE_FORMATS",
           "DEFAULT_CHUNK_SIZE", "DEFAULT_NUM_SAMPLES", "DEFAULT_MAX_BATCH_ELEMENTS"]

#: float output column ← model output
_FROM_MODEL = {"ess": "ess", "is_efficiency": "efficiency", "khat": "khat", "chi2": "chi2",
               "chi2_pvalue": "chi2_pvalue", "mu": "mu"}
_DIAGNOSTICS = ("n_bands", *_FROM_MODEL, "outlier_band", "status")
SAMPLE_FORMATS = (".h5", ".hdf5", ".npz")
DEFAULT_CHUNK_SIZE = 5000
DEFAULT_NUM_SAMPLES = 1000
#: stars × samples per model call. The exported graph (simulator + likelihood) peaks at ~20 kB per
#: star × sample (measured: 65 536 → +1.5 GB, 262 144 → +6 GB); 16 384 keeps it near +0.3 GB and
#: was as fast per star as larger batches on 2 CPU cores.
DEFAULT_MAX_BATCH_ELEMENTS = 16_384
_MANIFEST = "manifest.json"
_FORMAT = 1


def output_columns(param_names=PARAM_NAMES) -> list[str]:
    """The columns :func:`infer_catalog` appends, in order."""
    return [f"{p}_{s}" for p in param_names for s in SUMMARY_NAMES] + list(_DIAGNOSTICS)


@dataclass
class InferSummary:
    """What :func:`infer_catalog` did. counts: rows per status key (:func:`~irisml_tf.columns.status_key`);
    complete: False when stopped early (``stop_after``) — the work directory is then kept."""

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

    def table(self) -> str:
        """Rows per status, ``ok`` first, then by count."""
        keys = sorted(self.counts, key=lambda k: (k != "ok", -self.counts[k], k))
        width = max([len("status")] + [len(k) for k in keys])
        lines = [f"{'status':<{width}}  {'rows':>9}  {'%':>6}", "-" * (width + 19)]
        for k in keys:
            pct = 100.0 * self.counts[k] / self.rows if self.rows else 0.0
            lines.append(f"{k:<{width}}  {self.counts[k]:>9}  {pct:>6.2f}")
        lines.append(f"{'rows':<{width}}  {self.rows:>9}   (inferred {self.inferred}, skipped {self.skipped})")
        return "\n".join(lines)


def _seed_words(seed: int, chunk: int, sub: int) -> tuple[int, int]:
    """The stateless seed of chunk ``chunk``, sub-batch ``sub``: two int32 from numpy's SeedSequence."""
    words = np.random.SeedSequence([seed, chunk, sub]).generate_state(2, dtype=np.uint32).view(np.int32)
    return int(words[0]), int(words[1])


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


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _settings(catalog: Path, model, num_samples, seed, chunk_size, default_err, max_batch_elements,
              save_samples) -> dict:
    stat = catalog.stat()
    return {"format": _FORMAT, "input": str(catalog.resolve()), "input_size": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns, "model": str(Path(model.path).resolve()),
            "model_step": model.meta.training.step,
            "num_samples": num_samples, "seed": seed, "chunk_size": chunk_size,
            "default_err": default_err, "max_batch_elements": max_batch_elements,
            "save_samples": str(Path(save_samples).resolve()) if save_samples else None}


class _Runner:
    """Runs one chunk: inputs → sub-batched model calls → output frame (+ samples)."""

    def __init__(self, model, match: ColumnMatch, renamed, *, num_samples, seed, default_err,
                 max_batch_elements, want_samples):
        obs = model.observation
        check_default_err(default_err, obs.err_min, obs.err_max)
        self.model, self.match, self.renamed = model, match, renamed
        self.params = model.param_names
        self.prep_options = dict(bands=model.bands, min_bands=obs.min_bands, err_min=obs.err_min,
                                 err_max=obs.err_max, default_err=default_err)
        self.flag_bits = model.meta.flag_bits
        self.num_samples, self.seed = num_samples, seed
        self.batch = max(1, max_batch_elements // num_samples)
        self.want_samples = want_samples

    def __call__(self, df: pd.DataFrame, chunk: int):
        prep = prepare_rows(df, self.match, **self.prep_options)
        r, n = len(df), self.num_samples
        res = {f"{p}_{s}": np.full(r, np.nan, np.float32) for p in self.params for s in SUMMARY_NAMES}
        diag = {k: np.full(r, np.nan, np.float32) for k in _FROM_MODEL}
        outlier = np.full(r, -1, np.int32)
        bits = np.zeros(r, np.int64)
        samples = np.full((r, n, 5), np.nan, np.float32) if self.want_samples else None
        weights = np.zeros((r, n), np.float32) if self.want_samples else None
        rows = np.flatnonzero(~prep.skip)
        for sub, start in enumerate(range(0, len(rows), self.batch)):
            idx = rows[start:start + self.batch]
            k = max(int(prep.n_bands[idx].max()), 1)  # rows are left-packed: trim the pads
            o = self.model.run(prep.band_index[idx, :k], prep.mag[idx, :k], prep.mag_err[idx, :k], n,
                               seed=_seed_words(self.seed, chunk, sub))
            for j, p in enumerate(self.params):
                for s in SUMMARY_NAMES:
                    res[f"{p}_{s}"][idx] = o[s][:, j]
            for key, src in _FROM_MODEL.items():
                diag[key][idx] = o[src]
            outlier[idx] = o["outlier_band"]
            bits[idx] = o["flag_bits"]
            if samples is not None:
                samples[idx], weights[idx] = o["samples"], o["weights"]
        codes = prep.codes
        for i in rows:
            codes[i].extend(f"flag:{name}" for name, bit in self.flag_bits.items() if bits[i] & bit)
        bands = self.model.bands
        out = df.rename(columns=self.renamed) if self.renamed else df.copy()
        out = pd.concat([out.reset_index(drop=True), pd.DataFrame({
            **res, "n_bands": prep.n_bands, **diag,
            "outlier_band": [bands[b] if b >= 0 else "" for b in outlier],
            "status": [status_string(c) for c in codes]})], axis=1)
        return out, samples, weights, int(len(rows))

    def empty(self, columns) -> pd.DataFrame:
        out = pd.DataFrame(columns=[self.renamed.get(c, c) for c in columns])
        for c in output_columns(self.params):
            out[c] = pd.Series(dtype=str if c in ("outlier_band", "status") else
                               (np.int32 if c == "n_bands" else np.float32))
        return out


def _write_samples(path: Path, parts: list[Path], rows: int, num_samples: int, params, work: Path,
                   attrs: dict) -> None:
    """Join the per-chunk sample files (input order) into ``path``; ``row`` is the input row."""
    tmp = work / f"samples-assembled{path.suffix.lower()}"
    h5 = path.suffix.lower() in (".h5", ".hdf5")
    if h5:
        import h5py

        f = h5py.File(tmp, "w")
        chunks = (min(256, rows), num_samples, 5) if rows else None
        samples = f.create_dataset("samples", (rows, num_samples, 5), np.float32, chunks=chunks)
        weights = f.create_dataset("weights", (rows, num_samples), np.float32, chunks=chunks[:2] if chunks else None)
    else:  # memory maps in the work dir, streamed into the zip by np.savez
        samples = np.lib.format.open_memmap(work / "samples.npy", "w+", np.float32, (rows, num_samples, 5))
        weights = np.lib.format.open_memmap(work / "weights.npy", "w+", np.float32, (rows, num_samples))
    at = 0
    for p in parts:
        with np.load(p) as z:
            m = len(z["weights"])
            samples[at:at + m], weights[at:at + m] = z["samples"], z["weights"]
            at += m
    row = np.arange(rows, dtype=np.int64)
    if h5:
        f.create_dataset("row", data=row)
        f.create_dataset("param_names", data=np.array(params, dtype=h5py.string_dtype()))
        f.attrs.update(attrs)
        f.close()
    else:
        with open(tmp, "wb") as fh:
            np.savez(fh, samples=samples, weights=weights, row=row, param_names=np.array(params),
                     **{k: np.array(v) for k, v in attrs.items()})
        del samples, weights
    os.replace(tmp, path)


def infer_catalog(model, catalog, out, *, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, save_samples=None, resume: bool = False,
                  progress: bool = True, default_err: float = DEFAULT_ERR,
                  max_batch_elements: int = DEFAULT_MAX_BATCH_ELEMENTS, stop_after: int | None = None,
                  echo: Callable[[str], None] | None = None) -> InferSummary:
    """Posterior summaries (and optionally samples) for every row of a catalogue (module docstring).

    Args:
      model: an :class:`~irisml_tf.serving.ExportedModel` or the path of an exported SavedModel.
      catalog: input table (.csv .parquet .fits .ecsv .vot/.xml); out: output table (same formats).
      num_samples: posterior samples per star (1 … the model's max_samples); seed: integer ≥ 0.
      chunk_size: rows per chunk (memory bound and resume granularity).
      save_samples: .h5/.hdf5/.npz path for the weighted samples, or None.
      resume: continue the run whose work directory ``<out>.parts/`` exists.
      progress: tqdm progress bar over rows.
      default_err: 1σ [mag] assumed for good magnitudes without a usable error.
      max_batch_elements: stars × samples per model call.
      stop_after: process at most this many chunks in this call, then stop and keep the work
        directory for a later ``resume`` (splits long runs into sessions; used by the tests).
      echo: called with progress messages (the column report, resume notes), e.g. ``print``.

    Returns :class:`InferSummary`. Raises ValueError / FileNotFoundError / FileExistsError with a
    message naming the option or file for unusable arguments, before any work is done.
    """
    from irisml_tf.serving import ExportedModel, load_model

    say = echo or (lambda _msg: None)
    catalog, out = Path(catalog), Path(out)
    if not catalog.exists():
        raise FileNotFoundError(f"catalogue {catalog} does not exist")
    table_suffix(catalog)
    table_suffix(out)
    if out.resolve() == catalog.resolve():
        raise ValueError(f"`out` {out} is the input catalogue; choose another file")
    if save_samples is not None:
        save_samples = Path(save_samples)
        if save_samples.suffix.lower() not in SAMPLE_FORMATS:
            raise ValueError(f"`save_samples` {save_samples}: use one of {', '.join(SAMPLE_FORMATS)}")
        if save_samples.suffix.lower() != ".npz":
            try:
                import h5py  # noqa: F401
            except ImportError:
                raise ValueError(f"`save_samples` {save_samples}: HDF5 needs h5py (`pip install h5py`); "
                                 "or write .npz") from None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer ≥ 0, got {seed!r}")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be ≥ 1, got {chunk_size}")
    if max_batch_elements < 1:
        raise ValueError(f"`max_batch_elements` must be ≥ 1, got {max_batch_elements}")
    if not isinstance(model, ExportedModel):
        model = load_model(model)
    max_n = int(model.meta.max_samples)
    if not 1 <= num_samples <= max_n:
        raise ValueError(f"`num_samples` must be in 1 … {max_n} (the model's max_samples), got {num_samples}")

    work = out.with_name(out.name + ".parts")
    settings = _settings(catalog, model, num_samples, int(seed), chunk_size, float(default_err),
                         max_batch_elements, save_samples)
    done: dict[str, dict] = {}
    if work.exists():
        if not resume:
            raise FileExistsError(f"{work} holds an unfinished run for {out}: continue it with --resume "
                                  "(resume=True), or delete that directory to start again")
        try:
            manifest = json.loads((work / _MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{work / _MANIFEST} is unreadable ({e}); delete {work} to start again") from None
        differ = [k for k in settings if manifest.get("settings", {}).get(k) != settings[k]]
        if differ:
            lines = [f"  {k}: was {manifest.get('settings', {}).get(k)!r}, now {settings[k]!r}" for k in differ]
            raise ValueError(f"cannot resume {work}: the run's settings differ\n" + "\n".join(lines)
                             + f"\nrerun with the original settings, or delete {work} to start again")
        done = {k: v for k, v in manifest.get("chunks", {}).items()
                if (work / v["part"]).exists() and (save_samples is None or (work / v.get("samples_part", "-")).exists())}
        say(f"resuming: {len(done)} chunk(s) already done in {work}")
    elif resume:
        say(f"nothing to resume ({work} does not exist): starting")

    t0 = time.perf_counter()
    chunks = iter_table(catalog, chunk_size)
    first = next(chunks)
    columns = list(first.columns)
    match = match_columns(columns)
    params = model.param_names
    renamed = _rename_collisions(columns, output_columns(params))
    say(match.report())
    unknown = [b for b in match.band_names if b not in model.bands]
    if unknown:
        say(f"bands the model does not use (ignored): {', '.join(unknown)}")
    if renamed:
        say("input columns renamed (their names are output columns): "
            + ", ".join(f"{a} → {b}" for a, b in renamed.items()))
    runner = _Runner(model, match, renamed, num_samples=num_samples, seed=int(seed), default_err=default_err,
                     max_batch_elements=max_batch_elements, want_samples=save_samples is not None)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"seed": int(seed), "num_samples": num_samples, "model": str(model.path), "catalog": str(catalog)}

    if not len(first):
        say(f"{catalog} has no rows: writing an empty output")
        write_table(runner.empty(columns), out)
        if save_samples is not None:
            work.mkdir(exist_ok=True)
            _write_samples(save_samples, [], 0, num_samples, params, work, attrs)
            shutil.rmtree(work)
        return InferSummary(out, save_samples, 0, 0, 0, {}, time.perf_counter() - t0, True, match, renamed)
    if not any(b in model.bands for b in match.band_names):
        raise ValueError(f"{catalog}: no column names a band the model uses, so no star can be inferred. "
                         "Name columns <band> and <band>_err (e.g. Gaia_G, Gaia_G_err) or use the surveys' "
                         "own names (`irisml-tf bands` lists them). Columns: " + ", ".join(map(str, columns)))

    work.mkdir(exist_ok=True)
    manifest = {"settings": settings, "chunks": done}
    _atomic_json(work / _MANIFEST, manifest)
    from tqdm import tqdm

    bar = tqdm(total=count_rows(catalog) if progress else None, unit="star", desc="infer", disable=not progress, dynamic_ncols=True)
    ran = resumed = 0
    complete = True
    try:
        index = 0
        for df in itertools.chain([first], chunks):
            key = str(index)
            if key in done:
                resumed += 1
            elif stop_after is not None and ran >= stop_after:
                complete = False
                break
            else:
                table, samples, weights, n_inferred = runner(df, index)
                part = f"part-{index:06d}.parquet"
                tmp = work / (part + ".tmp")
                table.to_parquet(tmp, index=False)
                os.replace(tmp, work / part)
                entry = {"part": part, "rows": len(df), "inferred": n_inferred,
                         "counts": dict(count_status(table["status"]))}
                if samples is not None:
                    spart = f"samples-{index:06d}.npz"
                    with open(work / (spart + ".tmp"), "wb") as f:
                        np.savez(f, samples=samples, weights=weights)
                    os.replace(work / (spart + ".tmp"), work / spart)
                    entry["samples_part"] = spart
                done[key] = entry
                _atomic_json(work / _MANIFEST, manifest)
                ran += 1
            bar.update(len(df))
            index += 1
    finally:
        bar.close()
    counts: Counter = Counter()
    for entry in done.values():
        counts.update(entry["counts"])
    rows = sum(e["rows"] for e in done.values())
    inferred = sum(e["inferred"] for e in done.values())
    summary = InferSummary(out, save_samples, rows, inferred, rows - inferred, dict(counts),
                           time.perf_counter() - t0, complete, match, renamed, ran, resumed, work)
    if not complete:
        say(f"stopped after {ran} new chunk(s); {work} keeps the finished ones: continue with --resume")
        return summary

    order = [done[str(i)] for i in range(index)]
    parts = [work / e["part"] for e in order]
    tmp_out = work / f"assembled{out.suffix.lower()}"
    schema = TableWriter.unify_parquet_schemas(parts) if out.suffix.lower() == ".parquet" else None
    with TableWriter(tmp_out, schema) as w:
        for p in parts:
            w.write(pd.read_parquet(p))
    os.replace(tmp_out, out)
    if save_samples is not None:
        save_samples.parent.mkdir(parents=True, exist_ok=True)
        _write_samples(save_samples, [work / e["samples_part"] for e in order], rows, num_samples, params,
                       work, attrs)
    shutil.rmtree(work)
    summary.work_dir = None
    summary.seconds = time.perf_counter() - t0
    return summary
