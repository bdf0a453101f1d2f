"""``irisml-tf mcmc``: the emcee reference for chosen catalogue rows, with the comparison to the
exported NPE model when there is one.

Per selected row: the columns are matched and cleaned as in ``infer``
(:func:`~irisml_tf.columns.prepare_rows`); rows with too few usable bands are reported and skipped.
The chain samples the engine's target: the user's prior (``prior``, a YAML file; else the model's
training prior), the row's A_V prior columns and its parallax (``parallax``/``parallax_error`` or
``Plx``/``e_Plx``, zero point subtracted), as ``infer`` reads them.
With a model, its importance-sampled posterior of the star (``model.run``) gives ``ess``,
``is_efficiency``, ``khat`` and ``flag:<name>`` status codes as ``infer`` names them; the chain
(:func:`~irisml_tf.inference.mcmc.mcmc_reference`) runs on the model's simulator, prior and
systematic floor (else the defaults), until its convergence rule holds
(:class:`~irisml_tf.inference.mcmc.Convergence`: ≥ 50 τ long and τ stable) or ``max_steps``; a
row whose chain stopped unconverged says so in its ``status`` (``mcmc:not_converged(…)``).

Output: the catalogue's non-band columns, ``row`` (0-based), ``status``, ``n_bands``, the NPE
diagnostics, the chain's columns (:func:`~irisml_tf.inference.mcmc.result_columns`), and with a
parallax ``distance``, ``radius``, ``mass``, ``luminosity`` as ``_median``/``_p16``/``_p84`` from
the chain's draws, as ``infer`` writes them (NaN without a usable parallax); optionally
the samples as .npz and a corner plot per star. Row r's chain is seeded with (seed, r), so a row
gives the same answer whichever other rows are chosen.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from irisml_tf.physics.parallax import DEFAULT_ZERO_POINT

if TYPE_CHECKING:  # TensorFlow and pandas load when a job runs, not when the CLI starts
    import pandas as pd

    from irisml_tf.inference.mcmc import ChainOptions, LogPosterior

__all__ = ["MCMCOptions", "MCMCSummary", "StarResult", "run_mcmc_catalog", "parse_rows", "chain_options",
           "MAX_ROWS_WITHOUT_SELECTION", "DEFAULT_MAX_STEPS"]

#: MCMC costs seconds to minutes per star: a bigger catalogue needs a row selection
MAX_ROWS_WITHOUT_SELECTION = 200
#: the default cap on a chain (steps per walker); a hard star reaches it in 1–2 min on 2 CPU cores
DEFAULT_MAX_STEPS = 20_000


def _silent(_msg: str) -> None:
    pass


def chain_options(nwalkers: int = 32, nsteps: int = 2000, burn: int = 500,
                  max_steps: int | None = None) -> ChainOptions:
    """The job's :class:`~irisml_tf.inference.mcmc.ChainOptions`: run until converged, capped at
    ``max_steps`` (None = :data:`DEFAULT_MAX_STEPS`, or ``nsteps`` if that is larger)."""
    from irisml_tf.inference.mcmc import ChainOptions

    cap = max(DEFAULT_MAX_STEPS, nsteps) if max_steps is None else max_steps
    return ChainOptions(nwalkers=nwalkers, nsteps=nsteps, burn=burn, max_steps=cap, until_converged=True)


@dataclass(frozen=True)
class MCMCOptions:
    """What ``irisml-tf mcmc`` does (the command's options of the same names).

    Attributes:
      rows: 0-based rows, e.g. ``"0,3,5-7"`` (:func:`parse_rows`); None = all rows (at most
        :data:`MAX_ROWS_WITHOUT_SELECTION`).
      use_model: False = no model: default prior and sys_floor, no NPE comparison.
      chain: walkers, first segment, burn-in, cap (``max_steps``) and stopping rule.
      init: ``prior`` or ``npe`` (walkers on importance-weighted NPE draws; needs a model).
      npe_samples: NPE draws per star (capped at the model's max_samples).
      default_err: 1σ [mag] for magnitudes without a usable error (None = the columns' default).
      seed: row r's chain and NPE draws use (seed, r).
      samples_out: .npz for the samples; plots_dir: a corner plot per star goes here.
      prior: the user's prior file (None = the training prior); parallax_zero_point: mas,
        subtracted from the parallax column.
    """

    rows: str | None = None
    use_model: bool = True
    chain: ChainOptions = field(default_factory=chain_options)
    init: str = "prior"
    npe_samples: int = 8192
    default_err: float | None = None
    seed: int = 0
    samples_out: Path | None = None
    plots_dir: Path | None = None
    prior: Path | None = None
    parallax_zero_point: float = DEFAULT_ZERO_POINT

    def __post_init__(self):
        from irisml_tf.inference.mcmc import INIT_CHOICES

        if self.init not in INIT_CHOICES:
            raise ValueError(f"`init` must be one of {INIT_CHOICES}, got {self.init!r}")
        if self.init == "npe" and not self.use_model:
            raise ValueError("`init` npe needs a model (drop --no-npe)")
        if self.samples_out is not None and Path(self.samples_out).suffix.lower() != ".npz":
            raise ValueError(f"`samples_out` {self.samples_out}: must end in .npz")
        if self.npe_samples < 1:
            raise ValueError(f"`npe_samples` must be ≥ 1, got {self.npe_samples}")


@dataclass
class StarResult:
    """One selected row: its output record and, if it was sampled, the draws."""

    row: int
    record: dict
    mcmc_samples: np.ndarray | None = None
    npe_samples: np.ndarray | None = None
    npe_weights: np.ndarray | None = None


@dataclass
class MCMCSummary:
    """What :func:`run_mcmc_catalog` wrote: the output table (one row per selected row)."""

    out: Path
    table: pd.DataFrame
    model_path: Path | None
    samples_out: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def sampled(self) -> pd.DataFrame:
        t = self.table
        return t[t["wall_seconds"].notna()] if "wall_seconds" in t else t.iloc[:0]

    def report(self) -> str:
        """Rows written, sampled, skipped; time per star; unconverged chains; NPE vs MCMC medians."""
        done = self.sampled
        from irisml_tf.physics.simulator import PARAM_NAMES

        lines = [f"wrote {len(self.table)} star(s) to {self.out}: {len(done)} sampled, "
                 f"{len(self.table) - len(done)} skipped or failed"]
        if not len(done):
            return "\n".join(lines)
        lines.append(f"median wall time {done['wall_seconds'].median():.2f} s per star, "
                     f"median {done['nsteps'].median():.0f} steps per walker")
        bad = done[~done["converged"].astype(bool)]
        if len(bad):
            lines.append(f"WARNING: {len(bad)} chain(s) not converged (rows {', '.join(map(str, bad['row']))}); "
                         "their status says why: raise --max-steps, or read their results as unconverged")
        if "teff_npe_dmed_sigma" in done:
            for p in PARAM_NAMES:
                lines.append(f"  {p:<5} NPE−MCMC median / σ: median {done[f'{p}_npe_dmed_sigma'].median():+.2f}; "
                             f"MCMC inside NPE 68 %: {done[f'{p}_in_npe68'].median():.2f}, "
                             f"95 %: {done[f'{p}_in_npe95'].median():.2f}")
        return "\n".join(lines)


def parse_rows(spec: str, n_rows: int) -> list[int]:
    """``"0,3,5-7"`` → [0, 3, 5, 6, 7] (0-based, inclusive ranges, order kept, repeats removed)."""
    rows: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"`rows`: `{part}` is not a row number or a range like 5-7") from None
        if a < 0 or b < a:
            raise ValueError(f"`rows`: `{part}`: rows are 0-based and ranges run low-high")
        if b >= n_rows:
            raise ValueError(f"`rows`: `{part}`: the catalogue has {n_rows} rows (0 … {n_rows - 1})")
        rows.extend(r for r in range(a, b + 1) if r not in rows)
    if not rows:
        raise ValueError("`rows`: no rows selected")
    return rows


def _select_rows(spec: str | None, n_rows: int, catalog: Path) -> list[int]:
    if spec is not None:
        return parse_rows(spec, n_rows)
    if n_rows > MAX_ROWS_WITHOUT_SELECTION:
        raise ValueError(f"{catalog} has {n_rows} rows; MCMC takes seconds to minutes per star: choose "
                         "rows with `rows` (--rows), e.g. 0-9")
    return list(range(n_rows))


def _load_model(model_dir: Path | None, options: MCMCOptions, say: Callable[[str], None]):
    from irisml_tf.serving import default_model_path, load_model

    if not options.use_model:
        return None
    if model_dir is None:
        default = default_model_path()
        if not (default / "saved_model.pb").exists():
            if options.init == "npe":
                raise ValueError("`init` npe needs a model: give --model DIR")
            say(f"no model at {default}: MCMC only, no NPE comparison (give --model DIR)")
            return None
        model_dir = default
    return load_model(model_dir)


@dataclass
class _Setup:
    """Everything the per-star loop needs: the model's simulator, prior and observation model (or
    the defaults without a model), one LogPosterior for all stars."""

    model: object | None
    log_post: LogPosterior
    bands: tuple[str, ...]
    observation: object  # ObservationConfig
    flag_bits: dict[str, int]
    n_npe: int
    user_prior: object  # UserPrior: its params and A_V support


def _setup(model, options: MCMCOptions) -> _Setup:
    from irisml_tf.data.observation import ObservationConfig
    from irisml_tf.inference.mcmc import LogPosterior
    from irisml_tf.physics.parallax import MassPrior
    from irisml_tf.physics.prior import Prior, load_user_prior
    from irisml_tf.physics.simulator import Simulator

    if model is None:
        sim = Simulator()
        obs, prior, mass_prior = ObservationConfig.from_dict(), Prior(grid=sim.grid), MassPrior()
    else:
        (sim, prior), obs, mass_prior = model.physics(), model.observation, model.meta.mass_model
    user = load_user_prior(options.prior, prior.config, prior.lower, prior.upper)
    log_post = LogPosterior(sim, prior, obs.sys_floor, prior_params=user.params, mass_prior=mass_prior)
    if model is None:
        return _Setup(None, log_post, sim.bands, obs, {}, 0, user)
    return _Setup(model, log_post, sim.bands, obs, dict(model.meta.flag_bits),
                  min(options.npe_samples, int(model.meta.max_samples)), user)


def _prepare(sub: pd.DataFrame, match, setup: _Setup, options: MCMCOptions):
    from irisml_tf.columns import DEFAULT_ERR, prepare_rows

    obs = setup.observation
    default_err = DEFAULT_ERR if options.default_err is None else options.default_err
    return prepare_rows(sub, match, bands=setup.bands, min_bands=max(obs.min_bands, 2),
                        err_min=obs.err_min, err_max=obs.err_max, default_err=default_err)


def _conditions(sub: pd.DataFrame, setup: _Setup, options: MCMCOptions, codes: list[list[str]],
                say: Callable[[str], None]) -> list[dict]:
    """Each row's parallax and A_V prior (as ``infer`` reads them; their status codes into ``codes``)."""
    from irisml_tf.parallax_columns import read_parallax
    from irisml_tf.prior_columns import read_av_prior

    av = read_av_prior(sub, *setup.user_prior.av_support)
    plx = read_parallax(sub, options.parallax_zero_point)
    if plx.columns:
        say(plx.report())
    if av.columns:
        say(f"A_V prior columns: {', '.join(av.columns)}")
    for row_codes, a, p in zip(codes, av.codes, plx.codes):
        row_codes.extend(a + list(p))
    return [{"plx": plx.plx[i], "plx_err": plx.plx_err[i], "av_prior": av.av_prior[i],
             "av_prior_err": av.av_prior_err[i], "av_max": av.av_max[i]} for i in range(len(sub))]


def _npe(setup: _Setup, star, conditions: dict, options: MCMCOptions, row: int, codes: list[str],
         record: dict) -> dict | None:
    """The model's posterior of one star; its diagnostics and flags go into ``record``/``codes``."""
    if setup.model is None:
        return None
    bi, mag, err = star
    c = {k: np.array([v], np.float32) for k, v in conditions.items()}
    out = setup.model.run(bi[None], mag[None], err[None], setup.n_npe, (options.seed, row),
                          prior_params=setup.user_prior.params, av_prior=c["av_prior"], av_prior_err=c["av_prior_err"],
                          av_max=c["av_max"], parallax=c["plx"], parallax_error=c["plx_err"], parallax_zero_point=0.0)
    record.update(ess=float(out["ess"][0]), is_efficiency=float(out["efficiency"][0]), khat=float(out["khat"][0]))
    codes.extend(f"flag:{name}" for name, bit in setup.flag_bits.items() if int(out["flag_bits"][0]) & bit)
    return {"samples": out["samples"][0], "weights": out["weights"][0]}


def _sample_star(setup: _Setup, prep, conditions: dict, i: int, row: int, options: MCMCOptions,
                 progress: bool = False) -> StarResult:
    """Row ``row`` (index ``i`` of the prepared rows; ``conditions`` its parallax and A_V prior):
    NPE posterior, chain, comparison, record."""
    from irisml_tf.columns import status_string
    from irisml_tf.inference.mcmc import mcmc_reference, result_columns

    codes = list(prep.codes[i])
    record = {"row": row, "status": status_string(codes), "n_bands": int(prep.n_bands[i])}
    if prep.skip[i]:
        return StarResult(row, record)
    star = (prep.band_index[i], prep.mag[i], prep.mag_err[i])
    npe = _npe(setup, star, conditions, options, row, codes, record)
    try:
        ref = mcmc_reference(setup.log_post, *star, options.chain, init=options.init, seed=[options.seed, row],
                             conditions=conditions,
                             npe_samples=None if npe is None else npe["samples"],
                             npe_weights=None if npe is None else npe["weights"], progress=progress)
    except ValueError as e:  # e.g. no prior draw fits: report the row, go on
        codes.append(f"mcmc_failed:{e}")
        return StarResult(row, dict(record, status=status_string(codes)))
    if ref.init != options.init:
        codes.append(f"mcmc_init:{ref.init}")
    codes.extend(ref.mcmc.status_codes())
    record.update(status=status_string(codes), **result_columns(ref.mcmc, ref.after),
                  **_derived_columns(setup, star, conditions, ref.mcmc.samples, (options.seed, row)))
    return StarResult(row, record, ref.mcmc.samples.astype(np.float32),
                      None if npe is None else npe["samples"], None if npe is None else npe["weights"])


def _derived_columns(setup: _Setup, star, conditions: dict, samples, seed, max_draws: int = 4000) -> dict:
    """``distance``, ``radius``, ``mass``, ``luminosity`` as ``<name>_median``, ``_p16``, ``_p84``
    from the chain's draws (at most ``max_draws`` of them, evenly thinned), as ``infer`` gives them
    (:func:`~irisml_tf.inference.engine.derived_posteriors`); NaN without a usable parallax."""
    from irisml_tf.inference.engine import DERIVED_NAMES, derived_posteriors
    from irisml_tf.physics.parallax import usable_parallax

    stats = ("median", "p16", "p84")
    if not bool(usable_parallax(conditions["plx"], conditions["plx_err"])):  # NaN without running the simulator
        return {f"{name}_{stat}": float("nan") for name in DERIVED_NAMES for stat in stats}
    lp = setup.log_post
    draws = samples[np.linspace(0, len(samples) - 1, min(max_draws, len(samples))).astype(int)]
    bi, mag, err = (np.asarray(a)[None] for a in star)
    plx, plx_err = (np.array([conditions[k]], np.float32) for k in ("plx", "plx_err"))
    out = derived_posteriors(lp.simulator, draws[None], {"band_index": bi, "mag": mag, "mag_err": err}, plx,
                             plx_err, lp.sys_floor, lp.mass_prior, np.array([seed], np.int32))
    return {f"{name}_{stat}": float(out[f"derived_{stat}"][0, j])
            for j, name in enumerate(DERIVED_NAMES) for stat in stats}


def _table(sub: pd.DataFrame, match, stars: list[StarResult]) -> pd.DataFrame:
    """The catalogue's non-band columns (ids, coordinates, …; ``<name>_in`` where an output column
    has the name) beside the records."""
    import pandas as pd

    result = pd.DataFrame.from_records([s.record for s in stars])
    extra = sub[[c for c in match.ignored if c in sub.columns]]
    extra = extra.rename(columns={c: f"{c}_in" for c in extra.columns if c in result.columns})
    return pd.concat([extra.reset_index(drop=True), result], axis=1)


def _write_samples(path: Path, stars: list[StarResult]) -> None:
    """row [R], param_names, mcmc_samples [R, M, 5] and, with a model, npe_samples [R, N, 5],
    npe_weights [R, N], for the R sampled rows."""
    from irisml_tf.physics.simulator import PARAM_NAMES
    from irisml_tf.workdir import atomic_write

    done = [s for s in stars if s.mcmc_samples is not None]
    arrays = {"mcmc_samples": [s.mcmc_samples for s in done],
              "npe_samples": [s.npe_samples for s in done if s.npe_samples is not None],
              "npe_weights": [s.npe_weights for s in done if s.npe_weights is not None]}
    arrays = {k: np.stack(v) for k, v in arrays.items() if v}
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, row=np.array([s.row for s in done], np.int64),
                                                       param_names=np.array(PARAM_NAMES), **arrays))


def _corner(plots_dir: Path, star: StarResult) -> Path:
    from irisml_tf.plots import corner_comparison, save

    plots_dir.mkdir(parents=True, exist_ok=True)
    draws = {"MCMC": (star.mcmc_samples, None)}
    if star.npe_samples is not None:
        draws = {"NPE (flow)": (star.npe_samples, None),
                 "NPE + importance weights": (star.npe_samples, star.npe_weights), **draws}
    fig = corner_comparison(draws)
    fig.suptitle(f"row {star.row}", x=0.1, ha="left")
    return save(fig, plots_dir / f"mcmc_row{star.row}.png")


def run_mcmc_catalog(catalog: str | Path, out: str | Path, options: MCMCOptions | None = None, *,
                     model_dir: str | Path | None = None, progress: bool = True,
                     say: Callable[[str], None] = _silent) -> MCMCSummary:
    """Run the MCMC reference on the chosen rows of ``catalog`` and write one row per star to
    ``out`` (format by extension); ``options`` None = the defaults. ``say`` gets the notes a user
    should see (column matching, no model found). Raises ValueError for bad options or an
    unusable catalogue."""
    from irisml_tf.catalog import TABLE_FORMATS, read_table, write_table
    from irisml_tf.columns import match_columns
    from irisml_tf.extras import require
    from irisml_tf.progress import progress_bar
    from irisml_tf.workdir import atomic_write

    require("mcmc")
    options = MCMCOptions() if options is None else options
    catalog, out = Path(catalog), Path(out)
    if out.suffix.lower() not in TABLE_FORMATS:
        raise ValueError(f"`out`: unknown extension `{out.suffix}`; use one of {', '.join(TABLE_FORMATS)}")
    df = read_table(catalog)
    rows = _select_rows(options.rows, len(df), catalog)
    model = _load_model(None if model_dir is None else Path(model_dir), options, say)
    setup = _setup(model, options)
    for warning in setup.user_prior.warnings:
        say(f"prior: {warning}")
    match = match_columns(df.columns)
    if not match.bands:
        raise ValueError(f"{catalog}: no column names a band (e.g. Gaia_G, phot_g_mean_mag, j_m, w1mpro); "
                         "see `irisml-tf bands` for the names understood")
    say(match.report())
    sub = df.iloc[rows].reset_index(drop=True)
    prep = _prepare(sub, match, setup, options)
    conditions = _conditions(sub, setup, options, prep.codes, say)
    single = len(rows) == 1
    bar = progress_bar(len(rows), desc="mcmc", unit="star", enabled=progress and not single)
    stars = []
    for i, row in enumerate(rows):
        stars.append(_sample_star(setup, prep, conditions[i], i, row, options, progress=progress and single))
        bar.update(1)
    bar.close()
    table = _table(sub, match, stars)
    atomic_write(out, lambda tmp: write_table(table, tmp))
    summary = MCMCSummary(out, table, None if model is None else Path(model.path))
    if options.samples_out is not None:
        _write_samples(Path(options.samples_out), stars)
        summary.samples_out = Path(options.samples_out)
    if options.plots_dir is not None:
        summary.files = [_corner(Path(options.plots_dir), s) for s in stars if s.mcmc_samples is not None]
    return summary

