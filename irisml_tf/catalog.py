"""Table files by extension: .parquet, .csv, .fits, .ecsv, .vot/.xml (VOTable).

Whole tables: :func:`read_table` / :func:`write_table`. Catalogues too large for memory:
:func:`iter_table` reads them in chunks of exactly ``chunk_size`` rows (CSV through pandas' chunked
reader, Parquet through pyarrow record batches; FITS, ECSV and VOTable are read whole by astropy
and then sliced), and :class:`TableWriter` writes chunk after chunk (CSV and Parquet stream to disk;
FITS, ECSV and VOTable are collected and written when the writer closes).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_table", "read_table", "iter_table", "TableChunks", "count_rows", "TableWriter",
           "TABLE_FORMATS", "table_suffix"]

TABLE_FORMATS = (".parquet", ".csv", ".fits", ".ecsv", ".vot", ".xml")
_ASTROPY = {".fits": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".xml": "votable"}
_CSV_FLOAT = "%.9g"  # float32 values survive the round trip exactly


def table_suffix(path: str | Path) -> str:
    """The lower-case extension of ``path``; ValueError naming the file for unknown formats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"{path}: unknown table format `{suffix}`; use one of {', '.join(TABLE_FORMATS)}")
    return suffix


_suffix = table_suffix


def _for_astropy(df: pd.DataFrame):
    """A DataFrame as an astropy Table; text columns holding numbers too (chunks of a CSV whose
    column changed type) become text, NaN in text columns an empty string."""
    from astropy.table import Table

    def text(v):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    df = df.copy()
    for col in df.columns:
        s = df[col]
        if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
            df[col] = s.map(text).astype(object)
    return Table.from_pandas(df)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".csv":
        df.to_csv(path, index=False, float_format=_CSV_FLOAT)
    else:
        _for_astropy(df).write(path, format=_ASTROPY[suffix], overwrite=True)


def _read_astropy(path: Path, suffix: str) -> pd.DataFrame:
    from astropy.table import Table

    table = Table.read(path, format=_ASTROPY[suffix])
    multi = [c for c in table.colnames if table[c].ndim > 1]
    if multi:
        raise ValueError(f"{path}: columns {', '.join(multi)} hold arrays per row; a catalogue needs one "
                         "value per cell (drop or split them first)")
    df = table.to_pandas()
    for col in df.columns:  # FITS text columns arrive as bytes
        if df[col].dtype == object and len(df) and isinstance(df[col].iloc[0], bytes):
            df[col] = df[col].map(lambda v: v.decode(errors="replace") if isinstance(v, bytes) else v)
    return df


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    return _read_astropy(path, suffix)


class TableChunks:
    """The chunks of :func:`iter_table`, an iterator that also says how many rows the table has
    once that costs nothing more: :attr:`rows` is set from the Parquet metadata at once, and for
    FITS, ECSV and VOTable (read whole) when the first chunk has been read; for CSV it stays None
    (:func:`count_rows` counts the lines)."""

    def __init__(self, path: Path, suffix: str, chunk_size: int):
        self.path, self.suffix, self.chunk_size = path, suffix, chunk_size
        self.rows: int | None = None
        self._chunks = self._exact_chunks()

    def __iter__(self) -> TableChunks:
        return self

    def __next__(self) -> pd.DataFrame:
        return next(self._chunks)

    def _raw_chunks(self) -> Iterator[pd.DataFrame]:
        path, chunk_size = self.path, self.chunk_size
        if self.suffix == ".csv":
            yield from _csv_chunks(path, chunk_size)
        elif self.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            self.rows = pf.metadata.num_rows
            yield pf.schema_arrow.empty_table().to_pandas()
            for batch in pf.iter_batches(batch_size=chunk_size):
                yield batch.to_pandas()
        else:
            df = _read_astropy(path, self.suffix)
            self.rows = len(df)
            yield df.iloc[:0]
            for start in range(0, len(df), chunk_size):
                yield df.iloc[start:start + chunk_size]

    def _exact_chunks(self) -> Iterator[pd.DataFrame]:
        """Re-cut the reader's pieces into chunks of exactly ``chunk_size`` rows."""
        chunk_size = self.chunk_size
        buffer: list[pd.DataFrame] = []
        have = start = 0
        columns = None
        for part in self._raw_chunks():
            if columns is None:
                columns = part.iloc[:0]
            if not len(part):
                continue
            buffer.append(part)
            have += len(part)
            while have >= chunk_size:
                df = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
                out, rest = df.iloc[:chunk_size], df.iloc[chunk_size:]
                out.index = pd.RangeIndex(start, start + chunk_size)
                start += chunk_size
                yield out
                buffer, have = ([rest] if len(rest) else []), len(rest)
        if have:
            df = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
            df.index = pd.RangeIndex(start, start + len(df))
            yield df
        elif start == 0:
            yield columns if columns is not None else pd.DataFrame()


def _csv_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    with open(path, "rb") as f:
        blank = not f.read(4096).strip()
    if blank:
        yield pd.DataFrame()  # an empty file: no columns, no rows
        return
    with pd.read_csv(path, chunksize=chunk_size) as reader:
        first = True
        for chunk in reader:
            first = False
            yield chunk
        if first:  # header only
            yield pd.read_csv(path, nrows=0)


def iter_table(path: str | Path, chunk_size: int) -> TableChunks:
    """Chunks of exactly ``chunk_size`` rows (the last one shorter), in file order, each with a
    RangeIndex of its rows' positions in the file (0-based). The first chunk may be empty (a
    header-only or empty file gives one empty chunk, with the header's columns if any); chunk
    boundaries are the same whatever the format, so chunk i holds rows i·chunk_size onwards.
    The iterator's ``rows`` is the table's row count where known (:class:`TableChunks`)."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be ≥ 1, got {chunk_size}")
    return TableChunks(path, suffix, chunk_size)


def count_rows(path: str | Path) -> int | None:
    """Number of data rows, cheaply: Parquet metadata, FITS header, a line count for CSV (exact
    unless quoted fields hold line breaks); None for ECSV/VOTable (would need a full parse: those
    are read whole by :func:`iter_table`, whose ``rows`` then holds the count)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if suffix == ".csv":
        lines, last = 0, b"\n"
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"  # no newline after the last line
        return max(lines - 1, 0)
    if suffix == ".fits":
        from astropy.io import fits

        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                    return int(hdu.header.get("NAXIS2", 0))
        return 0
    return None


def _unify_arrow(types: list) -> object:
    import pyarrow as pa

    types = [t for t in types if not pa.types.is_null(t)]
    if not types:
        return pa.null()
    if all(t == types[0] for t in types):
        return types[0]
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return pa.float64()
    if all(pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return pa.float64()
    return pa.string()


class TableWriter:
    """Write a table chunk by chunk: ``with TableWriter(path) as w: w.write(df) …``.

    CSV and Parquet stream to disk. Parquet needs one type per column across chunks: pass an arrow
    ``schema`` (e.g. from :meth:`unify_parquet_schemas`) when chunks may disagree (a CSV column
    numeric in one chunk and text in another); otherwise the first chunk's types are used.
    FITS, ECSV and VOTable chunks are collected and written when the writer closes.
    """

    def __init__(self, path: str | Path, schema=None):
        self.path = Path(path)
        self.suffix = _suffix(self.path)
        self.schema = schema
        self._pq = None
        self._frames: list[pd.DataFrame] = []
        self._wrote_header = False
        self.rows = 0

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(write=exc_type is None)

    def write(self, df: pd.DataFrame) -> None:
        self.rows += len(df)
        if self.suffix == ".csv":
            df.to_csv(self.path, mode="a" if self._wrote_header else "w", header=not self._wrote_header,
                      index=False, float_format=_CSV_FLOAT)
            self._wrote_header = True
        elif self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self.schema is None:
                self.schema = table.schema.remove_metadata()
            table = pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in self.schema],
                                         schema=self.schema)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, self.schema)
            self._pq.write_table(table)
        else:
            self._frames.append(df)

    def close(self, write: bool = True) -> None:
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        elif self.suffix in _ASTROPY and write and self._frames:
            write_table(pd.concat(self._frames, ignore_index=True), self.path)
            self._frames = []

    @staticmethod
    def unify_parquet_schemas(paths) -> object:
        """One arrow schema for Parquet files with the same columns: per column the common type,
        float64 for mixed numbers, string for numbers mixed with text."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = [pq.read_schema(p) for p in paths]
        names = schemas[0].names
        return pa.schema([(n, _unify_arrow([s.field(n).type for s in schemas])) for n in names])
