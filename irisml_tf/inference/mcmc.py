"""The MCMC reference: emcee (Foreman-Mackey et al. 2013) on the same posterior as importance sampling.

    log p(θ | x) = log p(x | θ) + log p(θ) + const

with log p(x | θ) from :func:`~irisml_tf.inference.likelihood.log_likelihood_theta` (μ marginalised,
the one simulator) and log p(θ) from :class:`~irisml_tf.physics.prior.Prior`. No second copy of the
physics: :class:`LogPosterior` only adds the two. emcee runs with ``vectorize=True``, so each
half-ensemble move is one TensorFlow call; the call is one ``tf.function`` with a fixed input
signature, cached per (simulator, prior, sys_floor), so consecutive stars never retrace.

Used to validate single stars against the NPE posterior (:func:`compare_to_npe`) and as the speed
baseline (benchmarks/bench_vs_mcmc.py). One star per call: band_index, mag, mag_err are 1-D [K].
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from irisml_tf.inference.likelihood import default_sys_floor, log_likelihood_theta
from irisml_tf.inference.summaries import summarize, weighted_quantiles
from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["MCMCResult", "LogPosterior", "log_posterior", "run_mcmc", "prior_init",
           "npe_init", "compare_to_npe", "result_columns", "CONVERGED_TAUS"]

#: a chain (after burn-in) at least this many autocorrelation times long is trusted (emcee's rule)
CONVERGED_TAUS = 50.0
_N_INIT = 4096  # prior draws ranked for the default initialisation
_MIN_BLOCK = 200  # smallest extension when running to a target ESS


class LogPosterior:
    """log p(x | θ) + log p(θ) for one star at many θ, as one compiled TensorFlow call.

    ``lp(theta, band_index, mag, mag_err)``: theta [N, 5] (physical units), the star's
    band_index int32 [K] (−1 = pad), mag, mag_err [K] → float64 numpy [N] (−inf outside the
    prior's support or where an observed band is invalid in the model). Build it with
    :func:`log_posterior` to share the trace between stars.
    """

    def __init__(self, simulator, prior, sys_floor: float):
        self.simulator, self.prior, self.sys_floor = simulator, prior, float(sys_floor)
        self.n_calls = 0  # θ evaluated (walker positions), for the cost accounting
        self._fn = tf.function(self._log_post, reduce_retracing=True, input_signature=[
            tf.TensorSpec([None, 5], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])

    def _log_post(self, theta, band_index, mag, mag_err):
        inputs = {"band_index": band_index[None], "mag": mag[None], "mag_err": mag_err[None]}
        log_lik = log_likelihood_theta(self.simulator, theta[None], inputs, self.sys_floor)[0]
        log_prior = self.prior.log_prob(theta)
        # the likelihood is not evaluated meaningfully outside the prior: keep −inf, never NaN
        return tf.where(log_prior > -np.inf, log_lik + log_prior, -np.inf)

    def __call__(self, theta, band_index, mag, mag_err) -> np.ndarray:
        theta = np.asarray(theta, np.float32)
        self.n_calls += len(theta)
        out = self._fn(tf.constant(theta), tf.constant(band_index, tf.int32),
                       tf.constant(mag, tf.float32), tf.constant(mag_err, tf.float32))
        return out.numpy().astype(np.float64)


_LAST: list[LogPosterior] = []  # the last one built: stars of a catalogue share its trace


def log_posterior(simulator, prior, sys_floor: float | None = None) -> LogPosterior:
    """The :class:`LogPosterior` of this simulator, prior and systematic floor (reused while they
    stay the same)."""
    sys_floor = default_sys_floor() if sys_floor is None else float(sys_floor)
    last = _LAST[0] if _LAST else None
    if last is None or last.simulator is not simulator or last.prior is not prior or last.sys_floor != sys_floor:
        _LAST[:] = [LogPosterior(simulator, prior, sys_floor)]
    return _LAST[0]


@dataclass
class MCMCResult:
    """One star's chain. Shapes: M = (nsteps − burn) · nwalkers flat samples.

    Attributes:
      samples: [M, 5] after burn-in, flattened (walker-major within a step, as emcee's flat chain).
      chain: [nsteps, nwalkers, 5], everything including burn-in.
      log_prob: [nsteps, nwalkers] log posterior (up to a constant).
      tau: [5] integrated autocorrelation time per parameter (steps), emcee, tol=0, after burn-in.
      ess: [5] = M / tau.
      converged: the post-burn chain is ≥ :data:`CONVERGED_TAUS` · max(tau) steps long.
      acceptance: mean acceptance fraction over walkers.
      wall_seconds: initialisation plus sampling.
      n_likelihood_calls: θ evaluated (initialisation draws included).
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

    def summary(self) -> dict:
        """median, p16, p84, mean, std of the samples, each [5] (the repo's summaries)."""
        return {k: v.numpy()[0] for k, v in summarize(self.samples[None]).items()}


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
    """Walkers [nwalkers, 5] drawn without replacement from NPE samples [N, 5] with probability ∝
    weight [N]; None if fewer than ``nwalkers`` samples have positive weight (use the prior start)."""
    w = np.asarray(npe_weights, np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if np.count_nonzero(w) < nwalkers:
        return None
    pick = rng.choice(len(w), size=nwalkers, replace=False, p=w / w.sum())
    return np.asarray(npe_samples, np.float64)[pick]


def _autocorr(sampler, burn):
    with np.errstate(invalid="ignore", divide="ignore"):  # a walker that never moved: τ = NaN
        tau = np.asarray(sampler.get_autocorr_time(discard=burn, tol=0), np.float64)
    return np.where(np.isfinite(tau) & (tau > 0), tau, np.inf)


def run_mcmc(simulator, prior, band_index, mag, mag_err, sys_floor=None, *, nwalkers: int = 32,
             nsteps: int = 2000, burn: int = 500, seed=0, init=None, target_ess=None,
             max_steps: int = 100_000, progress: bool = False) -> MCMCResult:
    """emcee on one star's posterior.

    Args:
      simulator, prior: THE simulator and the prior (the model's, when comparing with a model).
      band_index: int32 [K] (−1 = pad); mag, mag_err: [K] magnitudes and catalogue errors (mag).
      sys_floor: systematic floor (mag) added in quadrature; None = the default observation model's.
      nwalkers, nsteps, burn: ensemble size, steps per walker (burn-in included), burn-in steps.
      seed: int or sequence of ints (``np.random.default_rng``'s seed): seeds the initialisation and
        emcee's random state, so the same seed gives an identical chain.
      init: [nwalkers, 5] starting positions (e.g. NPE samples); None = :func:`prior_init`.
      target_ess: if set, after ``nsteps`` keep extending the chain in blocks until the smallest
        per-parameter ESS reaches it, or ``max_steps`` steps.
      progress: tqdm progress bar.

    Returns:
      :class:`MCMCResult`.
    """
    import emcee

    if nwalkers < 10 or nwalkers % 2:
        raise ValueError(f"`nwalkers` must be even and ≥ 10 (2 × 5 parameters), got {nwalkers}")
    if not 0 <= burn < nsteps:
        raise ValueError(f"need 0 ≤ `burn` < `nsteps`, got burn={burn}, nsteps={nsteps}")
    star = _check_star(band_index, mag, mag_err)
    lp = log_posterior(simulator, prior, sys_floor)
    rng = np.random.default_rng(seed)
    start, calls0 = time.perf_counter(), lp.n_calls

    if init is None:
        init = prior_init(lp, star, nwalkers, rng)
    else:
        init = np.asarray(init, np.float64)
        if init.shape != (nwalkers, 5):
            raise ValueError(f"`init` must have shape ({nwalkers}, 5) (nwalkers, {', '.join(PARAM_NAMES)}), "
                             f"got {init.shape}")
        bad = np.flatnonzero(~np.isfinite(lp(init, *star)))
        if bad.size:
            raise ValueError(f"`init`: walkers {bad[:10].tolist()} start where the posterior is zero "
                             "(outside the prior or the grid's support)")

    sampler = emcee.EnsembleSampler(nwalkers, 5, lambda x: lp(x, *star), vectorize=True)
    sampler.random_state = np.random.RandomState(rng.integers(0, 2**32 - 1)).get_state()
    sampler.run_mcmc(init, nsteps, progress=progress)
    tau = _autocorr(sampler, burn)
    if target_ess is not None:
        while True:
            done = sampler.iteration - burn
            ess = nwalkers * done / tau
            if ess.min() >= target_ess or sampler.iteration >= max_steps:
                break
            # steps the current τ says are missing, +20 % (τ tends to grow as the chain does)
            need = 1.2 * target_ess * tau.max() / nwalkers - done if np.isfinite(tau.max()) else done
            block = int(np.clip(need, _MIN_BLOCK, max_steps - sampler.iteration))
            sampler.run_mcmc(None, block, progress=progress)
            tau = _autocorr(sampler, burn)
    wall = time.perf_counter() - start

    n = sampler.iteration
    chain = sampler.get_chain()
    samples = chain[burn:].reshape(-1, 5)
    ess = len(samples) / tau
    return MCMCResult(
        samples=samples, chain=chain, log_prob=sampler.get_log_prob(), tau=tau, ess=ess,
        converged=bool(np.all((n - burn) >= CONVERGED_TAUS * tau)),
        acceptance=float(np.mean(sampler.acceptance_fraction)), wall_seconds=wall,
        n_likelihood_calls=lp.n_calls - calls0, nsteps=n, burn=burn, nwalkers=nwalkers, seed=seed)


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


def result_columns(result: MCMCResult, npe_samples=None, npe_weights=None) -> dict:
    """One output-table row for a star: chain statistics, per-parameter τ, ESS, median, p16, p84,
    std, and with NPE samples the :func:`compare_to_npe` columns ``<param>_npe_median``,
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
    if npe_samples is not None:
        cmp = compare_to_npe(result.samples, npe_samples, npe_weights)
        for name in PARAM_NAMES:
            c = cmp[name]
            row.update({f"{name}_npe_median": c["median_npe"], f"{name}_npe_dmed_sigma": c["median_diff_sigma"],
                        f"{name}_in_npe68": c["frac_in_68"], f"{name}_in_npe95": c["frac_in_95"]})
    return row
