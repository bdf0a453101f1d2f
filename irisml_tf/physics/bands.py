"""The band registry: the 25 default bands, their surveys, systems and catalogue column names.

A band's filter curve is stored in the package (``data/filters/<name>.ecsv``, from pyphot's
library); its pivot wavelength and zero point are computed from that stored curve by
:mod:`irisml_tf.physics.filters`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Band", "BANDS", "BAND_NAMES", "NUM_BANDS", "band_index", "get_band", "SURVEYS", "GAIA_ZERO_POINTS"]


@dataclass(frozen=True)
class Band:
    """One photometric band.

    name: canonical name (``Gaia_G``); survey: survey it belongs to (missing-band patterns act on
    whole surveys); system: ``"Vega"`` or ``"AB"``; pyphot: the pyphot library passband the curve
    and the default grid come from; mag_cols / err_cols: column names the surveys' own catalogues
    (archive tables and VizieR) use, matched case-insensitively by the catalogue reader;
    flux_cols / flux_err_cols / flux_over_error_cols: flux columns (Gaia, e-/s) for conversion
    when magnitudes or their errors are absent; flux_zero_point: the magnitude of a flux of 1 in
    those units (m = flux_zero_point − 2.5 log10 flux), None where the band has no flux columns.
    """

    name: str
    survey: str
    system: str
    pyphot: str
    mag_cols: tuple[str, ...] = ()
    err_cols: tuple[str, ...] = ()
    flux_cols: tuple[str, ...] = field(default=())
    flux_err_cols: tuple[str, ...] = field(default=())
    flux_over_error_cols: tuple[str, ...] = field(default=())
    flux_zero_point: float | None = None


#: Gaia (E)DR3 VEGAMAG zero points [mag] for fluxes in e-/s (DR3 re-publishes the EDR3 photometry):
#: Riello et al. 2021, A&A 649, A3, Sect. 7, Table 3; each ±0.0028 mag.
GAIA_ZERO_POINTS = {"G": 25.6874, "BP": 25.3385, "RP": 24.7479}


def _gaia(short: str, name: str) -> Band:
    return Band(
        f"Gaia_{name}", "Gaia", "Vega", f"GaiaDR2v2_{name}",
        mag_cols=(f"phot_{short}_mean_mag", f"{name}mag"),
        err_cols=(f"phot_{short}_mean_mag_error", f"e_{name}mag"),
        flux_cols=(f"phot_{short}_mean_flux",),
        flux_err_cols=(f"phot_{short}_mean_flux_error",),
        flux_over_error_cols=(f"phot_{short}_mean_flux_over_error",),
        flux_zero_point=GAIA_ZERO_POINTS[name],
    )


def _ps1(b: str) -> Band:
    return Band(f"PS1_{b}", "PS1", "AB", f"PS1_{b}",
                mag_cols=(f"{b}MeanPSFMag",), err_cols=(f"{b}MeanPSFMagErr",))


def _sdss(b: str) -> Band:
    return Band(f"SDSS_{b}", "SDSS", "AB", f"SDSS_{b}",
                mag_cols=(f"psfMag_{b}",), err_cols=(f"psfMagErr_{b}",))


def _skymapper(b: str) -> Band:
    return Band(f"SkyMapper_{b}", "SkyMapper", "AB", f"SkyMapper_{b}",
                mag_cols=(f"{b}_psf",), err_cols=(f"e_{b}_psf",))


BANDS: tuple[Band, ...] = (
    _gaia("g", "G"),
    _gaia("bp", "BP"),
    _gaia("rp", "RP"),
    Band("GALEX_NUV", "GALEX", "AB", "GALEX_NUV",
         mag_cols=("nuv_mag", "NUVmag"), err_cols=("nuv_magerr", "e_NUVmag")),
    *(_ps1(b) for b in "grizy"),
    *(_sdss(b) for b in "ugriz"),
    *(_skymapper(b) for b in "uvgriz"),
    Band("2MASS_J", "2MASS", "Vega", "2MASS_J", mag_cols=("j_m", "Jmag"), err_cols=("j_msigcom", "e_Jmag")),
    Band("2MASS_H", "2MASS", "Vega", "2MASS_H", mag_cols=("h_m", "Hmag"), err_cols=("h_msigcom", "e_Hmag")),
    Band("2MASS_Ks", "2MASS", "Vega", "2MASS_Ks", mag_cols=("k_m", "Kmag", "Ksmag"),
         err_cols=("k_msigcom", "e_Kmag", "e_Ksmag")),
    Band("WISE_W1", "WISE", "Vega", "WISE_RSR_W1", mag_cols=("w1mpro", "W1mag"), err_cols=("w1sigmpro", "e_W1mag")),
    Band("WISE_W2", "WISE", "Vega", "WISE_RSR_W2", mag_cols=("w2mpro", "W2mag"), err_cols=("w2sigmpro", "e_W2mag")),
)

BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)
NUM_BANDS = len(BANDS)
SURVEYS: tuple[str, ...] = tuple(dict.fromkeys(b.survey for b in BANDS))
_INDEX = {name: i for i, name in enumerate(BAND_NAMES)}


def band_index(name: str) -> int:
    """Index of a canonical band name in :data:`BAND_NAMES`; a clear error for unknown names."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown band `{name}`; known bands: {', '.join(BAND_NAMES)}") from None


def get_band(name: str) -> Band:
    return BANDS[band_index(name)]
