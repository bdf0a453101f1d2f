"""THE inference engine on a batch of stars: the flow proposes, the exact likelihood decides.

:func:`run_engine` is what ``infer``, the SavedModel, ``evaluate``, the MCMC comparison and the
benchmarks call. It runs per-star adaptive importance sampling
(:func:`~irisml_tf.inference.adaptive.adaptive_importance_sampling`) on the stellar posterior
p(x | θ) p_user(θ) (:func:`~irisml_tf.inference.posterior_target.posterior_problem`) and turns
its weighted draws into what a user reads:

* weighted summaries ``median, p16, p84, mean, std`` [B, 5] over ALL weighted draws (up to
  ``max_draws`` per star), and the flow's own (round 0, unweighted) ``q_median`` … ``q_std``;
* ``samples`` [B, N, 5]: N = ``num_samples`` draws resampled (systematic, the star's own seed)
  from the weighted draws, each of weight 1/N in ``weights`` — N equally weighted draws carry
  the posterior at a fixed size whatever the number of draws the star took;
* per star: ``ess``, ``efficiency`` (ESS / draws), ``khat`` (PSIS k̂ of the final weights),
  ``log_evidence``, ``n_draws``, ``rounds``, ``n_target_evals``, ``n_modes``, ``converged``;
* the flags of :func:`~irisml_tf.inference.flags.compute_flags`, evaluated on the N resampled
  draws (the best of them for χ² and the outlier band), except ``low_efficiency``, which here
  means: the star stopped short of its target ESS (the draw budget ran out).

Everything is TensorFlow ops with static :class:`~irisml_tf.inference.adaptive.AdaptiveOptions`;
``target_ess``, ``max_draws`` (up to the options' own), ``num_samples``, the prior's parameters
and the per-star A_V priors may be tensors, so the whole call traces into a SavedModel signature.
"""
from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from irisml_tf.inference.adaptive import AdaptiveOptions, adaptive_importance_sampling, by_weighted_slots, fold_seeds
from irisml_tf.inference.flags import compute_flags
from irisml_tf.inference.importance import resample
from irisml_tf.inference.likelihood import default_sys_floor, log_likelihood_theta, unpack_inputs
from irisml_tf.inference.posterior_target import posterior_problem
from irisml_tf.inference.rows import pad_batch
from irisml_tf.inference.summaries import SUMMARY_NAMES, summarize
from irisml_tf.physics.parallax import MassPrior, sample_derived

__all__ = ["run_engine", "derived_posteriors", "ENGINE_OUTPUTS", "DERIVED_NAMES"]

#: what a parallax adds per star, in the order of the ``derived_*`` outputs [B, 4]: distance (pc),
#: radius (R☉), mass (M☉), luminosity (L☉)
DERIVED_NAMES = ("distance", "radius", "mass", "luminosity")

#: per-star outputs of the sampler itself, besides summaries, draws and flags
ENGINE_OUTPUTS = ("ess", "efficiency", "khat", "log_evidence", "n_draws", "rounds", "n_target_evals",
                  "n_modes", "converged")


def _clean_inputs(inputs: Mapping, num_bands: int) -> dict:
    """Entries with an out-of-range band, a non-finite magnitude or error, or an error ≤ 0 become
    pads (the catalogue layer reports them; here they must not reach the simulator)."""
    band_index, mag, mag_err = unpack_inputs(inputs)
    band_index = tf.cast(band_index, tf.int32)
    mag, mag_err = tf.cast(mag, tf.float32), tf.cast(mag_err, tf.float32)
    good = ((band_index >= 0) & (band_index < num_bands) & tf.math.is_finite(mag)
            & tf.math.is_finite(mag_err) & (mag_err > 0))
    return {"band_index": tf.where(good, band_index, -1), "mag": tf.where(good, mag, 0.0),
            "mag_err": tf.where(good, mag_err, 1.0)}


def run_engine(model, simulator, prior, inputs: Mapping, seeds, sys_floor=None, *,
               options: AdaptiveOptions | None = None, num_samples=1000, target_ess=None,
               max_draws=None, prior_params=None, av_prior=None, av_prior_err=None, av_max=None,
               plx=None, plx_err=None, mass_prior=None) -> dict:
    """The posterior of a batch of stars (module docstring for the outputs).

    Args:
      model: :class:`~irisml_tf.model.posterior.PosteriorModel` (standard normal flow base).
      simulator, prior: THE simulator and the model's :class:`~irisml_tf.physics.prior.Prior`
        (its support box; its parameters unless ``prior_params`` is given).
      inputs: band_index int32 [B, K] (−1 pads), mag, mag_err float32 [B, K].
      seeds: int32 [B, 2], one stateless seed per star (a star's result depends on its own seed).
      sys_floor: the training's systematic floor (mag); None = the default observation model's.
      options: the engine's static settings (draw budget, rounds, …); target_ess: overrides
        ``options.target_ess`` (float or scalar tensor); max_draws: a draw budget below
        ``options.max_draws`` (int or scalar tensor). num_samples: N resampled draws per star.
      prior_params: the user's prior, float32 [21] (:data:`~irisml_tf.physics.prior.
        PRIOR_PARAM_NAMES`); None = the model's training prior.
      av_prior, av_prior_err, av_max: per-star A_V priors [B] (NaN = none), or None.
      plx, plx_err: zero-point-corrected parallaxes and errors [B] (mas; NaN = none), or None;
        mass_prior: :class:`~irisml_tf.physics.parallax.MassPrior` (None: its default). With a
        parallax, ``derived_median``, ``derived_p16``, ``derived_p84`` [B, 4] summarise
        :data:`DERIVED_NAMES` over the returned draws (NaN without a parallax).
    """
    options = options or AdaptiveOptions()
    sys_floor = default_sys_floor() if sys_floor is None else sys_floor
    per_row = {"av_prior": av_prior, "av_prior_err": av_prior_err, "av_max": av_max, "plx": plx, "plx_err": plx_err}
    per_row = {k: tf.cast(v, tf.float32) for k, v in per_row.items() if v is not None}
    # a star's numbers must not depend on its batch: pad to whole CPU packets (irisml_tf.inference.rows)
    (inputs, seeds, per_row), b = pad_batch((_clean_inputs(inputs, simulator.num_bands),
                                             tf.cast(seeds, tf.int32), per_row))
    av = {k: per_row.get(k) for k in ("av_prior", "av_prior_err", "av_max")}
    plx, plx_err = per_row.get("plx"), per_row.get("plx_err")
    mass_prior = mass_prior or MassPrior()
    problem = posterior_problem(model, simulator, prior, inputs, sys_floor, prior_params=prior_params, **av,
                                plx=plx, plx_err=plx_err, mass_prior=mass_prior)
    res = adaptive_importance_sampling(problem.log_target, problem.flow_sample, problem.conditions, seeds,
                                       5, options, target_ess=target_ess, max_draws=max_draws)
    out = {"ess": res.ess, "efficiency": res.ess / tf.cast(res.n_draws, tf.float32), "khat": res.khat,
           "log_evidence": res.log_evidence, "n_draws": res.n_draws, "rounds": res.rounds,
           "n_target_evals": res.n_target_evals, "n_modes": res.n_modes, "converged": res.converged}
    # to θ only what is used (the storage holds max_draws slots per star, most of them empty)
    nan = tf.fill(tf.shape(res.draws[:, 0]), float("nan"))
    out.update(by_weighted_slots(lambda a: summarize(problem.theta(a[0]), a[1]), (res.draws, res.weights),
                                 res.weighted_rounds, options, {k: nan for k in SUMMARY_NAMES}))
    out.update({f"q_{k}": v for k, v in summarize(problem.theta(res.draws[:, :options.n0]), None).items()})
    draws, _ = resample(res.draws, res.weights, num_samples, fold_seeds(seeds, 3))
    draws = problem.theta(draws)  # rows without weight: NaN stays NaN
    has = tf.reduce_sum(res.weights, -1) > 0
    n = tf.cast(tf.shape(draws)[1], tf.float32)
    weights = tf.where(has[:, None], tf.ones_like(draws[..., 0]) / n, 0.0)
    out["samples"], out["weights"] = draws, weights
    box_mid = 0.5 * (tf.constant(prior.lower, tf.float32) + tf.constant(prior.upper, tf.float32))
    safe = tf.where(tf.math.is_finite(draws), draws, box_mid)  # rows without weight: NaN draws
    terms = log_likelihood_theta(simulator, safe, inputs, sys_floor, return_terms=True)
    out.update(_flags(prior, inputs, safe, terms, weights, res, prior_params, av,
                      target_ess if target_ess is not None else options.target_ess))
    out.update(_derived(terms, safe, problem.conditions, mass_prior, fold_seeds(seeds, 4)))
    return {k: v[:b] for k, v in out.items()}


def derived_posteriors(simulator, draws, inputs: Mapping, plx, plx_err, sys_floor, mass_prior, seeds) -> dict:
    """``derived_median``, ``derived_p16``, ``derived_p84`` [B, 4] (:data:`DERIVED_NAMES`) of equally
    weighted θ draws [B, N, 5] of stars with photometry ``inputs`` and zero-point-corrected
    parallaxes ``plx``, ``plx_err`` [B] (mas; NaN = none: NaN rows) — as :func:`run_engine` gives
    them, for draws made elsewhere (the MCMC reference). ``seeds``: int32 [B, 2]."""
    draws = tf.cast(draws, tf.float32)
    inputs = _clean_inputs(inputs, simulator.num_bands)
    terms = log_likelihood_theta(simulator, draws, inputs, sys_floor, return_terms=True)
    conditions = {"plx": tf.cast(plx, tf.float32), "plx_err": tf.cast(plx_err, tf.float32)}
    return _derived(terms, draws, conditions, mass_prior or MassPrior(), tf.cast(seeds, tf.int32))


def _derived(terms, draws, conditions, mass_prior, seeds) -> dict:
    """Distance, radius, mass and luminosity: one (s, M) per returned draw, then their median and
    16/84 % quantiles per star [B, 4] (NaN without a parallax, ``conditions["plx"]`` NaN)."""
    derived = sample_derived(terms.mu, tf.reduce_sum(terms.weight, -1), draws,
                             conditions["plx"], conditions["plx_err"], mass_prior, seeds)
    values = tf.stack([derived[k] for k in DERIVED_NAMES], -1)  # [B, N, 4]
    ok = tf.reduce_all(tf.math.is_finite(values), -1)
    has = tf.reduce_any(ok, -1)
    weights = tf.cast(ok, tf.float32)
    stats = summarize(tf.where(ok[..., None], values, 0.0), tf.where(has[:, None], weights, 1.0))
    return {f"derived_{k}": tf.where(has[:, None], stats[k], float("nan")) for k in ("median", "p16", "p84")}


def _flags(prior, inputs, safe, terms, weights, res, prior_params, av, target_ess) -> dict:
    """:func:`compute_flags` on the resampled draws; ``low_efficiency`` = short of the target ESS."""
    log_prior = prior.log_prob(safe, prior_params, **av)
    short = res.ess / tf.cast(target_ess, tf.float32)  # ≥ 1 once converged
    flags = compute_flags(terms, inputs["band_index"], safe, weights, log_prior, short, res.khat,
                          prior.lower, prior.upper, min_efficiency=1.0)
    out = {"flag_bits": flags.pop("bits")}
    out.update(flags)
    return out

