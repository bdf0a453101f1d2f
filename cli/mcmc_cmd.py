"""`irisml-tf mcmc`: emcee on chosen catalogue rows, the reference for single stars (a thin layer over
irisml_tf.inference.mcmc), with the comparison to the exported NPE model when there is one."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main

_MAX_ROWS_WITHOUT_SELECTION = 200  # MCMC costs seconds per star: a whole catalogue needs --rows


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
            raise click.BadParameter(f"`{part}` is not a row number or a range like 5-7",
                                     param_hint="--rows") from None
        if a < 0 or b < a:
            raise click.BadParameter(f"`{part}`: rows are 0-based and ranges run low-high",
                                     param_hint="--rows")
        if b >= n_rows:
            raise click.BadParameter(f"`{part}`: the catalogue has {n_rows} rows (0 … {n_rows - 1})",
                                     param_hint="--rows")
        rows.extend(r for r in range(a, b + 1) if r not in rows)
    if not rows:
        raise click.BadParameter("no rows selected", param_hint="--rows")
    return rows


def _load_model(model_dir: Path | None, no_npe: bool):
    from irisml_tf.serving import default_model_path, load_model

    if no_npe:
        return None
    if model_dir is None:
        default = default_model_path()
        if not (default / "saved_model.pb").exists():
            click.echo(f"no model at {default}: MCMC only, no NPE comparison (give --model DIR)", err=True)
            return None
        model_dir = default
    try:
        return load_model(model_dir)
    except FileNotFoundError as err:
        raise click.BadParameter(str(err), param_hint="--model") from None


@main.command(help="""Run emcee on chosen stars of CATALOG and write one row per star to OUT.

The posterior is the one importance sampling uses: the photometric likelihood with the distance
term μ marginalised (THE simulator, errors ⊕ the systematic floor) times the prior, both taken from
the exported model (its sys_floor and prior config) when there is one, else the defaults. Columns
are matched as in inference (canonical band names, survey and VizieR aliases, Gaia fluxes); rows
with fewer usable bands than the model's min_bands are reported and skipped.

OUT (.parquet .csv .fits .ecsv .vot, by extension) holds the catalogue's other columns, `row`
(0-based), `status`, wall time [s], steps, acceptance, `converged` (chain ≥ 50 τ), and per
parameter (teff [K], logg [dex], mh [dex], av [mag], rv): τ [steps], ESS, MCMC median/p16/p84/std
and, with a model, the NPE comparison: <p>_npe_median (importance-weighted), <p>_npe_dmed_sigma =
(NPE median − MCMC median)/MCMC std, <p>_in_npe68 / <p>_in_npe95 = fraction of MCMC samples inside
the NPE central 68 % / 95 % intervals (≈ 0.68 / 0.95 when NPE is right).

The same --seed gives identical chains; each row's chain depends only on (seed, row), so a row
gives the same answer whichever other rows are chosen.""")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rows", "rows_spec", default=None, metavar="SPEC",
              help="0-based rows, e.g. 0,3,5-7 (default: all rows, at most "
                   f"{_MAX_ROWS_WITHOUT_SELECTION}).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output table, one row per star.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Exported model for prior, sys_floor and the NPE comparison "
                                 "(default: the shipped model, if present).")
@click.option("--no-npe", is_flag=True, help="No model: default prior and sys_floor, no comparison.")
@click.option("--walkers", type=click.IntRange(min=10), default=32, show_default=True,
              help="emcee walkers (even).")
@click.option("--steps", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Steps per walker, burn-in included.")
@click.option("--burn", type=click.IntRange(min=0), default=500, show_default=True,
              help="Burn-in steps discarded.")
@click.option("--init", "init_from", type=click.Choice(["prior", "npe"]), default="prior",
              show_default=True, help="Start walkers at the best of 4096 prior draws, or at "
                                      "importance-weighted NPE samples (needs a model).")
@click.option("--npe-samples", type=click.IntRange(min=100), default=8192, show_default=True,
              help="NPE samples per star for the comparison (capped at the model's max_samples).")
@click.option("--default-err", type=click.FloatRange(min=0, min_open=True), default=None,
              help="1σ [mag] for magnitudes without a usable error (default 0.05).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the samples to this .npz: row [R], mcmc_samples [R, M, 5] (after "
                   "burn-in) and, with a model, npe_samples [R, N, 5], npe_weights [R, N].")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a corner plot per star (MCMC vs NPE weighted and unweighted) here.")
def mcmc(catalog, rows_spec, out, model_dir, no_npe, walkers, steps, burn, init_from, npe_samples,
         default_err, seed, samples_out, plots_dir) -> None:
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from irisml_tf.catalog import TABLE_FORMATS, read_table, write_table
    from irisml_tf.columns import DEFAULT_ERR, match_columns, prepare_rows
    from irisml_tf.data.observation import ObservationConfig
    from irisml_tf.inference.mcmc import npe_init, result_columns, run_mcmc
    from irisml_tf.physics.prior import Prior
    from irisml_tf.physics.simulator import PARAM_NAMES, Simulator

    if out.suffix.lower() not in TABLE_FORMATS:
        raise click.BadParameter(f"unknown extension `{out.suffix}`; use one of {', '.join(TABLE_FORMATS)}",
                                 param_hint="--out")
    if walkers % 2:
        raise click.BadParameter(f"{walkers}: emcee needs an even number of walkers", param_hint="--walkers")
    if burn >= steps:
        raise click.BadParameter(f"--burn {burn} must be below --steps {steps}", param_hint="--burn")
    if samples_out is not None and samples_out.suffix.lower() != ".npz":
        raise click.BadParameter(f"{samples_out}: must end in .npz", param_hint="--samples-out")
    if init_from == "npe" and no_npe:
        raise click.UsageError("--init npe needs a model (drop --no-npe)")
    try:
        df = read_table(catalog)
    except (ValueError, OSError) as err:
        raise click.ClickException(f"{catalog}: {err}") from None
    if rows_spec is None:
        if len(df) > _MAX_ROWS_WITHOUT_SELECTION:
            raise click.UsageError(f"{catalog} has {len(df)} rows; MCMC takes seconds per star: choose "
                                   "rows with --rows, e.g. --rows 0-9")
        rows = list(range(len(df)))
    else:
        rows = parse_rows(rows_spec, len(df))

    model = _load_model(model_dir, no_npe)
    if init_from == "npe" and model is None:
        raise click.UsageError("--init npe needs a model: give --model DIR")
    if model is not None:  # the model's simulator, prior and observation model
        try:
            sim, prior = model.physics()
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        obs = model.observation
    else:
        sim = Simulator()
        prior, obs = Prior(grid=sim.grid), ObservationConfig.from_dict()

    match = match_columns(df.columns)
    if not match.bands:
        raise click.ClickException(f"{catalog}: no column names a band (e.g. Gaia_G, phot_g_mean_mag, "
                                   "j_m, w1mpro); see `irisml-tf bands` for the names understood")
    click.echo(match.report(), err=True)
    sub = df.iloc[rows].reset_index(drop=True)
    try:
        prep = prepare_rows(sub, match, bands=sim.bands, min_bands=max(obs.min_bands, 2),
                            err_min=obs.err_min, err_max=obs.err_max,
                            default_err=DEFAULT_ERR if default_err is None else default_err)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--default-err") from None
    n_cap = min(npe_samples, int(model.meta.max_samples)) if model is not None else 0

    records, kept, arrays = [], [], {"mcmc_samples": [], "npe_samples": [], "npe_weights": []}
    single = len(rows) == 1
    status = prep.status
    for i, row in enumerate(tqdm(rows, desc="mcmc", unit="star", disable=single)):
        rec = {"row": row, "status": status[i], "n_bands": int(prep.n_bands[i])}
        if prep.skip[i]:
            records.append(rec)
            continue
        bi, mag, err = prep.band_index[i], prep.mag[i], prep.mag_err[i]
        npe = None
        if model is not None:
            npe = model.run(bi[None], mag[None], err[None], n_cap, (seed, row))
            rec.update(npe_ess=float(npe["ess"][0]), npe_efficiency=float(npe["efficiency"][0]),
                       npe_khat=float(npe["khat"][0]), npe_flag_bits=int(npe["flag_bits"][0]))
        init = None
        if init_from == "npe":
            init = npe_init(npe["samples"][0], npe["weights"][0], walkers, np.random.default_rng([seed, row, 1]))
            if init is None:
                rec["status"] += ";mcmc_init:prior(npe_weights_too_few)"
        try:
            res = run_mcmc(sim, prior, bi, mag, err, obs.sys_floor, nwalkers=walkers, nsteps=steps, burn=burn,
                           seed=[seed, row], init=init, progress=single)
        except ValueError as e:  # e.g. no prior draw fits: report the row, go on
            rec["status"] += f";mcmc_failed:{e}"
            records.append(rec)
            continue
        if npe is None:
            rec.update(result_columns(res))
        else:
            rec.update(result_columns(res, npe["samples"][0], npe["weights"][0]))
        records.append(rec)
        kept.append(row)
        arrays["mcmc_samples"].append(res.samples.astype(np.float32))
        if npe is not None:
            arrays["npe_samples"].append(npe["samples"][0])
            arrays["npe_weights"].append(npe["weights"][0])
        if plots_dir is not None:
            _corner(plots_dir, row, res.samples, npe)

    result = pd.DataFrame.from_records(records)
    # carry the catalogue's non-band columns (ids, coordinates, …) along
    extra = sub[[c for c in match.ignored if c in sub.columns]]
    extra = extra.rename(columns={c: f"{c}_in" for c in extra.columns if c in result.columns})
    write_table(pd.concat([extra.reset_index(drop=True), result], axis=1), out)
    if samples_out is not None:
        np.savez_compressed(samples_out, row=np.array(kept, np.int64), param_names=np.array(PARAM_NAMES),
                            **{k: np.stack(v) for k, v in arrays.items() if v})
    _echo_summary(result, PARAM_NAMES, out)


def _corner(plots_dir: Path, row: int, samples, npe) -> None:
    from irisml_tf.plots import corner_comparison, save

    plots_dir.mkdir(parents=True, exist_ok=True)
    draws = {"MCMC": (samples, None)}
    if npe is not None:
        draws = {"NPE (flow)": (npe["samples"][0], None),
                 "NPE + importance weights": (npe["samples"][0], npe["weights"][0]), **draws}
    fig = corner_comparison(draws)
    fig.suptitle(f"row {row}", x=0.1, ha="left")
    save(fig, plots_dir / f"mcmc_row{row}.png")


def _echo_summary(result, names, out: Path) -> None:
    done = result[result["wall_seconds"].notna()] if "wall_seconds" in result else result.iloc[:0]
    click.echo(f"wrote {len(result)} star(s) to {out}: {len(done)} sampled, "
               f"{len(result) - len(done)} skipped or failed")
    if len(done):
        click.echo(f"median wall time {done['wall_seconds'].median():.2f} s per star; "
                   f"{int((~done['converged'].astype(bool)).sum())} chain(s) shorter than 50 τ "
                   "(increase --steps)")
        if "teff_npe_dmed_sigma" in done:
            for p in names:
                click.echo(f"  {p:<5} NPE−MCMC median / σ: median {done[f'{p}_npe_dmed_sigma'].median():+.2f}; "
                           f"MCMC inside NPE 68 %: {done[f'{p}_in_npe68'].median():.2f}, "
                           f"95 %: {done[f'{p}_in_npe95'].median():.2f}")
