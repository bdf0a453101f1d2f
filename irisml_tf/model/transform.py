"""The parameter transform: standardised unconstrained z ∈ R⁵ ↔ physical θ inside the support box.

θ = (teff [K], logg, mh, av, rv). The flow lives in z-space; :class:`ParameterTransform` maps
``z → u = loc + scale · z`` (standardisation, so the flow works in O(1) units) and then
``u → θ`` by a scaled sigmoid onto ``[lower, upper]`` for every parameter, in log space for the
``log_dims`` (teff by default: ``teff = exp(log lower + (log upper − log lower) · sigmoid(u))``).
A sample pushed through ``forward`` can therefore never leave the support box, whatever the
flow does: finite or infinite ``u`` lands in the closed box ``[lower, upper]`` (float32
saturation of the sigmoid can reach the bounds themselves; results are clipped to them).

``inverse`` clamps θ to ``boundary_eps`` (a fraction of each range, in the transformed
coordinate) inside the box, so values on or outside the bounds give a finite, very negative
``u`` instead of ±inf/NaN. Inside that margin the transform is an exact bijection.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from irisml_tf.physics.simulator import PARAM_NAMES

tfb = tfp.bijectors

__all__ = [
    "PARAM_NAMES",
    "NUM_PARAMS",
    "DEFAULT_LOWER",
    "DEFAULT_UPPER",
    "ParameterTransform",
    "fit_standardization",
]

# PARAM_NAMES (order and names of θ) is the physics layer's single copy, re-exported here.
NUM_PARAMS = len(PARAM_NAMES)


def _grid_box() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from irisml_tf.physics.grid import load_grid

    bounds = load_grid().bounds
    return tuple(bounds[k][0] for k in PARAM_NAMES), tuple(bounds[k][1] for k in PARAM_NAMES)


#: Support box of the shipped grid (teff, logg, mh) and its extinction tables (av, rv).
DEFAULT_LOWER, DEFAULT_UPPER = _grid_box()


def _as_vector(value, name: str, size: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(size, float(arr))
    if arr.shape != (size,):
        raise ValueError(f"`{name}` must be a scalar or have {size} entries, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, got {arr.tolist()}")
    return arr


class ParameterTransform(tfb.Bijector):
    """Bijector z ∈ Rᴰ → θ ∈ [lower, upper] (event shape [D]), forward = sampling direction.

    Args:
      lower, upper: support box, each with shape [D] (physical units), ``lower < upper``.
      loc, scale: standardisation in the unconstrained space, ``u = loc + scale · z``; scalars
        or shape [D]; ``scale > 0``. See :func:`fit_standardization`.
      log_dims: indices of parameters mapped in log space (need ``lower > 0``); default teff.
      boundary_eps: fraction of each (transformed) range by which ``inverse`` keeps θ inside the
        open box.

    Works in the dtype of its input (float32 or float64).
    """

    def __init__(self, lower: Sequence[float] = DEFAULT_LOWER,
                 upper: Sequence[float] = DEFAULT_UPPER, loc=0.0, scale=1.0,
                 log_dims: Sequence[int] = (0,), boundary_eps: float = 1e-6,
                 validate_args: bool = False, name: str = "parameter_transform"):
        parameters = dict(locals())
        lower = np.asarray(lower, dtype=np.float64)
        if lower.ndim != 1:
            raise ValueError(f"`lower` must have shape [D], got shape {lower.shape}")
        dim = lower.shape[0]
        upper = _as_vector(upper, "upper", dim)
        lower = _as_vector(lower, "lower", dim)
        if not np.all(lower < upper):
            raise ValueError(f"need `lower` < `upper`, got lower={lower.tolist()}, "
                             f"upper={upper.tolist()}")
        loc = _as_vector(loc, "loc", dim)
        scale = _as_vector(scale, "scale", dim)
        if not np.all(scale > 0):
            raise ValueError(f"`scale` must be > 0, got {scale.tolist()}")
        is_log = np.zeros(dim, dtype=bool)
        for d in log_dims:
            if not 0 <= int(d) < dim:
                raise ValueError(f"`log_dims` entry {d} is outside 0..{dim - 1}")
            is_log[int(d)] = True
        if np.any(lower[is_log] <= 0):
            raise ValueError(f"`lower` must be > 0 for `log_dims` {list(log_dims)}, "
                             f"got {lower[is_log].tolist()}")
        if not 0 < boundary_eps < 0.5:
            raise ValueError(f"`boundary_eps` must lie in (0, 0.5), got {boundary_eps}")
        self._dim = dim
        self._lower, self._upper = lower, upper
        self._loc, self._scale = loc, scale
        self._is_log = is_log
        # The sigmoid acts between a and b (log bounds for log dims).
        self._a = np.where(is_log, np.log(np.where(is_log, lower, 1.0)), lower)
        self._b = np.where(is_log, np.log(np.where(is_log, upper, 1.0)), upper)
        self._eps = float(boundary_eps)
        super().__init__(forward_min_event_ndims=1, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()  # all parameters are fixed numpy constants: no batch shape

    @property
    def lower(self) -> np.ndarray:
        return self._lower.copy()

    @property
    def upper(self) -> np.ndarray:
        return self._upper.copy()

    def _constants(self, dtype):
        c = lambda v: tf.constant(v, dtype=dtype)  # noqa: E731
        return (c(self._a), c(self._b), c(self._loc), c(self._scale), c(self._lower),
                c(self._upper), tf.constant(self._is_log))

    def _forward(self, z):
        a, b, loc, scale, lower, upper, is_log = self._constants(z.dtype)
        u = loc + scale * z
        width = b - a
        # Evaluate from the nearer bound for precision (as tfb.Sigmoid does).
        v = tf.where(u < 0, a + width * tf.math.sigmoid(u), b - width * tf.math.sigmoid(-u))
        theta = tf.where(is_log, tf.math.exp(tf.where(is_log, v, tf.zeros_like(v))), v)
        return tf.clip_by_value(theta, lower, upper)

    def _inverse(self, theta):
        a, b, loc, scale, _, _, is_log = self._constants(theta.dtype)
        tiny = np.finfo(theta.dtype.as_numpy_dtype).tiny
        safe = tf.where(is_log, tf.math.maximum(theta, tiny), tf.ones_like(theta))
        v = tf.where(is_log, tf.math.log(safe), theta)
        margin = self._eps * (b - a)
        v = tf.clip_by_value(v, a + margin, b - margin)
        u = tf.math.log(v - a) - tf.math.log(b - v)
        return (u - loc) / scale

    def _forward_log_det_jacobian(self, z):
        a, b, loc, scale, _, _, is_log = self._constants(z.dtype)
        u = loc + scale * z
        width = b - a
        v = tf.where(u < 0, a + width * tf.math.sigmoid(u), b - width * tf.math.sigmoid(-u))
        # d sigmoid(u)/du = sigmoid(u) sigmoid(-u); d exp(v)/dv = exp(v).
        per_dim = (tf.math.log(scale) + tf.math.log(width) + tf.math.log_sigmoid(u)
                   + tf.math.log_sigmoid(-u) + tf.where(is_log, v, tf.zeros_like(v)))
        return tf.reduce_sum(per_dim, axis=-1)


def fit_standardization(theta, lower: Sequence[float] = DEFAULT_LOWER,
                        upper: Sequence[float] = DEFAULT_UPPER,
                        log_dims: Sequence[int] = (0,)) -> tuple[list[float], list[float]]:
    """Standardisation (loc, scale) of the unconstrained coordinates of samples ``theta``.

    Args:
      theta: physical parameter samples with shape [N, D], typically drawn from the prior.

    Returns ``(loc, scale)`` as lists of D floats (mean and standard deviation of
    ``u = ParameterTransform(lower, upper, log_dims=log_dims).inverse(theta)``), ready for the
    ``param_loc`` / ``param_scale`` entries of the model config.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise ValueError(f"`theta` must have shape [N >= 2, D], got shape {theta.shape}")
    box = ParameterTransform(lower, upper, log_dims=log_dims)
    u = box.inverse(tf.constant(theta)).numpy()
    scale = u.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return u.mean(axis=0).tolist(), scale.tolist()
