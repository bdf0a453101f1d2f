"""Filter curves: loading (stored, pyphot, speclite, user files), pivot wavelengths, band fluxes
and zero points.

Wavelengths are in Angstrom and flux densities F_lambda in erg/s/cm^2/A throughout. Curves are
photon-counting responses unless a user file says otherwise. Zero points come from pyphot (Vega:
its default Vega spectrum, whose 2MASS and WISE zero points agree with Cohen+2003 / Jarrett+2011
within ~1 %; AB: 3631 Jy), computed on the very curve we integrate with.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["FilterCurve", "load_filter", "stored_filter", "write_filter", "write_stored_filters", "vega_flavor"]



def vega_flavor() -> str:
    """Name of pyphot's default Vega spectrum (recorded in grid provenance)."""
    import pyphot.config

    return str(pyphot.config.__vega_default_flavor__)

_STORED = resources.files("irisml_tf.physics") / "data" / "filters"


@dataclass(frozen=True, eq=False)
class FilterCurve:
    """A passband: ``wavelength`` [Å] (increasing) and ``throughput`` (same shape, ≥ 0)."""

    name: str
    wavelength: np.ndarray
    throughput: np.ndarray
    dtype: str = "photon"
    source: str = ""

    def __post_init__(self):
        wave = np.asarray(self.wavelength, float)
        thr = np.clip(np.asarray(self.throughput, float), 0.0, None)
        if wave.ndim != 1 or wave.shape != thr.shape or wave.size < 2:
            raise ValueError(f"filter `{self.name}`: wavelength and throughput must be 1-D, same length ≥ 2")
        if np.any(np.diff(wave) <= 0):
            raise ValueError(f"filter `{self.name}`: wavelength must be strictly increasing (Å)")
        if not np.all(np.isfinite(wave)) or not np.all(np.isfinite(thr)) or thr.max() <= 0:
            raise ValueError(f"filter `{self.name}`: throughput must be finite with a positive maximum")
        if self.dtype not in ("photon", "energy"):
            raise ValueError(f"filter `{self.name}`: dtype must be 'photon' or 'energy', got {self.dtype!r}")
        object.__setattr__(self, "wavelength", wave)
        object.__setattr__(self, "throughput", thr)

    @property
    def pivot(self) -> float:
        """Pivot wavelength [Å]; for a photon counter sqrt(∫λS dλ / ∫S/λ dλ)."""
        lam, s = self.wavelength, self.throughput
        if self.dtype == "photon":
            return float(np.sqrt(np.trapezoid(lam * s, lam) / np.trapezoid(s / lam, lam)))
        return float(np.sqrt(np.trapezoid(s, lam) / np.trapezoid(s / lam**2, lam)))

    def weights(self, wave: np.ndarray) -> np.ndarray:
        """Integration weights on ``wave`` [Å] so that ``flam @ w`` is the band-averaged F_λ.

        Photon counter: ∫F S λ dλ / ∫S λ dλ (energy counter: without the λ). ``wave`` must cover
        the curve; trapezoid rule on ``wave`` with the curve interpolated onto it.
        """
        wave = np.asarray(wave, float)
        if wave[0] > self.wavelength[0] or wave[-1] < self.wavelength[-1]:
            raise ValueError(
                f"filter `{self.name}` spans {self.wavelength[0]:.0f}–{self.wavelength[-1]:.0f} Å, "
                f"the spectrum only {wave[0]:.0f}–{wave[-1]:.0f} Å")
        s = np.interp(wave, self.wavelength, self.throughput, left=0.0, right=0.0)
        if self.dtype == "photon":
            s = s * wave
        dx = np.diff(wave)
        trap = np.zeros_like(wave)
        trap[:-1] += dx / 2
        trap[1:] += dx / 2
        w = s * trap
        return w / w.sum()

    def band_flux(self, wave: np.ndarray, flam: np.ndarray) -> np.ndarray:
        """Band-averaged F_λ of spectra ``flam`` with shape (*, len(wave))."""
        return np.asarray(flam, float) @ self.weights(wave)

    @functools.cached_property
    def _pyphot(self):
        from pyphot import Filter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Filter(self.wavelength, self.throughput, name=self.name, dtype=self.dtype, unit="AA")

    def zero_flux(self, system: str) -> float:
        """Zero-magnitude band flux [erg/s/cm²/Å] in ``system`` ('Vega' or 'AB'), from pyphot."""
        if system == "Vega":
            q = self._pyphot.Vega_zero_flux
        elif system == "AB":
            q = self._pyphot.AB_zero_flux
        else:
            raise ValueError(f"unknown magnitude system `{system}`; use 'Vega' or 'AB'")
        return float(q.to("erg/(s cm2 AA)").value)


def stored_filter(band: str) -> FilterCurve:
    """The curve stored in the package for a canonical band name."""
    from .bands import band_index

    band_index(band)  # clear error for an unknown name
    return _read_file(Path(str(_STORED / f"{band}.ecsv")), band)


def load_filter(spec: str) -> FilterCurve:
    """A filter from, in this order: a file path (ECSV, or two columns: wavelength [Å], throughput),
    a canonical band name (stored curve), a speclite name (``twomass-J``), a pyphot library name."""
    from .bands import BAND_NAMES

    path = Path(spec)
    if path.exists():
        return _read_file(path, path.stem)
    if spec in BAND_NAMES:
        return stored_filter(spec)
    if "-" in spec:
        try:
            import speclite.filters

            f = speclite.filters.load_filter(spec)
            return FilterCurve(spec, np.asarray(f.wavelength), np.asarray(f.response), "photon",
                               f"speclite {speclite.__version__}")
        except (ValueError, OSError, ImportError):
            pass
    return _pyphot_filter(spec)


def _pyphot_filter(name: str) -> FilterCurve:
    from pyphot import get_library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = get_library()
        if name not in lib.get_library_content():
            raise KeyError(f"filter `{name}` is not a file, a band, a speclite or a pyphot filter name")
        f = lib[name]
    import pyphot

    wave = f.wavelength.to("AA").value
    # some library curves repeat a wavelength; keep the first sample of each
    keep = np.concatenate([[True], np.diff(wave) > 0])
    return FilterCurve(name, wave[keep], np.asarray(f.transmit)[keep], f.dtype,
                       f"pyphot {pyphot.__VERSION__} library `{name}`")


def _read_file(path: Path, name: str) -> FilterCurve:
    if not path.exists():
        raise FileNotFoundError(f"filter file {path} does not exist")
    if path.suffix == ".ecsv":
        from astropy.table import Table

        t = Table.read(path, format="ascii.ecsv")
        col = t.columns[0]
        wave = col.quantity.to_value("AA") if col.unit is not None else np.asarray(col)
        return FilterCurve(t.meta.get("name", name), wave, np.asarray(t.columns[1]),
                           t.meta.get("dtype", "photon"), t.meta.get("source", str(path)))
    try:
        data = np.loadtxt(path, comments="#", usecols=(0, 1), ndmin=2)
    except ValueError as e:
        raise ValueError(f"filter file {path}: expected two numeric columns (wavelength Å, throughput): {e}") from None
    return FilterCurve(name, data[:, 0], data[:, 1], "photon", str(path))


def write_filter(curve: FilterCurve, path: Path) -> None:
    """Write a curve as ECSV with units and provenance (the format of the stored curves)."""
    import astropy.units as u
    from astropy.table import Table

    t = Table([curve.wavelength * u.AA, curve.throughput], names=("wavelength", "throughput"))
    t.meta.update(name=curve.name, dtype=curve.dtype, source=curve.source)
    t.write(path, format="ascii.ecsv", overwrite=True)


def write_stored_filters(directory: Path) -> list[Path]:
    """Regenerate the stored curves of the 25 bands from pyphot's library (``irisml-tf bands
    --write-filters DIR``)."""
    from .bands import BANDS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for band in BANDS:
        curve = _pyphot_filter(band.pyphot)
        path = directory / f"{band.name}.ecsv"
        write_filter(replace(curve, name=band.name), path)
        out.append(path)
    return out
