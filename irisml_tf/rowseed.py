"""A random seed per row from a stable key, so a star's draws do not depend on how the catalogue
is cut into chunks, batches or HEALPix partitions (``irisml-tf infer`` and ``irisml-tf survey``).

The rule (:func:`row_keys`), first that applies, row by row:

1. a ``source_id`` column (any case), where the row has one: integers as they are, anything else
   (text, fractional numbers) by pandas' fixed-key SipHash of its text;
2. the row's 0-based position in the input file, when the caller knows it (``start``: ``infer``);
3. the HATS spatial index ``_healpix_29`` (an LSDB partition's index, or a column) and the row's
   occurrence among the rows with that same index value (0 unless two rows lie within ~1 mas):
   ``survey`` without ``source_id``.

:func:`row_seeds` turns the key, the run's seed and which of the three it is into a stateless
TensorFlow seed, two int32 per row, with the splitmix64 finaliser (vectorised numpy). The same
(seed, key) gives the same two words on any machine, in any process.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["row_seeds", "row_keys", "call_seeds", "SPATIAL_INDEX", "KEY_COLUMN"]

KEY_COLUMN = "source_id"
SPATIAL_INDEX = "_healpix_29"
# which rule gave the key (mixed into the seed, so source_id 5 and row 5 draw differently)
_FROM_SOURCE_ID, _FROM_POSITION, _FROM_SPATIAL = 1, 2, 3
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wraps modulo 2**64, as it should)."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _key_column(df: pd.DataFrame):
    for c in df.columns:
        if str(c).lower() == KEY_COLUMN:
            return c
    return None


def _source_ids(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys, bool: the row has a source_id)."""
    has = col.notna().to_numpy(dtype=bool)
    keys = np.zeros(len(col), np.uint64)
    if not has.any():
        return keys, has
    values = col[has]
    if pd.api.types.is_unsigned_integer_dtype(values.dtype):
        keys[has] = values.to_numpy(dtype=np.uint64)
        return keys, has
    if pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        keys[has] = values.to_numpy(dtype=np.int64).view(np.uint64)
        return keys, has
    if pd.api.types.is_float_dtype(values.dtype):  # integers read as floats (a CSV with blanks)
        f = values.to_numpy(dtype=np.float64)
        if np.all(f == np.round(f)) and np.all(np.abs(f) < 2.0**63):
            keys[has] = f.astype(np.int64).view(np.uint64)
            return keys, has
    text = np.array([str(v) for v in values], dtype=object)
    keys[has] = pd.util.hash_array(text)  # fixed key: the same in every process
    return keys, has


def _spatial(df: pd.DataFrame) -> np.ndarray | None:
    """The HATS spatial index and each row's occurrence within its value, combined; None if absent."""
    if df.index.name == SPATIAL_INDEX:
        index = df.index.to_numpy(dtype=np.int64)
    elif SPATIAL_INDEX in df.columns:
        index = df[SPATIAL_INDEX].to_numpy(dtype=np.int64)
    else:
        return None
    occurrence = pd.Series(index).groupby(index).cumcount().to_numpy(dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(index.view(np.uint64)) + occurrence


def row_keys(df: pd.DataFrame, start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's key (uint64 [R]) and the rule that gave it (int8 [R]; module docstring).

    ``start``: the 0-based position of ``df``'s first row in its input file, or None (a HATS
    partition: the spatial index). ValueError when neither a source_id nor a position applies.
    """
    r = len(df)
    keys, kind = np.zeros(r, np.uint64), np.zeros(r, np.int8)
    col = _key_column(df)
    if col is not None:
        ids, has = _source_ids(df[col])
        keys[has], kind[has] = ids[has], _FROM_SOURCE_ID
    rest = kind == 0
    if not rest.any():
        return keys, kind
    if start is not None:
        keys[rest] = (start + np.flatnonzero(rest)).astype(np.uint64)
        kind[rest] = _FROM_POSITION
        return keys, kind
    spatial = _spatial(df)
    if spatial is None:
        raise ValueError(f"rows without a {KEY_COLUMN} need their position in the input file, or the HATS "
                         f"spatial index {SPATIAL_INDEX} (the index of an LSDB catalogue's partitions)")
    keys[rest], kind[rest] = spatial[rest], _FROM_SPATIAL
    return keys, kind


def _seed_words(keys: np.ndarray, base: np.ndarray) -> np.ndarray:
    """int32 [R, 2] stateless seeds from uint64 keys [R] and a uint64 base."""
    h = _mix(keys ^ base)
    words = np.stack([h & np.uint64(0xFFFFFFFF), h >> np.uint64(32)], axis=1).astype(np.uint32)
    return words.view(np.int32)


def row_seeds(df: pd.DataFrame, seed: int, start: int | None = None) -> np.ndarray:
    """The stateless seed of every row of ``df``: int32 [R, 2] from (``seed``, its key; :func:`row_keys`)."""
    keys, kind = row_keys(df, start)
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed) * _GOLDEN + kind.astype(np.uint64))
    return _seed_words(keys, base)


def call_seeds(seed, n: int) -> np.ndarray:
    """Per-star seeds int32 [n, 2] for the n stars of one model call given one seed (an int or two
    ints): star i of the call gets a seed from (seed, i). For callers without row keys (a single
    batch, the library's checks); catalogue jobs use :func:`row_seeds`."""
    words = np.asarray(seed, np.int64).reshape(-1)
    if words.size == 1:
        words = np.array([words[0], 0])
    if words.size != 2:
        raise ValueError(f"`seed` must be an int or two ints, got {words.tolist()}")
    w = words.astype(np.int32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _mix((w[0] | (w[1] << np.uint64(32))) * _GOLDEN)
    return _seed_words(np.arange(n, dtype=np.uint64), base)
