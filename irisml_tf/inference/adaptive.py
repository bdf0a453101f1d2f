"""Per-star adaptive importance sampling: the flow proposes, the target decides (science.md,
"The inference engine"; population Monte Carlo / AMIS, Cappé+2004, Cornuet+2012).

The numerical core knows nothing about stars. It samples, for each of B rows, a target density
π_b(u) on R^D (unnormalised, −inf allowed), given a proposal ("the flow") it can draw from:

    result = adaptive_importance_sampling(log_target, flow_sample, conditions, seeds, dim,
                                          AdaptiveOptions(...))

* ``conditions``: a nest of tensors with leading dimension B (the rows' data, e.g. a star's
  photometry and flow context); every callable receives the rows it works on, gathered from it.
* ``log_target(conditions, u)``: u float32 [A, N, D] → log π [A, N]; differentiable in u.
* ``flow_sample(conditions, n, seeds)``: seeds int32 [A, 2], one per row → (u [A, n, D],
  log q [A, n]). A row's draws must depend on its own seed only (:func:`row_normal` gives
  per-row standard normals for a flow's base noise).
* ``seeds``: int32 [B, 2], one stateless seed per row (:func:`star_seeds`).

Algorithm, per row:

0. round 0: ``n0`` draws from the flow, weights π/q. A row whose ESS already reaches
   ``target_ess`` stops here (its result is plain importance sampling of the flow).
1. locate (rows whose round-0 ESS is below ``locate_ess``): gradient ascent from the best
   round-0 draws, Newton polish, Laplace covariances, distinct modes
   (:func:`irisml_tf.inference.locate.locate`). The modes, weighted by their Laplace mass, are
   the anchors of the proposal mixture; rows not located (or where no start had a finite
   target) anchor on the moments of their tempered round-0 weights.
2. rounds r ≥ 1: a mixture of ``num_components`` Student-t_ν components is fitted by weighted
   EM (:func:`irisml_tf.inference.mixture.fit`) to the current weighted draws (round 1: the
   round-0 draws; later: the draws of rounds ≥ 1): weights tempered to w^β with the largest
   β ≤ 1 whose ESS reaches ``temper_ess``, MAP shrinkage towards the anchors with
   ``prior_count`` pseudo-draws, eigenvalue floor/cap, scales widened by ``widen``. Round 1 of
   a located row uses the anchors themselves. The round's proposal is the defensive mixture
   q_r = α·d + (1 − α)·fit_r, where d, the defensive mixture, is ``defensive_components``
   t_ν components fitted by EM to the row's round-0 flow draws (a cheap stand-in for the flow
   that follows its shape: measured on the shipped model, one flow log-density costs ~5x a
   25-band likelihood, a flow draw ~15x, so a flow term in every proposal density would dominate
   the cost). d is the same in every round, so its density is taken once per draw.
   ``draws_per_round`` draws per round.
3. freeze (``freeze_at``): once the adaptive rounds' ESS (below) reaches ``freeze_at ·
   target_ess``, the row stops adapting. The draws of the round just made, which came from a
   proposal fitted to earlier draws only, are weighted by that proposal alone, π/q_R; the row
   then draws further rounds from the same q_R, weighted the same way, and only these frozen
   rounds' draws are returned.
4. stop when ESS ≥ ``target_ess`` (the frozen rounds' ESS for a frozen row) or no round fits in
   ``max_draws``; ``converged`` says which. A row that runs out of draws before it freezes
   returns the adaptive rounds' weights.

The adaptive rounds (deterministic mixture / balance heuristic, Owen & Zhou 2000; the weights of
AMIS, Cornuet+2012): once a row has R ≥ 1 fit rounds, every draw u_i of those rounds is weighted
against the mixture of all of the row's fit-round proposals,

    w_i = π(u_i) / q̄(u_i),   q̄ = (1/R) Σ_{r=1..R} q_r,

each new proposal being evaluated at all earlier draws and each new draw under all earlier
proposals (mixture densities: cheap). The round-0 flow draws then get weight 0: their
proposal's density is not evaluated at later draws, and a union of π/q_flow weights with the
others would let a flow draw that lands in a narrow posterior (weight up to (σ_flow/σ_post)^D)
swamp the rest. These weights guide the fits and decide when to freeze; they are not returned
(unless the budget ends first), because the recycling biases them: each proposal is fitted to
the heaviest draws and then evaluated at them, which lowers the weight of exactly the draws that
reached where the earlier proposals were thin — the posterior's tails. Measured: the mass beyond
2σ of a curved ridge (exact 0.0455) came out at 0.036 ± 0.001 with these weights, 0.042 ± 0.001
from the frozen rounds (tests/test_adaptive.py); on 1024 simulated Gaia+2MASS+WISE stars at ESS
1000 the 68 % coverage of teff rose from 0.657 to 0.679 (benchmarks/bench_adaptive.py). The
frozen proposal is fixed before its draws are made, so the frozen rounds are plain importance
sampling: unbiased for the normalising constant (``log_evidence``: the mean of their weights)
and consistent for the posterior. ``khat`` is PSIS k̂ of the returned weights.

Per-row independence: every random number of row b comes from ``seeds[b]`` (folded with the
round and the purpose), and every step (locate, EM, stopping) is per row, so a row's result
does not depend on which other rows share its batch: seed rows from a stable key
(:func:`star_seeds` with e.g. ``source_id``) and a catalogue gives the same answer however it is
chunked, bit for bit — the batch and every subset of rows a step works on are padded to a
multiple of 8 rows (:mod:`irisml_tf.inference.rows`: otherwise the CPU kernels' scalar tail
rounds some rows' exp/log differently, and the rounds amplify an ulp into other draws).

All TensorFlow ops: rounds are a ``tf.while_loop`` over the still-active rows (gathered, so that
finished rows cost nothing), with per-row storage of the draw slots; B is dynamic, the options
are static. Traceable into a ``tf.function`` / SavedModel signature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from irisml_tf.inference import mixture
from irisml_tf.inference.importance import effective_sample_size, importance_weights
from irisml_tf.inference.locate import MAX_VAR, MIN_VAR, anchor_mixture, locate, to_u
from irisml_tf.inference.psis import psis
from irisml_tf.inference.rows import pad_batch, row_indices, scatter_rows

__all__ = [
    "AdaptiveOptions",
    "AdaptiveResult",
    "adaptive_importance_sampling",
    "by_weighted_slots",
    "fold_seeds",
    "row_normal",
    "star_seeds",
]

_F64 = tf.float64
_DEFENSIVE_EM = 8  # EM steps of the defensive mixture (once per row)
_ZERO64, _NINF64 = np.float64(0.0), np.float64(-np.inf)  # tf.where needs float64 fillers


@dataclass(frozen=True)
class AdaptiveOptions:
    """Static settings of :func:`adaptive_importance_sampling` (shapes depend on them).

    target_ess: stop a row once its ESS reaches this. max_draws: draw budget per row, round 0
    included (the storage); rounds beyond it are not started. n0: round-0 flow draws.
    draws_per_round: draws per round ≥ 1. max_rounds: cap on rounds ≥ 1 (None: as many as
    max_draws allows). alpha: share of the defensive component in each proposal.
    num_components: K fitted components. df: ν of the Student-t components (math.inf:
    Gaussian). locate_starts, locate_steps, newton_steps, learning_rate (Adam step at the first
    and last step, in flow σ), merge_distance (Mahalanobis): the mode search
    (:func:`irisml_tf.inference.locate.locate`). locate_ess: rows whose round-0 ESS is below
    this are located (0: never; inf: always). temper_ess: ESS the tempered fit weights must
    reach. prior_count: pseudo-draws of the anchors in each EM fit. em_iterations: EM steps per
    round. widen: factor on fitted scales. fit_draws: EM uses at most this many draws (the
    heaviest) per row. defensive_components: t components of the defensive mixture.
    freeze_at: share of target_ess at which the adaptive rounds end and the frozen rounds begin
    (step 3 of the module docstring; math.inf: never, every adaptive round's weights are returned
    as exports before this option did).

    Defaults, measured on the shipped model (simulated stars, 25 bands and Gaia+2MASS+WISE,
    batches of 64, benchmarks/bench_adaptive.py): n0 = 256 (a flow draw costs ~34 µs, ~20x a
    25-band target evaluation: round 0 is kept small, it only seeds the search); 2 starts, 25
    Adam steps, ≤ 20 Newton steps (on 61 of 64 25-band stars within 1 nat of the modes that 4
    starts and 50 steps find, at half that cost; ≤ 5 Newton steps left 11 of 64 more than
    1 nat short); widen 1.6 with prior_count 0.5 (was 1.3 and 10: the fits were held near the
    Laplace anchors and reached the far ends of long, correlated posteriors slowly; measured on the
    evaluation's simulated stars, 256 per set, ESS 1000: reach all bands 0.965 → 0.988,
    Gaia+2MASS+WISE 0.949 → 0.988, Gaia 0.40 → 0.61 (128 stars); k̂ > 0.7 6.6 → 5.9 %, 2.7 →
    1.2 %; bench_infer's library path 47–48 → 31–40 ms/star (25 bands, interleaved runs; the
    SavedModel path unchanged, 66 vs 68 ms/star); on 512
    plain 25-band stars at 0.01 mag the outward PIT shift against the exact reference falls by
    0.001–0.003 of its 0.006–0.009; widen 1.1 had given k̂ > 0.7 for 7.8 % of 25-band stars);
    K = 4, ν = 5, 4 EM steps on 512 draws (K = 8, ν = 3 or 8 steps on 1024 draws: no better, up
    to +80 % CPU); rounds of 1000 (rounds of 500: fewer draws, more rounds, same CPU). Defensive:
    4 components, α = 0.2 (the plain-generator check of benchmarks/bench_calibration.py, 1024
    Gaia+2MASS+WISE stars against brute-force flow importance sampling: one t on the flow draws'
    moments at α = 0.1 cut the ends of long teff–A_V ridges, truths in the extreme 5 % of the
    posterior for 7.8 % (teff) and 8.1 % (A_V) of stars; 4 components at α = 0.2 halve the
    excess, at the same cost per star).
    """

    target_ess: float = 1000.0
    max_draws: int = 20000
    n0: int = 256
    draws_per_round: int = 1000
    max_rounds: int | None = None
    alpha: float = 0.2
    num_components: int = 4
    df: float = 5.0
    locate_starts: int = 2
    locate_steps: int = 25
    newton_steps: int = 20
    locate_ess: float = math.inf
    learning_rate: tuple[float, float] = (0.3, 0.01)
    merge_distance: float = 2.0
    temper_ess: float = 100.0
    prior_count: float = 0.5
    em_iterations: int = 4
    widen: float = 1.6
    fit_draws: int = 512
    defensive_components: int = 4
    freeze_at: float = 1.0

    def __post_init__(self):
        ints = {"max_draws": 1, "n0": 8, "draws_per_round": 8, "num_components": 1, "defensive_components": 1,
                "locate_starts": 1, "locate_steps": 0, "newton_steps": 1, "em_iterations": 1,
                "fit_draws": 16}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"AdaptiveOptions.{name} must be an integer ≥ {low}, got {v!r}")
        if self.max_rounds is not None and (isinstance(self.max_rounds, bool) or not isinstance(
                self.max_rounds, (int, np.integer)) or self.max_rounds < 0):
            raise ValueError(f"AdaptiveOptions.max_rounds must be None or an integer ≥ 0, "
                             f"got {self.max_rounds!r}")
        if self.max_draws < self.n0:
            raise ValueError(f"AdaptiveOptions.max_draws ({self.max_draws}) must be ≥ n0 ({self.n0})")
        lr = tuple(self.learning_rate)
        checks = {"target_ess": 0 < self.target_ess < math.inf, "alpha": 0 <= self.alpha < 1,
                  "df": self.df > 2, "locate_ess": self.locate_ess >= 0,
                  "merge_distance": 0 <= self.merge_distance < math.inf,
                  "temper_ess": 1 <= self.temper_ess < math.inf,
                  "prior_count": 0 < self.prior_count < math.inf,
                  "widen": 1 <= self.widen < math.inf,
                  "freeze_at": 0 < self.freeze_at <= 1 or self.freeze_at == math.inf,
                  "learning_rate": len(lr) == 2 and all(0 < v <= 10 for v in lr)}
        for name, ok in checks.items():
            if not ok:
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


class AdaptiveResult(NamedTuple):
    """Per row: draws [B, M, D] (unused slots zero), log_weights [B, M] (−inf where no weight:
    unused slots, and the round-0 draws of a row that had fit rounds), weights [B, M]
    (normalised), ess, khat, log_evidence [B] (float32), n_draws (all draws made, round 0
    included), n_target_evals (every point at which log π or its gradient was taken, a Hessian
    counted as D), rounds (sampling rounds, round 0 included), weighted_rounds (the rounds whose
    draws carry the weights, as :func:`by_weighted_slots` takes them), n_modes (distinct located modes;
    0 if not located) [B] int32, converged [B] bool (ESS ≥ target_ess)."""

    draws: tf.Tensor
    log_weights: tf.Tensor
    weights: tf.Tensor
    ess: tf.Tensor
    khat: tf.Tensor
    log_evidence: tf.Tensor
    n_draws: tf.Tensor
    n_target_evals: tf.Tensor
    rounds: tf.Tensor
    weighted_rounds: tf.Tensor
    n_modes: tf.Tensor
    converged: tf.Tensor


# -- per-row randomness ---------------------------------------------------------------------------
def star_seeds(seed, keys):
    """Per-row stateless seeds int32 [B, 2]: ``seed`` (int32 [2]) folded with each row's key
    (int64 [B], e.g. ``source_id`` or a global row number; both 32-bit halves are folded in).
    Same key, same seed, whatever the batch."""
    seed = tf.cast(seed, tf.int32)
    halves = tf.bitcast(tf.cast(keys, tf.int64), tf.int32)  # [B, 2]

    def one(h):
        fold = tf.random.experimental.stateless_fold_in
        return fold(fold(seed, h[0]), h[1])
    return tf.map_fn(one, halves, fn_output_signature=tf.TensorSpec([2], tf.int32))


def fold_seeds(seeds, value):
    """Each row's seed folded with ``value`` (a round or a purpose): [A, 2]."""
    return tf.map_fn(lambda s: tf.random.experimental.stateless_fold_in(s, value), seeds,
                     fn_output_signature=tf.TensorSpec([2], tf.int32))


def row_normal(seeds, n, dim: int):
    """Standard normals [A, n, dim], row a from ``seeds[a]`` only."""
    return tf.map_fn(lambda s: tf.random.stateless_normal(tf.stack([n, dim]), s), seeds,
                     fn_output_signature=tf.TensorSpec([None, dim], tf.float32))


def _mixture_randomness(seeds, n: int, dim: int, df: float):
    """Per-row (normals [A, n, D], uniforms [A, n], χ²_ν [A, n]) for mixture draws. For an
    integer ν ≤ 16, χ²_ν is a sum of ν squared normals drawn with the D others (a per-row
    gamma draw cost ~6 % of a 25-band star's time)."""
    extra = int(df) if not math.isinf(df) and float(df).is_integer() and df <= 16 else 0

    def one(s):
        s = tf.random.experimental.stateless_split(s, 3)
        z = tf.random.stateless_normal([n, dim + extra], s[0])
        if math.isinf(df):
            chi2 = tf.ones([n])
        elif extra:
            chi2 = tf.reduce_sum(tf.square(z[:, dim:]), -1)
        else:
            chi2 = 2.0 * tf.random.stateless_gamma([n], s[2], alpha=0.5 * df)
        return z[:, :dim], tf.random.stateless_uniform([n], s[1], minval=1e-7, maxval=1.0), chi2
    spec = (tf.TensorSpec([n, dim], tf.float32), tf.TensorSpec([n], tf.float32),
            tf.TensorSpec([n], tf.float32))
    return tf.map_fn(one, seeds, fn_output_signature=spec)


# -- weights --------------------------------------------------------------------------------------
def _tempered_counts(lw, temper_ess: float):
    """Fit weights from log weights lw [A, N]: w^β with the largest β ≤ 1 whose ESS reaches
    ``temper_ess`` (β = 0 if none: equal weights on the finite ones; all equal if none is finite),
    scaled to sum to that ESS, float64 (units of effective draws)."""
    lw = tf.cast(lw, _F64)
    finite = tf.math.is_finite(lw)
    none = ~tf.reduce_any(finite, -1, keepdims=True)
    finite = finite | none
    lw = tf.where(none, _ZERO64, lw)
    top = tf.reduce_max(tf.where(finite, lw, _NINF64), -1, keepdims=True)
    centred = tf.where(finite, lw - top, _ZERO64)

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


def _log_weights(lp, lq, ld, fit_rounds, final_rounds, opt: AdaptiveOptions):
    """Log weights [A, N] of slots 0..N−1. Adapting rows (``final_rounds`` [A] = 0): ``lq``
    holds log q_flow on the n0 round-0 slots and log Σ_r f_r over the row's ``fit_rounds`` [A]
    fits f_r on the others, ``ld`` log d of the defensive mixture d there; with R = fit_rounds
    ≥ 1 the round-0 slots get −inf and the others π / ((1/R) Σ_r q_r) with
    q_r = (1 − α) f_r + α d, with R = 0 the round-0 slots get π/q_flow. (d is the same in every
    round: its density is taken once per draw, not once per round.) Frozen rows (final_rounds
    F ≥ 1): slots n0 … n0 + F·draws_per_round hold the frozen proposal's draws, ``lq`` = log f
    of its fit, and get π / q; every other slot −inf."""
    n0, alpha = opt.n0, opt.alpha
    frozen = final_rounds > 0
    log_r = tf.math.log(tf.cast(tf.where(frozen, 1, fit_rounds), tf.float32))[:, None]
    slot = tf.range(tf.shape(lp)[1])[None, :]
    log_fit = np.log1p(-alpha) + lq - log_r
    log_mix = _logaddexp(log_fit, np.log(alpha) + ld) if alpha > 0 else log_fit
    lw = tf.where(slot < n0, tf.where(log_r > -np.inf, -np.inf, lp - lq), lp - log_mix)
    stale = frozen[:, None] & (slot >= n0 + opt.draws_per_round * final_rounds[:, None])
    return tf.where(tf.math.is_finite(lw) & ~stale, lw, -np.inf)


def _ess(lw):
    has = tf.reduce_any(tf.math.is_finite(lw), -1, keepdims=True)
    return effective_sample_size(tf.where(has, tf.nn.softmax(tf.where(has, lw, 0.0), -1), 0.0))


# -- rounds ---------------------------------------------------------------------------------------
class _State(NamedTuple):
    """Per-row loop state ([B, ...]); props holds every fit round's fit [B, R, K, ...] (the
    defensive mixture, the same in every round, is kept once). ``ess`` is the ESS of the row's
    current weights (the adaptive rounds', or once frozen with final_rounds ≥ 1, the frozen
    proposal's draws')."""

    u: tf.Tensor
    lp: tf.Tensor
    lq: tf.Tensor  # round 0: log q_flow; later: log Σ_r f_r(u) over the row's fit rounds' fits
    ld: tf.Tensor  # log d(u) of the defensive mixture (fit-round slots)
    props: mixture.Mixture
    anchors: mixture.Mixture
    defensive: mixture.Mixture
    located: tf.Tensor
    scale: tf.Tensor
    fit_rounds: tf.Tensor
    final_rounds: tf.Tensor  # rounds whose draws came from the frozen proposal (> 0: frozen)
    evals: tf.Tensor
    ess: tf.Tensor
    active: tf.Tensor
    seeds: tf.Tensor


def _gather(nest, idx):
    return tf.nest.map_structure(lambda t: tf.gather(t, idx), nest)


def _select(rows, a, b):
    """Per row: a where rows [A] is true, else b (nests of [A, ...] tensors)."""
    return tf.nest.map_structure(
        lambda x, y: tf.where(tf.reshape(rows, [-1] + [1] * (x.shape.rank - 1)), x, y), a, b)


def _round_fit(s: _State, lw, prev: mixture.Mixture, r, opt: AdaptiveOptions) -> mixture.Mixture:
    """This round's fit: the anchors in round 1 of a located row, else EM on the heaviest
    ``fit_draws`` weighted draws, started from the previous fit (round 1: the anchors).

    The heaviest draws, not a representative resample: they mark where the proposals so far are
    too thin, and fitting them moves mass there. Measured on 128 simulated stars per band set
    (ESS 1000), a systematic resample of all draws gave lower ESS per evaluation (25 bands
    0.30 vs 0.33, Gaia+2MASS+WISE 0.12 vs 0.14) and more k̂ > 0.7 (25 bands 7.8 % vs 3.1 %)."""
    top = tf.math.top_k(lw, k=tf.minimum(opt.fit_draws, tf.shape(lw)[1]))
    x = tf.cast(tf.gather(s.u, top.indices, batch_dims=1), _F64)
    counts = _tempered_counts(top.values, opt.temper_ess)
    first = tf.equal(r, 1)
    init = _select(tf.fill(tf.shape(s.located), first), s.anchors, prev)
    em = mixture.fit(init, s.anchors, x, counts, opt.df, opt.em_iterations, opt.prior_count,
                     opt.widen, tf.cast(s.scale, _F64), MIN_VAR, MAX_VAR)
    return _select(s.located & first, s.anchors, em)


def _with_defensive(fit: mixture.Mixture, defensive: mixture.Mixture, alpha: float) -> mixture.Mixture:
    """α·defensive + (1 − α)·fit as one mixture of K + Kd components (the defensive ones last)."""
    log_w = tf.concat([fit.log_weights + np.log1p(-alpha),
                       defensive.log_weights + (np.log(alpha) if alpha > 0 else -np.inf)], 1)
    return mixture.Mixture(log_w, tf.concat([fit.loc, defensive.loc], 1),
                           tf.concat([fit.scale_tril, defensive.scale_tril], 1))


def _sum_props(props: mixture.Mixture, rounds, u, df: float):
    """log Σ_{j < rounds} f_j(u) [A, N] over the stored fits [A, R, K, ...]."""
    def body(j, acc):
        prop = tf.nest.map_structure(lambda t: tf.gather(t, j, axis=1), props)
        return j + 1, _logaddexp(acc, mixture.log_prob(prop, u, df))

    acc = tf.fill(tf.shape(u)[:2], tf.constant(-np.inf, tf.float32))
    return tf.while_loop(lambda j, _: j < rounds, body, (tf.constant(0), acc))[1]


def _write(old, new, block, n0: int):
    """old [A, M, ...] with new [A, n, ...] written over slots n0 + n·block[a] … of row a (the
    slots after round 0 as blocks of one round's draws: an elementwise select, no gather)."""
    rest = old[:, n0:]
    blocks = tf.reshape(rest, tf.concat([tf.stack([tf.shape(old)[0], -1, tf.shape(new)[1]]), tf.shape(old)[2:]], 0))
    hit = tf.equal(tf.range(tf.shape(blocks)[1])[None, :], block[:, None])
    hit = tf.reshape(hit, tf.concat([tf.shape(hit), tf.ones([new.shape.rank - 1], tf.int32)], 0))
    blocks = tf.where(hit, new[:, None], blocks)
    return tf.concat([old[:, :n0], tf.reshape(blocks, tf.shape(rest))], 1)


def _round(r, s: _State, conditions, log_target, dim: int, opt: AdaptiveOptions, target) -> _State:
    """Round r ≥ 1 for the active rows (gathered), written back into the state. An adapting row
    fits a new proposal and appends its draws; a frozen row draws from its last fit (kept in
    props) and writes its draws over the adaptive ones, from slot n0 on."""
    idx, count = row_indices(s.active)
    sub, cond = _gather(s, idx), _gather(conditions, idx)
    n, n0 = opt.draws_per_round, opt.n0
    filled = n0 + n * (r - 1)  # an adapting row has had every round so far
    frozen = sub.final_rounds > 0
    lw = _log_weights(sub.lp[:, :filled], sub.lq[:, :filled], sub.ld[:, :filled], sub.fit_rounds,
                      sub.final_rounds, opt)
    last = tf.nest.map_structure(lambda t: tf.gather(t, tf.maximum(sub.fit_rounds - 1, 0), axis=1, batch_dims=1),
                                 sub.props)
    adapting = tf.reduce_any(~frozen)  # late rounds often have frozen rows only: no fits then
    fit = tf.cond(adapting, lambda: _select(frozen, last, _round_fit(sub, lw, last, r, opt)), lambda: last)
    prop = _with_defensive(fit, sub.defensive, opt.alpha)
    noise = _mixture_randomness(fold_seeds(fold_seeds(sub.seeds, r), 2), n, dim, opt.df)
    u_new = tf.cast(mixture.sample(prop, opt.df, *noise), tf.float32)
    lp_new = log_target(cond, u_new)
    lp_new = tf.where(tf.math.is_finite(lp_new), lp_new, -np.inf)

    in_round = tf.equal(tf.range(opt.rounds), r - 1)[None, :] & ~frozen[:, None]
    props = tf.nest.map_structure(
        lambda all_, p: tf.where(tf.reshape(in_round, [-1, opt.rounds] + [1] * (p.shape.rank - 1)),
                                 p[:, None], all_), sub.props, fit)
    def add_fit():  # the new fit's density at the adapting rows' earlier draws
        lq = _logaddexp(sub.lq[:, n0:filled], mixture.log_prob(fit, sub.u[:, n0:filled], opt.df))
        return tf.concat([sub.lq[:, :n0], tf.where(frozen[:, None], sub.lq[:, n0:filled], lq), sub.lq[:, filled:]], 1)

    lq_old = tf.cond(adapting, add_fit, lambda: sub.lq)
    lf_new = tf.cast(mixture.log_prob(fit, u_new, opt.df), tf.float32)
    # an adapting row's new draws under all its fits: the earlier ones, and this round's (lf_new)
    lq_new = tf.cond(adapting, lambda: tf.where(frozen[:, None], lf_new,
                                                _logaddexp(_sum_props(props, r - 1, u_new, opt.df), lf_new)),
                     lambda: lf_new)
    ld_new = tf.cast(mixture.log_prob(sub.defensive, u_new, opt.df), tf.float32)

    block = tf.where(frozen, sub.final_rounds, sub.fit_rounds)
    fit_rounds = sub.fit_rounds + tf.cast(~frozen, tf.int32)
    final_rounds = sub.final_rounds + tf.cast(frozen, tf.int32)
    pairs = ((sub.u, u_new), (sub.lp, lp_new), (lq_old, lq_new), (sub.ld, ld_new))
    u, lp, lq, ld = (_write(a, b, block, n0) for a, b in pairs)
    ess = _ess(_log_weights(lp[:, :filled + n], lq[:, :filled + n], ld[:, :filled + n], fit_rounds,
                            final_rounds, opt))
    if math.isfinite(opt.freeze_at):
        # The adaptive rounds end once their ESS reaches freeze_at · target. Their weights are
        # biased: each fit is evaluated at the draws it was fitted to. This round's draws came
        # from its fit, fitted to earlier draws only: weighted by that proposal alone they are
        # the first draws of the frozen phase (written from slot n0 on), which then draws from
        # the same proposal until its own ESS reaches the target.
        freeze = ~frozen & (ess >= opt.freeze_at * target)
        def restart():
            first = tf.zeros_like(block)
            return tuple(_select(freeze, _write(a, b, first, n0), a)
                         for a, b in ((u, u_new), (lp, lp_new), (lq, lf_new), (ld, ld_new)))

        u, lp, lq, ld = tf.cond(tf.reduce_any(freeze), restart, lambda: (u, lp, lq, ld))
        final_rounds += tf.cast(freeze, tf.int32)
        ess = tf.where(freeze, _ess(_log_weights(lp[:, :n0 + n], lq[:, :n0 + n], ld[:, :n0 + n], fit_rounds,
                                                 final_rounds, opt)), ess)
    sub = sub._replace(u=u, lp=lp, lq=lq, ld=ld, props=props, fit_rounds=fit_rounds, final_rounds=final_rounds,
                       evals=sub.evals + n, ess=ess, active=ess < target)
    return scatter_rows(s, idx, count, sub)


def _anchors(log_target, conditions, x0, lw0, lp0, center, scale, ess0, opt: AdaptiveOptions, target):
    """Anchor mixtures [B, K] in u (located modes, else tempered round-0 moments), the number
    of located modes [B], which rows were located, and the target evaluations it took [B]."""
    b = tf.shape(x0)[0]
    mean, cov = mixture.moments(tf.cast(x0, _F64), _tempered_counts(lw0, opt.temper_ess))
    anchors, _ = anchor_mixture(mean[:, None], mixture.clip_covariance(cov[:, None], MIN_VAR, MAX_VAR),
                                tf.zeros([b, 1], _F64), tf.ones([b, 1], tf.bool), opt.num_components)
    n_modes = tf.zeros([b], tf.int32)
    evals = tf.zeros([b], tf.int32)
    find = (ess0 < opt.locate_ess) & (ess0 < target)
    if opt.rounds > 0 and opt.locate_ess > 0:
        idx, count = row_indices(find)
        found, modes, cost = locate(
            log_target, _gather(conditions, idx), tf.gather(x0, idx), tf.gather(lp0, idx),
            tf.gather(center, idx), tf.gather(scale, idx), starts=opt.locate_starts,
            steps=opt.locate_steps, newton_steps=opt.newton_steps,
            learning_rate=tuple(opt.learning_rate), merge_distance=opt.merge_distance,
            num_components=opt.num_components)
        anchors = scatter_rows(anchors, idx, count, _select(modes > 0, found, _gather(anchors, idx)))
        n_modes = scatter_rows(n_modes, idx, count, modes)
        evals = scatter_rows(evals, idx, count, cost)  # evals are 0 before: an update is an add
    return to_u(anchors, center, scale), n_modes, find & (n_modes > 0), evals


def _defensive(u0, scale, opt: AdaptiveOptions) -> mixture.Mixture:
    """The defensive mixture [B, Kd]: t_ν components fitted by EM to the row's round-0 flow
    draws u0 [B, n0, D] (unweighted), started at draws spread along their first principal axis.

    A stand-in for the flow that follows its shape: the flow's draws cover long, curved
    posteriors (the teff–A_V ridge of a star with few bands) that one t on their moments does not,
    and the ends of such a ridge, never drawn, were missing from the posterior (the engine's
    teff and A_V posteriors ~4 % too narrow on Gaia+2MASS+WISE stars, ends of the ridge cut;
    benchmarks/bench_calibration.py)."""
    x = tf.cast(u0, _F64)
    b, kd = tf.shape(x)[0], opt.defensive_components
    mean, cov = mixture.moments(x, tf.ones(tf.shape(x)[:2], _F64))
    scale = tf.cast(scale, _F64)
    cov = mixture.clip_covariance(cov, MIN_VAR, MAX_VAR, scale)
    if kd == 1:
        return mixture.Mixture(tf.zeros([b, 1], _F64), mean[:, None], tf.linalg.cholesky(cov)[:, None])
    axis = tf.linalg.eigh(cov)[1][..., -1]  # [B, D], the widest direction
    order = tf.argsort(tf.einsum("bnd,bd->bn", x - mean[:, None], axis), -1)
    picks = [int((j + 0.5) * opt.n0 / kd) for j in range(kd)]
    loc = tf.gather(x, tf.gather(order, picks, axis=1), batch_dims=1)  # [B, Kd, D]
    tril = tf.linalg.cholesky(mixture.clip_covariance(cov / kd ** 2, MIN_VAR, MAX_VAR, scale))
    init = mixture.Mixture(tf.fill(tf.stack([b, kd]), tf.constant(-math.log(kd), _F64)), loc,
                           tf.tile(tril[:, None], [1, kd, 1, 1]))
    return mixture.fit(init, init, x, tf.ones(tf.shape(x)[:2], _F64), opt.df, _DEFENSIVE_EM,
                       opt.prior_count, opt.widen, scale, MIN_VAR, MAX_VAR)


def _round_zero(conditions, seeds, log_target, flow_sample, dim: int, opt: AdaptiveOptions, target):
    """Round 0, the defensive mixture and the anchors: (state, n_modes [B])."""
    b = tf.shape(seeds)[0]
    u0, lq0 = flow_sample(conditions, opt.n0, fold_seeds(fold_seeds(seeds, 0), 1))
    lp0 = log_target(conditions, u0)
    lp0 = tf.where(tf.math.is_finite(lp0), lp0, -np.inf)
    none = tf.zeros([b], tf.int32)
    lw0 = _log_weights(lp0, lq0, tf.fill(tf.shape(lq0), -np.inf), none, none, opt)
    ess0 = _ess(lw0)
    center = tf.reduce_mean(u0, 1)
    scale = tf.maximum(tf.math.reduce_std(u0, 1), 1e-6)
    x0 = (u0 - center[:, None, :]) / scale[:, None, :]
    anchors, n_modes, located, evals = _anchors(log_target, conditions, x0, lw0, lp0, center,
                                                scale, ess0, opt, target)
    defensive = _defensive(u0, scale, opt)
    pad = opt.slots - opt.n0
    k, r = opt.num_components, max(opt.rounds, 1)
    props = mixture.Mixture(tf.fill(tf.stack([b, r, k]), tf.constant(-np.inf, _F64)),
                            tf.zeros(tf.stack([b, r, k, dim]), _F64),
                            tf.eye(dim, batch_shape=tf.stack([b, r, k]), dtype=_F64))
    state = _State(
        u=tf.pad(u0, [[0, 0], [0, pad], [0, 0]]),
        lp=tf.pad(lp0, [[0, 0], [0, pad]], constant_values=-np.inf),
        lq=tf.pad(lq0, [[0, 0], [0, pad]], constant_values=-np.inf),
        ld=tf.fill(tf.stack([b, opt.slots]), tf.constant(-np.inf, tf.float32)),
        props=props, anchors=anchors, defensive=defensive, located=located, scale=scale,
        fit_rounds=tf.zeros([b], tf.int32), final_rounds=tf.zeros([b], tf.int32), evals=evals + opt.n0, ess=ess0,
        active=ess0 < target, seeds=seeds)
    return state, n_modes


def by_weighted_slots(fn, nest, rounds, opt: AdaptiveOptions, init):
    """``fn`` on each row's weighted slots only: the rows are grouped by their ``rounds``
    [B] (:attr:`AdaptiveResult.weighted_rounds`), and a group sees the slots that carry its weights —
    round 0's n0 for rows with one, else that many rounds' blocks after them. ``nest``: tensors
    [B, M, ...] (the storage); ``fn`` maps their [A, m, ...] slices to a nest of [A, ...];
    ``init``: that nest at [B, ...], the value of rows in no group. Cost follows the draws each
    row made, not the storage (a weighted quantile over all 20 000 slots costs 5x one over a
    typical star's 4000)."""
    fit_rounds = tf.cast(rounds, tf.int32) - 1

    def body(j, acc):
        idx, count = row_indices(tf.equal(fit_rounds, j))
        start = 0 if opt.rounds == 0 else tf.where(j > 0, opt.n0, 0)
        stop = tf.where(j > 0, opt.n0 + opt.draws_per_round * j, opt.n0)

        def update():  # fn needs at least one row
            out = fn(tf.nest.map_structure(lambda t: tf.gather(t, idx)[:, start:stop], nest))
            return scatter_rows(acc, idx, count, out)
        return j + 1, tf.cond(count > 0, update, lambda: acc)

    return tf.while_loop(lambda j, _: j <= opt.rounds, body, (tf.constant(0), init))[1]


def _khat(lw, rounds, opt: AdaptiveOptions):
    """PSIS k̂ [B] of each row over its weighted draws only (the tail length follows the row's
    draws, not the storage)."""
    return by_weighted_slots(lambda x: psis(x)[1], lw, rounds, opt,
                             tf.fill(tf.shape(rounds), tf.constant(np.inf, tf.float32)))


def _finish(s: _State, n_modes, opt: AdaptiveOptions, target) -> AdaptiveResult:
    lw = _log_weights(s.lp, s.lq, s.ld, s.fit_rounds, s.final_rounds, opt)
    iw = importance_weights(lw, tf.zeros_like(lw), tf.zeros_like(lw), with_khat=False)
    weighted_rounds = tf.where(s.final_rounds > 0, s.final_rounds, s.fit_rounds)
    weighted = tf.where(weighted_rounds > 0, opt.draws_per_round * weighted_rounds, opt.n0)
    # importance_weights averages over all M slots; the row's estimate over its weighted draws
    log_evidence = iw["log_evidence"] + math.log(opt.slots) - tf.math.log(tf.cast(weighted, tf.float32))
    rounds = s.fit_rounds + tf.maximum(s.final_rounds - 1, 0)  # the last fit round is the first frozen one
    return AdaptiveResult(
        draws=s.u, log_weights=iw["log_weights"], weights=iw["weights"], ess=iw["ess"],
        khat=_khat(iw["log_weights"], weighted_rounds + 1, opt), log_evidence=log_evidence,
        n_draws=opt.n0 + opt.draws_per_round * rounds, n_target_evals=s.evals,
        rounds=rounds + 1, weighted_rounds=weighted_rounds + 1, n_modes=n_modes,
        converged=iw["ess"] >= target)


@tf.autograph.experimental.do_not_convert  # no data-dependent Python control flow to convert
def adaptive_importance_sampling(log_target, flow_sample, conditions, seeds, dim: int,
                                 options: AdaptiveOptions | None = None, target_ess=None,
                                 max_draws=None) -> AdaptiveResult:
    """Weighted draws of each row's target π_b (see the module docstring for the callables).

    Args:
      log_target, flow_sample: the target and the flow, as described above.
      conditions: nest of tensors with leading dimension B (may be empty: ``()``).
      seeds: int32 [B, 2], one stateless seed per row (:func:`star_seeds`).
      dim: D (static). options: :class:`AdaptiveOptions` (static).
      target_ess: overrides ``options.target_ess``; may be a scalar tensor (a SavedModel input:
        it changes no shape).
      max_draws: a lower draw budget than ``options.max_draws`` (which sizes the storage); may be
        a scalar tensor: rounds beyond it are not started.

    Returns :class:`AdaptiveResult`. Same seeds, same result.
    """
    opt = options or AdaptiveOptions()
    dim = int(dim)
    (conditions, seeds), b = pad_batch((conditions, tf.cast(seeds, tf.int32)))
    target = tf.cast(opt.target_ess if target_ess is None else target_ess, tf.float32)
    state, n_modes = _round_zero(conditions, seeds, log_target, flow_sample, dim, opt, target)
    if opt.rounds > 0:
        limit = opt.rounds
        if max_draws is not None:
            limit = tf.clip_by_value((tf.cast(max_draws, tf.int32) - opt.n0) // opt.draws_per_round, 0, opt.rounds)

        def cond(r, s):
            return (r <= limit) & tf.reduce_any(s.active)

        def body(r, s):
            return r + 1, _round(r, s, conditions, log_target, dim, opt, target)

        _, state = tf.while_loop(cond, body, (tf.constant(1), state))
    return AdaptiveResult(*(t[:b] for t in _finish(state, n_modes, opt, target)))
