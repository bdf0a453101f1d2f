"""The prior p(θ), θ = (teff, logg, mh, av, rv), in TensorFlow: stateless sampling and log_prob.

    logg ~ U(logg.low, logg.high)
    mh | logg ~ disc/halo Gaussian mixture, truncated to [M/H] cells that hold a complete grid cell
                at that log g
    teff | logg, mh ~ log-uniform over the complete grid cells at that (log g, [M/H]) cell
    av ~ av.offset + Exp(mean av.mean), truncated at av.max
    rv ~ N(rv.mean, rv.std) truncated to [rv.low, rv.high]

Its support is exactly the simulator's (cells whose 8 corners exist) intersected with these ranges.
Defaults follow the reference design (science.md); everything is configurable (configs/prior.yaml).

**The user's prior at inference.** The flow was trained on one prior (the *training* prior); the
posterior the importance sampler targets may use another. :func:`load_user_prior` reads it: the keys
of configs/prior.yaml, keys left out keeping the training prior's values. A prior reaching outside the
training prior's support is refused (the flow never proposes there); one that puts mass in the
training prior's far tails is accepted with a warning (:func:`compare_to_training`).

**Parameters as tensors.** ``log_prob(theta, params=...)`` takes the prior's numbers as one float32
vector in the layout of :data:`PRIOR_PARAM_NAMES` (:func:`prior_params` builds it from a config,
:func:`config_from_params` reads it back), so a SavedModel signature can take them per request.
Nothing in the log_prob tables depends on them: the teff tables are the grid's own, the [M/H]
normalisation per log g cell is computed from the mixture in the graph (exactly, from normal CDFs
over the grid's [M/H] cells), and log g enters only through its uniform density and the box — the
tables are per log g *cell*, whatever part of the cell the range covers. :meth:`Prior.sample` draws
from the configured prior only (training needs nothing else).

**Per-star A_V priors** (a dust map's A_V ± σ, or an upper bound): ``log_prob(theta, av_prior=...,
av_prior_err=..., av_max=...)``; the rule for which values are used is in
:mod:`irisml_tf.physics.av_prior`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from scipy.special import ndtr

from ..yaml_io import load_yaml
from .av_prior import AV_PRIOR_REACH
from .grid import StellarGrid, load_grid
from .simulator import locate, uniform_index

__all__ = [
    "DEFAULT_PRIOR",
    "MAX_MH_COMPONENTS",
    "PRIOR_PARAM_NAMES",
    "Prior",
    "UserPrior",
    "compare_to_training",
    "config_from_params",
    "load_prior_config",
    "load_user_prior",
    "prior_params",
]

DEFAULT_PRIOR = {
    "logg": {"low": 0.1, "high": 5.5},
    "mh": {"components": [{"weight": 0.75, "mean": -0.1, "std": 0.2},
                          {"weight": 0.25, "mean": -1.49, "std": 0.4}]},
    "av": {"offset": 0.003, "mean": 1.5, "max": 15.0},
    "rv": {"mean": 3.13, "std": 0.18, "low": 2.5, "high": 4.5},
}
#: Most [M/H] mixture components a prior may have (the fixed length of the parameter vector).
MAX_MH_COMPONENTS = 4
_K = MAX_MH_COMPONENTS
#: The layout of the prior's parameter vector (float32, 21 numbers). Unused [M/H] components have
#: weight 0 (their mean and std are then ignored); weights need not sum to 1.
PRIOR_PARAM_NAMES = ("logg.low", "logg.high",
                     *(f"mh.weight{k}" for k in range(_K)), *(f"mh.mean{k}" for k in range(_K)),
                     *(f"mh.std{k}" for k in range(_K)),
                     "av.offset", "av.mean", "av.max", "rv.mean", "rv.std", "rv.low", "rv.high")
_AT = {name: i for i, name in enumerate(PRIOR_PARAM_NAMES)}
_LN10 = np.log(10.0)
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)
_MH_STEP = 1e-3  # resolution of the tabulated [M/H] inverse CDF (sampling)
# A user prior is "wider" where it puts more than _WARN_MASS of its mass in the region where the
# training prior puts its least likely _TRAINING_TAIL of mass.
_TRAINING_TAIL = 1e-3
_WARN_MASS = 0.01
# the support keys: (key, True for a lower end)
_SUPPORT_KEYS = (("logg.low", True), ("logg.high", False), ("av.offset", True), ("av.max", False),
                 ("rv.low", True), ("rv.high", False))
_BOX_INDEX = {"logg": 1, "mh": 2, "av": 3, "rv": 4}


# -- configs -------------------------------------------------------------------------------------
def load_prior_config(source: str | Path | dict | None = None, base: dict | None = None) -> dict:
    """Validated prior config: ``base`` (a prior config, e.g. the model's training prior; default
    :data:`DEFAULT_PRIOR`) overridden by a YAML file or dict; keys left out keep ``base``'s values
    (``mh.components`` is replaced as a whole). Unknown keys, wrong types and impossible values raise
    ValueError naming the key."""
    cfg = copy.deepcopy(DEFAULT_PRIOR) if base is None else load_prior_config(base)
    if source is None:
        return cfg
    user = source if isinstance(source, dict) else load_yaml(Path(source).read_text()) or {}
    if "prior" in user and isinstance(user["prior"], dict) and set(user) == {"prior"}:
        user = user["prior"]
    for key, value in user.items():
        if key not in cfg:
            raise ValueError(f"prior: unknown key `{key}`; known: {', '.join(cfg)}")
        if not isinstance(value, dict):
            raise ValueError(f"prior: `{key}` must be a mapping")  # noqa: TRY004 (a config error, like the rest)
        for sub, v in value.items():
            if sub not in cfg[key]:
                raise ValueError(f"prior: unknown key `{key}.{sub}`; known: {', '.join(cfg[key])}")
            cfg[key][sub] = copy.deepcopy(v)
    _check(cfg)
    return cfg


def _num(cfg, path):
    d = cfg
    for p in path.split("."):
        d = d[p]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not np.isfinite(d):
        raise ValueError(f"prior: `{path}` must be a finite number, got {d!r}")
    return float(d)


def _check(cfg):
    if not _num(cfg, "logg.low") < _num(cfg, "logg.high"):
        raise ValueError("prior: `logg.low` must be below `logg.high`")
    if _num(cfg, "av.mean") <= 0 or _num(cfg, "av.offset") < 0 or _num(cfg, "av.max") <= _num(cfg, "av.offset"):
        raise ValueError("prior: need `av.mean` > 0, `av.offset` ≥ 0 and `av.max` > `av.offset`")
    if _num(cfg, "rv.std") <= 0 or not _num(cfg, "rv.low") < _num(cfg, "rv.high"):
        raise ValueError("prior: need `rv.std` > 0 and `rv.low` < `rv.high`")
    comps = cfg["mh"]["components"]
    if not isinstance(comps, list) or not comps:
        raise ValueError("prior: `mh.components` must be a non-empty list of {weight, mean, std}")
    if len(comps) > MAX_MH_COMPONENTS:
        raise ValueError(f"prior: `mh.components` has {len(comps)} components; at most {MAX_MH_COMPONENTS}")
    for i, c in enumerate(comps):
        if not isinstance(c, dict) or set(c) != {"weight", "mean", "std"}:
            raise ValueError(f"prior: `mh.components[{i}]` needs exactly weight, mean, std")
        for k in ("weight", "mean", "std"):
            _num({"c": c}, f"c.{k}")
        if c["weight"] <= 0 or c["std"] <= 0:
            raise ValueError(f"prior: `mh.components[{i}]` needs weight > 0 and std > 0")


def prior_params(config: dict | str | Path | None = None) -> np.ndarray:
    """A prior config as the float32 parameter vector of :data:`PRIOR_PARAM_NAMES` (a partial
    config is completed from the defaults, as :func:`load_prior_config` does)."""
    c = load_prior_config(config)
    vec = np.zeros(len(PRIOR_PARAM_NAMES), np.float32)
    for key, section in c.items():
        for sub, v in section.items():
            if sub != "components":
                vec[_AT[f"{key}.{sub}"]] = v
    for k in range(_K):
        comp = c["mh"]["components"][k] if k < len(c["mh"]["components"]) else {"weight": 0, "mean": 0, "std": 1}
        for sub in ("weight", "mean", "std"):
            vec[_AT[f"mh.{sub}{k}"]] = comp[sub]
    return vec


def config_from_params(params) -> dict:
    """The validated prior config of a parameter vector (components of weight 0 dropped); raises
    ValueError naming the key for impossible values."""
    p = np.asarray(params, np.float64).reshape(-1)
    if p.size != len(PRIOR_PARAM_NAMES):
        raise ValueError(f"prior: the parameter vector needs {len(PRIOR_PARAM_NAMES)} numbers, got {p.size}")
    cfg = {key: {sub: float(p[_AT[f"{key}.{sub}"]]) for sub in section if sub != "components"}
           for key, section in DEFAULT_PRIOR.items()}
    cfg["mh"] = {"components": [{s: float(p[_AT[f"mh.{s}{k}"]]) for s in ("weight", "mean", "std")}
                                for k in range(_K) if p[_AT[f"mh.weight{k}"]] != 0]}
    return load_prior_config(cfg)


# -- the user's prior against the training prior ---------------------------------------------------
@dataclass(frozen=True)
class UserPrior:
    """A prior for inference: ``config`` (a full, validated prior config), ``warnings`` (why it may
    be poorly sampled by the model's proposal; empty when it is not wider than the training prior)."""

    config: dict
    warnings: tuple[str, ...] = ()
    box: tuple = (None, None)  # the model's support box (lower, upper), if known

    @property
    def av_support(self) -> tuple[float, float]:
        """[lowest, highest] A_V of this prior inside the model's box (the per-star A_V prior
        columns are checked against it)."""
        return _clipped(self.config, "av.offset", self.box), _clipped(self.config, "av.max", self.box)

    @property
    def params(self) -> np.ndarray:
        """The parameter vector (:data:`PRIOR_PARAM_NAMES`) for ``Prior.log_prob(theta, params=…)``."""
        return prior_params(self.config)


def load_user_prior(source: str | Path | dict | None, training: dict, lower=None, upper=None) -> UserPrior:
    """The user's prior (a YAML file or dict with the keys of configs/prior.yaml; None = the training
    prior) on top of the model's ``training`` prior config: keys left out keep the training values.
    Refused (ValueError naming the key) or warned about as :func:`compare_to_training` says;
    ``lower``/``upper``: the model's support box (``ModelMeta.lower``/``.upper``), if known."""
    config = load_prior_config(source, base=training)
    box = _box(lower, upper)
    return UserPrior(config, compare_to_training(config, training, lower, upper), box)


def compare_to_training(config: dict, training: dict, lower=None, upper=None) -> tuple[str, ...]:
    """Refuse a prior wider than the model's training prior, or warn about it.

    * **Support** (refused, ValueError naming the key): ``logg.low``/``logg.high``, ``av.offset``/
      ``av.max`` and ``rv.low``/``rv.high`` must lie within the training prior's (both first clipped
      to the model's box ``lower``/``upper`` when given): the flow never proposes outside it, so the
      posterior there could never be sampled.
    * **Tails** (warned): for each of A_V, R_V and [M/H], if the user's factor puts more than 1 % of
      its mass where the training factor puts its least likely 0.1 % (e.g. ``av.mean`` 3 against
      1.5: 3 % of the user's mass at A_V > 10.4), the model saw few such stars and its proposal is
      poor there: a warning says so, with the region. Narrower priors, however narrow, are not warned
      about. The [M/H] factor is compared on the box's [M/H] range (else on ±8σ of the components),
      without the grid's per-log g truncation.

    Returns the warnings (may be empty).
    """
    user, train = load_prior_config(config), load_prior_config(training)
    box = _box(lower, upper)
    for key, is_low in _SUPPORT_KEYS:
        u, t = _clipped(user, key, box), _clipped(train, key, box)
        if (u < t) if is_low else (u > t):
            raise ValueError(f"prior: `{key}` = {_num(user, key):g} reaches outside the model's training "
                             f"prior ({key} = {_num(train, key):g}): the model never proposes there; "
                             "narrow the prior or retrain the model")
    warnings = []
    for name, symbol in (("av", "A_V"), ("rv", "R_V"), ("mh", "[M/H]")):
        x = _factor_axis(name, user, train, box)
        p_train, p_user = _factor_density(name, train, x), _factor_density(name, user, x)
        mass, desc = _tail_mass(x, p_train, p_user, symbol)
        if mass > _WARN_MASS:
            warnings.append(f"prior: `{name}` puts {100 * mass:.1f} % of its mass where the training prior "
                            f"puts {100 * _TRAINING_TAIL:g} % ({desc}): the model saw few such stars, so "
                            "its proposal is poor there and the sampler must find that mass itself")
    return tuple(warnings)


def _box(lower, upper) -> tuple:
    """(lower, upper) as float arrays, each None if not known."""
    return (None if lower is None else np.asarray(lower, float), None if upper is None else np.asarray(upper, float))


def _clipped(cfg, key, box):
    v = _num(cfg, key)
    i = _BOX_INDEX[key.split(".")[0]]
    lo, hi = box
    return float(np.clip(v, -np.inf if lo is None else lo[i], np.inf if hi is None else hi[i]))


def _factor_axis(name, user, train, box, n=200_001):
    """Points covering the training factor's support (which holds the user's, once accepted)."""
    if name == "av":
        lo, hi = _clipped(train, "av.offset", box), _clipped(train, "av.max", box)
    elif name == "rv":
        lo, hi = _clipped(train, "rv.low", box), _clipped(train, "rv.high", box)
    elif box[0] is not None:
        lo, hi = box[0][2], box[1][2]
    else:
        comps = user["mh"]["components"] + train["mh"]["components"]
        lo, hi = min(c["mean"] - 8 * c["std"] for c in comps), max(c["mean"] + 8 * c["std"] for c in comps)
    return np.linspace(lo, hi, n)


def _factor_density(name, cfg, x):
    """The (unnormalised) density of one factor of the prior ``cfg`` on the points ``x``."""
    c = cfg[name]
    if name == "av":
        return np.where((x >= c["offset"]) & (x <= c["max"]), np.exp(-(x - c["offset"]) / c["mean"]), 0.0)
    if name == "rv":
        return np.where((x >= c["low"]) & (x <= c["high"]), np.exp(-0.5 * ((x - c["mean"]) / c["std"]) ** 2), 0.0)
    return sum(m["weight"] / m["std"] * np.exp(-0.5 * ((x - m["mean"]) / m["std"]) ** 2) for m in c["components"])


def _tail_mass(x, p_train, p_user, symbol):
    """The user's mass where the training density holds its least likely _TRAINING_TAIL of mass, and
    that region in words."""
    order = np.argsort(p_train, kind="stable")
    tail = np.zeros(x.size, bool)
    tail[order[np.cumsum(p_train[order]) <= _TRAINING_TAIL * p_train.sum()]] = True
    mass = p_user[tail].sum() / p_user.sum()
    mode = x[np.argmax(p_train)]
    parts = [f"{symbol} < {x[tail & (x < mode)].max():.3g}" if np.any(tail & (x < mode)) else "",
             f"{symbol} > {x[tail & (x > mode)].min():.3g}" if np.any(tail & (x > mode)) else ""]
    return float(mass), " or ".join(p for p in parts if p)


# -- the prior in TensorFlow ---------------------------------------------------------------------
class _Resolved(NamedTuple):
    """A parameter vector made ready for log_prob: ranges clipped to the grid, [M/H] normalised."""

    lo: tf.Tensor  # (5,) the box
    hi: tf.Tensor  # (5,)
    log_w: tf.Tensor  # (K,) [M/H] mixture: log weights (−inf for unused components), means, stds
    mu: tf.Tensor
    sd: tf.Tensor
    mh_lognorm: tf.Tensor  # (G-1,) log mass of the mixture on the [M/H] cells present per log g cell
    av_mean: tf.Tensor
    rv: tuple  # (mean, std, log of std·√(2π)·mass on [low, high])
    valid: tf.Tensor  # scalar bool: the parameters define a prior


class Prior(tf.Module):
    """``sample(n, seed)`` → θ float32 (n, 5); ``log_prob(theta, …)`` → float32 (…,), −inf outside."""

    def __init__(self, config: dict | str | Path | None = None, grid: StellarGrid | str | None = None,
                 name: str = "prior"):
        super().__init__(name=name)
        self.config = load_prior_config(config)
        grid = grid if isinstance(grid, StellarGrid) else load_grid(grid)
        c = self.config
        b = grid.bounds
        self.logg_low = max(c["logg"]["low"], b["logg"][0])
        self.logg_high = min(c["logg"]["high"], b["logg"][1])
        self.av_low, self.av_high = max(c["av"]["offset"], b["av"][0]), min(c["av"]["max"], b["av"][1])
        self.rv_low, self.rv_high = max(c["rv"]["low"], b["rv"][0]), min(c["rv"]["high"], b["rv"][1])
        if self.logg_low >= self.logg_high or self.av_low >= self.av_high or self.rv_low >= self.rv_high:
            raise ValueError("prior: its ranges do not overlap the grid's")
        self.lower = np.array([grid.teff[0], self.logg_low, grid.mh[0], self.av_low, self.rv_low], np.float32)
        self.upper = np.array([grid.teff[-1], self.logg_high, grid.mh[-1], self.av_high, self.rv_high], np.float32)
        names = ("teff", "logg", "mh", "av", "rv")
        self._grid_lo = tf.constant([b[n][0] for n in names], tf.float32)
        self._grid_hi = tf.constant([b[n][1] for n in names], tf.float32)
        self._params = tf.constant(prior_params(self.config))
        self._build_tables(grid)
        self._build_sampling_tables(grid)

    @property
    def params(self) -> tf.Tensor:
        """This prior's parameter vector (float32 (21,), layout :data:`PRIOR_PARAM_NAMES`)."""
        return self._params

    # -- tables ----------------------------------------------------------------------------------
    def _build_tables(self, grid: StellarGrid):
        """log_prob's tables: the grid's alone, whatever the parameters."""
        ok = grid.cell_ok  # (T-1, G-1, M-1)
        log_t = np.log10(grid.teff)
        width = np.diff(log_t)[:, None, None] * ok  # log-teff width of complete cells
        z_teff = width.sum(0)  # (G-1, M-1)
        self._mh_has = z_teff > 0  # [M/H] cells with complete teff cells, per log g cell
        self._g = (float(grid.logg[0]), float(grid.logg[1] - grid.logg[0]), len(grid.logg))
        self._m = (float(grid.mh[0]), float(grid.mh[1] - grid.mh[0]), len(grid.mh))
        self._mh_edges = tf.constant(grid.mh, tf.float64)
        self._mh_has_t = tf.constant(self._mh_has, tf.float64)
        # teff | (logg cell, mh cell): piecewise log-uniform over complete cells
        cum = np.concatenate([np.zeros((1,) + width.shape[1:]), np.cumsum(width, 0)], 0)  # (T, G-1, M-1)
        zsafe = np.where(z_teff > 0, z_teff, 1.0)
        self._teff_cdf = tf.constant(np.transpose(cum / zsafe, (1, 2, 0)), tf.float32)  # (G-1, M-1, T)
        self._teff_logz = tf.constant(np.log(zsafe), tf.float32)
        self._log_teff = tf.constant(log_t, tf.float32)
        self._cell_ok = tf.constant(ok)

    def _build_sampling_tables(self, grid: StellarGrid):
        """sample's tables, from this prior's config: the [M/H] inverse CDF per log g cell, A_V and
        R_V truncation constants."""
        m0, dm = self._m[0], self._m[1]
        mh_fine = np.arange(grid.mh[0], grid.mh[-1] + _MH_STEP / 2, _MH_STEP)
        comps = self.config["mh"]["components"]
        wsum = sum(cp["weight"] for cp in comps)
        mix = sum(cp["weight"] / wsum * np.exp(-0.5 * ((mh_fine - cp["mean"]) / cp["std"]) ** 2)
                  / (cp["std"] * np.sqrt(2 * np.pi)) for cp in comps)
        mcell = np.clip(np.floor((mh_fine - m0) / dm), 0, len(grid.mh) - 2).astype(int)
        dens = mix[None, :] * self._mh_has[:, mcell]  # (G-1, F)
        cdf = np.concatenate([np.zeros((dens.shape[0], 1)),
                              np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * _MH_STEP, axis=1)], axis=1)
        norm = cdf[:, -1]
        if np.any(norm <= 0):
            bad = grid.logg[:-1][norm <= 0]
            raise ValueError(f"prior: no [M/H] mass on the grid at log g cells starting {bad}")
        self._mh_fine = tf.constant(mh_fine, tf.float32)
        self._mh_cdf = tf.constant(cdf / norm[:, None], tf.float32)
        c = self.config
        self._av_mean = float(c["av"]["mean"])
        self._av_mass = float(1 - np.exp(-(self.av_high - self.av_low) / self._av_mean))
        self._rv = (float(c["rv"]["mean"]), float(c["rv"]["std"]))
        self._rv_cdf = (float(ndtr((self.rv_low - self._rv[0]) / self._rv[1])),
                        float(ndtr((self.rv_high - self._rv[0]) / self._rv[1])))
        self._lo, self._hi = tf.constant(self.lower), tf.constant(self.upper)

    def _cells(self, theta):
        it, _, ig, _, im, _ = locate(theta[:, 0], theta[:, 1], theta[:, 2], self._log_teff, self._g, self._m)
        return it, ig, im

    def _resolve(self, params) -> _Resolved:
        """Impossible parameters (low ≥ high, std ≤ 0, no positive weight) make log_prob −inf
        everywhere, never NaN; :func:`config_from_params` says which key is wrong."""
        p = tf.reshape(tf.convert_to_tensor(params, tf.float32), [len(PRIOR_PARAM_NAMES)])
        def at(name):
            return p[_AT[name]]
        lo = tf.maximum(tf.stack([self._grid_lo[0], at("logg.low"), self._grid_lo[2], at("av.offset"),
                                  at("rv.low")]), self._grid_lo)
        hi = tf.minimum(tf.stack([self._grid_hi[0], at("logg.high"), self._grid_hi[2], at("av.max"),
                                  at("rv.high")]), self._grid_hi)
        w = p[_AT["mh.weight0"]:_AT["mh.weight0"] + _K]
        used = w > 0
        mu = tf.where(used, p[_AT["mh.mean0"]:_AT["mh.mean0"] + _K], 0.0)
        sd = tf.where(used, p[_AT["mh.std0"]:_AT["mh.std0"] + _K], 1.0)
        w = tf.where(used, w, 0.0) / tf.reduce_sum(tf.where(used, w, 0.0))
        # [M/H] mass per cell, in float64 (the cells far in a narrow component's tail)
        z = (self._mh_edges[None, :] - tf.cast(mu, tf.float64)[:, None]) / tf.cast(sd, tf.float64)[:, None]
        cell_mass = tf.linalg.matvec(_normal_mass(z[:, :-1], z[:, 1:]), tf.cast(w, tf.float64), transpose_a=True)
        mh_lognorm = tf.cast(tf.math.log(tf.linalg.matvec(self._mh_has_t, cell_mass)), tf.float32)
        rv_mu, rv_sd = at("rv.mean"), at("rv.std")
        rv_mass = _normal_mass(*(tf.cast((x - rv_mu) / rv_sd, tf.float64) for x in (lo[4], hi[4])))
        rv_lognorm = tf.cast(tf.math.log(tf.cast(rv_sd, tf.float64) * rv_mass), tf.float32) + _LOG_SQRT_2PI
        valid = (tf.reduce_all(tf.math.is_finite(p)) & tf.reduce_all(lo < hi) & tf.reduce_any(used)
                 & tf.reduce_all(sd > 0) & (at("av.mean") > 0) & (rv_sd > 0))
        return _Resolved(lo, hi, tf.math.log(w), mu, sd, mh_lognorm, at("av.mean"), (rv_mu, rv_sd, rv_lognorm),
                         valid)

    # -- log_prob --------------------------------------------------------------------------------
    @tf.function(reduce_retracing=True)
    def log_prob(self, theta, params=None, av_prior=None, av_prior_err=None, av_max=None) -> tf.Tensor:
        """log p(θ), float32 with θ's batch shape; −inf outside the support.

        Args:
          theta: (…, 5) float32, θ = (teff, logg, mh, av, rv).
          params: the prior's parameters, float32 (21,) in the layout of :data:`PRIOR_PARAM_NAMES`
            (default: this prior's config, :attr:`params`).
          av_prior, av_prior_err, av_max: per-star A_V priors [mag] (:mod:`~irisml_tf.physics.av_prior`),
            NaN = not given; each aligned with θ's leading dimensions and broadcast over the rest
            (θ (B, N, 5) with arrays of shape (B,): star b's prior for its N draws), or None.
        """
        theta = tf.convert_to_tensor(theta, tf.float32)
        flat = tf.reshape(theta, [-1, 5])
        rows = [tf.fill(tf.shape(flat)[:1], np.float32(np.nan)) if x is None else _per_star(x, theta)
                for x in (av_prior, av_prior_err, av_max)]
        r = self._resolve(self._params if params is None else params)
        return tf.reshape(self._log_prob_flat(flat, r, *rows), tf.shape(theta)[:-1])

    def _log_prob_flat(self, theta, r: _Resolved, av_prior, av_prior_err, av_max):
        inside = (tf.reduce_all(tf.math.is_finite(theta), -1)
                  & tf.reduce_all((theta >= r.lo) & (theta <= r.hi), -1))
        safe = tf.where(inside[:, None], theta, 0.5 * (r.lo + r.hi))
        teff, logg, mh, av, rv = tf.unstack(safe, axis=-1)
        it, ig, im = self._cells(safe)
        cell = tf.gather_nd(self._cell_ok, tf.stack([it, ig, im], -1))
        lp = -tf.math.log(r.hi[1] - r.lo[1]) * tf.ones_like(logg)
        zm = (mh[:, None] - r.mu) / r.sd
        lp += tf.reduce_logsumexp(r.log_w - tf.math.log(r.sd) - 0.5 * tf.square(zm), -1) - _LOG_SQRT_2PI
        lp -= tf.gather(r.mh_lognorm, ig)
        # log-uniform teff: p(teff) = 1 / (teff ln10 Z)
        lp += -tf.math.log(teff * _LN10) - tf.gather_nd(self._teff_logz, tf.stack([ig, im], -1))
        lp += _log_av_factor(av, r, av_prior, av_prior_err, av_max)
        lp += -0.5 * tf.square((rv - r.rv[0]) / r.rv[1]) - r.rv[2]
        return tf.where(r.valid & inside & cell & tf.math.is_finite(lp), lp, -np.inf)

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, n: int, seed) -> tf.Tensor:
        """θ (n, 5) float32 from a stateless seed (int32 [2] or an int): same seed, same draws. Draws
        from this prior's config only (no parameter vector, no per-star A_V priors: training needs
        neither)."""
        if isinstance(seed, (int, np.integer)):
            seed = tf.constant([0, int(seed)], tf.int32)
        return self._sample(tf.convert_to_tensor(n, tf.int32), tf.cast(seed, tf.int32))

    @tf.function(reduce_retracing=True)
    def _sample(self, n, seed):
        u = tf.random.stateless_uniform(tf.stack([n, 5]), seed, minval=1e-7, maxval=1 - 1e-7)
        logg = self.logg_low + (self.logg_high - self.logg_low) * u[:, 0]
        ig, _ = uniform_index(logg, *self._g)
        # [M/H]: inverse of the tabulated CDF of its logg row
        rows = tf.gather(self._mh_cdf, ig)  # (n, F)
        j = tf.clip_by_value(tf.searchsorted(rows, u[:, 1:2], side="right")[:, 0] - 1, 0, rows.shape[1] - 2)
        c0 = tf.gather(rows, j, batch_dims=1)
        c1 = tf.gather(rows, j + 1, batch_dims=1)
        frac = tf.clip_by_value((u[:, 1] - c0) / tf.maximum(c1 - c0, 1e-12), 0.0, 1.0)
        mh = tf.gather(self._mh_fine, j) + _MH_STEP * frac
        im, _ = uniform_index(mh, *self._m)
        # teff: inverse CDF of the piecewise log-uniform density
        tcdf = tf.gather_nd(self._teff_cdf, tf.stack([ig, im], -1))  # (n, T)
        k = tf.clip_by_value(tf.searchsorted(tcdf, u[:, 2:3], side="right")[:, 0] - 1, 0, tcdf.shape[1] - 2)
        a0 = tf.gather(tcdf, k, batch_dims=1)
        a1 = tf.gather(tcdf, k + 1, batch_dims=1)
        f = tf.clip_by_value((u[:, 2] - a0) / tf.maximum(a1 - a0, 1e-12), 1e-6, 1 - 1e-6)
        lt = tf.gather(self._log_teff, k) + f * (tf.gather(self._log_teff, k + 1) - tf.gather(self._log_teff, k))
        teff = tf.pow(10.0, lt)
        av = self.av_low - self._av_mean * tf.math.log1p(-u[:, 3] * self._av_mass)
        p = self._rv_cdf[0] + u[:, 4] * (self._rv_cdf[1] - self._rv_cdf[0])
        rv = self._rv[0] + self._rv[1] * tf.math.ndtri(p)
        theta = tf.stack([teff, logg, mh, av, rv], -1)
        return tf.clip_by_value(theta, self._lo, self._hi)


def _normal_mass(a, b):
    """Φ(b) − Φ(a) for a ≤ b (float64), taken in the lower tail so that it keeps its digits there."""
    flip = a > 0
    lo, hi = tf.where(flip, -b, a), tf.where(flip, -a, b)
    def ndtr64(x):
        return 0.5 * tf.math.erfc(-x / np.sqrt(2.0))
    return ndtr64(hi) - ndtr64(lo)


def _per_star(x, theta):
    """A per-star array aligned with θ's leading dimensions, broadcast to θ's batch shape, flattened
    (ranks may be unknown at trace time: log_prob's graph is shared by every rank)."""
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    x = tf.reshape(x, tf.concat([tf.shape(x), tf.ones([tf.rank(theta) - 1 - tf.rank(x)], tf.int32)], 0))
    return tf.reshape(tf.broadcast_to(x, tf.shape(theta)[:-1]), [-1])


def _log_av_factor(av, r: _Resolved, av_prior, av_prior_err, av_max):
    """log of the A_V factor per star: the prior's truncated exponential, or the star's truncated
    Gaussian where given, each truncated at the star's av_max where given (rule: av_prior module)."""
    lo, hi = r.lo[3], r.hi[3]
    use_max = tf.math.is_finite(av_max) & (av_max > lo)
    upper = tf.where(use_max, tf.minimum(hi, av_max), hi)
    reach = AV_PRIOR_REACH * av_prior_err
    use_gauss = (tf.math.is_finite(av_prior) & tf.math.is_finite(av_prior_err) & (av_prior_err > 0)
                 & (av_prior >= lo - reach) & (av_prior <= upper + reach))
    mu, sd = tf.where(use_gauss, av_prior, 0.0), tf.where(use_gauss, av_prior_err, 1.0)
    lo64, up64, mean64 = (tf.cast(x, tf.float64) for x in (lo, upper, r.av_mean))
    # exponential from lo, truncated at upper: normaliser mean · (1 − e^{−(upper − lo)/mean})
    log_exp = -(av - lo) / r.av_mean - tf.cast(tf.math.log(-mean64 * tf.math.expm1(-(up64 - lo64) / mean64)),
                                               tf.float32)
    mu64, sd64 = tf.cast(mu, tf.float64), tf.cast(sd, tf.float64)
    gauss_mass = _normal_mass((lo64 - mu64) / sd64, (up64 - mu64) / sd64)
    log_gauss = (-0.5 * tf.square((av - mu) / sd) - tf.math.log(sd) - _LOG_SQRT_2PI
                 - tf.cast(tf.math.log(gauss_mass), tf.float32))
    return tf.where(av <= upper, tf.where(use_gauss, log_gauss, log_exp), -np.inf)
