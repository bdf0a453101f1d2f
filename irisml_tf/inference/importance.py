"""Importance sampling of the amortised posterior (Dax et al. 2023): θ ~ q(θ | x), weights

    w ∝ p(x | θ) p(θ) / q(θ | x),

computed in log space per star, with ESS = (Σw)²/Σw², efficiency = ESS/N, Pareto k̂ (PSIS),
optional resampling, summaries and flags. Everything is TensorFlow, batched over stars, with
the number of samples allowed to be a tensor: :func:`run_importance_sampling` can be traced
into a ``tf.function`` / SavedModel signature as is.

Shapes: B stars, N samples per star, K padded band slots, θ in the order (teff, logg, mh, av, rv).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from irisml_tf.inference.flags import compute_flags
from irisml_tf.inference.likelihood import default_sys_floor, log_likelihood_theta, unpack_inputs
from irisml_tf.inference.psis import psis
from irisml_tf.inference.summaries import summarize

__all__ = ["importance_weights", "effective_sample_size", "resample", "run_importance_sampling"]


def effective_sample_size(weights):
    """ESS = (Σw)²/Σw² per row [B] of weights [B, N] (≥ 0, any normalisation); 0 for all-zero rows."""
    weights = tf.convert_to_tensor(weights, tf.float32)
    s1 = tf.reduce_sum(weights, axis=-1)
    s2 = tf.reduce_sum(tf.square(weights), axis=-1)
    return tf.where(s2 > 0, tf.square(s1) / tf.where(s2 > 0, s2, 1.0), 0.0)


def importance_weights(log_lik, log_prior, log_q, with_khat: bool = True) -> dict:
    """Log and normalised importance weights per star.

    Args:
      log_lik, log_prior, log_q: float32 [B, N].
      with_khat: also run PSIS (k̂ and smoothed weights).

    Returns dict:
      log_weights [B, N]: log p(x|θ) + log p(θ) − log q(θ|x); −inf where the likelihood or the
        prior is −inf, and wherever the sum is not finite (NaN, or +inf from log q = −inf).
      weights [B, N]: normalised (softmax per row); all 0 in rows without a finite log weight.
      ess [B], efficiency [B] = ess / N, log_evidence [B] = log mean exp(log_weights)
      (−inf for rows without weight); with_khat: khat [B] (inf when < 5 finite weights) and
      psis_log_weights [B, N] (Pareto-smoothed, normalised).
    """
    log_lik = tf.convert_to_tensor(log_lik, tf.float32)
    log_prior = tf.convert_to_tensor(log_prior, tf.float32)
    log_q = tf.convert_to_tensor(log_q, tf.float32)
    ok = (log_lik > -np.inf) & (log_prior > -np.inf)
    lw = log_lik + log_prior - log_q
    lw = tf.where(ok & tf.math.is_finite(lw), lw, -np.inf)
    n = tf.shape(lw)[-1]
    has = tf.reduce_any(lw > -np.inf, axis=-1)  # [B]
    row_max = tf.where(has, tf.reduce_max(lw, axis=-1), 0.0)
    unnorm = tf.exp(lw - row_max[:, None])  # 0 where −inf, max 1
    total = tf.reduce_sum(unnorm, axis=-1)  # ≥ 1 where has
    weights = tf.where(has[:, None], unnorm / tf.where(has, total, 1.0)[:, None], 0.0)
    ess = effective_sample_size(weights)
    log_evidence = tf.where(has, row_max + tf.math.log(tf.where(has, total, 1.0))
                            - tf.math.log(tf.cast(n, tf.float32)), -np.inf)
    out = {"log_weights": lw, "weights": weights, "ess": ess,
           "efficiency": ess / tf.cast(n, tf.float32), "log_evidence": log_evidence}
    if with_khat:
        smoothed, khat = psis(lw)
        out["khat"] = khat
        out["psis_log_weights"] = tf.where(has[:, None], tf.nn.log_softmax(
            tf.where(has[:, None], smoothed, 0.0), axis=-1), -np.inf)
    return out


def resample(samples, weights, num_draws, seed, method: str = "systematic"):
    """Unweighted draws from weighted samples, per row.

    Args:
      samples: [B, N, D]; weights: [B, N] (≥ 0, any normalisation).
      num_draws: draws per row (int or scalar int32 tensor); seed: stateless int32 [2], or [B, 2]
        one per row (then a row's draws depend on its own seed only).
      method: "systematic" (one uniform per row, low variance) or "multinomial".

    Returns (draws [B, num_draws, D], index int32 [B, num_draws]). Rows whose weights are all
    zero have nothing to draw: index −1 and NaN draws. Same seed, same draws.
    """
    samples = tf.convert_to_tensor(samples)
    weights = tf.convert_to_tensor(weights, tf.float32)
    weights = tf.where(tf.math.is_finite(weights) & (weights > 0), weights, 0.0)
    seed = tf.cast(seed, tf.int32)
    num_draws = tf.cast(num_draws, tf.int32)
    b, n = tf.shape(weights)[0], tf.shape(weights)[1]
    total = tf.reduce_sum(weights, axis=-1)
    has = total > 0
    per_row = seed.shape.rank == 2
    if method == "systematic":
        if per_row:
            u = tf.map_fn(lambda s: tf.random.stateless_uniform([1], s), seed, fn_output_signature=tf.float32)
        else:
            u = tf.random.stateless_uniform(tf.stack([b, 1]), seed, dtype=tf.float32)
        pos = (u + tf.cast(tf.range(num_draws), tf.float32)[None, :]) / tf.cast(num_draws, tf.float32)
        cdf = tf.cumsum(weights, axis=-1) / tf.where(has, total, 1.0)[:, None]
        idx = tf.searchsorted(cdf, pos, side="right", out_type=tf.int32)
        idx = tf.minimum(idx, n - 1)
    elif method == "multinomial":
        logits = tf.where(weights > 0, tf.math.log(tf.where(weights > 0, weights, 1.0)), -np.inf)
        logits = tf.where(has[:, None], logits, 0.0)
        if per_row:
            idx = tf.map_fn(lambda a: tf.random.stateless_categorical(a[0][None], num_draws, a[1],
                                                                       dtype=tf.int32)[0],
                            (logits, seed), fn_output_signature=tf.int32)
        else:
            idx = tf.random.stateless_categorical(logits, num_draws, seed, dtype=tf.int32)
    else:
        raise ValueError(f"`method` must be 'systematic' or 'multinomial', got {method!r}")
    # the cap can land on a trailing zero-weight sample: step back to the last positive one
    last_pos = n - 1 - tf.argmax(tf.reverse(tf.cast(weights > 0, tf.int32), [1]), axis=-1,
                                 output_type=tf.int32)
    idx = tf.minimum(idx, last_pos[:, None])
    draws = tf.gather(samples, idx, batch_dims=1)
    draws = tf.where(has[:, None, None], draws, tf.constant(np.nan, samples.dtype))
    return draws, tf.where(has[:, None], idx, -1)


def run_importance_sampling(model, simulator, prior, inputs: Mapping, num_samples, seed,
                            sys_floor=None, *, num_resample=None) -> dict:
    """Posterior samples, importance weights, diagnostics, summaries and flags for a batch.

    Args:
      model: :class:`~irisml_tf.model.posterior.PosteriorModel` (``sample_and_log_prob``).
      simulator: :class:`~irisml_tf.physics.simulator.Simulator` (THE simulator).
      prior: :class:`~irisml_tf.physics.prior.Prior` (``log_prob``, ``lower``, ``upper``).
      inputs: mapping of band_index int32 [B, K] (−1 pads), mag, mag_err float32 [B, K].
      num_samples: N, int or scalar int32 tensor. seed: stateless int32 [2] for the batch, or
        [B, 2], one per star (then a star's draws do not depend on the other rows).
      num_resample: also draw this many unweighted samples per star (None = no resampling; its
        stream comes from the batch seed, or from the first star's when seeds are per star).
      sys_floor: the training's systematic floor (mag); None = the default observation model's.

    The weights are the raw importance weights (as Dax+2023); k̂ (PSIS) says how far to trust them.
    Returns dict of tensors: samples [B, N, 5], log_q, log_prior, log_lik, log_weights,
    weights [B, N]; ess, efficiency, khat, log_evidence [B]; the weighted summaries
    ``median, p16, p84, mean, std`` [B, 5] and the unweighted ones as ``q_median`` … ``q_std``;
    the flags of :func:`~irisml_tf.inference.flags.compute_flags` (``flag_bits``,
    ``outlier_band``, ``chi2``, ``chi2_pvalue``, ``mu``, ``n_bands``, the bools …); and with
    ``num_resample``: ``resampled`` [B, num_resample, 5].
    """
    if sys_floor is None:
        sys_floor = default_sys_floor()
    band_index, mag, mag_err = unpack_inputs(inputs)
    inputs = {"band_index": tf.cast(band_index, tf.int32), "mag": tf.cast(mag, tf.float32),
              "mag_err": tf.cast(mag_err, tf.float32)}

    samples, log_q = model.sample_and_log_prob(tf.cast(num_samples, tf.int32), inputs["band_index"],
                                               inputs["mag"], inputs["mag_err"], seed=tf.cast(seed, tf.int32))
    log_prior = tf.reshape(prior.log_prob(tf.reshape(samples, [-1, 5])), tf.shape(log_q))
    terms = log_likelihood_theta(simulator, samples, inputs, sys_floor, return_terms=True)

    iw = importance_weights(terms.log_lik, log_prior, log_q, with_khat=True)
    weights = iw["weights"]
    out = {"samples": samples, "log_q": log_q, "log_prior": log_prior, "log_lik": terms.log_lik,
           "log_weights": iw["log_weights"], "weights": weights, "ess": iw["ess"],
           "efficiency": iw["efficiency"], "khat": iw["khat"], "log_evidence": iw["log_evidence"]}
    out.update(summarize(samples, weights))
    out.update({f"q_{k}": v for k, v in summarize(samples, None).items()})

    flags = compute_flags(terms, inputs["band_index"], samples, weights, log_prior, iw["efficiency"],
                          iw["khat"], prior.lower, prior.upper)
    out["flag_bits"] = flags.pop("bits")
    out.update(flags)
    if num_resample is not None:
        seed = tf.cast(seed, tf.int32)
        batch_seed = seed if seed.shape.rank == 1 else seed[0]
        out["resampled"], _ = resample(samples, weights, num_resample,
                                       tf.random.experimental.stateless_fold_in(batch_seed, 1))
    return out
