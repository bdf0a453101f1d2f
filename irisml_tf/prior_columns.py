"""Per-star A_V prior columns of a catalogue → clean float arrays and a status per row. No TensorFlow.

**Columns** (matched case-insensitively, ignoring surrounding blanks; the first of a name wins):
``av_prior`` and ``av_prior_err`` (a dust map's A_V and its 1σ, mag) and ``av_max`` (an upper bound
on A_V, mag, e.g. a 2-D map's total column). What they mean and when a value is used:
:mod:`irisml_tf.physics.av_prior`.

No survey aliases, on purpose: Gaia DR3's ``azero_gspphot`` is A_0 (monochromatic, 541.4 nm), not
A_V, has no symmetric error, and was fitted to the same photometry (a prior from it would count the
data twice); ``ag_gspphot`` is the extinction in the G band; the dust-map tools (``dustmaps``, Bayestar,
SFD) return E(B−V) or other units per query rather than catalogue columns. Convert to A_V and name
the column ``av_prior``.

**Values** (per row; status codes in brackets, a row is never dropped):

* empty or NaN: not given; the row keeps the file's prior, and nothing is reported;
* ``av_prior`` text [``text``] or ±inf [``inf``]; no usable error: missing [``no_err``], text
  [``text_err``], ≤ 0 [``nonpositive_err``], ±inf [``inf_err``]; or more than 3 errors outside
  the prior's A_V support [``outside_support``]: ``prior:av_prior_ignored(<reason>)``;
* an ``av_prior_err`` without an ``av_prior``: ``prior:av_prior_err_ignored(no_av_prior)``;
* ``av_max`` text [``text``], ±inf [``inf``] or at or below the prior's lowest A_V
  [``below_support``]: ``prior:av_max_ignored(<reason>)``.

An ignored value is NaN in the cleaned arrays: that row falls back to the file's A_V prior.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from irisml_tf.columns import numeric_column
from irisml_tf.physics.av_prior import AV_PRIOR_COLUMNS, AV_PRIOR_REACH, usable_av_prior

__all__ = ["AvPriorColumns", "match_av_prior_columns", "read_av_prior"]


@dataclass(frozen=True)
class AvPriorColumns:
    """The per-star A_V prior of a table's rows. ``columns``: the table's columns used (in the order
    av_prior, av_prior_err, av_max, where present); ``av_prior``, ``av_prior_err``, ``av_max``:
    float64 (n,), NaN where not given or ignored (ready for ``Prior.log_prob``); ``codes``: each row's
    status codes (empty when every given value is used)."""

    columns: tuple[str, ...]
    av_prior: np.ndarray
    av_prior_err: np.ndarray
    av_max: np.ndarray
    codes: list[list[str]]


def match_av_prior_columns(names: Iterable[str]) -> dict[str, str]:
    """{``av_prior`` | ``av_prior_err`` | ``av_max``: the table's column name} for those present."""
    found: dict[str, str] = {}
    for name in names:
        key = str(name).strip().lower()
        if key in AV_PRIOR_COLUMNS and key not in found:
            found[key] = name
    return {k: found[k] for k in AV_PRIOR_COLUMNS if k in found}


def read_av_prior(table: pd.DataFrame, av_low: float, av_high: float) -> AvPriorColumns:
    """The per-star A_V prior columns of ``table`` cleaned against the prior's A_V support
    ``[av_low, av_high]`` (``Prior.av_low``/``.av_high`` of the prior in use)."""
    names = match_av_prior_columns(table.columns)
    n = len(table)
    values, text = {}, {}
    for key in AV_PRIOR_COLUMNS:
        if key in names:
            values[key], text[key] = numeric_column(table[names[key]])
        else:
            values[key], text[key] = np.full(n, np.nan), np.zeros(n, bool)
    use_gauss, use_max, upper = usable_av_prior(values["av_prior"], values["av_prior_err"], values["av_max"],
                                                av_low, av_high)
    reasons = {"av_prior": _av_prior_reasons(values, text, upper, av_low),
               "av_prior_err": np.where(np.isnan(values["av_prior"]) & ~text["av_prior"]
                                        & (np.isfinite(values["av_prior_err"]) | text["av_prior_err"]),
                                        "no_av_prior", ""),
               "av_max": np.select([text["av_max"], np.isinf(values["av_max"]),
                                    np.isfinite(values["av_max"]) & ~use_max], ["text", "inf", "below_support"], "")}
    codes = [[f"prior:{key}_ignored({reasons[key][i]})" for key in AV_PRIOR_COLUMNS if reasons[key][i]]
             for i in range(n)]
    return AvPriorColumns(columns=tuple(names.values()),
                          av_prior=np.where(use_gauss, values["av_prior"], np.nan),
                          av_prior_err=np.where(use_gauss, values["av_prior_err"], np.nan),
                          av_max=np.where(use_max, values["av_max"], np.nan), codes=codes)


def _av_prior_reasons(values, text, upper, av_low) -> np.ndarray:
    """Why each row's av_prior is not used ("" where it is used or not given)."""
    mu, err = values["av_prior"], values["av_prior_err"]
    given = np.isfinite(mu)
    with np.errstate(invalid="ignore"):
        outside = (mu < av_low - AV_PRIOR_REACH * err) | (mu > upper + AV_PRIOR_REACH * err)
        return np.select([text["av_prior"], np.isinf(mu),
                          given & text["av_prior_err"], given & np.isnan(err), given & np.isinf(err),
                          given & (err <= 0), given & outside],
                         ["text", "inf", "text_err", "no_err", "inf_err", "nonpositive_err", "outside_support"], "")
