"""The MCMC reference: emcee (Foreman-Mackey et al. 2013) on the same posterior as importance sampling.

    log p(θ | x, ϖ) = log p(x | θ) + log p(ϖ | θ) + log p(θ) + const

with the likelihood of the engine, :func:`~irisml_tf.inference.posterior_target.log_likelihood_with_parallax`
(μ marginalised, the one simulator; the parallax term where the star has a parallax, under the
model's mass prior) and log p(θ) from :meth:`~irisml_tf.physics.prior.Prior.log_prob` with the
same prior parameters and per-star A_V prior as the engine. No second copy of the physics:
:class:`LogPosterior` only adds the two. emcee runs with ``vectorize=True``, so each
half-ensemble move is one TensorFlow call; the call is one ``tf.function`` with a fixed input
signature, so the stars of a catalogue share one trace as long as the caller keeps one
:class:`LogPosterior` for them.

Convergence (:class:`Convergence`): a chain is trusted when its post-burn part is at least
:data:`CONVERGED_TAUS` integrated autocorrelation times τ long (emcee's rule) and τ is stable: τ
estimated on the first three quarters of the post-burn chain is within :data:`TAU_RTOL` of τ on
all of it (an estimate that still grows with the chain means the chain has not yet seen the
posterior's slowest direction). :func:`run_mcmc` runs in segments until that holds (and, if asked,
until a target ESS is reached), up to ``max_steps``.

:func:`mcmc_reference` is the one MCMC-vs-NPE comparison of a star (``irisml-tf mcmc``,
``irisml-tf evaluate``'s corner star, benchmarks/bench_vs_mcmc.py): walkers started from the prior
or from NPE draws, the chain, and :func:`compare_to_npe` of the flow's draws and of the
importance-weighted ones. One star per call: band_index, mag, mag_err are 1-D [K].
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from irisml_tf.inference.likelihood import default_sys_floor
from irisml_tf.inference.posterior_target import log_likelihood_with_parallax
from irisml_tf.inference.summaries import summarize, weighted_quantiles
from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["CONVERGED_TAUS", "TAU_RTOL", "CONDITION_NAMES", "LogPosterior", "condition_vector", "ChainOptions",
           "Convergence", "convergence", "MCMCResult", "run_mcmc", "prior_init", "npe_init", "compare_to_npe",
           "Reference", "mcmc_reference", "INIT_CHOICES", "result_columns"]

#: a chain (after burn-in) at least this many autocorrelation times long is trusted (emcee's rule)
CONVERGED_TAUS = 50.0
#: ... if τ on its first three quarters is within this fraction of τ on all of it
TAU_RTOL = 0.10
#: walker starts of :func:`mcmc_reference`
INIT_CHOICES = ("prior", "npe")
_N_INIT = 4096  # prior draws ranked for the default initialisation
_MIN_BLOCK = 200  # smallest extension of a chain
_MARGIN = 1.2  # extend to 1.2 × the length the current τ asks for: τ tends to grow with the chain
#: a star's conditions beyond its photometry (NaN = none): the zero-point-corrected parallax and its
#: error (mas), the per-star A_V prior (mag)
CONDITION_NAMES = ("plx", "plx_err", "av_prior", "av_prior_err", "av_max")


class LogPosterior:
    """log p(x, ϖ | θ) + log p(θ) for one star at many θ, as one compiled TensorFlow call: the
    engine's target (:func:`~irisml_tf.inference.posterior_target.posterior_problem`) in θ.

    ``lp(theta, band_index, mag, mag_err, conditions=None)``: theta [N, 5] (physical units), the
    star's band_index int32 [K] (−1 = pad), mag, mag_err [K], ``conditions`` a mapping of
    :data:`CONDITION_NAMES` (missing or NaN = none) or the float32 [5] vector of
    :func:`condition_vector` → float64 numpy [N] (−inf outside the prior's support or where an
    observed band is invalid in the model). ``sys_floor``: systematic floor (mag) added in
    quadrature; None = the default observation model's. ``prior_params``: the prior's parameters
    (None = ``prior``'s own); ``mass_prior``: the parallax term's (None = its default). Keep one
    for all the stars of a job: they share its trace.
    """

    def __init__(self, simulator, prior, sys_floor: float | None = None, *, prior_params=None, mass_prior=None):
        self.simulator, self.prior = simulator, prior
        self.sys_floor = default_sys_floor() if sys_floor is None else float(sys_floor)
        self.prior_params = tf.constant(prior.params if prior_params is None else prior_params, tf.float32)
        self.mass_prior = mass_prior
        self.n_calls = 0  # θ evaluated (walker positions), for the cost accounting
        self._fn = tf.function(self._log_post, reduce_retracing=True, input_signature=[
            tf.TensorSpec([None, 5], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([len(CONDITION_NAMES)], tf.float32)])

    def _log_post(self, theta, band_index, mag, mag_err, conditions):
        plx, plx_err, av_prior, av_prior_err, av_max = tf.unstack(conditions[:, None])  # each [1]
        inputs = {"band_index": band_index[None], "mag": mag[None], "mag_err": mag_err[None],
                  "plx": plx, "plx_err": plx_err}
        log_lik = log_likelihood_with_parallax(self.simulator, theta[None], inputs, self.sys_floor,
                                               self.mass_prior)[0]
        log_prior = self.prior.log_prob(theta[None], self.prior_params, av_prior, av_prior_err, av_max)[0]
        # the likelihood is not evaluated meaningfully outside the prior: keep −inf, never NaN
        return tf.where(log_prior > -np.inf, log_lik + log_prior, -np.inf)

    def __call__(self, theta, band_index, mag, mag_err, conditions=None) -> np.ndarray:
        theta = np.asarray(theta, np.float32)
        self.n_calls += len(theta)
        out = self._fn(tf.constant(theta), tf.constant(band_index, tf.int32),
                       tf.constant(mag, tf.float32), tf.constant(mag_err, tf.float32),
                       tf.constant(condition_vector(conditions)))
        return out.numpy().astype(np.float64)


def condition_vector(conditions=None) -> np.ndarray:
    """float32 [5] in the order of :data:`CONDITION_NAMES` from a mapping (missing = NaN), a
    vector of that shape, or None (no parallax, no per-star A_V prior)."""
    if conditions is None:
        return np.full(len(CONDITION_NAMES), np.nan, np.float32)
    if isinstance(conditions, Mapping):
        unknown = set(conditions) - set(CONDITION_NAMES)
        if unknown:
            raise ValueError(f"`conditions`: unknown key(s) {sorted(unknown)}; known: {', '.join(CONDITION_NAMES)}")
        return np.array([conditions.get(k, np.nan) for k in CONDITION_NAMES], np.float32)
    vec = np.asarray(conditions, np.float32)
    if vec.shape != (len(CONDITION_NAMES),):
        raise ValueError(f"`conditions` must be a mapping or a vector of {len(CONDITION_NAMES)}, got {vec.shape}")
    return vec


@dataclass(frozen=True)
class ChainOptions:
    """How long :func:`run_mcmc` samples.

    Attributes:
      nwalkers: ensemble size (even, ≥ 10 = 2 × 5 parameters).
      nsteps: steps per walker of the first segment, burn-in included.
      burn: burn-in steps discarded from the start of the chain.
      max_steps: the cap on the whole chain (steps per walker); None = ``nsteps``, i.e. a chain of
        fixed length. Above ``nsteps``, the chain is extended in segments until the stopping rule
        holds or the cap is reached.
      until_converged: the stopping rule includes :attr:`Convergence.converged`.
      target_ess: the stopping rule includes min per-parameter ESS ≥ this (None = no ESS target).
    """

    nwalkers: int = 32
    nsteps: int = 2000
    burn: int = 500
    max_steps: int | None = None
    until_converged: bool = True
    target_ess: float | None = None

    def __post_init__(self):
        if self.nwalkers < 10 or self.nwalkers % 2:
            raise ValueError(f"`nwalkers` must be even and ≥ 10 (2 × 5 parameters), got {self.nwalkers}")
        if not 0 <= self.burn < self.nsteps:
            raise ValueError(f"need 0 ≤ `burn` < `nsteps`, got burn={self.burn}, nsteps={self.nsteps}")
        if self.max_steps is not None and self.max_steps < self.nsteps:
            raise ValueError(f"`max_steps` ({self.max_steps}) must be ≥ `nsteps` ({self.nsteps})")
        if self.target_ess is not None and not self.target_ess > 0:
            raise ValueError(f"`target_ess` must be > 0, got {self.target_ess}")

    @property
    def cap(self) -> int:
        """The most steps per walker the chain may have."""
        return self.nsteps if self.max_steps is None else int(self.max_steps)


@dataclass(frozen=True)
class Convergence:
    """τ of a chain and the convergence rule (module docstring).

    Attributes:
      tau: [5] integrated autocorrelation time per parameter (steps) of the post-burn chain
        (emcee's estimator, ``c=5``, no length check); inf where it cannot be estimated.
      tau_early: [5] the same on the first three quarters of the post-burn chain.
      length: post-burn steps per walker.
    """

    tau: np.ndarray
    tau_early: np.ndarray
    length: int

    @property
    def taus_long(self) -> float:
        """The post-burn chain's length in units of the largest τ (0 if τ is not finite)."""
        t = float(np.max(self.tau))
        return self.length / t if np.isfinite(t) else 0.0

    @property
    def tau_change(self) -> float:
        """max over parameters of |τ − τ_early| / τ (inf if τ is not finite)."""
        if not np.all(np.isfinite(self.tau)):
            return float("inf")
        return float(np.max(np.abs(self.tau - self.tau_early) / self.tau))

    @property
    def long_enough(self) -> bool:
        return self.taus_long >= CONVERGED_TAUS

    @property
    def stable(self) -> bool:
        return self.tau_change <= TAU_RTOL

    @property
    def converged(self) -> bool:
        return self.long_enough and self.stable

    def note(self) -> str:
        """Why the chain is not converged, in words ('' if it is)."""
        if not np.all(np.isfinite(self.tau)):
            return "τ not estimable (a walker never moved)"
        why = []
        if not self.long_enough:
            why.append(f"{self.taus_long:.1f} τ long, needs {CONVERGED_TAUS:g} τ")
        if not self.stable:
            why.append(f"τ still changing ({100 * self.tau_change:.0f} % > {100 * TAU_RTOL:g} %)")
        return ", ".join(why)


def _tau(chain: np.ndarray) -> np.ndarray:
    import emcee

    with np.errstate(invalid="ignore", divide="ignore"):  # a walker that never moved: τ = NaN
        tau = np.asarray(emcee.autocorr.integrated_time(chain, c=5, tol=0, quiet=True), np.float64)
    return np.where(np.isfinite(tau) & (tau > 0), tau, np.inf)


def convergence(chain: np.ndarray, burn: int) -> Convergence:
    """:class:`Convergence` of ``chain`` [nsteps, nwalkers, 5] after discarding ``burn`` steps."""
    post = np.asarray(chain)[burn:]
    n = len(post)
    return Convergence(tau=_tau(post), tau_early=_tau(post[:max(3 * n // 4, 1)]), length=n)


@dataclass
class MCMCResult:
    """One star's chain. Shapes: M = (nsteps − burn) · nwalkers flat samples.

    Attributes:
      samples: [M, 5] after burn-in, flattened (walker-major within a step, as emcee's flat chain).
      chain: [nsteps, nwalkers, 5], everything including burn-in.
      log_prob: [nsteps, nwalkers] log posterior (up to a constant).
      tau: [5] integrated autocorrelation time per parameter (steps) after burn-in
        (:attr:`convergence` holds the rest of the rule).
      ess: [5] = M / tau.
      converged: :attr:`Convergence.converged` (≥ :data:`CONVERGED_TAUS` τ long, τ stable).
      capped: the chain stopped at ``max_steps`` (= ``nsteps`` for a fixed length) before its
        stopping rule held.
      acceptance: mean acceptance fraction over walkers.
      wall_seconds: initialisation plus sampling.
      n_likelihood_calls: θ evaluated (initialisation draws included).
      nsteps: steps per walker (burn-in included); max_steps: the cap it ran under.
    """

    samples: np.ndarray
    chain: np.ndarray
    log_prob: np.ndarray
    tau: np.ndarray
    ess: np.ndarray
    converged: bool
    acceptance: float
    wall_seconds: float
    n_likelihood_calls: int
    nsteps: int
    burn: int
    nwalkers: int
    seed: int | tuple = 0
    convergence: Convergence | None = None
    capped: bool = False
    max_steps: int | None = None

    def summary(self) -> dict:
        """median, p16, p84, mean, std of the samples, each [5] (the repo's summaries)."""
        return {k: v.numpy()[0] for k, v in summarize(self.samples[None]).items()}

    def status_codes(self) -> list[str]:
        """``mcmc:not_converged(…)`` with the reason when the chain is not converged, else []
        (codes as in :mod:`irisml_tf.columns`)."""
        if self.converged:
            return []
        where = f"stopped at max_steps {self.nsteps}" if self.capped else f"{self.nsteps} steps"
        return [f"mcmc:not_converged({where}: {self.convergence.note()})"]


def _check_star(band_index, mag, mag_err):
    band_index = np.asarray(band_index)
    mag, mag_err = np.asarray(mag, np.float32), np.asarray(mag_err, np.float32)
    if band_index.ndim != 1 or mag.shape != band_index.shape or mag_err.shape != band_index.shape:
        raise ValueError("one star: `band_index`, `mag` and `mag_err` must be 1-D of the same length, "
                         f"got shapes {band_index.shape}, {mag.shape}, {mag_err.shape}")
    if not np.issubdtype(band_index.dtype, np.integer):
        raise ValueError(f"`band_index` must be integers (−1 = pad), got {band_index.dtype}")
    observed = (band_index >= 0) & np.isfinite(mag) & np.isfinite(mag_err)
    if observed.sum() < 2:
        raise ValueError(f"the star has {int(observed.sum())} usable band(s); with μ free at least 2 "
                         "are needed for any information")
    return band_index.astype(np.int32), mag, mag_err


def prior_init(lp: LogPosterior, star, nwalkers: int, rng: np.random.Generator,
               n_draws: int = _N_INIT) -> np.ndarray:
    """Walkers [nwalkers, 5]: the best of ``n_draws`` prior draws by log posterior, each jittered
    by 1 % of the spread of those best draws (kept only where the log posterior stays finite)."""
    prior = lp.prior
    seed = rng.integers(0, 2**31 - 1, size=2).astype(np.int32)
    draws = prior.sample(n_draws, tf.constant(seed)).numpy()
    logp = lp(draws, *star)
    finite = np.isfinite(logp)
    if finite.sum() < nwalkers:
        raise ValueError(f"only {int(finite.sum())} of {n_draws} prior draws have a finite posterior "
                         f"for this star (need {nwalkers} walkers): is it inside the grid's support?")
    best = draws[np.argsort(-np.where(finite, logp, -np.inf), kind="stable")[:nwalkers]]
    scale = 0.01 * np.maximum(best.std(axis=0), 1e-4 * (prior.upper - prior.lower))
    jittered = best + scale * rng.standard_normal(best.shape)
    ok = np.isfinite(lp(jittered, *star))
    return np.where(ok[:, None], jittered, best).astype(np.float64)


def npe_init(npe_samples, npe_weights, nwalkers: int, rng: np.random.Generator):
    """Walkers [nwalkers, 5] drawn without replacement from the distinct NPE samples [N, 5] with
    probability ∝ their total weight [N]; None if fewer than ``nwalkers`` distinct samples have
    positive weight (use the prior start). Distinct: the engine's returned draws are resampled, so
    a star whose weight sits on a few draws repeats them, and repeated walkers are degenerate."""
    w = np.asarray(npe_weights, np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    x = np.asarray(npe_samples, np.float64)
    keep = w > 0
    if not keep.any():
        return None
    unique, inverse = np.unique(x[keep], axis=0, return_inverse=True)
    if len(unique) < nwalkers:
        return None
    total = np.bincount(inverse.ravel(), weights=w[keep], minlength=len(unique))
    pick = rng.choice(len(unique), size=nwalkers, replace=False, p=total / total.sum())
    return unique[pick]


def _init_walkers(lp: LogPosterior, star, nwalkers: int, init, rng) -> np.ndarray:
    if init is None:
        return prior_init(lp, star, nwalkers, rng)
    init = np.asarray(init, np.float64)
    if init.shape != (nwalkers, 5):
        raise ValueError(f"`init` must have shape ({nwalkers}, 5) (nwalkers, {', '.join(PARAM_NAMES)}), "
                         f"got {init.shape}")
    bad = np.flatnonzero(~np.isfinite(lp(init, *star)))
    if bad.size:
        raise ValueError(f"`init`: walkers {bad[:10].tolist()} start where the posterior is zero "
                         "(outside the prior or the grid's support)")
    return init


def _rule_holds(conv: Convergence, options: ChainOptions) -> bool:
    if options.until_converged and not conv.converged:
        return False
    ess = options.nwalkers * conv.length / conv.tau
    return options.target_ess is None or bool(ess.min() >= options.target_ess)


def _next_block(conv: Convergence, options: ChainOptions, iteration: int) -> int:
    """Steps to add: what the current τ says is missing (+20 %), at least a third of the chain
    when only τ's stability is missing (so that the next check sees mostly new steps)."""
    tau = float(np.max(conv.tau))
    if not np.isfinite(tau):
        need = float(conv.length)
    else:
        need = 0.0
        if options.until_converged:
            need = _MARGIN * CONVERGED_TAUS * tau - conv.length
            if need <= 0:
                need = conv.length / 3
        if options.target_ess is not None:
            need = max(need, _MARGIN * options.target_ess * tau / options.nwalkers - conv.length)
    return int(np.clip(need, _MIN_BLOCK, options.cap - iteration))


def run_mcmc(log_post: LogPosterior, band_index, mag, mag_err, options: ChainOptions = ChainOptions(), *,
             seed=0, init=None, progress: bool = False, conditions=None) -> MCMCResult:
    """emcee on one star's posterior.

    Args:
      log_post: the :class:`LogPosterior` (THE simulator, the prior and the systematic floor; the
        model's, when comparing with a model). Keep one for many stars.
      band_index: int32 [K] (−1 = pad); mag, mag_err: [K] magnitudes and catalogue errors (mag).
      options: walkers, first segment, burn-in, cap and stopping rule (:class:`ChainOptions`).
      seed: int or sequence of ints (``np.random.default_rng``'s seed): seeds the initialisation and
        emcee's random state, so the same seed gives an identical chain.
      init: [nwalkers, 5] starting positions (e.g. NPE samples); None = :func:`prior_init`.
      progress: tqdm progress bar (one per segment).
      conditions: the star's parallax and A_V prior (:class:`LogPosterior`), None = none.

    Returns:
      :class:`MCMCResult`.
    """
    import emcee

    star = (*_check_star(band_index, mag, mag_err), condition_vector(conditions))
    rng = np.random.default_rng(seed)
    start, calls0 = time.perf_counter(), log_post.n_calls
    init = _init_walkers(log_post, star, options.nwalkers, init, rng)

    sampler = emcee.EnsembleSampler(options.nwalkers, 5, lambda x: log_post(x, *star), vectorize=True)
    sampler.random_state = np.random.RandomState(rng.integers(0, 2**32 - 1)).get_state()
    sampler.run_mcmc(init, options.nsteps, progress=progress)
    conv = convergence(sampler.get_chain(), options.burn)
    while not _rule_holds(conv, options) and sampler.iteration < options.cap:
        sampler.run_mcmc(None, _next_block(conv, options, sampler.iteration), progress=progress)
        conv = convergence(sampler.get_chain(), options.burn)
    wall = time.perf_counter() - start

    chain = sampler.get_chain()
    samples = chain[options.burn:].reshape(-1, 5)
    return MCMCResult(
        samples=samples, chain=chain, log_prob=sampler.get_log_prob(), tau=conv.tau,
        ess=len(samples) / conv.tau, converged=conv.converged,
        acceptance=float(np.mean(sampler.acceptance_fraction)), wall_seconds=wall,
        n_likelihood_calls=log_post.n_calls - calls0, nsteps=sampler.iteration, burn=options.burn,
        nwalkers=options.nwalkers, seed=seed, convergence=conv,
        capped=not _rule_holds(conv, options),  # the loop ends at the cap or when the rule holds
        max_steps=options.cap)


def compare_to_npe(mcmc_samples, npe_samples, npe_weights=None) -> dict:
    """How well the NPE posterior matches the MCMC one, per parameter.

    Args:
      mcmc_samples: [M, 5] (equal weights); npe_samples: [N, 5]; npe_weights: [N] (any
        normalisation, ≥ 0; None = equal, i.e. the raw flow samples).

    Returns:
      {name: {"median_diff_sigma": (median_npe − median_mcmc) / std_mcmc,
              "frac_in_68", "frac_in_95": fraction of MCMC samples inside the NPE (weighted) central
              68 % / 95 % interval, "median_npe", "median_mcmc", "std_mcmc"}} for teff … rv.
      A calibrated, accurate NPE gives ≈ 0, 0.68, 0.95.
    """
    mcmc = np.asarray(mcmc_samples, np.float32)
    npe = np.asarray(npe_samples, np.float32)
    if mcmc.ndim != 2 or mcmc.shape[1] != 5 or npe.ndim != 2 or npe.shape[1] != 5:
        raise ValueError(f"samples must be [M, 5] and [N, 5], got {mcmc.shape} and {npe.shape}")
    w = None if npe_weights is None else np.asarray(npe_weights, np.float32)[None]
    q = weighted_quantiles(npe[None], w, (0.5, 0.16, 0.84, 0.025, 0.975)).numpy()[0]  # [5 levels, 5]
    ref = summarize(mcmc[None])
    med, std = ref["median"].numpy()[0], ref["std"].numpy()[0]
    out = {}
    for i, name in enumerate(PARAM_NAMES):
        x = mcmc[:, i]
        out[name] = {
            "median_diff_sigma": float((q[0, i] - med[i]) / std[i]) if std[i] > 0 else float("nan"),
            "frac_in_68": float(np.mean((x >= q[1, i]) & (x <= q[2, i]))),
            "frac_in_95": float(np.mean((x >= q[3, i]) & (x <= q[4, i]))),
            "median_npe": float(q[0, i]), "median_mcmc": float(med[i]), "std_mcmc": float(std[i]),
        }
    return out


@dataclass
class Reference:
    """One star's MCMC reference and, with NPE draws, the comparison (:func:`mcmc_reference`).

    Attributes:
      mcmc: the chain.
      init: where the walkers started: ``prior``, ``npe``, or ``prior(npe_weights_too_few)``.
      before, after: :func:`compare_to_npe` of the flow's draws (unweighted) and of the
        importance-weighted draws; None without NPE draws.
    """

    mcmc: MCMCResult
    init: str
    before: dict | None = None
    after: dict | None = None


def mcmc_reference(log_post: LogPosterior, band_index, mag, mag_err, options: ChainOptions = ChainOptions(),
                   *, npe_samples=None, npe_weights=None, init: str = "prior", seed=0,
                   progress: bool = False, conditions=None) -> Reference:
    """The MCMC reference of one star and its comparison with the NPE posterior.

    Args:
      log_post, band_index, mag, mag_err, options, progress, conditions: as :func:`run_mcmc`.
      npe_samples: [N, 5] the flow's draws of this star; npe_weights: [N] their importance weights
        (both None: MCMC only).
      init: ``prior`` (:func:`prior_init`, the chain gets no help from the network) or ``npe``
        (:func:`npe_init`: weight-proportional NPE draws; the prior start if too few have weight).
      seed: the chain's seed (:func:`run_mcmc`); the NPE start draws with ``[*seed, 1]``.
    """
    if init not in INIT_CHOICES:
        raise ValueError(f"`init` must be one of {INIT_CHOICES}, got {init!r}")
    start, used = None, "prior"
    if init == "npe":
        if npe_samples is None:
            raise ValueError("`init='npe'` needs `npe_samples` and `npe_weights`")
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 1])
        start = npe_init(npe_samples, npe_weights, options.nwalkers, rng)
        used = "npe" if start is not None else "prior(npe_weights_too_few)"
    res = run_mcmc(log_post, band_index, mag, mag_err, options, seed=seed, init=start, progress=progress,
                   conditions=conditions)
    if npe_samples is None:
        return Reference(res, used)
    return Reference(res, used, before=compare_to_npe(res.samples, npe_samples),
                     after=compare_to_npe(res.samples, npe_samples, npe_weights))


def result_columns(result: MCMCResult, npe_comparison: dict | None = None) -> dict:
    """One output-table row for a star: chain statistics, per-parameter τ, ESS, median, p16, p84,
    std, and with a :func:`compare_to_npe` result the columns ``<param>_npe_median``,
    ``<param>_npe_dmed_sigma``, ``<param>_in_npe68``, ``<param>_in_npe95``."""
    row = {"wall_seconds": result.wall_seconds, "nsteps": result.nsteps, "burn": result.burn,
           "nwalkers": result.nwalkers, "acceptance": result.acceptance,
           "converged": result.converged, "n_likelihood_calls": result.n_likelihood_calls}
    stats = result.summary()
    for i, name in enumerate(PARAM_NAMES):
        row[f"{name}_tau"] = float(result.tau[i])
        row[f"{name}_ess"] = float(result.ess[i])
        for key in ("median", "p16", "p84", "std"):
            row[f"{name}_{key}"] = float(stats[key][i])
    if npe_comparison is not None:
        for name in PARAM_NAMES:
            c = npe_comparison[name]
            row.update({f"{name}_npe_median": c["median_npe"], f"{name}_npe_dmed_sigma": c["median_diff_sigma"],
                        f"{name}_in_npe68": c["frac_in_68"], f"{name}_in_npe95": c["frac_in_95"]})
    return row
