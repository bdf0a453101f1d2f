"""Table files by extension: .parquet, .csv, .fits (and .ecsv, .vot/.xml read through astropy)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["write_table", "read_table", "TABLE_FORMATS"]

TABLE_FORMATS = (".parquet", ".csv", ".fits", ".ecsv", ".vot", ".xml")
_ASTROPY = {".fits": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".xml": "votable"}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"{path}: unknown table format `{suffix}`; use one of {', '.join(TABLE_FORMATS)}")
    return suffix


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".csv":
        df.to_csv(path, index=False, float_format="%.9g")
    else:
        from astropy.table import Table

        Table.from_pandas(df).write(path, format=_ASTROPY[suffix], overwrite=True)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    from astropy.table import Table

    return Table.read(path, format=_ASTROPY[suffix]).to_pandas()
