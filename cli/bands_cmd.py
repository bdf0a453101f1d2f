"""`irisml-tf bands`: the band registry as a table."""
from __future__ import annotations

from pathlib import Path

import click

from .main import main


@main.command()
@click.option("--write-filters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Regenerate the stored filter curves (ECSV) from pyphot's library into DIR.")
def bands(write_filters: Path | None) -> None:
    """Print the 25 bands: survey, magnitude system, pivot wavelength, zero point and the catalogue
    column names matched for magnitude and error."""
    from irisml_tf.physics.bands import BANDS
    from irisml_tf.physics.filters import stored_filter, write_stored_filters

    if write_filters is not None:
        for path in write_stored_filters(write_filters):
            click.echo(f"wrote {path}")
        return
    head = f"{'band':<12} {'survey':<10} {'system':<6} {'pivot[Å]':>9} {'zero flux[erg/s/cm²/Å]':>23}  magnitude / error columns"
    click.echo(head)
    click.echo("-" * len(head))
    for b in BANDS:
        f = stored_filter(b.name)
        cols = ", ".join(f"{m}/{e}" for m, e in zip(b.mag_cols, b.err_cols))
        click.echo(f"{b.name:<12} {b.survey:<10} {b.system:<6} {f.pivot:>9.1f} {f.zero_flux(b.system):>23.4e}  {cols}")
