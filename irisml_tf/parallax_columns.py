"""Parallax columns of a catalogue → zero-point-corrected parallaxes [mas] and a status per row.
No TensorFlow.

**Columns** (matched case-insensitively, ignoring surrounding blanks; for each quantity the first
name in this order wins, others are reported as duplicates and not used):

* parallax: ``parallax`` (canonical; the Gaia archive's), ``plx`` (VizieR's ``Plx``);
* its 1σ error: ``parallax_error`` (canonical; Gaia archive), ``parallax_err``, ``e_plx`` (VizieR's
  ``e_Plx``).

Both in mas, as the Gaia archive and VizieR give them. The zero point (mas) is subtracted:
ϖ_corrected = ϖ − zero_point, default :data:`~irisml_tf.physics.parallax.DEFAULT_ZERO_POINT`
(−0.017 mas, Lindegren et al. 2021); pass 0 for parallaxes already corrected.

**Values** (per row; status codes in brackets as ``parallax:<reason>``; a row is never dropped, and
a row whose parallax is not used gets NaN and today's colour-only posterior):

* empty or NaN parallax and error: no parallax, nothing reported;
* negative or zero parallax with a good error: used as it is — the likelihood is Gaussian in ϖ, so a
  parallax consistent with zero or below it still tells that the star is far;
* parallax text [``text``], ±inf [``inf``] or above 1000 mas [``above_1000mas``: closer than 1 pc,
  where no star is (Proxima Cen: 768 mas) — µas units?];
* no usable error: no error column or an empty cell [``no_error``], text [``text_error``], ±inf
  [``inf_error``], ≤ 0 [``nonpositive_error``], or below 1 µas [``arcsec_units?``: Gaia's best
  parallaxes have errors of ~10 µas; errors a thousand times smaller are arcsec values];
* an error without a parallax [``error_without_parallax``].

:data:`PARALLAX_STATUS` says each in words; :meth:`ParallaxColumns.report` prints the match.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from irisml_tf.columns import numeric_column
from irisml_tf.physics.parallax import DEFAULT_ZERO_POINT

__all__ = ["PARALLAX_COLUMNS", "PARALLAX_STATUS", "ParallaxColumns", "match_parallax_columns", "read_parallax"]

#: quantity → accepted column names (lower case), preferred first; the first is canonical.
PARALLAX_COLUMNS = {"parallax": ("parallax", "plx"),
                    "parallax_error": ("parallax_error", "parallax_err", "e_plx")}
#: status code → what it means (the parallax of such a row is not used).
PARALLAX_STATUS = {
    "parallax:text": "the parallax is text, not a number",
    "parallax:inf": "the parallax is infinite",
    "parallax:above_1000mas": "the parallax exceeds 1000 mas (closer than 1 pc): µas units?",
    "parallax:no_error": "a parallax without an error",
    "parallax:text_error": "the parallax error is text, not a number",
    "parallax:inf_error": "the parallax error is infinite",
    "parallax:nonpositive_error": "the parallax error is zero or negative",
    "parallax:arcsec_units?": "the parallax error is below 1 µas (arcsec units?); Gaia's best are ~10 µas",
    "parallax:error_without_parallax": "a parallax error without a parallax",
}
_LARGEST_PLX = 1000.0  # mas
_SMALLEST_ERR = 1e-3  # mas
_LARGEST_ZERO_POINT = 1.0  # mas; Lindegren et al. 2021's Z5 stays within ±0.15 mas


@dataclass(frozen=True)
class ParallaxColumns:
    """The parallaxes of a table's rows. ``columns``: {quantity: the table's column} for those found;
    ``duplicates``: other columns of a found quantity → the column used; ``zero_point``: mas,
    subtracted; ``plx``, ``plx_err``: float64 (n,), mas, NaN where not given or not used;
    ``codes``: each row's status codes (empty where nothing is wrong)."""

    columns: dict[str, str]
    duplicates: dict[str, str]
    zero_point: float
    plx: np.ndarray
    plx_err: np.ndarray
    codes: list[list[str]]

    @property
    def has_parallax(self) -> np.ndarray:
        """bool (n,): the row's parallax is used."""
        return np.isfinite(self.plx)

    def report(self) -> str:
        """Human-readable: the columns used, the zero point, rows with a parallax, codes by count."""
        if "parallax" not in self.columns:
            return "parallax: no parallax column (colour-only posteriors)"
        err = self.columns.get("parallax_error", "no error column")
        lines = [f"parallax: {self.columns['parallax']} ± {err} (mas), zero point {self.zero_point:+.4f} mas "
                 f"subtracted; {int(self.has_parallax.sum())} of {len(self.plx)} rows used"]
        lines += [f"  duplicate column, not used: {c} (using {kept})" for c, kept in self.duplicates.items()]
        counts = Counter(code for row in self.codes for code in row)
        lines += [f"  {n} row(s) {code}: {PARALLAX_STATUS[code]}" for code, n in sorted(counts.items())]
        return "\n".join(lines)


def match_parallax_columns(names: Iterable) -> tuple[dict[str, str], dict[str, str]]:
    """({quantity: column} for the quantities found, {duplicate column: the column used})."""
    names = [str(n) for n in names]
    found: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for quantity, aliases in PARALLAX_COLUMNS.items():
        hits = sorted((aliases.index(n.strip().lower()), pos, n) for pos, n in enumerate(names)
                      if n.strip().lower() in aliases)
        if hits:
            found[quantity] = hits[0][2]
            duplicates.update({n: hits[0][2] for _, _, n in hits[1:]})
    return found, duplicates


def read_parallax(table: pd.DataFrame, zero_point: float = DEFAULT_ZERO_POINT) -> ParallaxColumns:
    """The parallax columns of ``table``, cleaned (rules: module docstring), zero point subtracted."""
    zero_point = float(zero_point)
    if not np.isfinite(zero_point) or abs(zero_point) > _LARGEST_ZERO_POINT:
        raise ValueError(f"`zero_point` = {zero_point} must be in mas, within ±{_LARGEST_ZERO_POINT} "
                         f"(Gaia DR3: {DEFAULT_ZERO_POINT})")
    columns, duplicates = match_parallax_columns(table.columns)
    n = len(table)
    values = {}
    for quantity in PARALLAX_COLUMNS:
        name = columns.get(quantity)
        values[quantity] = numeric_column(table[name]) if name is not None else (np.full(n, np.nan), np.zeros(n, bool))
    (plx, plx_text), (err, err_text) = values["parallax"], values["parallax_error"]
    reason = _reasons(plx, plx_text, err, err_text)
    use = np.isfinite(plx) & (reason == "")
    codes = [[f"parallax:{r}"] if r else [] for r in reason]
    return ParallaxColumns(columns=columns, duplicates=duplicates, zero_point=zero_point,
                           plx=np.where(use, plx - zero_point, np.nan), plx_err=np.where(use, err, np.nan),
                           codes=codes)


def _reasons(plx, plx_text, err, err_text) -> np.ndarray:
    """Why each row's parallax is not used ("" where it is used or not given)."""
    given = np.isfinite(plx)
    with np.errstate(invalid="ignore"):
        return np.select(
            [plx_text, np.isinf(plx), given & (plx > _LARGEST_PLX),
             given & err_text, given & np.isnan(err), given & np.isinf(err), given & (err <= 0),
             given & (err < _SMALLEST_ERR),
             np.isnan(plx) & (np.isfinite(err) | err_text)],
            ["text", "inf", "above_1000mas", "text_error", "no_error", "inf_error", "nonpositive_error",
             "arcsec_units?", "error_without_parallax"], "")
