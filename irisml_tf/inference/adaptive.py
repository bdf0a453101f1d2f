"""Per-star adaptive importance sampling: the flow proposes, the target decides (science.md,
"The inference engine"; population Monte Carlo / AMIS, Cappé+2004, Cornuet+2012).

The numerical core knows nothing about stars. It samples, for each of B rows, a target density
π_b(u) on R^D (unnormalised, −inf allowed), given a proposal ("the flow") that can draw and score:

    result = adaptive_importance_sampling(log_target, flow_sample, flow_log_prob, conditions,
                                          seeds, dim, AdaptiveOptions(...))

* ``conditions``: a nest of tensors with leading dimension B (the rows' data, e.g. a star's
  photometry and flow context); every callable receives the rows it works on, gathered from it.
* ``log_target(conditions, u)``: u float32 [A, N, D] → log π [A, N]; differentiable in u.
* ``flow_sample(conditions, n, seeds)``: seeds int32 [A, 2], one per row → (u [A, n, D],
  log q [A, n]). A row's draws must depend on its own seed only (:func:`row_normal` gives
  per-row standard normals for a flow's base noise).
* ``flow_log_prob(conditions, u)``: [A, N, D] → [A, N], one density pass.
* ``seeds``: int32 [B, 2], one stateless seed per row (:func:`star_seeds`).

Algorithm, per row:

0. round 0: ``n0`` draws from the flow, weights π/q.
1. locate (rows whose round-0 ESS is below ``locate_ess``): from the ``locate_starts`` best
   round-0 draws (greedily spread apart), Adam ascent of log π (``locate_steps`` steps, in the
   coordinates of the flow's round-0 spread, rejected moves to −inf halve the step), then
   ``newton_steps`` trust-limited Newton steps; at each end point the autodiff Hessian, its
   eigenvalues clipped (curvature floor/cap), gives a Laplace covariance. End points within
   ``merge_distance`` Mahalanobis units of a better one are merged; the distinct modes, weighted
   by their Laplace mass, are the anchors of the proposal mixture (free component slots are
   copies of the heaviest mode shifted by ±1σ along its principal axes, so that EM can bend
   the mixture along a curved posterior). Rows not located anchor on the moments of their
   (tempered) round-0 weights.
2. rounds r ≥ 1: a mixture of ``num_components`` Student-t_ν components is fitted to all draws
   so far by weighted EM (:func:`irisml_tf.inference.mixture.fit`): weights tempered to w^β with
   the largest β ≤ 1 whose ESS reaches ``temper_ess``; MAP shrinkage towards the anchors with
   ``prior_count`` pseudo-draws; eigenvalue floor/cap; scales widened by ``widen``. Round 1 of a
   located row uses the anchors themselves. Each round draws ``draws_per_round`` points:
   round(α·n) from the flow and the rest from the fit (deterministic allocation of the
   defensive mixture α·flow + (1 − α)·fit).
3. stop when ESS ≥ ``target_ess`` or no round fits in ``max_draws``; ``converged`` says which.

Combining rounds (deterministic mixture / balance heuristic, Owen & Zhou 2000; the weights of
AMIS, Cornuet+2012): every draw u_i of every round is weighted against the mixture of ALL the
row's proposals, in proportion to how many draws each contributed,

    w_i = π(u_i) / q̄(u_i),   q̄ = [ (n0 + R·n_flow) q_flow + n_fit Σ_{r=1..R} fit_r ] / N,

R the row's fit rounds, N = n0 + R·n its draws. The flow's log density of each draw is computed
once and cached; each new fit is evaluated at all earlier draws and each new draw under all
earlier fits. (1/N) Σ w_i estimates the normalising constant (``log_evidence``); the weighted
draws converge to π whatever the flow's quality (with adaptation, AMIS is consistent as the
draws grow, Marin, Pudlo & Sedki 2019; the defensive flow share keeps the tails covered).
``khat`` is PSIS k̂ of these final weights over the row's N draws.

Per-row independence: every random number of row b comes from ``seeds[b]`` (folded with the
round and the purpose), and every step (locate, EM, stopping) is per row, so a row's result
does not depend on which other rows share its batch: seed rows from a stable key
(:func:`star_seeds` with e.g. ``source_id``) and a catalogue gives the same answer however it is
chunked. (Bit-for-bit this holds for the sampler's own ops; a callable such as a neural flow
may round differently at other batch sizes.)

All TensorFlow ops: rounds are a ``tf.while_loop`` over the still-active rows (gathered, so that
converged rows cost nothing), with per-row storage of the ``max_draws`` slots; B is dynamic,
the options are static. Traceable into a ``tf.function`` / SavedModel signature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from irisml_tf.inference import mixture
from irisml_tf.inference.importance import effective_sample_size, importance_weights
from irisml_tf.inference.psis import psis

__all__ = ["AdaptiveOptions", "AdaptiveResult", "adaptive_importance_sampling", "star_seeds",
           "row_normal"]

_F64 = tf.float64
_ZERO64, _NINF64 = np.float64(0.0), np.float64(-np.inf)  # tf.where needs float64 fillers
# Laplace/fit covariances in units of the flow's round-0 spread: σ between 1e-4 and 2 flow σ
_MIN_VAR, _MAX_VAR = 1e-8, 4.0
_SPARE_SHARE = 0.2  # share of the anchors' weight spread evenly over all live components
_TRUST = 3.0  # largest Newton step, in flow σ


@dataclass(frozen=True)
class AdaptiveOptions:
    """Static settings of :func:`adaptive_importance_sampling` (shapes depend on them).

    target_ess: stop a row once its ESS reaches this. max_draws: draw budget per row (the
    storage); rounds beyond it are not started. n0: round-0 flow draws. draws_per_round: n per
    round ≥ 1. max_rounds: cap on rounds ≥ 1 (None: as many as max_draws allows). alpha: flow
    share of each round's draws. num_components: K mixture components. df: ν of the Student-t
    components (math.inf: Gaussian). locate_starts, locate_steps, newton_steps: the mode search.
    locate_ess: rows whose round-0 ESS is below this are located (0: never; inf: always).
    learning_rate: Adam step at the first and last ascent step, in flow σ. merge_distance:
    Mahalanobis radius within which end points are one mode. temper_ess: ESS the tempered fit
    weights must reach. prior_count: pseudo-draws of the anchors in each EM fit. em_iterations:
    EM steps per round. widen: factor on fitted scales. fit_draws: EM uses at most this many
    draws (the heaviest) per row.
    """

    target_ess: float = 1000.0
    max_draws: int = 20000
    n0: int = 1000
    draws_per_round: int = 1000
    max_rounds: int | None = None
    alpha: float = 0.1
    num_components: int = 4
    df: float = 5.0
    locate_starts: int = 4
    locate_steps: int = 150
    newton_steps: int = 2
    locate_ess: float = math.inf
    learning_rate: tuple[float, float] = (0.2, 0.005)
    merge_distance: float = 2.0
    temper_ess: float = 100.0
    prior_count: float = 10.0
    em_iterations: int = 8
    widen: float = 1.1
    fit_draws: int = 2048

    def __post_init__(self):
        ints = {"max_draws": 1, "n0": 5, "draws_per_round": 2, "num_components": 1,
                "locate_starts": 1, "locate_steps": 0, "newton_steps": 0, "em_iterations": 1,
                "fit_draws": 16}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"AdaptiveOptions.{name} must be an integer ≥ {low}, got {v!r}")
        if self.max_rounds is not None and (not isinstance(self.max_rounds, (int, np.integer))
                                            or self.max_rounds < 0):
            raise ValueError(f"AdaptiveOptions.max_rounds must be None or an integer ≥ 0, "
                             f"got {self.max_rounds!r}")
        if self.max_draws < self.n0:
            raise ValueError(f"AdaptiveOptions.max_draws ({self.max_draws}) must be ≥ n0 ({self.n0})")
        checks = {"target_ess": self.target_ess > 0, "alpha": 0 <= self.alpha < 1,
                  "df": self.df > 2, "locate_ess": self.locate_ess >= 0,
                  "merge_distance": self.merge_distance >= 0, "temper_ess": self.temper_ess >= 1,
                  "prior_count": self.prior_count > 0, "widen": self.widen >= 1,
                  "learning_rate": (len(self.learning_rate) == 2
                                    and all(0 < v <= 10 for v in self.learning_rate))}
        for name, ok in checks.items():
            if not ok or (name != "locate_ess" and name != "df"
                          and not np.all(np.isfinite(getattr(self, name)))):
                raise ValueError(f"AdaptiveOptions.{name} has an impossible value "
                                 f"{getattr(self, name)!r}")

    @property
    def rounds(self) -> int:
        """The most rounds ≥ 1 a row can get."""
        fits = (self.max_draws - self.n0) // self.draws_per_round
        return fits if self.max_rounds is None else min(fits, int(self.max_rounds))

    @property
    def slots(self) -> int:
        """Per-row storage M = n0 + rounds · draws_per_round (≤ max_draws)."""
        return self.n0 + self.rounds * self.draws_per_round

    @property
    def n_flow(self) -> int:
        """Flow draws per round ≥ 1."""
        return int(round(self.alpha * self.draws_per_round))

    @property
    def n_fit(self) -> int:
        """Mixture draws per round ≥ 1."""
        return self.draws_per_round - self.n_flow


class AdaptiveResult(NamedTuple):
    """Per row: draws [B, M, D] (slots past n_draws are zero), log_weights [B, M] (−inf past
    n_draws), weights [B, M] (normalised, 0 past n_draws), ess, khat, log_evidence [B]
    (float32), n_draws, n_target_evals (every point at which log π or its gradient was taken,
    Hessians counted as D), rounds (sampling rounds including round 0), n_modes (distinct
    located modes; 0 if not located) [B] int32, converged [B] bool (ESS ≥ target_ess)."""

    draws: tf.Tensor
    log_weights: tf.Tensor
    weights: tf.Tensor
    ess: tf.Tensor
    khat: tf.Tensor
    log_evidence: tf.Tensor
    n_draws: tf.Tensor
    n_target_evals: tf.Tensor
    rounds: tf.Tensor
    n_modes: tf.Tensor
    converged: tf.Tensor


# -- per-row randomness ---------------------------------------------------------------------------
def star_seeds(seed, keys):
    """Per-row stateless seeds int32 [B, 2]: ``seed`` (int32 [2]) folded with each row's key
    (int64 [B], e.g. ``source_id`` or a global row number; both 32-bit halves are folded in).
    Same key, same seed, whatever the batch."""
    seed = tf.cast(seed, tf.int32)
    keys = tf.cast(keys, tf.int64)
    halves = tf.bitcast(keys, tf.int32)  # [B, 2]

    def one(h):
        fold = tf.random.experimental.stateless_fold_in
        return fold(fold(seed, h[0]), h[1])
    return tf.map_fn(one, halves, fn_output_signature=tf.TensorSpec([2], tf.int32))


def _fold(seeds, value: int):
    """Each row's seed folded with ``value`` (a round or a purpose): [A, 2]."""
    return tf.map_fn(lambda s: tf.random.experimental.stateless_fold_in(s, value), seeds,
                     fn_output_signature=tf.TensorSpec([2], tf.int32))


def row_normal(seeds, n, dim: int):
    """Standard normals [A, n, dim], row a from ``seeds[a]`` only."""
    return tf.map_fn(lambda s: tf.random.stateless_normal(tf.stack([n, dim]), s), seeds,
                     fn_output_signature=tf.TensorSpec([None, dim], tf.float32))


def _fit_randomness(seeds, n: int, dim: int, df: float):
    """Per-row (normals [A, n, D], uniforms [A, n], χ²_ν [A, n]) for mixture draws."""
    def one(s):
        s = tf.random.experimental.stateless_split(s, 3)
        chi2 = (tf.ones([n]) if math.isinf(df)
                else 2.0 * tf.random.stateless_gamma([n], s[2], alpha=0.5 * df))
        return (tf.random.stateless_normal([n, dim], s[0]),
                tf.random.stateless_uniform([n], s[1], minval=1e-7, maxval=1.0), chi2)
    spec = (tf.TensorSpec([n, dim], tf.float32), tf.TensorSpec([n], tf.float32),
            tf.TensorSpec([n], tf.float32))
    return tf.map_fn(one, seeds, fn_output_signature=spec)


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


def _hessian(log_target, cond, u):
    """Hessian [A, S, D, D] of log π at u [A, S, D] (0 where not finite): one reverse-over-reverse
    pass over D copies of each point, copy j giving row j (no per-column loop, no pfor)."""
    shape = tf.shape(u)
    dim = u.shape[-1]
    rep = tf.reshape(tf.tile(u[:, :, None, :], [1, 1, dim, 1]), tf.stack([shape[0], -1, dim]))
    with tf.GradientTape() as outer:
        outer.watch(rep)
        with tf.GradientTape() as inner:
            inner.watch(rep)
            lp = log_target(cond, rep)
        g = inner.gradient(lp, rep)
        g = tf.reshape(g, tf.stack([shape[0], shape[1], dim, dim]))
        picked = tf.reduce_sum(g * tf.eye(dim), axis=-1)  # copy j keeps ∂ log π / ∂u_j
    h = outer.gradient(picked, rep)
    h = tf.reshape(h, tf.stack([shape[0], shape[1], dim, dim]))
    h = 0.5 * (h + tf.linalg.matrix_transpose(h))
    return tf.where(tf.math.is_finite(h), h, 0.0)


# -- locate ---------------------------------------------------------------------------------------
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
        ok = tf.math.is_finite(lpc)
        x = tf.where(ok[..., None], xc, x)
        lp, g = tf.where(ok, lpc, lp), tf.where(ok[..., None], gc, g)
        mult = tf.where(ok, mult, 0.5 * mult)
        better = lp > blp
        return (t + 1, x, lp, g, m, v, mult, tf.where(better[..., None], x, bx),
                tf.where(better, lp, blp))

    zeros = tf.zeros_like(x)
    init = (tf.constant(0), x, lp, g, zeros, zeros, tf.ones_like(lp), x, lp)
    out = tf.while_loop(lambda t, *_: t < steps, body, init)
    return out[7], out[8]


def _curvature_covariance(h):
    """Covariance [.., D, D] from a Hessian in flow units: −H with eigenvalues clipped to
    [1/_MAX_VAR, 1/_MIN_VAR] (directions of positive curvature get the widest), inverted."""
    evals, evecs = tf.linalg.eigh(-tf.cast(h, _F64))
    evals = tf.clip_by_value(evals, 1.0 / _MAX_VAR, 1.0 / _MIN_VAR)
    return tf.matmul(evecs / evals[..., None, :], evecs, transpose_b=True)


def _newton(f, hess, x, lp, steps: int):
    """Trust-limited Newton steps (full, half, quarter; the best that improves is taken)."""
    def body(i, x, lp):
        _, g = f(x)
        cov = tf.cast(_curvature_covariance(hess(x)), tf.float32)
        step = tf.einsum("asij,asj->asi", cov, g)
        norm = tf.norm(step, axis=-1, keepdims=True)
        step *= tf.minimum(1.0, _TRUST / tf.maximum(norm, 1e-30))
        cands = x[:, :, None, :] + step[:, :, None, :] * tf.constant([1.0, 0.5, 0.25])[:, None]
        shape = tf.shape(cands)
        lpc, _ = f(tf.reshape(cands, tf.stack([shape[0], -1, shape[3]])))
        lpc = tf.reshape(lpc, shape[:3])
        best = tf.argmax(lpc, -1, output_type=tf.int32)
        lpb = tf.gather(lpc, best[..., None], batch_dims=2)[..., 0]
        xb = tf.gather(cands, best[..., None], batch_dims=2)[:, :, 0]
        better = lpb > lp
        return i + 1, tf.where(better[..., None], xb, x), tf.where(better, lpb, lp)

    _, x, lp = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), x, lp))
    return x, lp


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


def _anchor_mixture(loc, cov, log_mass, keep, k_count: int):
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
    cov = mixture.clip_covariance(tf.stack(covs, 1), _MIN_VAR, _MAX_VAR)
    return mixture.Mixture(tf.math.log(weights), tf.stack(locs, 1), tf.linalg.cholesky(cov)), n_modes


def _to_u(mix_x: mixture.Mixture, center, scale) -> mixture.Mixture:
    """A mixture in flow units (x = (u − center) / scale) → the same mixture in u."""
    c, s = tf.cast(center, _F64), tf.cast(scale, _F64)
    return mixture.Mixture(mix_x.log_weights, c[:, None, :] + s[:, None, :] * mix_x.loc,
                           s[:, None, :, None] * mix_x.scale_tril)


def _locate(log_target, cond, x0, lp0, center, scale, opt: AdaptiveOptions):
    """Modes of log π from the best round-0 draws x0 [A, N, D] (flow units). Returns the anchor
    mixture in flow units, the number of distinct modes [A] and the target evaluations per row."""
    dim = x0.shape[-1]
    to_u = lambda x: center[:, None, :] + scale[:, None, :] * x  # noqa: E731

    def f(x):
        lp, g = _value_and_grad(log_target, cond, to_u(x))
        return lp, g * scale[:, None, :]

    def hess(x):
        return _hessian(log_target, cond, to_u(x)) * (scale[:, None, :, None] * scale[:, None, None, :])

    x, lp = _select_starts(x0, lp0, opt.locate_starts, min_dist=0.5)
    lp, g = f(x)
    x, lp = _ascend(f, x, lp, g, opt.locate_steps, opt.learning_rate)
    x, lp = _newton(f, hess, x, lp, opt.newton_steps)
    cov = _curvature_covariance(hess(x))
    log_mass = tf.cast(lp, _F64) + 0.5 * tf.linalg.logdet(cov)
    keep = _distinct(x, cov, lp, opt.merge_distance)
    mix, n_modes = _anchor_mixture(tf.cast(x, _F64), cov, log_mass, keep, opt.num_components)
    evals = opt.locate_starts * (1 + opt.locate_steps + opt.newton_steps * (1 + dim + 3) + dim)
    return mix, n_modes, evals


def _tempered_counts(lw, temper_ess: float):
    """Fit weights from log weights lw [A, N]: w^β with the largest β ≤ 1 whose ESS reaches
    ``temper_ess`` (β = 0 if none: equal weights on the finite ones; all equal if none is finite),
    scaled to sum to that ESS, float64 (units of effective draws)."""
    lw = tf.cast(lw, _F64)
    finite = tf.math.is_finite(lw)
    none = ~tf.reduce_any(finite, -1, keepdims=True)
    finite = finite | none
    lw = tf.where(none, _ZERO64, lw)
    centred = tf.where(finite, lw - tf.reduce_max(tf.where(finite, lw, _NINF64), -1, keepdims=True),
                       _ZERO64)

    def weights(beta):
        return tf.where(finite, tf.exp(beta[:, None] * centred), _ZERO64)

    def ess(w):
        return tf.cast(effective_sample_size(tf.cast(w, tf.float32)), _F64)

    def bisect(i, lo, hi):  # ESS(w^β) falls as β grows
        mid = 0.5 * (lo + hi)
        ok = ess(weights(mid)) >= temper_ess
        return i + 1, tf.where(ok, mid, lo), tf.where(ok, hi, mid)

    ones = tf.ones_like(lw[:, 0])
    _, lo, _ = tf.while_loop(lambda i, *_: i < 20, bisect, (tf.constant(0), tf.zeros_like(ones), ones))
    beta = tf.where(ess(weights(ones)) >= temper_ess, ones, lo)
    w = weights(beta)
    return w / tf.reduce_sum(w, -1, keepdims=True) * ess(w)[:, None]


def _logaddexp(a, b):
    m = tf.maximum(a, b)
    safe = tf.where(tf.math.is_finite(m), m, 0.0)
    return tf.where(tf.math.is_finite(m), safe + tf.math.log(tf.exp(a - safe) + tf.exp(b - safe)), m)


def _mixture_log_q(lflow, lfit, fit_rounds, opt: AdaptiveOptions):
    """log q̄ [A, N] of the deterministic mixture of a row's proposals (module docstring);
    fit_rounds [A] (int32)."""
    r = tf.cast(fit_rounds, tf.float32)[:, None]
    log_total = tf.math.log(opt.n0 + opt.draws_per_round * r)
    log_flow = tf.math.log(opt.n0 + opt.n_flow * r) + lflow
    return _logaddexp(log_flow, math.log(opt.n_fit) + lfit) - log_total


def _dm_weights(lp, lflow, lfit, fit_rounds, opt):
    """Log weights [A, N] (−inf where π is) and ESS [A] of the deterministic-mixture weights."""
    lw = tf.where(tf.math.is_finite(lp), lp - _mixture_log_q(lflow, lfit, fit_rounds, opt), -np.inf)
    lw = tf.where(tf.math.is_finite(lw), lw, -np.inf)
    has = tf.reduce_any(tf.math.is_finite(lw), -1, keepdims=True)
    w = tf.where(has, tf.nn.softmax(tf.where(has, lw, 0.0), -1), 0.0)
    return lw, effective_sample_size(w)


class _State(NamedTuple):
    """Per-row loop state ([B, ...]); fits holds every round's mixture [B, R, K, ...]."""

    u: tf.Tensor
    lp: tf.Tensor
    lflow: tf.Tensor  # log flow density of each draw (cached)
    lfit: tf.Tensor  # log Σ_r fit_r(u) over the row's fit rounds
    fits: mixture.Mixture
    anchors: mixture.Mixture
    located: tf.Tensor
    scale: tf.Tensor
    fit_rounds: tf.Tensor
    evals: tf.Tensor
    ess: tf.Tensor
    active: tf.Tensor
    seeds: tf.Tensor


def _gather(nest, idx):
    return tf.nest.map_structure(lambda t: tf.gather(t, idx), nest)


def _scatter(nest, idx, sub):
    return tf.nest.map_structure(lambda t, s: tf.tensor_scatter_nd_update(t, idx[:, None], s), nest, sub)


def _round_fit(s: _State, lw, r, opt: AdaptiveOptions) -> mixture.Mixture:
    """This round's mixture: the anchors in round 1 of a located row, else EM on the heaviest
    ``fit_draws`` draws so far, started from the previous fit (round 1: the anchors)."""
    k = tf.minimum(opt.fit_draws, tf.shape(lw)[1])
    top = tf.math.top_k(lw, k=k)
    x = tf.cast(tf.gather(s.u, top.indices, batch_dims=1), _F64)
    counts = _tempered_counts(top.values, opt.temper_ess)
    prev = tf.nest.map_structure(lambda t: tf.gather(t, tf.maximum(r - 2, 0), axis=1), s.fits)
    first = tf.equal(r, 1)
    init = tf.nest.map_structure(lambda a, p: tf.where(first, a, p), s.anchors, prev)
    em = mixture.fit(init, s.anchors, x, counts, opt.df, opt.em_iterations, opt.prior_count,
                     opt.widen, tf.cast(s.scale, _F64), _MIN_VAR, _MAX_VAR)
    use_anchor = s.located & first
    return tf.nest.map_structure(
        lambda a, e: tf.where(tf.reshape(use_anchor, [-1] + [1] * (a.shape.rank - 1)), a, e),
        s.anchors, em)


def _draw(fit, cond, seeds, r, flow_sample, flow_log_prob, dim, opt: AdaptiveOptions):
    """One round's draws [A, n, D] and their log flow density [A, n]: n_flow from the flow,
    n_fit from the mixture, each row from its own seed."""
    seeds_r = _fold(seeds, r)
    u_fit = mixture.sample(fit, opt.df, *_fit_randomness(_fold(seeds_r, 2), opt.n_fit, dim, opt.df))
    u_fit = tf.cast(u_fit, tf.float32)
    lq_fit = flow_log_prob(cond, u_fit)
    if opt.n_flow == 0:
        return u_fit, lq_fit
    u_flow, lq_flow = flow_sample(cond, opt.n_flow, _fold(seeds_r, 1))
    return tf.concat([u_flow, u_fit], 1), tf.concat([lq_flow, lq_fit], 1)


def _sum_fits(fits: mixture.Mixture, rounds, u, df: float):
    """log Σ_{j < rounds} fit_j(u) [A, N] over the stored fits [A, R, K, ...]."""
    def body(j, acc):
        fit = tf.nest.map_structure(lambda t: tf.gather(t, j, axis=1), fits)
        return j + 1, _logaddexp(acc, mixture.log_prob(fit, u, df))

    acc = tf.fill(tf.shape(u)[:2], tf.constant(-np.inf, tf.float32))
    return tf.while_loop(lambda j, _: j < rounds, body, (tf.constant(0), acc))[1]


def _round(r, s: _State, conditions, fns, dim: int, opt: AdaptiveOptions) -> _State:
    """Round r ≥ 1 for the active rows (gathered), written back into the state."""
    log_target, flow_sample, flow_log_prob = fns
    idx = tf.where(s.active)[:, 0]
    sub, cond = _gather(s, idx), _gather(conditions, idx)
    n, filled = opt.draws_per_round, opt.n0 + opt.draws_per_round * (r - 1)
    lw, _ = _dm_weights(sub.lp[:, :filled], sub.lflow[:, :filled], sub.lfit[:, :filled],
                        sub.fit_rounds, opt)
    fit = _round_fit(sub, lw, r, opt)
    u_new, lq_new = _draw(fit, cond, sub.seeds, r, flow_sample, flow_log_prob, dim, opt)
    lp_new = log_target(cond, u_new)
    lp_new = tf.where(tf.math.is_finite(lp_new), lp_new, -np.inf)

    in_round = tf.equal(tf.range(opt.rounds), r - 1)
    fits = tf.nest.map_structure(
        lambda all_, f: tf.where(tf.reshape(in_round, [1, -1] + [1] * (f.shape.rank - 1)),
                                 f[:, None], all_), sub.fits, fit)
    lfit_old = _logaddexp(sub.lfit[:, :filled], mixture.log_prob(fit, sub.u[:, :filled], opt.df))
    lfit_new = _sum_fits(fits, r, u_new, opt.df)

    def splice(old, new):
        return tf.concat([old[:, :filled], new, old[:, filled + n:]], 1)

    rounds = sub.fit_rounds + 1
    lp, lflow = splice(sub.lp, lp_new), splice(sub.lflow, lq_new)
    lfit = splice(tf.concat([lfit_old, sub.lfit[:, filled:]], 1), lfit_new)
    _, ess = _dm_weights(lp[:, :filled + n], lflow[:, :filled + n], lfit[:, :filled + n], rounds, opt)
    sub = sub._replace(u=splice(sub.u, u_new), lp=lp, lflow=lflow, lfit=lfit, fits=fits,
                       fit_rounds=rounds, evals=sub.evals + n, ess=ess,
                       active=ess < opt.target_ess)
    return _scatter(s, idx, sub)


def _round_zero(conditions, seeds, fns, dim: int, opt: AdaptiveOptions):
    """Round 0 and the anchors: (state, n_modes [B])."""
    log_target, flow_sample, _ = fns
    b = tf.shape(seeds)[0]
    u0, lq0 = flow_sample(conditions, opt.n0, _fold(_fold(seeds, 0), 1))
    lp0 = log_target(conditions, u0)
    lp0 = tf.where(tf.math.is_finite(lp0), lp0, -np.inf)
    lw0, ess0 = _dm_weights(lp0, lq0, tf.fill(tf.shape(lp0), -np.inf), tf.zeros([b], tf.int32), opt)
    center = tf.reduce_mean(u0, 1)
    scale = tf.maximum(tf.math.reduce_std(u0, 1), 1e-6)
    x0 = (u0 - center[:, None, :]) / scale[:, None, :]

    # anchors from the tempered moments of round 0 (every row), replaced where a mode is located
    mean, cov = mixture.moments(tf.cast(x0, _F64), _tempered_counts(lw0, opt.temper_ess))
    anchors, _ = _anchor_mixture(mean[:, None], mixture.clip_covariance(cov[:, None], _MIN_VAR, _MAX_VAR),
                                 tf.zeros([b, 1], _F64), tf.ones([b, 1], tf.bool), opt.num_components)
    n_modes = tf.zeros([b], tf.int32)
    evals = tf.fill([b], opt.n0)
    find = (ess0 < opt.locate_ess) & (ess0 < opt.target_ess)
    if opt.rounds > 0 and opt.locate_ess > 0:
        idx = tf.where(find)[:, 0]
        found, modes, cost = _locate(log_target, _gather(conditions, idx), tf.gather(x0, idx),
                                     tf.gather(lp0, idx), tf.gather(center, idx),
                                     tf.gather(scale, idx), opt)
        anchors = _scatter(anchors, idx, tf.nest.map_structure(
            lambda a, f: tf.where(tf.reshape(modes > 0, [-1] + [1] * (a.shape.rank - 1)), f, a),
            _gather(anchors, idx), found))
        n_modes = tf.tensor_scatter_nd_update(n_modes, idx[:, None], modes)
        evals = tf.tensor_scatter_nd_add(evals, idx[:, None], tf.fill(tf.shape(idx), cost))
    anchors = _to_u(anchors, center, scale)

    pad = opt.slots - opt.n0
    k, r = opt.num_components, max(opt.rounds, 1)
    fits = mixture.Mixture(tf.fill(tf.stack([b, r, k]), tf.constant(-np.inf, _F64)),
                           tf.zeros(tf.stack([b, r, k, dim]), _F64),
                           tf.eye(dim, batch_shape=tf.stack([b, r, k]), dtype=_F64))
    state = _State(
        u=tf.pad(u0, [[0, 0], [0, pad], [0, 0]]),
        lp=tf.pad(lp0, [[0, 0], [0, pad]], constant_values=-np.inf),
        lflow=tf.pad(lq0, [[0, 0], [0, pad]]),
        lfit=tf.fill(tf.stack([b, opt.slots]), tf.constant(-np.inf, tf.float32)),
        fits=fits, anchors=anchors, located=find & (n_modes > 0), scale=scale,
        fit_rounds=tf.zeros([b], tf.int32), evals=evals, ess=ess0,
        active=ess0 < opt.target_ess, seeds=seeds)
    return state, n_modes


def _khat(lw, fit_rounds, opt: AdaptiveOptions):
    """PSIS k̂ [B] of each row over its own N draws (rows grouped by their number of rounds, so
    that the tail length follows N, not the storage size)."""
    def body(j, khat):
        idx = tf.where(tf.equal(fit_rounds, j))[:, 0]

        def update():  # psis needs at least one row
            _, k = psis(tf.gather(lw, idx)[:, :opt.n0 + opt.draws_per_round * j])
            return tf.tensor_scatter_nd_update(khat, idx[:, None], k)
        return j + 1, tf.cond(tf.size(idx) > 0, update, lambda: khat)

    khat = tf.fill(tf.shape(fit_rounds), tf.constant(np.inf, tf.float32))
    return tf.while_loop(lambda j, _: j <= opt.rounds, body, (tf.constant(0), khat))[1]


def _finish(s: _State, n_modes, opt: AdaptiveOptions) -> AdaptiveResult:
    log_q = _mixture_log_q(s.lflow, s.lfit, s.fit_rounds, opt)
    iw = importance_weights(s.lp, tf.zeros_like(s.lp), log_q, with_khat=False)
    n_draws = opt.n0 + opt.draws_per_round * s.fit_rounds
    # importance_weights averages over all M slots; the row's estimate averages over its N draws
    log_evidence = iw["log_evidence"] + math.log(opt.slots) - tf.math.log(tf.cast(n_draws, tf.float32))
    return AdaptiveResult(
        draws=s.u, log_weights=iw["log_weights"], weights=iw["weights"], ess=iw["ess"],
        khat=_khat(iw["log_weights"], s.fit_rounds, opt), log_evidence=log_evidence,
        n_draws=n_draws, n_target_evals=s.evals, rounds=s.fit_rounds + 1, n_modes=n_modes,
        converged=iw["ess"] >= opt.target_ess)


@tf.autograph.experimental.do_not_convert  # no data-dependent Python control flow to convert
def adaptive_importance_sampling(log_target, flow_sample, flow_log_prob, conditions, seeds,
                                 dim: int, options: AdaptiveOptions | None = None) -> AdaptiveResult:
    """Weighted draws of each row's target π_b (see the module docstring for the callables).

    Args:
      log_target, flow_sample, flow_log_prob: the target and the flow, as described above.
      conditions: nest of tensors with leading dimension B (may be empty: ``()``).
      seeds: int32 [B, 2], one stateless seed per row (:func:`star_seeds`).
      dim: D (static). options: :class:`AdaptiveOptions` (static).

    Returns :class:`AdaptiveResult`. Same seeds, same result.
    """
    opt = options or AdaptiveOptions()
    dim = int(dim)
    seeds = tf.cast(seeds, tf.int32)
    fns = (log_target, flow_sample, flow_log_prob)
    state, n_modes = _round_zero(conditions, seeds, fns, dim, opt)
    if opt.rounds > 0:
        def cond(r, s):
            return (r <= opt.rounds) & tf.reduce_any(s.active)

        def body(r, s):
            return r + 1, _round(r, s, conditions, fns, dim, opt)

        _, state = tf.while_loop(cond, body, (tf.constant(1), state))
    return _finish(state, n_modes, opt)
