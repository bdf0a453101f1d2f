"""`irisml-tf bands`: the band registry as a table."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main


def _columns(band) -> str:
    """The catalogue columns matched for a band (irisml_tf.columns): magnitude/error pairs, the
    canonical names first, then Gaia's flux columns."""
    pairs = [(band.name, f"{band.name}_err"), *zip(band.mag_cols, band.err_cols)]
    text = ", ".join(f"{m}/{e}" for m, e in pairs)
    flux = band.flux_cols + band.flux_err_cols + band.flux_over_error_cols
    return f"{text}; flux [e-/s]: {', '.join(flux)}" if flux else text


@main.command()
@click.option("--write-filters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Regenerate the stored filter curves (ECSV) from pyphot's library into DIR "
                   "(needs irisml-tf[build]).")
def bands(write_filters: Path | None) -> None:
    """Print the 25 bands: survey, magnitude system, pivot wavelength and zero flux (those of the
    shipped grid's filter curves), and the catalogue column names matched for magnitude and error
    and, for Gaia, flux."""
    from irisml_tf.physics.bands import BANDS

    if write_filters is not None:
        from irisml_tf.extras import require
        from irisml_tf.physics.filters import write_stored_filters

        require("build")
        for path in write_stored_filters(write_filters):
            click.echo(f"wrote {path}")
        return
    from irisml_tf.physics.grid import load_grid

    grid = load_grid()
    index = {name: i for i, name in enumerate(grid.bands)}
    head = (f"{'band':<12} {'survey':<10} {'system':<6} {'pivot[Å]':>9} {'zero flux[erg/s/cm²/Å]':>23}  "
            "magnitude / error columns")
    click.echo(head)
    click.echo("-" * len(head))
    for b in BANDS:
        i = index[b.name]
        click.echo(f"{b.name:<12} {b.survey:<10} {b.system:<6} {grid.pivot[i]:>9.1f} {grid.zero_flux[i]:>23.4e}  "
                   f"{_columns(b)}")
