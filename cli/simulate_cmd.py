"""`irisml-tf simulate`: draw stars from the prior and write their simulated photometry."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main


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


@main.command(help="""Draw N stars from the prior and write θ and their observed magnitudes to OUT
(.parquet, .csv or .fits, by extension).

Columns: teff, logg, mh, av, rv, then <band> and <band>_err for all 25 bands (NaN where a band is
absent). The photometry comes from the observation model the shipped model was trained with: each
star is placed at a distance where the mean of its magnitudes is uniform in --ref-mag (default
8-20 mag), gets the surveys' depth-dependent errors (0.002-0.3 mag) and noise, and misses bands as
cross-matched catalogues do (--all-bands keeps all). The file can be fed straight to `irisml-tf
infer`. --noiseless writes the simulator's own magnitudes instead: μ = 0 (absolute magnitudes of
a 1 R_sun star at 10 pc, plus extinction), errors 0, all bands. The same --seed (and options)
gives an identical file.""")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of stars.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of θ, brightness, errors and noise: the same seed gives an identical file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--ref-mag", type=(float, float), default=None, metavar="LO HI",
              help="Range of a star's mean magnitude [mag] (default: the observation model's 8 20).")
@click.option("--all-bands", is_flag=True,
              help="Keep every band the grid models for the star: a band beyond its survey's depth gets "
                   "the largest training error (0.3 mag) and may lie beyond infer's 32 mag limit.")
@click.option("--noiseless", is_flag=True, help="μ = 0, no noise; errors are 0 and all 25 bands present.")
@click.option("--fix", multiple=True, metavar="NAME=VALUE",
              help="Pin a parameter (repeatable), e.g. --fix av=0 --fix rv=3.1.")
@click.option("--prior", "prior_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Prior config YAML (default: configs/prior.yaml's values).")
@click.option("--grid", "grid_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Grid file (default: the shipped BOSZ grid).")
def simulate(n, seed, out, ref_mag, all_bands, noiseless, fix, prior_path, grid_path) -> None:
    from irisml_tf.catalog import TABLE_FORMATS, write_table
    from irisml_tf.data.table import simulate_table

    if out.suffix.lower() not in TABLE_FORMATS:
        raise click.BadParameter(f"unknown extension `{out.suffix}`; use .parquet, .csv or .fits", param_hint="--out")
    fixed = _parse_fix(fix)
    try:
        df = simulate_table(n, seed, fixed=fixed, prior=prior_path, grid=grid_path, observe=not noiseless,
                            observation={"ref_mag": list(ref_mag)} if ref_mag else None, all_bands=all_bands,
                            progress=True)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    write_table(df, out)
    click.echo(f"wrote {len(df)} stars to {out}")
