"""The simulator: θ = (teff, logg, mh, av, rv) → magnitudes in every band of the grid, in TensorFlow.

m_b(θ) = M_b(teff, logg, mh) + A_V · k_b(teff, logg, mh, A_V, R_V)   (μ = 0)

M_b and the extinction coefficients are interpolated multilinearly in (log10 teff, logg, mh) inside
cells whose 8 corners all exist (the support); k_b's basis bilinearly in (A_V, 1/R_V). Batched,
differentiable in θ, no Python loop over stars or bands. Outside the support, or where a band is
invalid at any corner (zero flux), the mask is False and the magnitude is 0 — never NaN or inf.
This is the one copy of the physics: training, importance sampling, MCMC and evaluation call it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from .grid import StellarGrid, all_corners, load_grid

__all__ = ["Simulator", "PARAM_NAMES", "locate", "uniform_index"]

PARAM_NAMES = ("teff", "logg", "mh", "av", "rv")
# float32 puts a grid node a hair below itself; snap within this many cells to the node
_SNAP = 1e-5


def uniform_index(x, start, step, n):
    """Cell index (clipped to 0 … n−2) and fraction on a uniform axis of n nodes."""
    pos = (x - start) / step
    i = tf.clip_by_value(tf.floor(pos + _SNAP), 0.0, float(n - 2))
    return tf.cast(i, tf.int32), pos - i


def locate(teff, logg, mh, log_teff, logg_axis, mh_axis):
    """Cells and fractions in (log10 teff, logg, mh); the one rule the simulator and prior share."""
    lt = tf.math.log(teff) / np.log(10.0)
    nt = log_teff.shape[0]
    snap = 1e-6  # in log10 teff: > float32 rounding, < 0.01 K
    it = tf.clip_by_value(tf.searchsorted(log_teff, lt + snap, side="right") - 1, 0, nt - 2)
    t0, t1 = tf.gather(log_teff, it), tf.gather(log_teff, it + 1)
    ig, fg = uniform_index(logg, *logg_axis)
    im, fm = uniform_index(mh, *mh_axis)
    return it, (lt - t0) / (t1 - t0), ig, fg, im, fm


class Simulator(tf.Module):
    """Callable: ``mags, mask = sim(theta)`` with theta float32 (N, 5) in the order of
    :data:`PARAM_NAMES`; mags float32 (N, B), mask bool (N, B), B = ``len(sim.bands)``."""

    def __init__(self, grid: StellarGrid | str | None = None, name: str = "simulator",
                 jit_compile: bool = True):
        super().__init__(name=name)
        # XLA for speed; export turns it off (TF Serving's CPU build does not JIT by default)
        self._simulate = tf.function(self._simulate_ops, jit_compile=jit_compile, reduce_retracing=True)
        if not isinstance(grid, StellarGrid):
            grid = load_grid(grid)
        self.grid = grid
        self.bands = grid.bands
        t, g, m, b = grid.mag.shape
        r = grid.ext_coef.shape[-1]
        self.num_bands, self.rank = b, r
        self._shape = (t, g, m)
        self._log_teff = tf.constant(np.log10(grid.teff), tf.float32)
        self._logg = (float(grid.logg[0]), float(grid.logg[1] - grid.logg[0]), g)
        self._mh = (float(grid.mh[0]), float(grid.mh[1] - grid.mh[0]), m)
        self._av = (float(grid.av_nodes[0]), float(grid.av_nodes[1] - grid.av_nodes[0]), len(grid.av_nodes))
        self._u = (float(grid.u_nodes[0]), float(grid.u_nodes[1] - grid.u_nodes[0]), len(grid.u_nodes))
        # node table: magnitudes then extinction coefficients, one row per node
        nodes = np.concatenate([grid.mag, grid.ext_coef.reshape(t, g, m, b * r)], axis=-1)
        self._nodes = tf.constant(nodes.reshape(t * g * m, -1), tf.float32)
        self._cell_valid = tf.constant(all_corners(grid.valid).reshape((t - 1) * (g - 1) * (m - 1), b))
        # basis (B, 1+R, A, U) → rows per (A, U) node, columns (1+R, B)
        basis = np.transpose(grid.ext_basis, (2, 3, 1, 0))
        self._basis = tf.constant(basis.reshape(basis.shape[0] * basis.shape[1], (1 + r) * b), tf.float32)
        self.lower = np.array([grid.bounds[k][0] for k in PARAM_NAMES], np.float32)
        self.upper = np.array([grid.bounds[k][1] for k in PARAM_NAMES], np.float32)
        self._lo, self._hi = tf.constant(self.lower), tf.constant(self.upper)
        offsets = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        self._corner = tf.constant(offsets, tf.int32)  # (8, 3)

    # ------------------------------------------------------------------------------------------
    def in_support(self, theta: tf.Tensor) -> tf.Tensor:
        """bool (N,): θ finite, inside the box and in a cell whose 8 corners all exist."""
        return tf.reduce_any(self(theta)[1], axis=-1)  # the mask is already False outside the box

    def _in_box(self, theta):
        finite = tf.reduce_all(tf.math.is_finite(theta), axis=-1)
        inside = tf.reduce_all((theta >= self._lo) & (theta <= self._hi), axis=-1)
        return finite & inside


    def __call__(self, theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        theta = tf.convert_to_tensor(theta, tf.float32)
        if theta.shape.rank != 2 or theta.shape[-1] != 5:
            raise ValueError(f"`theta` must have shape (N, 5) in the order {PARAM_NAMES}, got {theta.shape}")
        return self._simulate(theta)

    def _simulate_ops(self, theta):
        ok = self._in_box(theta)
        # park out-of-support rows at the box centre so no NaN reaches values or gradients
        safe = tf.where(ok[:, None], theta, 0.5 * (self._lo + self._hi))
        teff, logg, mh, av, rv = tf.unstack(safe, axis=-1)
        t, g, m = self._shape
        it, ft, ig, fg, im, fm = locate(teff, logg, mh, self._log_teff, self._logg, self._mh)
        cell = (it * (g - 1) + ig) * (m - 1) + im
        valid = tf.gather(self._cell_valid, cell) & ok[:, None]
        # 8 corners: flat node index and multilinear weight
        c = self._corner
        idx = ((it[:, None] + c[:, 0]) * g + ig[:, None] + c[:, 1]) * m + im[:, None] + c[:, 2]
        w = ((tf.where(c[:, 0] == 1, ft[:, None], 1 - ft[:, None]))
             * tf.where(c[:, 1] == 1, fg[:, None], 1 - fg[:, None])
             * tf.where(c[:, 2] == 1, fm[:, None], 1 - fm[:, None]))  # (N, 8)
        vals = tf.reduce_sum(w[:, :, None] * tf.gather(self._nodes, idx), axis=1)  # (N, B + B R), fused by XLA
        b, r = self.num_bands, self.rank
        mag = vals[:, :b]
        coef = tf.reshape(vals[:, b:], (-1, b, r))
        # extinction basis, bilinear in (A_V, u = 1/R_V)
        ia, fa = uniform_index(av, *self._av)
        iu, fu = uniform_index(1.0 / rv, *self._u)
        nu = self._u[2]
        rows = tf.stack([ia * nu + iu, ia * nu + iu + 1, (ia + 1) * nu + iu, (ia + 1) * nu + iu + 1], axis=1)
        wb = tf.stack([(1 - fa) * (1 - fu), (1 - fa) * fu, fa * (1 - fu), fa * fu], axis=1)
        basis = tf.reshape(tf.reduce_sum(wb[:, :, None] * tf.gather(self._basis, rows), axis=1), (-1, 1 + r, b))
        k = basis[:, 0] + tf.reduce_sum(coef * tf.transpose(basis[:, 1:], (0, 2, 1)), axis=-1)
        mags = mag + av[:, None] * k
        return tf.where(valid, mags, 0.0), valid
