"""Locating a posterior's modes from a few draws: gradient ascent, Newton polish, Laplace
covariances, merging of end points (the "locate" step of :mod:`irisml_tf.inference.adaptive`).

Works in "flow units": x = (u − center) / scale per row, center and scale the mean and standard
deviation of the flow's round-0 draws, so that step sizes and covariance bounds mean the same
for every row whatever the parameters' units. Shapes: A rows, S starts, D dimensions.
TensorFlow ops only (loops are ``tf.while_loop`` or static), traceable.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from irisml_tf.inference import mixture
from irisml_tf.inference.rows import row_indices, scatter_rows

__all__ = ["MAX_VAR", "MIN_VAR", "anchor_mixture", "locate", "to_u"]

_F64 = tf.float64
_ZERO64, _NINF64 = np.float64(0.0), np.float64(-np.inf)  # tf.where needs float64 fillers
#: Laplace / fitted covariances in flow units: σ between 1e-4 and 2 flow σ
MIN_VAR, MAX_VAR = 1e-8, 4.0
_SPARE_SHARE = 0.2  # share of the anchors' weight spread evenly over all live components
_TRUST = 3.0  # largest Newton step, in flow σ
_BACKTRACK = tf.constant([4.0 ** -k for k in range(6)])  # Newton step fractions tried at once
_NEWTON_TOL = 0.01  # nats: a row stops its Newton steps once no start gains more
_START_SPACING = 1.0  # starts at least this far apart, in flow σ (reach other basins)
#: central-difference step of the Hessian, in flow σ: posteriors here are ≥ ~0.02 flow σ wide,
#: and a float32 gradient keeps ~4 digits over it
_FD_STEP = 1e-3


# -- gradients ------------------------------------------------------------------------------------
def _value_and_grad(log_target, cond, u):
    """(log π [A, N], ∇ log π [A, N, D]); −inf and a zero gradient where either is not finite."""
    with tf.GradientTape() as tape:
        tape.watch(u)
        lp = log_target(cond, u)
    g = tape.gradient(lp, u)
    g = tf.zeros_like(u) if g is None else g
    ok = tf.math.is_finite(lp) & tf.reduce_all(tf.math.is_finite(g), -1)
    return tf.where(ok, lp, -np.inf), tf.where(ok[..., None], g, 0.0)


def _grad_hessian(value_and_grad, x, step: float = _FD_STEP):
    """Gradient [A, S, D] and Hessian [A, S, D, D] of log π at x [A, S, D] by central differences
    of the gradient: H[j] = (∇ log π(x + h e_j) − ∇ log π(x − h e_j)) / 2h, the gradient the mean of
    those 2D gradients (exact for a quadratic; 0 where a point is not finite). First-order only:
    reverse-over-reverse through the simulator, the prior and the parallax quadrature made the
    exported graph several times larger and its first call minutes long, and the Hessian only
    shapes proposals (the weights use the exact target)."""
    shape = tf.shape(x)
    dim = x.shape[-1]
    offsets = step * tf.concat([tf.eye(dim), -tf.eye(dim)], 0)  # [2D, D]
    pts = tf.reshape(x[:, :, None, :] + offsets, tf.stack([shape[0], -1, dim]))
    lp, g = value_and_grad(pts)
    g = tf.reshape(g, tf.stack([shape[0], shape[1], 2, dim, dim]))
    ok = tf.reduce_all(tf.reshape(tf.math.is_finite(lp), tf.stack([shape[0], shape[1], 2 * dim])), -1)
    h = (g[:, :, 0] - g[:, :, 1]) / (2.0 * step)
    h = 0.5 * (h + tf.linalg.matrix_transpose(h))
    grad = tf.reduce_mean(g, axis=[2, 3])
    return tf.where(ok[..., None], grad, 0.0), tf.where(ok[..., None, None], h, 0.0)


# -- the steps ---------------------------------------------------------------------------------------
def _select_starts(x0, lp0, count: int, min_dist: float):
    """``count`` starts per row: the best draw, then repeatedly the best draw farther than
    ``min_dist`` (Euclidean, flow units) from every chosen one. x0 [A, N, D] → [A, S, D], lp [A, S]."""
    score = lp0
    xs, lps = [], []
    for _ in range(count):
        i = tf.argmax(score, -1, output_type=tf.int32)
        best = tf.gather(score, i[:, None], batch_dims=1)[:, 0]
        x = tf.gather(x0, i[:, None], batch_dims=1)[:, 0]
        xs.append(x)
        lps.append(best)
        near = tf.reduce_sum(tf.square(x0 - x[:, None, :]), -1) < min_dist ** 2
        score = tf.where(near, -np.inf, score)
    return tf.stack(xs, 1), tf.stack(lps, 1)


def _ascend(f, x, lp, g, steps: int, lr: tuple[float, float]):
    """Adam ascent of f (value-and-grad in flow units) from x [A, S, D]; a move to a non-finite
    value is refused and halves that start's step. Returns the best point seen and its value."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    lr0, lr1 = lr
    decay = (lr1 / lr0) ** (1.0 / max(steps - 1, 1))

    def body(t, x, lp, g, m, v, mult, bx, blp):
        tf32 = tf.cast(t, tf.float32)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * tf.square(g)
        mhat = m / (1 - b1 ** (tf32 + 1))
        vhat = v / (1 - b2 ** (tf32 + 1))
        rate = lr0 * decay ** tf32 * mult
        xc = x + rate[..., None] * mhat / (tf.sqrt(vhat) + eps)
        lpc, gc = f(xc)
        lpc.set_shape(x.shape[:-1])  # the target's reshapes lose the static start count S
        gc.set_shape(x.shape)
        ok = tf.math.is_finite(lpc)
        x = tf.where(ok[..., None], xc, x)
        lp, g = tf.where(ok, lpc, lp), tf.where(ok[..., None], gc, g)
        mult = tf.where(ok, mult, 0.5 * mult)
        better = lp > blp
        return (t + 1, x, lp, g, m, v, mult, tf.where(better[..., None], x, bx),
                tf.where(better, lp, blp))

    lp, g = tf.ensure_shape(lp, x.shape[:-1]), tf.ensure_shape(g, x.shape)
    zeros = tf.zeros_like(x)
    init = (tf.constant(0), x, lp, g, zeros, zeros, tf.ones_like(lp), x, lp)
    out = tf.while_loop(lambda t, *_: t < steps, body, init)
    return out[7], out[8]


def _curvature_covariance(h):
    """Covariance [.., D, D] from a Hessian in flow units: −H with eigenvalues clipped to
    [1/MAX_VAR, 1/MIN_VAR] (directions of positive curvature get the widest), inverted."""
    evals, evecs = tf.linalg.eigh(-tf.cast(h, _F64))
    evals = tf.clip_by_value(evals, 1.0 / MAX_VAR, 1.0 / MIN_VAR)
    return tf.matmul(evecs / evals[..., None, :], evecs, transpose_b=True)


class _Target(NamedTuple):
    """log π of rows in flow units x = (u − center) / scale (gradients and Hessians in x)."""

    log_target: object
    cond: object
    center: tf.Tensor
    scale: tf.Tensor

    def rows(self, idx) -> _Target:
        return _Target(self.log_target, tf.nest.map_structure(lambda t: tf.gather(t, idx), self.cond),
                       tf.gather(self.center, idx), tf.gather(self.scale, idx))

    def _u(self, x):
        return self.center[:, None, :] + self.scale[:, None, :] * x

    def value(self, x):
        lp = self.log_target(self.cond, self._u(x))
        return tf.where(tf.math.is_finite(lp), lp, -np.inf)

    def value_and_grad(self, x):
        lp, g = _value_and_grad(self.log_target, self.cond, self._u(x))
        return lp, g * self.scale[:, None, :]

    def grad_hessian(self, x):
        return _grad_hessian(self.value_and_grad, x)


def _newton_step(target: _Target, x, lp):
    """One trust-limited Newton step from x [A, S, D] (fractions 1, 1/4, … of it tried at once,
    the best that improves taken) with the clipped curvature of :func:`_curvature_covariance`.
    Returns (x, lp, the covariance at the old x [A, S, D, D] float64, the gain in log π)."""
    g, h = target.grad_hessian(x)
    cov = _curvature_covariance(h)
    step = tf.einsum("asij,asj->asi", tf.cast(cov, tf.float32), g)
    norm = tf.norm(step, axis=-1, keepdims=True)
    step *= tf.minimum(1.0, _TRUST / tf.maximum(norm, 1e-30))
    cands = x[:, :, None, :] + step[:, :, None, :] * _BACKTRACK[:, None]
    shape = tf.shape(cands)
    lpc = tf.reshape(target.value(tf.reshape(cands, tf.stack([shape[0], -1, shape[3]]))), shape[:3])
    best = tf.argmax(lpc, -1, output_type=tf.int32)
    lpb = tf.gather(lpc, best[..., None], batch_dims=2)[..., 0]
    xb = tf.gather(cands, best[..., None], batch_dims=2)[:, :, 0]
    better = lpb > lp
    gain = tf.where(better, lpb - tf.where(tf.math.is_finite(lp), lp, lpb - 1e30), 0.0)
    return tf.where(better[..., None], xb, x), tf.where(better, lpb, lp), cov, gain


def _newton(target: _Target, x, lp, max_steps: int, tol: float = _NEWTON_TOL):
    """Newton steps until no start of a row gains more than ``tol`` nats (at least one step,
    at most ``max_steps``); each iteration works on the rows still moving only. Returns
    (x, lp, covariance from each start's last Hessian [A, S, D, D] float64, steps per row [A])."""
    a = tf.shape(x)[0]

    def body(i, x, lp, cov, moving, count):
        idx, n = row_indices(moving)
        xs, lps, covs, gain = _newton_step(target.rows(idx), tf.gather(x, idx), tf.gather(lp, idx))
        def upd(t, v):
            return scatter_rows(t, idx, n, v)
        still = tf.reduce_any(gain > tol, -1)
        return (i + 1, upd(x, xs), upd(lp, lps), upd(cov, covs), upd(moving, still),
                upd(count, tf.gather(count, idx) + 1))

    cov0 = tf.zeros(tf.concat([tf.shape(x), tf.shape(x)[-1:]], 0), _F64)
    init = (tf.constant(0), x, lp, cov0, tf.ones([a], tf.bool), tf.zeros([a], tf.int32))
    out = tf.while_loop(lambda i, *v: (i < max_steps) & tf.reduce_any(v[3]), body, init)
    return out[1], out[2], out[3], out[5]


def _distinct(x, cov, lp, radius: float):
    """Greedy merge: sorted by lp, an end point is a new mode unless it lies within ``radius``
    Mahalanobis units (either point's covariance) of a better kept one. Returns keep [A, S]
    in the given order."""
    s_count = x.shape[1]
    prec = tf.linalg.inv(cov)
    order = tf.argsort(lp, -1, direction="DESCENDING")
    rank = tf.argsort(order, -1)  # position of each end point in the sorted order
    keep = []
    x64 = tf.cast(x, _F64)
    for s in range(s_count):
        k = tf.math.is_finite(lp[:, s])
        for t in range(s_count):
            if t == s:
                continue
            d = x64[:, s] - x64[:, t]
            d2 = tf.minimum(tf.einsum("ai,aij,aj->a", d, prec[:, s], d),
                            tf.einsum("ai,aij,aj->a", d, prec[:, t], d))
            better = (rank[:, t] < rank[:, s]) & tf.math.is_finite(lp[:, t])
            k &= ~(better & (d2 < radius ** 2))
        keep.append(k)
    return tf.stack(keep, 1)


def anchor_mixture(loc, cov, log_mass, keep, k_count: int):
    """Mixture [A, K] (flow units) from candidate modes loc [A, S, D], cov [A, S, D, D] (float64), log Laplace
    mass [A, S] and keep [A, S]: the K heaviest kept modes, then copies of the heaviest shifted
    by ±1σ along its principal axes (largest first). Also returns the number of modes [A]."""
    dim = loc.shape[-1]
    score = tf.where(keep, log_mass, _NINF64)
    order = tf.argsort(score, -1, direction="DESCENDING")
    n_modes = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32), -1), k_count)
    evals, evecs = tf.linalg.eigh(tf.gather(cov, order[:, 0], batch_dims=1))
    axes = evecs * tf.sqrt(tf.maximum(evals, 0.0))[:, None, :]  # columns: σ_j v_j, ascending
    top = tf.gather(loc, order[:, 0], batch_dims=1)
    locs, covs, masses = [], [], []
    for k in range(k_count):
        spare = k - n_modes  # ≥ 0 for spare slots
        axis = dim - 1 - tf.math.floordiv(tf.maximum(spare, 0), 2) % dim
        sign = tf.where(tf.math.floormod(spare, 2) == 0, 1.0, -1.0)
        shift = tf.cast(sign, _F64)[:, None] * tf.gather(axes, axis, axis=2, batch_dims=1)
        is_mode = k < n_modes
        pick = order[:, min(k, order.shape[1] - 1)]
        locs.append(tf.where(is_mode[:, None], tf.gather(loc, pick, batch_dims=1), top + shift))
        covs.append(tf.where(is_mode[:, None, None], tf.gather(cov, pick, batch_dims=1),
                             tf.gather(cov, order[:, 0], batch_dims=1)))
        masses.append(tf.where(is_mode, tf.gather(score, pick, batch_dims=1), _NINF64))
    log_mass = tf.stack(masses, 1)
    mass = tf.nn.softmax(log_mass, -1)
    mass = tf.where(tf.math.is_finite(mass), mass, _ZERO64)
    weights = (1.0 - _SPARE_SHARE) * mass + _SPARE_SHARE / k_count
    cov = mixture.clip_covariance(tf.stack(covs, 1), MIN_VAR, MAX_VAR)
    return mixture.Mixture(tf.math.log(weights), tf.stack(locs, 1), tf.linalg.cholesky(cov)), n_modes


def to_u(mix_x: mixture.Mixture, center, scale) -> mixture.Mixture:
    """A mixture in flow units (x = (u − center) / scale) → the same mixture in u."""
    c, s = tf.cast(center, _F64), tf.cast(scale, _F64)
    return mixture.Mixture(mix_x.log_weights, c[:, None, :] + s[:, None, :] * mix_x.loc,
                           s[:, None, :, None] * mix_x.scale_tril)


def locate(log_target, cond, x0, lp0, center, scale, *, starts: int, steps: int,
           newton_steps: int, learning_rate: tuple[float, float], merge_distance: float,
           num_components: int):
    """Modes of log π from the best draws x0 [A, N, D] (flow units, log π values lp0 [A, N]).

    ``starts`` spread-out best draws; Adam ascent (``steps``, step sizes ``learning_rate``
    first → last, in flow σ); Newton steps until converged (at most ``newton_steps``, at least
    one: the covariance comes from the last Hessian); Laplace covariances; end points
    within ``merge_distance`` Mahalanobis units merged. Returns (the anchor mixture in flow units
    with ``num_components`` components, distinct modes [A] int32, log π evaluations [A] int32).
    """
    dim = x0.shape[-1]
    target = _Target(log_target, cond, center, scale)
    x, lp = _select_starts(x0, lp0, starts, _START_SPACING)
    lp, g = target.value_and_grad(x)
    x, lp = _ascend(target.value_and_grad, x, lp, g, steps, learning_rate)
    x, lp, cov, n_newton = _newton(target, x, lp, max(newton_steps, 1))
    log_mass = tf.cast(lp, _F64) + 0.5 * tf.linalg.logdet(cov)
    keep = _distinct(x, cov, lp, merge_distance)
    mix, n_modes = anchor_mixture(tf.cast(x, _F64), cov, log_mass, keep, num_components)
    # per start: the first gradient, the ascent, each Newton step (Hessian = 2D gradients, and
    # the trial points)
    evals = starts * (1 + steps + n_newton * (2 * dim + int(_BACKTRACK.shape[0])))
    return mix, n_modes, evals
