"""The observation model: which bands a catalogue star has, with what errors, and the noise.

For each simulated star (magnitudes at μ = 0 from the simulator):

1. Brightness. The star is placed at a distance so that its Gaia-G-like reference magnitude (the
   mean of its valid bands) is uniform in ``ref_mag`` [lo, hi]; μ cancels in everything the model
   sees but sets the errors.
2. Errors. Per band, σ_stat = 0.2 · 10^(0.4 (m − m_lim)) (background-limited: 5σ at the survey's
   limit ``depth``), scattered by a log-normal factor ``err_scatter``, and σ = sqrt(σ_min² + σ_stat²)
   with the survey's calibration floor ``floor``; the reported error is σ, clipped to
   [``err_min``, ``err_max``]; a band whose σ exceeds ``err_max`` is not detected (missing).
3. Noise in magnitude space, as catalogues define their errors (σ_m ≈ 1.0857 σ_F/F): the observed
   magnitude is m + N(0, σ² + sys_floor²). ``sys_floor`` is the model's systematic error (grid vs.
   real stars): the network sees σ, the data carry the extra scatter, and the importance-sampling
   likelihood uses sqrt(σ² + sys_floor²) — the one place it is defined is here.
4. Missing bands, by survey blocks: a star is "north" with ``p_north``; each survey is present
   with its own probability in that hemisphere (PS1 and SDSS mostly north, SkyMapper south, GALEX
   often missing); inside a present survey a band drops with ``p_band_drop``. With
   ``p_random_subset`` a star instead keeps a uniformly random subset of its detected bands of
   random size. Every star keeps at least ``min_bands`` bands (the brightest-chance extra bands
   are added back if needed).

5. Fixed band sets (evaluation): ``obs(mags, valid, seed, force_bands=mask)`` with a bool mask
   over ``bands`` replaces step 4 and the detection cut: every star has exactly the masked bands
   that the simulator can model (``valid``), whatever their depth; a band fainter than its
   survey's ``err_max`` limit keeps σ = ``err_max`` (the clipped error, which the noise uses too,
   so the likelihood stays exact). Brightness, errors and noise are the same draws as without the
   mask (same seed ⇒ same star, same noise; only the band set differs).

Batches are pure functions of a stateless seed. Outputs are padded to all bands: band_index
(−1 for absent), mag and mag_err (0 where absent).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from ..physics.bands import BAND_NAMES, SURVEYS, get_band

__all__ = ["ObservationModel", "ObservationConfig", "DEFAULT_OBSERVATION", "load_observation_config"]

DEFAULT_OBSERVATION = {
    "ref_mag": [8.0, 20.0],
    "sys_floor": 0.01,
    "err_min": 0.002,
    "err_max": 0.3,
    "err_scatter": 0.2,
    "min_bands": 3,
    "p_north": 0.5,
    "p_band_drop": 0.05,
    "p_random_subset": 0.2,
    # per survey: calibration floor [mag], 5σ depth [mag] per band, presence probability N / S
    "surveys": {
        "Gaia": {"floor": 0.002, "depth": {"Gaia_G": 20.7, "Gaia_BP": 20.3, "Gaia_RP": 19.8},
                 "p_north": 0.99, "p_south": 0.99},
        "GALEX": {"floor": 0.03, "depth": {"GALEX_NUV": 20.8}, "p_north": 0.35, "p_south": 0.35},
        "PS1": {"floor": 0.01, "depth": {"PS1_g": 23.3, "PS1_r": 23.2, "PS1_i": 23.1, "PS1_z": 22.3,
                                         "PS1_y": 21.4}, "p_north": 0.9, "p_south": 0.3},
        "SDSS": {"floor": 0.01, "depth": {"SDSS_u": 22.0, "SDSS_g": 22.2, "SDSS_r": 22.2, "SDSS_i": 21.3,
                                          "SDSS_z": 20.5}, "p_north": 0.5, "p_south": 0.1},
        "SkyMapper": {"floor": 0.01, "depth": {"SkyMapper_u": 19.5, "SkyMapper_v": 19.5, "SkyMapper_g": 21.5,
                                               "SkyMapper_r": 21.0, "SkyMapper_i": 20.0, "SkyMapper_z": 19.5},
                      "p_north": 0.05, "p_south": 0.9},
        "2MASS": {"floor": 0.02, "depth": {"2MASS_J": 16.5, "2MASS_H": 16.0, "2MASS_Ks": 15.5},
                  "p_north": 0.95, "p_south": 0.95},
        "WISE": {"floor": 0.02, "depth": {"WISE_W1": 17.5, "WISE_W2": 16.0}, "p_north": 0.9, "p_south": 0.9},
    },
}


def _fail(key, msg):
    raise ValueError(f"observation: `{key}` {msg}")


def _number(key, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        _fail(key, f"must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        _fail(key, f"must lie in [{lo}, {hi}], got {v}")
    return float(v)


def _merge(base: dict, user: dict, prefix: str) -> None:
    for key, value in user.items():
        path = f"{prefix}{key}"
        if key not in base:
            _fail(path, f"is not a known key; known: {', '.join(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                _fail(path, "must be a mapping")
            _merge(base[key], value, path + ".")
        else:
            base[key] = value


def load_observation_config(user: dict | None = None) -> dict:
    """Defaults overridden by ``user``; unknown keys, wrong types and impossible values raise
    ValueError naming the key."""
    cfg = copy.deepcopy(DEFAULT_OBSERVATION)
    _merge(cfg, user or {}, "")
    lo, hi = cfg["ref_mag"] if isinstance(cfg["ref_mag"], (list, tuple)) and len(cfg["ref_mag"]) == 2 else (None, None)
    if lo is None or _number("ref_mag[0]", lo) >= _number("ref_mag[1]", hi):
        _fail("ref_mag", "must be [lo, hi] with lo < hi")
    _number("sys_floor", cfg["sys_floor"], 0.0, 1.0)
    _number("err_min", cfg["err_min"], 1e-5, 1.0)
    _number("err_max", cfg["err_max"], cfg["err_min"], 5.0)
    _number("err_scatter", cfg["err_scatter"], 0.0, 2.0)
    for k in ("p_north", "p_band_drop", "p_random_subset"):
        _number(k, cfg[k], 0.0, 1.0)
    mb = cfg["min_bands"]
    if isinstance(mb, bool) or not isinstance(mb, int) or not 1 <= mb <= len(BAND_NAMES):
        _fail("min_bands", f"must be an integer in [1, {len(BAND_NAMES)}], got {mb!r}")
    for s, sc in cfg["surveys"].items():
        _number(f"surveys.{s}.floor", sc["floor"], 0.0, 1.0)
        for k in ("p_north", "p_south"):
            _number(f"surveys.{s}.{k}", sc[k], 0.0, 1.0)
        for b, d in sc["depth"].items():
            if get_band(b).survey != s:
                _fail(f"surveys.{s}.depth.{b}", f"is not a {s} band")
            _number(f"surveys.{s}.depth.{b}", d, 5.0, 35.0)
    return cfg


@dataclass(frozen=True)
class ObservationConfig:
    """The resolved, validated observation settings (module docstring; defaults in
    :data:`DEFAULT_OBSERVATION`). Build with :meth:`from_dict`; ``to_dict`` gives the plain form
    stored in configs and ``assets/irisml.json``."""

    ref_mag: tuple[float, float]
    sys_floor: float
    err_min: float
    err_max: float
    err_scatter: float
    min_bands: int
    p_north: float
    p_band_drop: float
    p_random_subset: float
    surveys: Mapping  # survey → {floor, depth: {band: mag}, p_north, p_south}

    @classmethod
    def from_dict(cls, user: Mapping | ObservationConfig | None = None) -> ObservationConfig:
        """Defaults overridden by ``user`` (validated by :func:`load_observation_config`)."""
        if isinstance(user, ObservationConfig):
            return user
        c = load_observation_config(copy.deepcopy(dict(user or {})))
        return cls(**dict(c, ref_mag=tuple(float(v) for v in c["ref_mag"])))

    def to_dict(self) -> dict:
        return dict(asdict(self), ref_mag=list(self.ref_mag), surveys=copy.deepcopy(dict(self.surveys)))


class ObservationModel(tf.Module):
    """``obs(mags, valid, seed)`` → dict(band_index int32 (B, NB), mag, mag_err float32 (B, NB),
    mu float32 (B,)) for simulator output ``mags``/``valid`` (B, NB) over ``bands``; ``mu`` is the
    star's offset μ (apparent = model magnitudes + μ: simulated parallaxes need it); θ is the
    caller's."""

    def __init__(self, config: Mapping | ObservationConfig | None = None, bands=BAND_NAMES,
                 name: str = "observation"):
        super().__init__(name=name)
        self.config = c = ObservationConfig.from_dict(config)
        self.bands = tuple(bands)
        self.sys_floor = float(c.sys_floor)
        self.min_bands = min(int(c.min_bands), len(self.bands))
        surveys = [get_band(b).survey for b in self.bands]
        order = [s for s in SURVEYS if s in surveys]
        self._survey_of = tf.constant([order.index(s) for s in surveys], tf.int32)
        self._p_north = tf.constant([c.surveys[s]["p_north"] for s in order], tf.float32)
        self._p_south = tf.constant([c.surveys[s]["p_south"] for s in order], tf.float32)
        self._floor = tf.constant([c.surveys[s]["floor"] for s in surveys], tf.float32)
        self._depth = tf.constant([c.surveys[s]["depth"][b] for b, s in zip(self.bands, surveys)], tf.float32)
        self._nsurvey = len(order)

    @tf.function(reduce_retracing=True)
    def __call__(self, mags, valid, seed, force_bands=None):
        """``force_bands``: optional bool (NB,) — observe exactly these bands (step 5 of the
        module docstring) instead of drawing the missing-band pattern."""
        c = self.config
        mags = tf.convert_to_tensor(mags, tf.float32)
        n, nb = tf.shape(mags)[0], len(self.bands)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 9)
        u = lambda i, shape: tf.random.stateless_uniform(shape, seeds[i])  # noqa: E731
        validf = tf.cast(valid, tf.float32)
        count = tf.maximum(tf.reduce_sum(validf, 1, keepdims=True), 1.0)
        ref = tf.reduce_sum(tf.where(valid, mags, 0.0), 1, keepdims=True) / count
        lo, hi = c.ref_mag
        mu = lo + (hi - lo) * u(0, [n, 1]) - ref
        app = mags + mu
        scatter = tf.exp(c.err_scatter * tf.random.stateless_normal([n, nb], seeds[1]))
        stat = 0.2 * tf.pow(10.0, 0.4 * (app - self._depth)) * scatter
        sigma = tf.sqrt(tf.square(self._floor) + tf.square(stat))
        detected = valid & (sigma <= c.err_max)
        sigma = tf.clip_by_value(sigma, c.err_min, c.err_max)
        # survey blocks
        north = u(2, [n, 1]) < c.p_north
        p_survey = tf.where(north, self._p_north, self._p_south)  # (n, S)
        survey_on = u(3, [n, self._nsurvey]) < p_survey
        present = tf.gather(survey_on, self._survey_of, axis=1) & (u(4, [n, nb]) >= c.p_band_drop)
        # or a random subset of random size
        size = tf.floor(u(5, [n, 1]) * nb) + 1.0
        keys = u(6, [n, nb])
        rank = tf.argsort(tf.argsort(keys, axis=1), axis=1)
        random_subset = tf.cast(rank, tf.float32) < size
        use_random = u(7, [n, 1]) < c.p_random_subset
        present = tf.where(use_random, random_subset, present) & detected
        # at least min_bands: add detected bands (random priority) until there are enough
        score = tf.where(detected, keys + 2.0 * tf.cast(present, tf.float32), -1.0)
        kth = tf.math.top_k(score, k=self.min_bands).values[:, -1:]
        present = present | (detected & (score >= kth))
        if force_bands is not None:  # evaluation on a fixed band set: no missing-band draws
            present = tf.convert_to_tensor(force_bands, tf.bool)[None, :] & valid
        noise = tf.random.stateless_normal([n, nb], seeds[8]) * tf.sqrt(tf.square(sigma) + self.sys_floor ** 2)
        idx = tf.broadcast_to(tf.range(nb, dtype=tf.int32), [n, nb])
        return {"band_index": tf.where(present, idx, -1),
                "mag": tf.where(present, app + noise, 0.0),
                "mag_err": tf.where(present, sigma, 0.0), "mu": mu[:, 0]}
