"""`irisml-tf simulate`: draw stars from the prior and write their simulated photometry."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main

# interim per-survey 1σ errors [mag] until the training issue's observation model exists
SIMPLE_ERRORS = {"Gaia": 0.005, "GALEX": 0.05, "PS1": 0.02, "SDSS": 0.03, "SkyMapper": 0.03,
                 "2MASS": 0.03, "WISE": 0.03}


def _parse_fix(values: tuple[str, ...]) -> dict[str, float]:
    from irisml_tf.physics.simulator import PARAM_NAMES

    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in PARAM_NAMES:
            raise click.BadParameter(f"`{item}`: use NAME=VALUE with NAME one of {', '.join(PARAM_NAMES)}",
                                     param_hint="--fix")
        try:
            out[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"`{item}`: {value!r} is not a number", param_hint="--fix") from None
    return out


@main.command(help=f"""Draw N stars from the prior and write θ and their magnitudes to OUT
(.parquet, .csv or .fits, by extension).

Columns: teff, logg, mh, av, rv, then <band> and <band>_err for all 25 bands (NaN where a band is
absent). Magnitudes have μ = 0: they are absolute magnitudes of a 1 R_sun star at 10 pc, plus
extinction. Unless --noiseless, each magnitude gets Gaussian noise with a fixed per-survey 1σ error
(mag): {', '.join(f'{k} {v}' for k, v in SIMPLE_ERRORS.items())}; all bands are present. The
same --seed gives an identical file.""")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of stars.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--noiseless", is_flag=True, help="No noise; errors are 0 and all 25 bands present.")
@click.option("--fix", multiple=True, metavar="NAME=VALUE",
              help="Pin a parameter (repeatable), e.g. --fix av=0 --fix rv=3.1.")
@click.option("--prior", "prior_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Prior config YAML (default: configs/prior.yaml's values).")
@click.option("--grid", "grid_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Grid file (default: the shipped BOSZ grid).")
def simulate(n, seed, out, noiseless, fix, prior_path, grid_path) -> None:
    from irisml_tf.catalog import TABLE_FORMATS, write_table
    from irisml_tf.data.table import simulate_table

    if out.suffix.lower() not in TABLE_FORMATS:
        raise click.BadParameter(f"unknown extension `{out.suffix}`; use .parquet, .csv or .fits", param_hint="--out")
    fixed = _parse_fix(fix)
    try:
        df = simulate_table(n, seed, fixed=fixed, noise=None if noiseless else SIMPLE_ERRORS,
                            prior=prior_path, grid=grid_path, progress=True)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    write_table(df, out)
    click.echo(f"wrote {len(df)} stars to {out}")
