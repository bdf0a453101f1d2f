"""Read (and write) BOSZ model-atmosphere spectra in the formats STScI distributes.

Everything returned is numpy: wavelength in Å (increasing) and the *surface* flux
F_λ = flux leaving 1 cm² of the stellar surface, in erg/s/cm²/Å — so that the flux at distance d
of a star of radius R is F_λ (R/d)². The per-release flux conventions are undone here, at the
boundary, and nowhere else.

BOSZ 2024 (Mészáros et al. 2024, A&A 688, A197; https://archive.stsci.edu/hlsp/bosz)
------------------------------------------------------------------------------------
* Names: ``bosz2024_<atm>_t<teff>_g<logg>_m<[M/H]>_a<[α/M]>_c<[C/M]>_v<vmic>_r<R>_<prod>.txt.gz``
  with signed values (log g to 0.1, abundances to 0.01), e.g.
  ``bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.txt.gz``. ``<atm>`` is ``mp`` /
  ``ms`` (MARCS plane-parallel / spherical) or ``ap`` (ATLAS9 plane-parallel); no ``as`` file is
  known (ATLAS9 is plane-parallel only) but the pattern accepts it. Teff has no zero padding
  (``t2800`` … ``t16000``), log g may be negative (``g-0.5``), vmic ∈ {0, 1, 2, 4} km/s. ``<R>`` is
  500 … 50000 with ``<prod>`` = ``resam``, or ``orig`` with ``noresam`` (native resolution); a
  ``lineid`` product (line identifications) also exists and is not a spectrum. The archive lays
  files out as ``r<R>/m<±[M/H]>/<name>``.
* Columns: ``noresam`` files hold 3 whitespace-separated columns, wavelength [Å], H_λ, continuum.
  ``resam`` files hold only 2 columns, H_λ and continuum; row i belongs to row i of the separate
  one-column wavelength file ``bosz2024_wave_r<R>.txt`` (on the archive under ``wavelength_grids/``),
  15·R points uniform in ln λ from 500 Å to 32 µm. The reader looks for that file in the spectrum's
  folder and its ancestors (and their ``wavelength_grids/``), or takes it as an argument.
* Flux: H_λ is the Eddington flux (first moment of the intensity) in erg/s/cm²/Å, so the surface
  flux is F_λ = 4π H_λ.
* Wavelength medium: air above 2000 Å, vacuum below (the paper, as quoted in the notes cited below:
  "using air wavelengths above 200 nm and vacuum wavelength below 200 nm"). Passed through unchanged.

BOSZ 2017 (Bohlin et al. 2017, AJ 153, 234; https://archive.stsci.edu/prepds/bosz/)
-----------------------------------------------------------------------------------
* Names: ``a<m[M/H]><c[C/M]><o[α/M]>t<teff>g<10·logg>v<10·vmic>modrt<vrot>b<R>rs.fits`` (also
  ``.asc.bz2``), e.g. ``amm13cp00op00t3500g45v20modrt0b50000rs.fits``. Each abundance is a sign
  letter (``p``/``m``) and two digits = round-half-up(10·|x|), so 0.25 → ``03``, 0.75 → ``08``,
  1.25 → ``13``; as the grid steps are 0.25 dex, we decode digits/10 snapped to the nearest 0.25.
  The STScI page calls the ``c`` and ``o`` values [C/H] and [α/H], code using the grid [C/M] and
  [α/M]; here they are ``carbon`` and ``alpha`` either way.
  ``v20`` = 2.0 km/s, ``rt0`` = no rotation, ``b50000`` = R, ``rs`` = resampled (2 points per
  resolution element). Archive layout ``fits/insbroad_<R:06d>/metal_±x.xx/carbon_±x.xx/alpha_±x.xx/``.
* FITS: a binary table in HDU 1 with columns ``Wavelength`` [Å], ``SpecificIntensity``, ``Continuum``;
  the ASCII version has the same three columns. Wavelengths are in vacuum (MAST readme, as quoted in
  the notes cited below).
* Flux: ``SpecificIntensity`` is a surface brightness that is already 4× the Eddington flux, so
  F_λ = π · SpecificIntensity (erg/s/cm²/Å) — *not* 4π.

Where the facts come from, and what is not confirmed
----------------------------------------------------
The real files could not be downloaded here. Sources, all read through a public-text search:
the STScI 2017 page (naming example, ``mm13 → −1.25``, ``v20 → 2.0 km/s``, ``rt0``, ``b50000``,
bzip2 ASCII + FITS binary table, directory layout); the 2024 paper's abstract (grid ranges, 8
resolutions, vmic 0/1/2/4). The rest is from public code and notes by people reading the real
files: the column names ``Wavelength`` / ``SpecificIntensity`` / ``Continuum`` and the factor π
(webbpsf_ext ``BOSZ_spectrum``, Subaru-PFS pfsspec ``BoszSpectrumReader``, a JWST/NIRISS
magnitudes tool, and a reader citing eq. 2 of Bohlin et al. 2017 and the STScI page); the 2024 name
pattern, the 2-column ``resam`` / 3-column ``noresam`` layout, the separate wavelength files and
F = 4πH (a reader by K. Gordon, co-author of both BOSZ papers: "flux units are H, F = 4*pi*H in
ergs/(cm^2 s A)"; several independent readers; and a notes file quoting the HLSP readme and
measuring the archive files, which also gives the air/vacuum conventions and the 2017 readme's
"already four times larger").

Not confirmed: the exact number format and any header lines of the 2024 text files (we read any
whitespace-separated numbers, skip ``#`` lines and accept Fortran ``D`` exponents); whether the
2017 FITS headers carry the parameters, and under which keywords (we only compare the keywords our
own writer sets — TEFF, LOGG, MH, ALPHA, CARBON, VTURB — when present); the FITS column data
types and TUNIT strings (a length unit in TUNIT of the wavelength column is honoured, else Å is
assumed); whether a native-resolution (``rorig``) file printed with few decimals can repeat a
wavelength — such a file is rejected as non-increasing, not repaired.

Handling: negative fluxes (not expected in a model, but then magnitudes stay defined) are clipped to 0; non-finite
or non-increasing wavelengths and non-finite fluxes are errors naming the file. The writer
reproduces names, columns, column order and flux conventions, not the archive's digit counts.
"""
from __future__ import annotations

import bz2
import functools
import gzip
import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BoszSpectrum",
    "BoszFileError",
    "SURFACE_FLUX_FACTOR",
    "parse_bosz_name",
    "bosz_name",
    "read_bosz_spectrum",
    "find_bosz_files",
    "scan_bosz_dir",
    "write_bosz_spectrum",
]

# surface F_λ = factor × stored flux column
SURFACE_FLUX_FACTOR = {"2024": 4.0 * math.pi, "2017": math.pi}

_RE_2024 = re.compile(
    r"^bosz2024_(?P<atm>[am][ps])_t(?P<teff>\d+)_g(?P<logg>[+-]\d+\.\d)_m(?P<mh>[+-]\d+\.\d\d)"
    r"_a(?P<alpha>[+-]\d+\.\d\d)_c(?P<carbon>[+-]\d+\.\d\d)_v(?P<vturb>\d+)_r(?P<res>\d+|orig)"
    r"_(?P<prod>resam|noresam|lineid)\.txt(?P<gz>\.gz)?$")
_RE_2017 = re.compile(
    r"^am(?P<mh_s>[mp])(?P<mh>\d\d)c(?P<carbon_s>[mp])(?P<carbon>\d\d)o(?P<alpha_s>[mp])(?P<alpha>\d\d)"
    r"t(?P<teff>\d+)g(?P<logg>\d\d)v(?P<vturb>\d\d)modrt(?P<vrot>\d+)b(?P<res>\d+)rs"
    r"\.(?P<ext>fits(?:\.gz)?|asc(?:\.bz2)?)$")
_RE_WAVE = re.compile(r"^bosz2024_wave_r(?P<res>\d+)\.txt(?:\.gz)?$")

_EXAMPLES = ("'bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.txt.gz' (2024) or "
             "'amp00cp00op00t5000g45v20modrt0b10000rs.fits' (2017)")
_HEADER_KEYS = {"teff": "TEFF", "logg": "LOGG", "mh": "MH", "alpha": "ALPHA", "carbon": "CARBON",
                "vturb": "VTURB"}


class BoszFileError(ValueError):
    """A BOSZ file that is missing, corrupt, or not in a distributed BOSZ format."""


@dataclass(frozen=True, eq=False)
class BoszSpectrum:
    """One BOSZ model: parameters and its surface flux on its own wavelength grid."""

    teff: float
    logg: float
    mh: float
    alpha: float
    wavelength: np.ndarray  # Å, strictly increasing
    flam: np.ndarray  # surface flux F_λ, erg/s/cm²/Å, ≥ 0
    path: str


# -- names ------------------------------------------------------------------------------------
def _snap_quarter(digits: str, sign: str) -> float:
    # 2017 names store round-half-up(10·|x|); the grid is in 0.25 dex steps, so snap back
    value = round(int(digits) / 10.0 * 4.0) / 4.0
    return -value if sign == "m" and value != 0 else value


def parse_bosz_name(name: str | os.PathLike) -> dict:
    """Parameters encoded in a BOSZ file name (a bare name or a path; only the name is used).

    Returns ``teff`` [K], ``logg``, ``mh`` = [M/H], ``alpha`` = [α/M], ``carbon`` = [C/M],
    ``vturb`` [km/s], ``resolution`` (int, or None for the native 2024 ``rorig``), ``release``
    ('2024' | '2017'), ``product`` ('resam' | 'noresam' | 'lineid' for 2024; 'fits' | 'asc' for
    2017), and ``atmosphere`` (2024: 'mp', 'ms', 'ap') or ``vrot`` [km/s] (2017).
    Raises ``ValueError`` naming the file when it matches neither pattern.
    """
    base = os.path.basename(os.fspath(name))
    m = _RE_2024.match(base)
    if m:
        res = m["res"]
        return {"teff": float(m["teff"]), "logg": float(m["logg"]), "mh": float(m["mh"]) + 0.0,
                "alpha": float(m["alpha"]) + 0.0, "carbon": float(m["carbon"]) + 0.0,
                "vturb": float(m["vturb"]), "resolution": None if res == "orig" else int(res),
                "release": "2024", "product": m["prod"], "atmosphere": m["atm"]}
    m = _RE_2017.match(base)
    if m:
        return {"teff": float(m["teff"]), "logg": int(m["logg"]) / 10.0,
                "mh": _snap_quarter(m["mh"], m["mh_s"]), "alpha": _snap_quarter(m["alpha"], m["alpha_s"]),
                "carbon": _snap_quarter(m["carbon"], m["carbon_s"]), "vturb": int(m["vturb"]) / 10.0,
                "resolution": int(m["res"]), "release": "2017",
                "product": "fits" if m["ext"].startswith("fits") else "asc", "vrot": float(m["vrot"])}
    raise ValueError(f"{base!r} is not a BOSZ file name; expected e.g. {_EXAMPLES}")


def _exact(value: float, scale: int, what: str) -> int:
    """value·scale as an int, refusing values the name cannot carry (they would not round-trip)."""
    scaled = round(float(value) * scale)
    if not math.isfinite(value) or abs(value * scale - scaled) > 1e-6:
        raise ValueError(f"{what} = {value} cannot be written in a BOSZ name (needs a multiple of {1 / scale:g})")
    return scaled


def _quarter_code(value: float, letter: str, what: str) -> str:
    q = _exact(value, 4, what)  # 2017 abundances are on the 0.25 dex grid
    digits = int(abs(q) * 2.5 + 0.5)  # round-half-up of 10·|x|, as the archive names do
    if digits > 99:
        raise ValueError(f"{what} = {value} is out of range for a 2017 BOSZ name")
    return f"{letter}{'m' if q < 0 else 'p'}{digits:02d}"


def _default_atmosphere(teff: float, logg: float) -> str:
    # ATLAS9 above the 7500–8000 K overlap; MARCS spherical for giants (log g ≤ 3), else plane-parallel
    if teff > 8000:
        return "ap"
    return "ms" if logg <= 3.0 else "mp"


def bosz_name(teff: float, logg: float, mh: float, alpha: float = 0.0, carbon: float = 0.0,
              vturb: float = 2.0, resolution: int | None = None, fmt: str = "2024",
              atmosphere: str | None = None, compressed: bool = True) -> str:
    """The distributed file name for these parameters (inverse of :func:`parse_bosz_name`).

    2024: ``resolution=None`` names the native-resolution 3-column file (``rorig_noresam``), an
    integer R a resampled 2-column file (``r<R>_resam``); ``atmosphere`` defaults to 'ap' above
    8000 K, else 'ms' for log g ≤ 3 and 'mp' above (a naming guess; the archive has both MARCS and
    ATLAS9 files at 7500–8000 K). 2017: ``resolution`` defaults to 300000 and the name ends in
    ``.fits``.
    """
    t = _exact(teff, 1, "teff")
    if fmt == "2024":
        atm = atmosphere or _default_atmosphere(t, logg)
        if not re.fullmatch(r"[am][ps]", atm):
            raise ValueError(f"atmosphere must be 'mp', 'ms' or 'ap', got {atm!r}")
        g = _exact(logg, 10, "logg") / 10
        m, a, c = (_exact(x, 100, w) / 100 for x, w in ((mh, "mh"), (alpha, "alpha"), (carbon, "carbon")))
        v = _exact(vturb, 1, "vturb")
        res = "rorig_noresam" if resolution is None else f"r{_exact(resolution, 1, 'resolution')}_resam"
        return (f"bosz2024_{atm}_t{t}_g{g:+.1f}_m{m + 0.0:+.2f}_a{a + 0.0:+.2f}_c{c + 0.0:+.2f}_v{v}_{res}"
                f".txt{'.gz' if compressed else ''}")
    if fmt == "2017":
        g = _exact(logg, 10, "logg")
        v = _exact(vturb, 10, "vturb")
        if not 0 <= g <= 99 or not 0 <= v <= 99:
            raise ValueError(f"logg = {logg} or vturb = {vturb} is out of range for a 2017 BOSZ name")
        r = 300000 if resolution is None else _exact(resolution, 1, "resolution")
        return (f"a{_quarter_code(mh, 'm', 'mh')}{_quarter_code(carbon, 'c', 'carbon')}"
                f"{_quarter_code(alpha, 'o', 'alpha')}t{t}g{g:02d}v{v:02d}modrt0b{r}rs.fits")
    raise ValueError(f"fmt must be '2024' or '2017', got {fmt!r}")


# -- reading ----------------------------------------------------------------------------------
def _open_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".bz2"):
        return bz2.decompress(raw)
    return raw


def _read_table(path: Path, ncols: int) -> np.ndarray:
    """The numeric columns of a whitespace-separated text file (optionally gz/bz2) as (N, ncols)."""
    import pandas as pd

    try:
        text = _open_bytes(path)
        if b"D" in text or b"d" in text:  # Fortran exponents, 1.0D+05
            text = text.replace(b"D", b"E").replace(b"d", b"e")
        df = pd.read_csv(io.BytesIO(text), sep=r"\s+", header=None, comment="#", dtype=float)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as e:
        raise BoszFileError(f"BOSZ file {path} is corrupt or not a numeric table: {e}") from None
    if df.shape[1] != ncols or len(df) < 2:
        raise BoszFileError(f"BOSZ file {path} has {df.shape[1]} column(s) and {len(df)} row(s); "
                            f"this product should have {ncols} columns")
    return df.to_numpy(dtype=float)


@functools.lru_cache(maxsize=4)
def _wave_grid(path: str, size: int, mtime_ns: int) -> np.ndarray:
    # keyed on size and mtime as well, so a rewritten file is read again; grids are up to ~10 MB
    wave = _read_table(Path(path), 1)[:, 0]
    _check_wave(wave, Path(path))
    wave.setflags(write=False)
    return wave


def _load_wave(path: Path) -> np.ndarray:
    st = path.stat()
    return _wave_grid(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _check_wave(wave: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(wave)):
        raise BoszFileError(f"BOSZ file {path}: wavelengths are not all finite")
    bad = np.flatnonzero(np.diff(wave) <= 0)
    if bad.size:
        i = bad[0]
        raise BoszFileError(f"BOSZ file {path}: wavelengths are not strictly increasing "
                            f"(row {i + 1}: {wave[i]!r} Å, row {i + 2}: {wave[i + 1]!r} Å)")


def _find_wave_file(spectrum: Path, resolution: int, levels: int = 4) -> Path | None:
    """``bosz2024_wave_r<R>.txt`` next to the spectrum or in an ancestor (or its wavelength_grids/)."""
    names = (f"bosz2024_wave_r{resolution}.txt", f"bosz2024_wave_r{resolution}.txt.gz")
    folder = spectrum.resolve().parent
    for _ in range(levels + 1):
        for sub in (folder, folder / "wavelength_grids"):
            for n in names:
                if (sub / n).is_file():
                    return sub / n
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _fits_unit_to_angstrom(unit: str | None) -> float:
    if not unit:
        return 1.0
    import astropy.units as u

    try:
        return float(u.Unit(unit.strip().replace("Angstroms", "Angstrom")).to(u.AA))
    except (ValueError, u.UnitConversionError, TypeError):
        return 1.0  # unknown spelling: the documented unit is Å


def _read_fits(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            table = next((h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)), None)
            if table is None:
                raise BoszFileError(f"BOSZ file {path} has no binary table extension")
            cols = {c.name.lower(): c for c in table.columns}
            if "wavelength" not in cols or "specificintensity" not in cols:
                raise BoszFileError(f"BOSZ file {path}: the table needs columns Wavelength and "
                                    f"SpecificIntensity, it has {[c.name for c in table.columns]}")
            scale = _fits_unit_to_angstrom(cols["wavelength"].unit)
            wave = np.array(table.data[cols["wavelength"].name], dtype=np.float64) * scale
            flux = np.array(table.data[cols["specificintensity"].name], dtype=np.float64)
            header = {}
            for hdr in (hdul[0].header, table.header):
                for key, card in _HEADER_KEYS.items():
                    if card in hdr and key not in header:
                        try:
                            header[key] = float(hdr[card])
                        except (TypeError, ValueError):
                            pass  # a keyword of another meaning; the file name decides
    except (BoszFileError, FileNotFoundError):
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        raise BoszFileError(f"BOSZ file {path} is corrupt or not a FITS table: {e}") from None
    return wave, flux, header


def read_bosz_spectrum(path: str | os.PathLike, wave_file: str | os.PathLike | None = None,
                       params: dict | None = None) -> BoszSpectrum:
    """Read one BOSZ spectrum (2024 ``.txt`` / ``.txt.gz``; 2017 ``.fits`` / ``.asc`` / ``.asc.bz2``).

    Parameters come from the file name (for FITS, TEFF/LOGG/MH/ALPHA header keywords must agree
    with it when present, and stand in for it when the name is not a BOSZ name). The flux is
    converted to surface F_λ [erg/s/cm²/Å] (2024: 4π H_λ; 2017: π × SpecificIntensity); negative
    values are clipped to 0. ``wave_file`` is the wavelength grid of a 2024 ``resam`` file, found
    next to it or in an ancestor folder when not given. ``params`` (from :func:`find_bosz_files`)
    skips re-parsing the name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BOSZ file {path} does not exist")
    try:
        info = dict(params) if params is not None else parse_bosz_name(path.name)
    except ValueError:
        info = None
    is_fits = path.name.endswith((".fits", ".fits.gz", ".fit"))
    if info is None and not is_fits:
        parse_bosz_name(path.name)  # raises the naming error
    release = info["release"] if info else "2017"

    if is_fits:
        wave, flux, header = _read_fits(path)
        if info is None:
            missing = [k for k in ("teff", "logg", "mh") if k not in header]
            if missing:
                raise ValueError(f"{path.name!r} is not a BOSZ file name and its FITS header lacks "
                                 f"{', '.join(_HEADER_KEYS[k] for k in missing)}; expected e.g. {_EXAMPLES}")
            info = {"alpha": 0.0, **header}
        for key, value in header.items():
            if key in info and abs(info[key] - value) > 1e-6 * max(1.0, abs(value)):
                raise BoszFileError(f"BOSZ file {path}: header {_HEADER_KEYS[key]} = {value} "
                                    f"disagrees with the file name ({key} = {info[key]})")
    elif info["product"] == "lineid":
        raise BoszFileError(f"BOSZ file {path} is a line-identification list, not a spectrum")
    elif release == "2017" or info["product"] == "noresam":
        data = _read_table(path, 3)
        wave, flux = np.ascontiguousarray(data[:, 0]), data[:, 1]  # don't keep the whole table alive
    else:
        resolution = info["resolution"]
        wpath = Path(wave_file) if wave_file is not None else _find_wave_file(path, resolution)
        if wpath is None or not wpath.is_file():
            raise BoszFileError(f"BOSZ file {path} is resampled at R={resolution} and needs its wavelength "
                                f"grid bosz2024_wave_r{resolution}.txt (archive folder wavelength_grids/); "
                                f"none found next to it or in the folders above")
        wave = _load_wave(wpath)
        flux = _read_table(path, 2)[:, 0]
        if flux.size != wave.size:
            raise BoszFileError(f"BOSZ file {path} has {flux.size} rows but its wavelength grid {wpath} "
                                f"has {wave.size}; they must match row for row")

    _check_wave(wave, path)
    if not np.all(np.isfinite(flux)):
        raise BoszFileError(f"BOSZ file {path}: fluxes are not all finite")
    flam = np.clip(flux * SURFACE_FLUX_FACTOR[release], 0.0, None)
    flam.setflags(write=False)
    # a resampled grid is the cached read-only array, shared by all spectra at that R
    if wave.flags.writeable:
        wave.setflags(write=False)
    return BoszSpectrum(teff=float(info["teff"]), logg=float(info["logg"]), mh=float(info["mh"]),
                        alpha=float(info["alpha"]), wavelength=wave, flam=flam, path=str(path))


# -- folders ----------------------------------------------------------------------------------
def _walk(root: Path) -> Iterator[Path]:
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for f in sorted(files):
            yield Path(folder) / f


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


def find_bosz_files(directory: str | os.PathLike, alpha: float | None = 0.0, carbon: float | None = 0.0,
                    vturb: float | None = None) -> list[tuple[Path, dict]]:
    """All BOSZ spectra under ``directory`` (recursively) as ``(path, params)`` pairs, in a fixed
    order: a folder's files sorted by name, then its sub-folders sorted by name.

    Files whose names are not BOSZ names are ignored, as are ``lineid`` lists. Keeps [α/M] ==
    ``alpha`` and [C/M] == ``carbon`` (None: any) and, if given, microturbulence ``vturb``. Of
    several files with the same (teff, logg, mh) the first in that order is kept and the others
    are reported in one warning (e.g. ATLAS9 and MARCS at 7500–8000 K, several vturb or R). For a
    2024 ``resam`` file ``params['wave_file']`` is its wavelength grid, looked up in the folder
    tree first. Raises ``FileNotFoundError`` if the folder is missing and ``BoszFileError`` if
    nothing is left or a resampled file has no wavelength grid.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"BOSZ folder {root} does not exist or is not a folder")
    waves: dict[int, Path] = {}
    named, kept, dropped = 0, [], []
    by_node: dict[tuple[float, float, float], Path] = {}
    releases = set()
    for path in _walk(root):
        w = _RE_WAVE.match(path.name)
        if w:
            waves.setdefault(int(w["res"]), path)
            continue
        try:
            p = parse_bosz_name(path.name)
        except ValueError:
            continue
        if p["product"] == "lineid":
            continue
        named += 1
        if alpha is not None and not _same(p["alpha"], alpha):
            continue
        if carbon is not None and not _same(p["carbon"], carbon):
            continue
        if vturb is not None and not _same(p["vturb"], vturb):
            continue
        node = (p["teff"], p["logg"], p["mh"])
        if node in by_node:
            dropped.append((path, by_node[node]))
            continue
        by_node[node] = path
        releases.add(p["release"])
        kept.append((path, p))
    if not kept:
        which = (f"[α/M] = {alpha}" if alpha is not None else "any [α/M]") + ", " + \
                (f"[C/M] = {carbon}" if carbon is not None else "any [C/M]") + \
                (f", vturb = {vturb}" if vturb is not None else "")
        raise BoszFileError(f"no BOSZ spectra with {which} under {root} ({named} BOSZ-named file(s) in all); "
                            f"expected names like {_EXAMPLES}")
    if dropped:
        examples = "; ".join(f"{a.name} (kept {b.name})" for a, b in dropped[:3])
        warnings.warn(f"{len(dropped)} BOSZ file(s) under {root} repeat a (teff, logg, mh) already found and are "
                      f"skipped: {examples}{' …' if len(dropped) > 3 else ''}", UserWarning, stacklevel=2)
    if len(releases) > 1:
        warnings.warn(f"{root} mixes BOSZ 2017 and 2024 spectra; their physics differs (fluxes are "
                      f"converted consistently)", UserWarning, stacklevel=2)
    for path, p in kept:
        if p["release"] == "2024" and p["product"] == "resam":
            wave = waves.get(p["resolution"]) or _find_wave_file(path, p["resolution"])
            if wave is None:
                raise BoszFileError(f"BOSZ file {path} is resampled at R={p['resolution']} and needs "
                                    f"bosz2024_wave_r{p['resolution']}.txt; none under {root} or above the file")
            p["wave_file"] = str(wave)
    return kept


def scan_bosz_dir(directory: str | os.PathLike, alpha: float | None = 0.0, carbon: float | None = 0.0,
                  vturb: float | None = None) -> Iterator[BoszSpectrum]:
    """Spectra of :func:`find_bosz_files`, read one at a time (a generator: one in memory at a time).

    The folder is listed, filtered and checked before this returns, so a missing folder or an
    empty selection fails here, not at the first ``next``.
    """
    files = find_bosz_files(directory, alpha=alpha, carbon=carbon, vturb=vturb)
    return (read_bosz_spectrum(path, wave_file=p.get("wave_file"), params=p) for path, p in files)


# -- writing ----------------------------------------------------------------------------------
def _fmt_rows(columns: list[np.ndarray], fmt: str) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack(columns), fmt=fmt, delimiter=" ")
    return buf.getvalue().encode("ascii")


def _write_bytes(path: Path, data: bytes) -> None:
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".bz2"):
        data = bz2.compress(data)
    path.write_bytes(data)


def write_bosz_spectrum(path: str | os.PathLike, teff: float, logg: float, mh: float,
                        wavelength: np.ndarray, flam: np.ndarray, alpha: float = 0.0, fmt: str = "2024",
                        *, carbon: float = 0.0, vturb: float = 2.0, resolution: int | None = None,
                        atmosphere: str | None = None, continuum: np.ndarray | None = None,
                        wave_path: str | os.PathLike | None = None) -> Path:
    """Write a spectrum as a distributed BOSZ file; returns the path written.

    ``path`` is a folder, created if needed (the file gets its distributed name, :func:`bosz_name`),
    or a file path whose name must be a BOSZ name carrying these parameters. ``wavelength`` [Å] and ``flam``
    (surface F_λ, erg/s/cm²/Å) are stored with the release's convention: 2024 H_λ = F_λ / 4π,
    2017 SpecificIntensity = F_λ / π; ``continuum`` (same units, default ``flam``) likewise.
    2024 with ``resolution=None`` writes the self-contained 3-column ``rorig_noresam`` file; with an
    integer R the 2-column ``r<R>_resam`` file plus the grid ``bosz2024_wave_r<R>.txt`` (at
    ``wave_path``, default next to it; an existing grid must equal ``wavelength``). 2017 writes
    the FITS table, or the ASCII table if ``path`` names a ``.asc`` / ``.asc.bz2`` file.
    """
    wave = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flam, dtype=np.float64)
    cont = flux if continuum is None else np.asarray(continuum, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2 or flux.shape != wave.shape or cont.shape != wave.shape:
        raise ValueError("wavelength, flam and continuum must be 1-D arrays of the same length ≥ 2")
    if not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0):
        raise ValueError("wavelength must be finite and strictly increasing (Å)")
    if not np.all(np.isfinite(flux)) or not np.all(np.isfinite(cont)):
        raise ValueError("flam and continuum must be finite")

    target = Path(path)
    try:
        p = None if target.is_dir() else parse_bosz_name(target.name)
    except ValueError:
        if target.exists() or target.name.endswith((".txt", ".gz", ".fits", ".asc", ".bz2")):
            raise  # a file path with a wrong name, not a folder to create
        p = None
    if p is None:
        target.mkdir(parents=True, exist_ok=True)
        target = target / bosz_name(teff, logg, mh, alpha, carbon, vturb, resolution, fmt, atmosphere)
    else:
        given = {"teff": teff, "logg": logg, "mh": mh, "alpha": alpha, "carbon": carbon, "vturb": vturb}
        wrong = [k for k, v in given.items() if not _same(p[k], float(v))]
        if p["release"] != fmt:
            wrong.append("release")
        if fmt == "2024" and p["resolution"] != resolution:
            wrong.append("resolution")
        if wrong:
            raise ValueError(f"file name {target.name!r} does not carry the given {', '.join(wrong)}")
        target.parent.mkdir(parents=True, exist_ok=True)

    factor = SURFACE_FLUX_FACTOR[fmt]
    stored, stored_cont = flux / factor, cont / factor
    if fmt == "2024":
        if resolution is None:
            _write_bytes(target, _fmt_rows([wave, stored, stored_cont], "%.16e"))
        else:
            wpath = Path(wave_path) if wave_path is not None else target.parent / f"bosz2024_wave_r{resolution}.txt"
            if wpath.exists():
                old = _load_wave(wpath)
                if old.shape != wave.shape or not np.allclose(old, wave, rtol=1e-12, atol=0):
                    raise ValueError(f"wavelength grid {wpath} exists and differs from `wavelength`; "
                                     f"all R={resolution} spectra share one grid")
            else:
                wpath.parent.mkdir(parents=True, exist_ok=True)
                _write_bytes(wpath, _fmt_rows([wave], "%.17g"))
            _write_bytes(target, _fmt_rows([stored, stored_cont], "%.16e"))
    elif target.name.endswith((".asc", ".asc.bz2")):
        _write_bytes(target, _fmt_rows([wave, stored, stored_cont], "%.16e"))
    else:
        from astropy.io import fits

        table = fits.BinTableHDU.from_columns([
            fits.Column(name="Wavelength", format="D", unit="Angstrom", array=wave),
            fits.Column(name="SpecificIntensity", format="D", unit="erg/s/cm^2/A", array=stored),
            fits.Column(name="Continuum", format="D", unit="erg/s/cm^2/A", array=stored_cont),
        ])
        primary = fits.PrimaryHDU()
        for key, value in (("teff", teff), ("logg", logg), ("mh", mh), ("alpha", alpha), ("carbon", carbon),
                           ("vturb", vturb)):
            primary.header[_HEADER_KEYS[key]] = float(value)
        fits.HDUList([primary, table]).writeto(target, overwrite=True)
    return target
