"""The stellar grid: synthetic magnitudes and band-extinction tables on a rectilinear node set.

Axes: teff [K] (interpolated in log10 teff), logg, mh. Node values per band:
``mag`` — absolute magnitude of a star of radius 1 R_sun at 10 pc in the band's own system, so
that observed m = mag + A_b + μ with μ = 5 log10(d / 10 pc) − 5 log10(R / R_sun); ``valid`` — the
node exists and has positive flux in the band; ``ext_coef`` — coefficients of the band's
extinction basis (see :mod:`.extinction`).

The extinction of band b at a node is A_b = A_V · k_b(A_V, R_V) with
k_b = basis[b, 0] + Σ_r ext_coef[..., b, r] · basis[b, 1 + r], the basis tabulated on ``av_nodes`` ×
``u_nodes`` (u = 1 / R_V) and interpolated bilinearly.

Files are ``.npz`` archives written deterministically (fixed member order and timestamps), so that
rebuilding from the same source gives a byte-identical file; ``np.load`` reads them.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["StellarGrid", "load_grid", "default_grid_path", "GridFileError", "all_corners"]

_FORMAT = "irisml-tf-grid/1"
_ARRAYS = ("teff", "logg", "mh", "mag", "valid", "ext_coef", "ext_basis", "av_nodes", "u_nodes",
           "pivot", "zero_flux")


def all_corners(node: np.ndarray) -> np.ndarray:
    """(T-1, G-1, M-1, ...) bool from a (T, G, M, ...) node array: true where all 8 corners are."""
    t, g, m = node.shape[:3]
    ok = np.ones((t - 1, g - 1, m - 1) + node.shape[3:], bool)
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                ok &= node[i:t - 1 + i, j:g - 1 + j, k:m - 1 + k]
    return ok


class GridFileError(ValueError):
    """A grid file that is missing, unreadable or inconsistent."""


@dataclass(frozen=True, eq=False)
class StellarGrid:
    teff: np.ndarray  # (T,) K, increasing
    logg: np.ndarray  # (G,) increasing, uniform
    mh: np.ndarray  # (M,) increasing, uniform
    bands: tuple[str, ...]  # (B,)
    systems: tuple[str, ...]  # (B,) 'Vega' | 'AB'
    mag: np.ndarray  # (T, G, M, B) float32, 0 where not valid
    valid: np.ndarray  # (T, G, M, B) bool
    ext_coef: np.ndarray  # (T, G, M, B, R) float32
    ext_basis: np.ndarray  # (B, 1 + R, A, U) float32
    av_nodes: np.ndarray  # (A,) mag, uniform from 0
    u_nodes: np.ndarray  # (U,) 1/R_V, uniform
    pivot: np.ndarray  # (B,) Å
    zero_flux: np.ndarray  # (B,) erg/s/cm²/Å
    provenance: dict = field(default_factory=dict)
    sha256: str | None = None  # of the file it was loaded from (None when built in memory)

    def __post_init__(self):
        t, g, m, b = len(self.teff), len(self.logg), len(self.mh), len(self.bands)
        expect = {"mag": (t, g, m, b), "valid": (t, g, m, b)}
        for name, shape in expect.items():
            if getattr(self, name).shape != shape:
                raise GridFileError(f"grid array `{name}` has shape {getattr(self, name).shape}, expected {shape}")
        if self.ext_coef.shape[:4] != (t, g, m, b) or self.ext_basis.shape[0] != b:
            raise GridFileError("grid extinction tables do not match the node set or the bands")
        if self.ext_basis.shape[1] != self.ext_coef.shape[4] + 1:
            raise GridFileError("grid extinction basis and coefficients disagree on the rank")
        if self.ext_basis.shape[2:] != (len(self.av_nodes), len(self.u_nodes)):
            raise GridFileError("grid extinction basis does not match its A_V / R_V nodes")
        for name in ("teff", "logg", "mh", "av_nodes", "u_nodes"):
            if np.any(np.diff(getattr(self, name)) <= 0):
                raise GridFileError(f"grid axis `{name}` must be strictly increasing")
        for name in ("logg", "mh", "av_nodes", "u_nodes"):
            d = np.diff(getattr(self, name))
            if not np.allclose(d, d[0], rtol=1e-6):
                raise GridFileError(f"grid axis `{name}` must be uniformly spaced")
        if not np.all(np.isfinite(self.mag)) or not np.all(np.isfinite(self.ext_coef)):
            raise GridFileError("grid tables hold non-finite values")

    # -- support ------------------------------------------------------------------------------
    @property
    def node_exists(self) -> np.ndarray:
        """(T, G, M) bool: the node exists (valid in at least one band)."""
        return self.valid.any(-1)

    @property
    def cell_ok(self) -> np.ndarray:
        """(T-1, G-1, M-1) bool: all 8 corners of the cell exist — the support of the simulator."""
        return all_corners(self.node_exists)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"teff": (float(self.teff[0]), float(self.teff[-1])),
                "logg": (float(self.logg[0]), float(self.logg[-1])),
                "mh": (float(self.mh[0]), float(self.mh[-1])),
                "av": (float(self.av_nodes[0]), float(self.av_nodes[-1])),
                "rv": (float(1.0 / self.u_nodes[-1]), float(1.0 / self.u_nodes[0]))}

    # -- file I/O -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> str:
        """Write the grid; returns the file's sha256. Byte-identical for identical content."""
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in _ARRAYS}
        meta = {"format": _FORMAT, "bands": list(self.bands), "systems": list(self.systems),
                "provenance": self.provenance}
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True, indent=1).encode(), np.uint8)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                member = io.BytesIO()
                np.lib.format.write_array(member, arrays[name], allow_pickle=False)
                zf.writestr(info, member.getvalue(), compresslevel=9)
        data = buf.getvalue()
        Path(path).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> StellarGrid:
        path = Path(path)
        if not path.exists():
            raise GridFileError(f"grid file {path} does not exist")
        data = path.read_bytes()
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {name: z[name] for name in _ARRAYS}
                meta = json.loads(bytes(z["meta"]).decode())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise GridFileError(f"grid file {path} is corrupt or not an irisml-tf grid: {e}") from None
        if meta.get("format") != _FORMAT:
            raise GridFileError(f"grid file {path} has format {meta.get('format')!r}, expected {_FORMAT!r}")
        return cls(bands=tuple(meta["bands"]), systems=tuple(meta["systems"]),
                   provenance=meta["provenance"], sha256=hashlib.sha256(data).hexdigest(), **arrays)


def default_grid_path() -> Path:
    return Path(str(resources.files("irisml_tf.physics") / "data" / "bosz_ariadne.npz"))


_CACHE: dict[str, StellarGrid] = {}


def load_grid(path: str | Path | None = None) -> StellarGrid:
    """Load a grid file (default: the shipped BOSZ grid), cached per path."""
    key = str(Path(path).resolve()) if path is not None else str(default_grid_path())
    if key not in _CACHE:
        _CACHE[key] = StellarGrid.load(key)
    return _CACHE[key]
