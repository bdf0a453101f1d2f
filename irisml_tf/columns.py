"""Catalogue columns → bands, and catalogue rows → model inputs, with every bad value reported.

:func:`match_columns` maps a table's column names onto the band registry; :func:`prepare_rows`
turns a chunk of rows into padded model inputs (band_index, mag, mag_err) and a status per row.
No TensorFlow here: this module is quick to import and to test.

**Column names** are matched case-insensitively, ignoring surrounding blanks, against

* the canonical names: ``<band>`` (magnitude) and ``<band>_err`` (1σ error), e.g. ``Gaia_G``,
  ``Gaia_G_err``, ``2MASS_Ks``, ``2MASS_Ks_err``;
* every alias of the band registry (:mod:`irisml_tf.physics.bands`): the surveys' own names
  (``phot_g_mean_mag``, ``j_m``/``j_msigcom``, ``w1mpro``/``w1sigmpro``, ``gMeanPSFMag``, ``psfMag_u``,
  ``u_psf``, ``nuv_mag``, VizieR's ``Gmag``/``e_Gmag``, ``Jmag`` …) and Gaia's flux columns
  ``phot_<g|bp|rp>_mean_flux``, ``…_flux_error`` and ``…_flux_over_error`` (e-/s).

When two columns give the same quantity of the same band, the canonical name wins, then the alias
listed first in the registry, then the column met first in the table; the others are reported as
duplicates and not used. A header name repeated in a CSV file (which pandas renames ``x.1``, ``x.2``)
is a duplicate of ``x``. Columns that name no band are ignored (and kept in the output).

**Gaia fluxes** (e-/s) become Vega magnitudes with the DR3 zero points of the registry
(``Band.flux_zero_point``, Riello et al. 2021): m = ZP − 2.5 log10 F; σ_m = (2.5/ln 10) / (F/σ_F),
from ``…_flux_over_error`` or else from ``…_flux_error`` / ``…_flux``. A magnitude column is used
when present, with the flux columns only supplying its error when it has no error column.

**Values** (per row and band; the status codes are in brackets):

* an empty cell or NaN magnitude means the star was not observed in that band: the band is absent
  and nothing is reported (catalogues merged from several surveys are mostly blanks);
* a magnitude that is ±inf [``inf``], a sentinel (±99, ±99.99, ±999, ±9999) [``sentinel``], outside
  :data:`MAG_RANGE` [``out_of_range``], text [``text``], or a flux ≤ 0 [``nonpositive_flux``]:
  the band is dropped (``dropped:<band>=<reason>``);
* a good magnitude whose error is missing — no error column [``no_err_column``], empty/NaN
  [``nan_err``], a sentinel [``sentinel_err``], ≤ 0 [``nonpositive_err``] or text [``text_err``]:
  the default error is assumed (``default_err:<band>=<reason>``, default :data:`DEFAULT_ERR`);
* an error above the model's training ``err_max`` (or +inf): the band is dropped
  [``err_above_max``] — the model never saw such errors; an error below ``err_min`` is raised to
  ``err_min`` silently (the likelihood's systematic floor, 0.01 mag by default, dominates it anyway);
* fewer usable bands than the model's ``min_bands``: the row is skipped
  (``skipped:too_few_bands(<n><<min>)``) and gets NaN results.

A row's status is ``ok`` or its codes joined by ``;`` (:func:`status_string`); summaries count rows
per code without the band part (:func:`status_key`), e.g. ``dropped:sentinel``.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from irisml_tf.physics.bands import BAND_NAMES, BANDS, get_band

__all__ = ["ROLES", "MAG_RANGE", "SENTINELS", "DEFAULT_ERR", "BandColumns", "ColumnMatch",
           "Prepared", "match_columns", "prepare_rows", "check_default_err", "flux_to_mag", "status_string",
           "status_key", "count_status", "numeric_column"]

#: The quantities a column can carry for a band.
ROLES = ("mag", "err", "flux", "flux_err", "flux_over_error")
#: Plausible apparent magnitudes [mag]: the brightest stars reach about −4.5 in Ks/W1 (R Dor,
#: Betelgeuse); no survey goes deeper than ~30. Anything outside is an error or a flag value.
MAG_RANGE = (-5.0, 32.0)
#: Flag values catalogues put in magnitude and error columns instead of leaving them empty.
SENTINELS = (99.0, -99.0, 99.99, -99.99, 999.0, -999.0, 9999.0, -9999.0)
#: 1σ error [mag] assumed for a good magnitude without a usable error: typical of ground-based
#: survey photometry at S/N ≈ 20, conservative for Gaia.
DEFAULT_ERR = 0.05
_MAG_PER_LN = 2.5 / np.log(10.0)  # σ_m = 1.0857 σ_F / F
# text that means "no value" in catalogues (pandas' own NA strings are already NaN)
_BLANK = {"", "-", "--", "nan", "null", "none", "na", "n/a", "masked"}
_DUP_SUFFIX = re.compile(r"^(.*)\.(\d+)$")


@dataclass(frozen=True)
class BandColumns:
    """The columns used for one band. ``mag`` or else ``flux`` gives the magnitude; ``err`` or
    else ``flux_over_error`` or else ``flux_err`` (with ``flux``) gives its error; none of them:
    the default error."""

    band: str
    mag: str | None = None
    err: str | None = None
    flux: str | None = None
    flux_err: str | None = None
    flux_over_error: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.mag, self.err, self.flux, self.flux_err, self.flux_over_error) if c)

    def describe(self) -> str:
        if self.mag:
            value = self.mag
        else:
            value = f"{self.flux} → mag (ZP {get_band(self.band).flux_zero_point})"
        if self.err:
            err = self.err
        elif self.flux_over_error:
            err = f"from {self.flux_over_error}"
        elif self.flux_err:
            err = f"from {self.flux_err} / {self.flux}"
        else:
            err = "none (default error)"
        return f"{value} ± {err}"


@dataclass(frozen=True)
class ColumnMatch:
    """Result of :func:`match_columns`.

    columns: every input column, in table order; bands: the matched bands, in registry order;
    duplicates: column → the column used instead; ignored: column → why it is not used.
    """

    columns: tuple[str, ...]
    bands: tuple[BandColumns, ...]
    duplicates: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.band for b in self.bands)

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(c for b in self.bands for c in b.columns)

    def report(self) -> str:
        """Human-readable: matched bands with their columns, duplicates, ignored columns."""
        lines = [f"matched {len(self.bands)} band(s) in {len(self.columns)} column(s):"]
        lines += [f"  {b.band:<12} {b.describe()}" for b in self.bands]
        if self.duplicates:
            lines.append(f"duplicate columns, not used ({len(self.duplicates)}):")
            lines += [f"  {c}  (using {kept})" for c, kept in self.duplicates.items()]
        if self.ignored:
            by_reason: dict[str, list[str]] = {}
            for c, why in self.ignored.items():
                by_reason.setdefault(why, []).append(c)
            lines.append(f"ignored columns ({len(self.ignored)}, kept in the output):")
            lines += [f"  {why}: {', '.join(cols)}" for why, cols in by_reason.items()]
        return "\n".join(lines)


def _alias_table() -> dict[str, tuple[str, str, int]]:
    """lower-case column name → (band, role, preference rank: 0 canonical, then registry order)."""
    table: dict[str, tuple[str, str, int]] = {}

    def add(name, band, role, rank):
        key = name.lower()
        if key in table and table[key][:2] != (band, role):
            raise RuntimeError(f"band registry: column `{name}` maps to {table[key][:2]} and {(band, role)}")
        table.setdefault(key, (band, role, rank))

    for b in BANDS:
        add(b.name, b.name, "mag", 0)
        add(f"{b.name}_err", b.name, "err", 0)
        for role, aliases in (("mag", b.mag_cols), ("err", b.err_cols), ("flux", b.flux_cols),
                              ("flux_err", b.flux_err_cols), ("flux_over_error", b.flux_over_error_cols)):
            for rank, alias in enumerate(aliases, start=1):
                add(alias, b.name, role, rank)
    return table


_ALIASES = _alias_table()


def match_columns(columns: Iterable) -> ColumnMatch:
    """Match a table's column names to bands (see the module docstring for the rules)."""
    columns = tuple(str(c) for c in columns)
    lowered = {c.strip().lower() for c in columns}
    found: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    ignored: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for pos, col in enumerate(columns):
        key = col.strip().lower()
        m = _DUP_SUFFIX.match(key)
        if key not in _ALIASES and m and m.group(1) in lowered:
            key = m.group(1)  # pandas' renamed repeat of a header name
        if key not in _ALIASES:
            ignored[col] = "not a band column"
            continue
        band, role, rank = _ALIASES[key]
        found.setdefault((band, role), []).append((rank, pos, col))
    chosen: dict[tuple[str, str], str] = {}
    for slot, cands in found.items():
        cands.sort()
        chosen[slot] = cands[0][2]
        for _, _, col in cands[1:]:
            duplicates[col] = cands[0][2]

    bands = []
    for name in BAND_NAMES:
        got = {role: chosen.get((name, role)) for role in ROLES}
        if not any(got.values()):
            continue
        mag, flux = got["mag"], got["flux"]
        if not mag and not flux:
            for role in ("err", "flux_err", "flux_over_error"):
                if got[role]:
                    ignored[got[role]] = f"no magnitude or flux column for {name}"
            continue
        err = got["err"]
        foe = None if err else got["flux_over_error"]
        ferr = None if (err or foe or not flux) else got["flux_err"]
        use_flux = flux if (not mag or ferr) else None
        if flux and not use_flux:
            ignored[flux] = f"{name}: magnitude column {mag} used"
        if got["flux_over_error"] and not foe:
            ignored[got["flux_over_error"]] = f"{name}: error column {err} used"
        if got["flux_err"] and not ferr:
            ignored[got["flux_err"]] = f"{name}: error from {err or foe or 'the default (no flux column)'}"
        bands.append(BandColumns(name, mag=mag, err=err, flux=use_flux, flux_err=ferr, flux_over_error=foe))
    ordered_ignored = {c: ignored[c] for c in columns if c in ignored}
    ordered_dups = {c: duplicates[c] for c in columns if c in duplicates}
    return ColumnMatch(columns, tuple(bands), ordered_dups, ordered_ignored)


def flux_to_mag(flux, zero_point: float, flux_over_error=None):
    """Gaia flux F [e-/s] → Vega magnitude ZP − 2.5 log10 F (NaN for F ≤ 0) and, when
    ``flux_over_error`` (F/σ_F) is given, the error (2.5/ln 10)/(F/σ_F)."""
    flux = np.asarray(flux, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zero_point - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
        if flux_over_error is None:
            return mag
        return mag, _MAG_PER_LN / np.asarray(flux_over_error, np.float64)


@dataclass
class Prepared:
    """Model inputs for a chunk of R rows, K = number of matched bands known to the model.

    band_index int32 [R, K] (indices into the model's band list, −1 pads at the end of the row),
    mag, mag_err float32 [R, K] (0 on pads); n_bands int32 [R] usable bands; skip bool [R]
    (too few bands: not sent to the model); codes: per row, the status codes (empty = ok).
    """

    band_index: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    n_bands: np.ndarray
    skip: np.ndarray
    codes: list[list[str]]

    @property
    def status(self) -> list[str]:
        return [status_string(c) for c in self.codes]


def numeric_column(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 (NaN for blanks) and a mask of cells holding text that is not a number."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(series), bool)
    raw = series.map(lambda v: v.decode(errors="replace") if isinstance(v, bytes) else v)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    text = np.isnan(values) & raw.notna().to_numpy()
    if text.any():
        idx = np.flatnonzero(text)
        blank = np.array([str(raw.iloc[i]).strip().lower() in _BLANK for i in idx], bool)
        text[idx[blank]] = False
    return values, text


def _is_sentinel(x: np.ndarray) -> np.ndarray:
    return np.isin(np.round(x, 3), SENTINELS)


def check_default_err(default_err: float, err_min: float, err_max: float) -> None:
    """The assumed error must be one the model was trained on."""
    if not err_min <= default_err <= err_max:
        raise ValueError(f"`default_err` = {default_err} mag must lie within the model's error range "
                         f"[{err_min}, {err_max}] mag")


def prepare_rows(df: pd.DataFrame, match: ColumnMatch, *, min_bands: int, err_min: float, err_max: float,
                 bands: Sequence[str] = BAND_NAMES, default_err: float = DEFAULT_ERR,
                 mag_range: tuple[float, float] = MAG_RANGE) -> Prepared:
    """Model inputs and per-row status codes for the rows of ``df`` (rules: module docstring).

    Args:
      df: a chunk of the catalogue (R rows) with the columns ``match`` was made from.
      match: :func:`match_columns` of the table's columns.
      bands: the model's band names (band_index refers to this order); matched bands the model
        does not know are not used.
      min_bands: fewer usable bands → the row is skipped.
      err_min, err_max: the training's error range [mag]: smaller errors are raised to err_min,
        larger ones drop the band. These three come from the model's observation config
        (:attr:`irisml_tf.serving.ExportedModel.observation`).
      default_err: 1σ [mag] for good magnitudes without a usable error; within [err_min, err_max].
      mag_range: plausible magnitudes; others drop the band.
    """
    check_default_err(default_err, err_min, err_max)
    if min_bands < 1:
        raise ValueError(f"`min_bands` must be ≥ 1, got {min_bands}")
    bands = list(bands)
    used = [bc for bc in match.bands if bc.band in bands]
    r, k = len(df), len(used)
    mags = np.zeros((r, k), np.float64)
    errs = np.zeros((r, k), np.float64)
    good = np.zeros((r, k), bool)
    notes: list[tuple[np.ndarray, str]] = []  # (rows, code), band after band
    for j, bc in enumerate(used):
        band = _read_band(df, bc, mag_range)
        ok, err = _settle_errors(band, err_min=err_min, err_max=err_max, default_err=default_err)
        mags[:, j] = np.where(ok, band.mag, 0.0)
        errs[:, j] = np.where(ok, err, 0.0)
        good[:, j] = ok
        notes += band.notes
    n_bands = good.sum(axis=1).astype(np.int32)
    skip = n_bands < min_bands
    codes = _row_codes(notes, r)
    for i in np.flatnonzero(skip):
        codes[i].append(f"skipped:too_few_bands({n_bands[i]}<{min_bands})")
    index = np.array([bands.index(bc.band) for bc in used], np.int32)
    band_index, mag, mag_err = _left_pack(good, index, mags, errs)
    return Prepared(band_index, mag, mag_err, n_bands, skip, codes)


@dataclass
class _BandValues:
    """One band's values for R rows as read from its columns (float64 / bool [R]).

    mag: magnitudes, usable where ``ok``; err: 1σ errors as given (NaN: none; from the flux
    columns for Gaia fluxes); err_text / err_sentinel: the error cell held text / a sentinel;
    has_err: the band has an error (or flux error) column; notes: (rows, code) of what was wrong,
    in the order the codes are reported.
    """

    band: str
    mag: np.ndarray
    ok: np.ndarray
    err: np.ndarray
    err_text: np.ndarray
    err_sentinel: np.ndarray
    has_err: bool
    notes: list[tuple[np.ndarray, str]] = field(default_factory=list)

    def note(self, rows: np.ndarray, action: str, reason: str) -> None:
        if rows.any():
            self.notes.append((rows, f"{action}:{self.band}={reason}"))


def _read_band(df: pd.DataFrame, bc: BandColumns, mag_range: tuple[float, float]) -> _BandValues:
    """Magnitude and error of one band: a magnitude column, or a Gaia flux converted with the
    band's zero point; unusable magnitudes are noted (``dropped:``)."""
    r = len(df)
    flux = text_flux = None
    if bc.flux:
        flux, text_flux = numeric_column(df[bc.flux])
    err, err_text, err_sentinel = _read_error(df, bc, flux)
    band = _BandValues(bc.band, np.empty(r), np.empty(r, bool), err, err_text, err_sentinel,
                       has_err=bool(bc.err or bc.flux_over_error or bc.flux_err))
    if bc.mag:
        m, text = numeric_column(df[bc.mag])
        bad_sent = _is_sentinel(m)
        bad_range = np.isfinite(m) & ~bad_sent & ((m < mag_range[0]) | (m > mag_range[1]))
        band.note(text, "dropped", "text")
        band.note(np.isinf(m), "dropped", "inf")
        band.note(bad_sent, "dropped", "sentinel")
        band.note(bad_range, "dropped", "out_of_range")
        band.mag, band.ok = m, np.isfinite(m) & ~bad_sent & ~bad_range
    else:
        m = flux_to_mag(flux, get_band(bc.band).flux_zero_point)
        band.note(text_flux, "dropped", "text")
        band.note(np.isinf(flux), "dropped", "inf")
        band.note(np.isfinite(flux) & (flux <= 0), "dropped", "nonpositive_flux")
        band.mag, band.ok = m, np.isfinite(m)
    return band


def _read_error(df: pd.DataFrame, bc: BandColumns, flux: np.ndarray | None):
    """(error [mag], text cells, sentinel cells) from the error column, else from F/σ_F, else
    from σ_F / F; all NaN without any of them."""
    r = len(df)
    no = np.zeros(r, bool)
    if bc.err:
        e, text_e = numeric_column(df[bc.err])
        return e, text_e, _is_sentinel(e)
    if bc.flux_over_error:
        foe, text_e = numeric_column(df[bc.flux_over_error])
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(foe > 0, _MAG_PER_LN / foe, np.where(np.isnan(foe), np.nan, -1.0))
        return np.where(np.isposinf(foe), 0.0, e), text_e, no  # infinite S/N: raised to err_min later
    if bc.flux_err:
        fe, text_e = numeric_column(df[bc.flux_err])
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(flux > 0, _MAG_PER_LN * fe / np.where(flux > 0, flux, 1.0), np.nan)
        return e, text_e, no
    return np.full(r, np.nan), no, no


def _settle_errors(band: _BandValues, *, err_min: float, err_max: float,
                   default_err: float) -> tuple[np.ndarray, np.ndarray]:
    """(usable rows, error [mag] within [err_min, err_max]) of a band: errors above err_max drop
    the band (``dropped:…=err_above_max``), a missing or invalid error of a good magnitude becomes
    ``default_err`` (``default_err:…=<reason>``, the first reason that applies)."""
    e, ok = band.err, band.ok
    huge = ok & ~band.err_sentinel & ((e > err_max) | np.isposinf(e))
    band.note(huge, "dropped", "err_above_max")
    ok = ok & ~huge
    if not band.has_err:
        band.note(ok, "default_err", "no_err_column")
        return ok, np.full(len(ok), default_err)
    text, sentinel = band.err_text, band.err_sentinel
    reasons = (("text_err", ok & text), ("sentinel_err", ok & sentinel),
               ("nan_err", ok & ~text & np.isnan(e)), ("nonpositive_err", ok & ~sentinel & (e <= 0)))
    missing = np.zeros(len(ok), bool)
    for reason, rows in reasons:
        rows = rows & ~missing
        band.note(rows, "default_err", reason)
        missing |= rows
    return ok, np.clip(np.where(missing, default_err, e), err_min, err_max)


def _row_codes(notes: Sequence[tuple[np.ndarray, str]], r: int) -> list[list[str]]:
    """Per row, the codes of the notes that name it, in the notes' order."""
    codes: list[list[str]] = [[] for _ in range(r)]
    for rows, code in notes:
        for i in np.flatnonzero(rows):
            codes[i].append(code)
    return codes


def _left_pack(good: np.ndarray, index: np.ndarray, mags: np.ndarray, errs: np.ndarray):
    """Each row's good bands first, in column (registry) order, then pads: (band_index int32 with
    −1 on pads, mag, mag_err float32 with 0 on pads), all [R, K]."""
    order = np.argsort(~good, axis=1, kind="stable")
    g = np.take_along_axis(good, order, axis=1)
    band_index = np.where(g, index[order], -1).astype(np.int32)
    mag = np.where(g, np.take_along_axis(mags, order, axis=1), 0.0).astype(np.float32)
    mag_err = np.where(g, np.take_along_axis(errs, order, axis=1), 0.0).astype(np.float32)
    return band_index, mag, mag_err


def status_string(codes: Sequence[str]) -> str:
    """``ok`` for no codes, else the codes joined by ``;``."""
    return ";".join(codes) if codes else "ok"


def status_key(code: str) -> str:
    """A status code without its band and numbers: ``dropped:SDSS_u=sentinel`` → ``dropped:sentinel``,
    ``skipped:too_few_bands(2<3)`` → ``skipped:too_few_bands``; ``flag:high_khat`` as is."""
    action, _, rest = code.partition(":")
    if "=" in rest:
        rest = rest.split("=", 1)[1]
    rest = rest.split("(", 1)[0]
    return f"{action}:{rest}" if rest else action


def count_status(statuses: Iterable[str]) -> Counter:
    """Rows per status key (a row with several codes of one key counts once; ``ok`` rows as ``ok``)."""
    counts: Counter = Counter()
    for s in statuses:
        counts.update({status_key(c) for c in str(s).split(";")})
    return counts
