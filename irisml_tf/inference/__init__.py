"""Inference layer: likelihood with μ marginalised, importance sampling of the amortised
posterior, PSIS k̂, weighted summaries and per-star flags — all in TensorFlow, batched over stars."""
from irisml_tf.inference.flags import (
    DEFAULT_FLAG_OPTIONS,
    FLAG_BITS,
    best_sample_index,
    chi2_pvalue,
    compute_flags,
    edge_fraction,
    flag_names,
    leave_one_band_out,
)
from irisml_tf.inference.importance import effective_sample_size, importance_weights, resample, run_importance_sampling
from irisml_tf.inference.likelihood import (
    LikelihoodTerms,
    default_sys_floor,
    gather_bands,
    likelihood_terms,
    log_likelihood,
    log_likelihood_theta,
)
from irisml_tf.inference.psis import pareto_khat, psis, tail_length
from irisml_tf.inference.summaries import (
    DEFAULT_QUANTILES,
    SUMMARY_NAMES,
    summarize,
    weighted_mean_std,
    weighted_quantiles,
)

__all__ = [
    "LikelihoodTerms", "likelihood_terms", "log_likelihood", "log_likelihood_theta",
    "gather_bands", "default_sys_floor",
    "psis", "pareto_khat", "tail_length",
    "importance_weights", "effective_sample_size", "resample", "run_importance_sampling",
    "summarize", "weighted_quantiles", "weighted_mean_std", "SUMMARY_NAMES", "DEFAULT_QUANTILES",
    "compute_flags", "best_sample_index", "leave_one_band_out", "chi2_pvalue", "edge_fraction",
    "flag_names", "FLAG_BITS", "DEFAULT_FLAG_OPTIONS",
]
