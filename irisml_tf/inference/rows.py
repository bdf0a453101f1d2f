"""Row counts that keep a star's numbers independent of the batch it is in.

TensorFlow's CPU kernels evaluate transcendental functions (exp, log, sigmoid, …) on packets of 8
floats with one polynomial and on the last ``size mod 8`` elements of a buffer with another (the
scalar library call): the two differ by an ulp. A star whose per-row values ([B], [B, K], …) land
in that tail in one batch and not in another gets other round-off, and the adaptive rounds can
amplify that into other draws (measured on the demo through `infer`, chunks of 40 vs 7 rows: 23 of
40 rows differed; this padding brought it to 6, the rest came from `infer` trimming band slots per
batch, also removed). With every row count a multiple of :data:`ROW_MULTIPLE`, no buffer has such a tail,
and a star's result is the same bit for bit in any batch, at any position (tests/test_adaptive.py,
tests/test_infer.py, tests/test_survey.py). So the engine pads every batch, and every subset of
rows it gathers, to that multiple: with copies of a row it already computes (never an empty or
made-up star: no new failure modes), dropped after.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["ROW_MULTIPLE", "pad_batch", "row_indices", "scatter_rows"]

#: packet width of float32 kernels (AVX2: 8 floats; a 4-wide NEON packet divides it)
ROW_MULTIPLE = 8


def _padded_size(n):
    return n + (-n) % ROW_MULTIPLE


def pad_batch(nest):
    """Every tensor of ``nest`` (leading dimension B) padded to a multiple of :data:`ROW_MULTIPLE`
    rows with copies of its last row; returns (padded nest, B). Slice results with ``[:B]``."""
    b = tf.shape(tf.nest.flatten(nest)[0])[0]
    take = tf.minimum(tf.range(_padded_size(b)), b - 1)
    return tf.nest.map_structure(lambda t: tf.gather(t, take), nest), b


def row_indices(mask):
    """Indices of the rows where ``mask`` [B] is true, padded to a multiple of
    :data:`ROW_MULTIPLE` with copies of the first, and how many are real: (idx [A'] int64, A)."""
    idx = tf.where(mask)[:, 0]
    n = tf.size(idx)
    return tf.concat([idx, tf.gather(idx, tf.zeros([_padded_size(n) - n], tf.int32))], 0), n


def scatter_rows(nest, idx, n, sub):
    """``nest`` [B, ...] with rows ``idx[:n]`` replaced by ``sub[:n]`` (the real rows of a
    :func:`row_indices` subset)."""
    at = idx[:n, None]
    return tf.nest.map_structure(lambda t, s: tf.tensor_scatter_nd_update(t, at, s[:n]), nest, sub)
