"""Building grid files: from astroARIADNE's BOSZ photometric grid (the shipped default) or from
real BOSZ spectra integrated through any filter curves.

Both paths end in :func:`assemble`: magnitudes in each band's own system and the band-extinction
basis of :mod:`.grid` fitted to k_b = A_b/A_V integrated directly on the node's spectrum (real, or
a proxy rebuilt from the node's own 43 band fluxes when only photometry exists).
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .bands import BAND_NAMES, BANDS, get_band
from .extinction import PROXY_WAVE, band_k, proxy_spectra
from .filters import FilterCurve, load_filter, stored_filter, vega_flavor
from .grid import StellarGrid

__all__ = ["AV_NODES", "U_NODES", "EXT_RANK", "build_from_ariadne", "build_from_spectra", "assemble",
           "fit_extinction_basis", "flux_to_mag", "read_ariadne_table"]

AV_NODES = np.linspace(0.0, 15.0, 61)  # 0.25 mag steps
U_NODES = np.linspace(1 / 5.1, 1 / 2.3, 13)  # u = 1/R_V, R_V 2.3–5.1
EXT_RANK = 8
# surface flux → flux at 10 pc from a 1 R_sun star
_DILUTION = (6.957e10 / 3.0856775814913673e19) ** 2
_ARIADNE_MEMBER = "model_grid_BOSZ.dat"
CITATIONS = {
    "BOSZ": "Bohlin R. C. et al. 2017, AJ 153, 234; Meszaros S. et al. 2024, A&A 688, A197",
    "ARIADNE": "Vines J. I. & Jenkins J. S. 2022, MNRAS 513, 2719 (astroARIADNE, MIT licence)",
    "F99": "Fitzpatrick E. L. 1999, PASP 111, 63 (via the `extinction` package, Barbary 2016)",
    "pyphot": "Fouesneau M., pyphot (filters and zero points)",
}


def flux_to_mag(flux_10pc: np.ndarray, zero_flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes and validity from band fluxes at 10 pc [erg/s/cm²/Å]; non-positive → invalid."""
    flux_10pc = np.asarray(flux_10pc, float)
    valid = np.isfinite(flux_10pc) & (flux_10pc > 0)
    mag = np.zeros_like(flux_10pc)
    mag[valid] = -2.5 * np.log10(flux_10pc[valid] / np.broadcast_to(zero_flux, flux_10pc.shape)[valid])
    return mag, valid


def fit_extinction_basis(k: np.ndarray, valid: np.ndarray, rank: int = EXT_RANK):
    """Per band, a mean surface and ``rank`` principal surfaces of k over (A_V, u) nodes.

    k: (N, B, A, U) direct integrations; valid: (N, B). Returns basis (B, 1 + rank, A, U) and
    coef (N, B, rank), zero where not valid. Signs fixed and values rounded so that rebuilds are
    reproducible to the byte.
    """
    n, nb, na, nu = k.shape
    basis = np.zeros((nb, 1 + rank, na, nu))
    coef = np.zeros((n, nb, rank))
    for b in range(nb):
        rows = k[valid[:, b], b].reshape(-1, na * nu)
        if rows.shape[0] == 0:
            continue
        mean = rows.mean(0)
        _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
        vt = vt[:rank]
        vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
        vt = np.round(vt, 7)
        mean = np.round(mean, 7)
        basis[b, 0] = mean.reshape(na, nu)
        basis[b, 1:1 + len(vt)] = vt.reshape(-1, na, nu)
        coef[valid[:, b], b, :len(vt)] = np.round((rows - mean) @ vt.T, 6)
    return basis.astype(np.float32), coef.astype(np.float32)


def assemble(teff, logg, mh, bands: Sequence[str], systems: Sequence[str], curves: Sequence[FilterCurve],
             flux_10pc: np.ndarray, k: np.ndarray, provenance: dict, rank: int = EXT_RANK) -> StellarGrid:
    """Put node lists (N,) with fluxes (N, B) and k (N, B, A, U) onto the rectilinear box."""
    teff, logg, mh = (np.asarray(x, float) for x in (teff, logg, mh))
    zero = np.array([c.zero_flux(s) for c, s in zip(curves, systems)])
    mag, valid = flux_to_mag(flux_10pc, zero)
    valid &= np.all(np.isfinite(k), axis=(2, 3))
    basis, coef = fit_extinction_basis(np.nan_to_num(k), valid, rank)
    axes = [np.unique(x) for x in (teff, logg, mh)]
    idx = [np.searchsorted(a, x) for a, x in zip(axes, (teff, logg, mh))]
    shape = tuple(len(a) for a in axes)
    if len(set(zip(*idx))) != len(teff):
        raise ValueError("the node list holds duplicate (teff, logg, mh) nodes")
    nb = len(bands)
    box_mag = np.zeros(shape + (nb,), np.float32)
    box_valid = np.zeros(shape + (nb,), bool)
    box_coef = np.zeros(shape + (nb, rank), np.float32)
    box_mag[tuple(idx)] = np.round(mag, 5)
    box_valid[tuple(idx)] = valid
    box_coef[tuple(idx)] = coef
    box_mag[~box_valid] = 0.0
    box_coef[~box_valid] = 0.0
    provenance = dict(provenance)
    provenance.update(
        magnitudes="absolute magnitude of a 1 R_sun star at 10 pc: m = mag + A_b + mu, "
                   "mu = 5 log10(d/10pc) - 5 log10(R/R_sun)",
        zero_points={b: {"system": s, "zero_flux_erg_s_cm2_A": float(z)} for b, s, z in zip(bands, systems, zero)},
        vega_spectrum=f"pyphot default Vega ({vega_flavor()})",
        extinction=("Fitzpatrick 1999 via `extinction`; A_V = A(5414 A) exactly; k_b = A_b/A_V tabulated on "
                    f"A_V 0-15 step {AV_NODES[1]:.2f}, 1/R_V {len(U_NODES)} nodes (R_V 2.3-5.1), per node a "
                    f"rank-{rank} basis fit per band (SVD)"),
        citations=CITATIONS,
        versions=_versions(),
    )
    return StellarGrid(teff=axes[0], logg=axes[1], mh=axes[2], bands=tuple(bands), systems=tuple(systems),
                       mag=box_mag, valid=box_valid, ext_coef=box_coef, ext_basis=basis,
                       av_nodes=AV_NODES.copy(), u_nodes=U_NODES.copy(),
                       pivot=np.array([c.pivot for c in curves]), zero_flux=zero, provenance=provenance)


def _versions() -> dict:
    import extinction
    import pyphot

    return {"numpy": np.__version__, "pyphot": pyphot.__VERSION__, "extinction": extinction.__version__}


# -- astroARIADNE -------------------------------------------------------------------------------
def _read_ariadne(source: Path) -> tuple[bytes, str]:
    """The BOSZ table's bytes and the package version, from a wheel or an unpacked directory."""
    source = Path(source)
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            members = [n for n in zf.namelist() if n.endswith("/" + _ARIADNE_MEMBER)]
            if not members:
                raise FileNotFoundError(f"{source} holds no {_ARIADNE_MEMBER}; is it the astroariadne wheel?")
            data = zf.read(members[0])
        m = re.match(r"astroariadne-([^-]+)-", source.name)
        return data, m.group(1) if m else "unknown"
    if source.is_dir():
        found = sorted(source.rglob(_ARIADNE_MEMBER))
        if not found:
            raise FileNotFoundError(f"no {_ARIADNE_MEMBER} under {source}")
        meta = sorted(source.rglob("astroariadne-*.dist-info"))
        version = meta[0].name.split("-")[1] if meta else "unknown"
        return found[0].read_bytes(), version
    raise FileNotFoundError(f"{source} is neither the astroariadne wheel nor a directory holding {_ARIADNE_MEMBER}")


def read_ariadne_table(source: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], str, str]:
    """astroARIADNE's BOSZ table from its wheel or an unpacked directory: node parameters (N, 3)
    (teff, logg, [M/H]), surface flux (N, P) [erg/s/cm²/Å] = 4π H_λ in each of the table's P
    pyphot passbands, the passband names, the table's sha256 and the package version."""
    data, version = _read_ariadne(source)
    header = data.split(b"\n", 1)[0].decode().lstrip("#").split()
    table = np.loadtxt(io.BytesIO(data))
    if table.ndim != 2 or table.shape[1] != len(header):
        raise ValueError(f"{_ARIADNE_MEMBER}: expected {len(header)} columns")
    surface = 4 * np.pi * table[:, 3:] / 1e4  # Eddington flux per µm → surface flux per Å
    return table[:, :3], surface, header[3:], hashlib.sha256(data).hexdigest(), version


def build_from_ariadne(source: str | Path, rank: int = EXT_RANK, chunk: int = 512,
                       progress: bool = False) -> StellarGrid:
    """The default grid from astroARIADNE's BOSZ table (`pip download --no-deps astroariadne`).

    The table holds Eddington fluxes H_λ [erg/s/cm²/µm] averaged over 43 pyphot passbands per
    (teff, logg, [M/H]) node; surface flux is 4π H_λ. Extinction uses a proxy spectrum per node
    (:func:`.extinction.proxy_spectra`) through all 43 passbands.
    """
    params, surface, names, sha256, version = read_ariadne_table(source)
    cols = {name: i for i, name in enumerate(names)}
    missing = [b.pyphot for b in BANDS if b.pyphot not in cols]
    if missing:
        raise ValueError(f"{_ARIADNE_MEMBER} lacks passbands {missing}")
    all_curves = [load_filter(name) for name in names]
    ours = [stored_filter(b.name) for b in BANDS]
    flux = surface[:, [cols[b.pyphot] for b in BANDS]] * _DILUTION
    k = np.empty((len(params), len(BANDS), len(AV_NODES), len(U_NODES)), np.float32)
    starts = range(0, len(params), chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="extinction tables", unit="chunk")
    for s in starts:
        sl = slice(s, s + chunk)
        spec = proxy_spectra(params[sl, 0], surface[sl], all_curves)
        k[sl] = band_k(PROXY_WAVE, spec, ours, AV_NODES, 1.0 / U_NODES)
    provenance = {
        "source": f"astroariadne {version} (PyPI), astroARIADNE/Datafiles/model_grids/{_ARIADNE_MEMBER}",
        "source_sha256": sha256,
        "source_licence": "MIT",
        "rebuild": "irisml-tf grid build --from-ariadne astroariadne-<version>-py3-none-any.whl",
        "proxy_spectrum": ("black body of the node's Teff times a non-negative correction piecewise linear in "
                           "log wavelength with knots at the pivots of all 43 passbands, fitted by NNLS to the "
                           "band fluxes"),
        "filters": {b.name: b.pyphot for b in BANDS},
    }
    return assemble(params[:, 0], params[:, 1], params[:, 2], BAND_NAMES, [b.system for b in BANDS], ours,
                    flux, k, provenance, rank)


# -- real spectra -------------------------------------------------------------------------------
def parse_band_spec(spec: str) -> tuple[str, FilterCurve, str]:
    """``NAME`` or ``NAME@SYSTEM``: a registry band keeps its system; any other filter is AB unless
    ``@Vega`` is given."""
    name, _, system = spec.partition("@")
    curve = load_filter(name)
    if name in BAND_NAMES:
        system = system or get_band(name).system
        label = name
    else:
        label = Path(name).stem if Path(name).exists() else name
    system = system or "AB"
    if system not in ("AB", "Vega"):
        raise ValueError(f"band `{spec}`: system must be AB or Vega")
    return label, curve, system


def build_from_spectra(spectra: Iterable, band_specs: Sequence[str] = BAND_NAMES, rank: int = EXT_RANK,
                       provenance: dict | None = None, progress: bool = False) -> StellarGrid:
    """A grid from spectra, each with attributes teff, logg, mh, wavelength [Å], flam (surface F_λ
    in erg/s/cm²/Å), e.g. :func:`.bosz.scan_bosz_dir`. Band fluxes and extinction are integrated on
    each real spectrum."""
    parsed = [parse_band_spec(s) for s in band_specs]
    labels, curves, systems = zip(*parsed)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate band names in {list(labels)}")
    curves = list(curves)
    params, fluxes, ks = [], [], []
    if progress:
        from tqdm import tqdm

        spectra = tqdm(spectra, desc="spectra", unit="spec")
    # runs of spectra on one wavelength grid are integrated together, so the F99 curves, filter
    # weights and attenuation matrices are built once per run (up to ~2^24 samples held at a time)
    wave, run = None, []

    def flush():
        flam = np.stack(run)
        fluxes.extend(np.stack([c.band_flux(wave, flam) for c in curves], 1))
        ks.extend(band_k(wave, flam, curves, AV_NODES, 1.0 / U_NODES))
        run.clear()

    for sp in spectra:
        w = np.asarray(sp.wavelength, float)
        if wave is None or not (w is wave or (w.shape == wave.shape and np.array_equal(w, wave))):
            if run:
                flush()
            wave = w
            for c in curves:
                if wave[0] > c.wavelength[0] or wave[-1] < c.wavelength[-1]:
                    raise ValueError(f"spectrum teff={sp.teff} logg={sp.logg} mh={sp.mh} "
                                     f"does not cover filter `{c.name}`")
        params.append((sp.teff, sp.logg, sp.mh))
        run.append(np.asarray(sp.flam, float))
        if len(run) >= max(1, min(64, 2**24 // wave.size)):
            flush()
    if run:
        flush()
    if not params:
        raise ValueError("no spectra to build a grid from")
    params = np.array(params)
    prov = {"source": "BOSZ model spectra", "filters": {lab: c.source for lab, c in zip(labels, curves)}}
    prov.update(provenance or {})
    return assemble(params[:, 0], params[:, 1], params[:, 2], labels, systems, curves,
                    np.array(fluxes) * _DILUTION, np.array(ks, np.float32), prov, rank)
