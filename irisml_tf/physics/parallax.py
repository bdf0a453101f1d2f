"""A Gaia parallax in the likelihood, with the stellar mass marginalised; derived distance, radius,
mass and luminosity; simulated parallaxes for tests and evaluation.

**The model.** The grid's magnitudes are for R = R☉ at 10 pc, so the photometric offset is
μ = s − 5 log10(R / R☉), with s = 5 log10(d / 10 pc) the true distance modulus, and g = G M / R²
gives log10 R = ½ (log10 M − (log g − log g☉)). Hence

    s = μ + 2.5 log10 M − 2.5 (log g − log g☉),         ϖ(s) = 10^(2 − s/5) mas.

The parallax is measured in its own space, never through 1/ϖ, so negative and low-S/N parallaxes
are used honestly (Bailer-Jones 2015, PASP 127, 994):  p(ϖ_obs | s) = N(ϖ_obs | ϖ(s), σ_ϖ²).

**Mass prior** (:class:`MassPrior`): log10 M | θ ~ N(m(θ), τ(θ)²), by default the PARSEC
isochrones' mass at θ's (Teff, log g, [M/H]) (:mod:`.mass_table`), else one N(m0, τ²) for all θ.
The photometric likelihood (:mod:`irisml_tf.inference.likelihood`) is, as a function of μ,
∝ N(μ | μ̂, 1/W) with W = Σ_k 1/σ_k², under a flat prior on μ. So for each θ, s is Gaussian in
closed form:

    s | θ ~ N(m_s, v_s),  m_s = μ̂ + 2.5 m(θ) − 2.5 (log g − log g☉),  v_s = 1/W + 6.25 τ(θ)²,

and the parallax factor of the likelihood is the 1-D integral

    L_ϖ(θ) = ∫ N(ϖ_obs | ϖ(s), σ_ϖ²) N(s | m_s, v_s) ds        (per mas; multiplies p(x | θ)).

**The integral** has no closed form and changes character: a 1 % parallax pins s to 0.02 mag
inside a prior 1 mag wide; a useless one leaves a plateau (ϖ(s) → 0 as s → ∞) times the prior; in
between, with the prior far from the parallax, it can have two modes. The rule
(:func:`log_parallax_integral`): find the mode by safeguarded Newton steps from two starts (the
precision-weighted combination of parallax and prior, and the prior's centre); give each mode a
split-normal envelope whose two half-widths fit the integrand's fall on either side (by e¹ and
e⁹); write the integrand as Σ_c envelope_c × r, r = integrand / Σ envelopes (≈ 1 near each mode),
and integrate each half of each envelope by half-range Gauss–Hermite (:data:`QUADRATURE_NODES`
nodes), in log space and float64. Against scipy.integrate.quad (tests/test_parallax.py): |error
of log L| ≤ 1e-3 on a grid of S/N −3 … 1000, v_s 1e-4 … 4, 1 pc … 100 kpc and prior offsets up to
8 √v_s. The envelopes are built without gradients; the gradient is the quadrature of the
integrand's gradient at fixed nodes (finite and smooth).

**No parallax.** A row whose ϖ or σ_ϖ is NaN/inf, or σ_ϖ ≤ 0, has L_ϖ = 1 (log 0): today's
colour-only posterior. So has a row without photometry (W = 0): μ is then unconstrained and the
parallax alone says nothing about θ.

**Zero point.** Gaia DR3 parallaxes are too small by about 17 µas (Lindegren et al. 2021, A&A 649,
A4: the quasar median, their global value); their full recipe Z5(G, ν_eff, β) depends on
magnitude, colour and ecliptic latitude (PyPI ``gaiadr3-zeropoint``). Our default
:data:`DEFAULT_ZERO_POINT` = −0.017 mas, applied as ϖ_corrected = ϖ − zp by the catalogue reader
(:mod:`irisml_tf.parallax_columns`); the functions here take corrected parallaxes. Give 0 for
parallaxes you corrected yourself.

TensorFlow ops (TensorFlow and scipy are imported inside the functions, so the constants load
without them: :mod:`irisml_tf.parallax_columns` reads the zero point),
batched over [B, N] (N θ draws per star), usable inside ``tf.function`` and SavedModels.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["LOGG_SUN", "TEFF_SUN", "GAIA_DR3_ZERO_POINT", "DEFAULT_ZERO_POINT", "GAIA_DR3_PARALLAX_ERROR",
           "QUADRATURE_NODES", "MassPrior", "distance_modulus_moments", "log_parallax_integral",
           "parallax_log_likelihood", "sample_derived", "simulate_parallax", "gaia_parallax_error",
           "SimulatedParallax", "usable_parallax", "luminosity"]

#: log10 of the Sun's surface gravity [cgs] (IAU 2015 B3 nominal GM☉ and R☉: 4.438).
LOGG_SUN = 4.438
#: The Sun's effective temperature [K] (IAU 2015 B3 nominal), for L = R² (Teff / TEFF_SUN)⁴.
TEFF_SUN = 5772.0
#: Gaia (E)DR3 global parallax zero point [mas]: Lindegren et al. 2021, A&A 649, A4 (QSO median).
GAIA_DR3_ZERO_POINT = -0.017
#: The default ``--parallax-zero-point`` [mas]; ϖ_corrected = ϖ − zero point.
DEFAULT_ZERO_POINT = GAIA_DR3_ZERO_POINT
#: Typical Gaia (E)DR3 five-parameter parallax errors [(G mag, σ_ϖ mas)]: Gaia Collaboration,
#: Brown et al. 2021, A&A 649, A1 (abstract and Table 5): 0.02–0.03 mas at G < 15, 0.07 at G = 17,
#: 0.5 at G = 20, 1.3 at G = 21. Log-linear in between, flat brighter, extrapolated fainter.
GAIA_DR3_PARALLAX_ERROR = ((15.0, 0.025), (17.0, 0.07), (20.0, 0.5), (21.0, 1.3))
#: Half-range Gauss–Hermite nodes per half envelope. Measured against quad: 12 and 16 both give
#: ≤ 1.2e-4 in log L on the test grid; on 3000 random cases (prior offsets up to 10 mag) 16 halves
#: the worst error (6e-3 → 3e-3, flat shoulders ≥ 5 σ out in a 1.2–2 mag wide prior).
QUADRATURE_NODES = 16

_LN10 = np.log(10.0)
_B = _LN10 / 5.0  # ϖ(s) = exp(_A − _B s) mas
_A = 2.0 * _LN10
_S_MIN = -300.0  # keeps exp(_A − _B s)² finite for any σ_ϖ; 1e-59 pc is never a mode
_NEWTON_STEPS = 12  # 10 suffice on every test case, 8 do not
_SIDE_STEPS = 4  # 3 cost accuracy (3.7e-4 on the grid), 8 gain none
_DROPS = (1.0, 9.0)  # the log-drops at which the envelope's half-widths are fitted
_CONVERGED = 1e-3  # |slope| × width below this: a mode
_SAMPLE_CELLS = 256  # inverse-CDF cells per half envelope when sampling s


@dataclass(frozen=True)
class MassPrior:
    """log10(M / M☉) | θ ~ N(m(θ), τ(θ)²): the isochrones' mass at θ's (Teff, log g, [M/H])
    (``table="parsec"``, :mod:`.mass_table`), or the same N(m0, tau²) for every θ (``table=None``).

    With the table, (m0, tau) is where no model star lies near θ (the table blends into it there).
    m0 = 0 (1 M☉), tau = 0.4 dex: ±1σ spans 0.4–2.5 M☉ (mid-M/K dwarfs to A stars, and most red
    giants and clump stars), ±2.5σ 0.1–10 M☉, from the grid's coolest dwarfs to its B stars. On its
    own (``table=None``) it does not look at log g or Teff, so it favours neither dwarfs nor giants,
    but then a parallax pins log g only to ~τ: the spread τ in log M becomes a spread τ in log g
    (0.34 dex RMSE measured on Gaia+2MASS+WISE stars with 10 % parallaxes). The table keeps the
    fairness — it gives each (Teff, log g) the mass stellar evolution gives a star there, dwarf or
    giant — and narrows the spread to 0.04 dex on the main sequence, 0.12–0.15 on the giant branch.
    """

    m0: float = 0.0
    tau: float = 0.4
    table: str | None = "parsec"

    def __post_init__(self):
        if not np.isfinite(self.m0) or not -2.0 <= self.m0 <= 2.0:
            raise ValueError(f"`m0` = {self.m0} must be log10(M / M☉), within [-2, 2]")
        if not np.isfinite(self.tau) or not 0.0 < self.tau <= 2.0:
            raise ValueError(f"`tau` = {self.tau} dex must be in (0, 2]")
        if self.table not in (None, "parsec"):
            raise ValueError(f"`table` = {self.table!r} must be 'parsec' (isochrone masses) or None")

    def moments(self, theta):
        """(mean, std) of log10 M, float64 [B, N], at θ draws [B, N, ≥ 3] (Teff, log g, [M/H], …)."""
        import tensorflow as tf

        theta = tf.cast(theta, tf.float64)
        if self.table is None:
            shape = tf.shape(theta)[:-1]
            return tf.fill(shape, tf.constant(self.m0, tf.float64)), tf.fill(shape, tf.constant(self.tau, tf.float64))
        from .mass_table import mass_moments

        return mass_moments(theta[..., 0], theta[..., 1], theta[..., 2], self.m0, self.tau)


class SimulatedParallax(NamedTuple):
    """Simulated truth and measurement, each [n]: plx, plx_err [mas]; mass [M☉], radius [R☉],
    distance [pc]."""

    plx: object
    plx_err: object
    mass: object
    radius: object
    distance: object


@functools.cache
def _half_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ∫_0^∞ e^(−x²) g(x) dx ≈ Σ w_i g(x_i), exact for polynomials of degree
    < 2n (discretised Stieltjes procedure on a fine Gauss–Legendre grid, then Golub–Welsch)."""
    from scipy.linalg import eigh_tridiagonal

    t, w = np.polynomial.legendre.leggauss(2000)
    top = 12.0  # e^(−144): nothing beyond
    x = 0.5 * top * (t + 1.0)
    wx = 0.5 * top * w * np.exp(-x * x)
    alpha, beta = np.zeros(n), np.zeros(n)
    p_prev, p, norm_prev = np.zeros_like(x), np.ones_like(x), 1.0
    for k in range(n):
        norm = np.sum(wx * p * p)
        alpha[k] = np.sum(wx * x * p * p) / norm
        beta[k] = norm / norm_prev if k else norm
        p_prev, p = p, (x - alpha[k]) * p - (beta[k] if k else 0.0) * p_prev
        norm_prev = norm
    nodes, vectors = eigh_tridiagonal(alpha, np.sqrt(beta[1:]))
    return nodes, beta[0] * vectors[0] ** 2


# -- the closed-form Gaussian of s given θ ----------------------------------------------------------
def distance_modulus_moments(mu_hat, w_sum, logg, mass_mean, mass_std):
    """(m_s, v_s) [B, N] float64: s | θ ~ N(m_s, v_s) with μ ~ N(μ̂, 1/W) and log10 M ~ N(mass_mean,
    mass_std²) (:meth:`MassPrior.moments` at θ).

    mu_hat, logg, mass_mean, mass_std: [B, N]; w_sum: [B] (Σ 1/σ_k², > 0; rows with 0 give v_s = inf).
    """
    import tensorflow as tf

    mu_hat, logg, mass_mean, mass_std = (tf.cast(x, tf.float64) for x in (mu_hat, logg, mass_mean, mass_std))
    w_sum = tf.cast(w_sum, tf.float64)[:, None]
    mean = mu_hat + 2.5 * mass_mean - 2.5 * (logg - LOGG_SUN)
    return mean, 1.0 / w_sum + 6.25 * mass_std ** 2


# -- the 1-D integral -------------------------------------------------------------------------------
class _Envelopes(NamedTuple):
    """Two split-normal envelopes per [B, N] element: centre, height (log integrand there) [B, N, 2];
    scale [B, N, 2, 2] (component, left/right); use bool [B, N, 2]."""

    centre: object
    height: object
    scale: object
    use: object


def _log_f(s, plx, err, m, v):
    """Unnormalised log integrand: −½ ((ϖ − ϖ(s)) / σ)² − ½ (s − m)² / v (arguments broadcast)."""
    import tensorflow as tf

    p = tf.exp(_A - _B * tf.maximum(s, _S_MIN))
    return -0.5 * tf.square((plx - p) / err) - 0.5 * tf.square(s - m) / v


def _log_f_slope(s, plx, err, m, v):
    """(_log_f, its derivative in s), sharing one exp."""
    import tensorflow as tf

    p = tf.exp(_A - _B * tf.maximum(s, _S_MIN))
    resid, dev = (plx - p) / err, s - m
    return -0.5 * tf.square(resid) - 0.5 * tf.square(dev) / v, -_B * p * resid / err - dev / v


def _slope_curvature(s, plx, err, m, v):
    import tensorflow as tf

    p = tf.exp(_A - _B * tf.maximum(s, _S_MIN))
    slope = -_B * p * (plx - p) / tf.square(err) - (s - m) / v
    curvature = _B ** 2 * p * (plx - 2.0 * p) / tf.square(err) - 1.0 / v
    return slope, curvature


def _newton(s, plx, err, m, v):
    """Safeguarded Newton ascent: where the integrand is convex in log (the parallax plateau),
    the step uses a curvature of at least 0.05 / v and is bounded by max(2 √v, 1 mag)."""
    import tensorflow as tf

    limit = tf.maximum(2.0 * tf.sqrt(v), 1.0)
    for _ in range(_NEWTON_STEPS):
        slope, curvature = _slope_curvature(s, plx, err, m, v)
        step = -slope / tf.minimum(curvature, -0.05 / v)
        s = s + tf.clip_by_value(step, -limit, limit)
    return s


def _starts(plx, err, m, v):
    """Newton starts [B, N, 2]: parallax and prior combined by precision, and the prior's centre."""
    import tensorflow as tf

    positive = plx > 0.0
    precision = tf.where(positive, tf.square(_B * plx / err), 0.0)
    s_plx = tf.where(positive, (_A - tf.math.log(tf.where(positive, plx, 1.0))) / _B, 0.0)
    combined = (s_plx * precision + m / v) / (precision + 1.0 / v)
    return tf.stack([combined, m], axis=-1)


def _half_widths(centre, height, width, args):
    """Half-widths [B, N, 2, 2] (component, left/right): the widest Gaussian that matches the
    integrand's fall by each of _DROPS on that side (a few clipped Newton steps per drop)."""
    import tensorflow as tf

    sign = tf.constant([[-1.0], [1.0]], tf.float64)  # [side, 1]
    drop = tf.constant([_DROPS], tf.float64)  # [1, drop]
    args = [x[..., None, None, None] for x in args]
    centre, height = centre[..., None, None], height[..., None, None]
    d = width[..., None, None] * tf.sqrt(2.0 * drop)  # [B, N, 2, side, drop]
    for _ in range(_SIDE_STEPS):
        log_f, slope = _log_f_slope(centre + sign * d, *args)
        gap = height - log_f - drop
        fall = -sign * slope
        d = tf.clip_by_value(d - gap / tf.maximum(fall, 1e-30), d / 2.0, 2.0 * d)
    return tf.reduce_max(d / tf.sqrt(2.0 * drop), axis=-1)


def _envelopes(plx, err, m, v) -> _Envelopes:
    """The two envelopes, from gradient-free copies of the arguments ([B, N] float64 each)."""
    import tensorflow as tf

    plx, err, m, v = (tf.stop_gradient(x) for x in (plx, err, m, v))
    args = [x[..., None] for x in (plx, err, m, v)]
    centre = _newton(_starts(plx, err, m, v), *args)
    slope, curvature = _slope_curvature(centre, *args)
    width = tf.math.rsqrt(tf.maximum(-curvature, 1e-12))
    converged = tf.abs(slope) * width < _CONVERGED
    # the parallax-led mode always, the prior-led one where Newton found a mode there
    use = tf.stack([converged[..., 0] | ~converged[..., 1], converged[..., 1]], axis=-1)
    height = _log_f(centre, *args)
    return _Envelopes(centre, height, _half_widths(centre, height, width, (plx, err, m, v)), use)


def _log_envelope(x, env: _Envelopes):
    """log Σ_c envelope_c(x) for x [B, N, P]."""
    import tensorflow as tf

    parts = []
    for c in range(2):
        dx = x - env.centre[..., c:c + 1]
        scale = tf.where(dx < 0.0, env.scale[..., c, 0:1], env.scale[..., c, 1:2])
        part = env.height[..., c:c + 1] - 0.5 * tf.square(dx / scale)
        parts.append(tf.where(env.use[..., c:c + 1], part, -np.inf))
    return tf.reduce_logsumexp(tf.stack(parts, axis=-1), axis=-1)


def _piece_geometry(env: _Envelopes):
    """Per piece (component × side, flattened to 4): centre, signed scale, height, use [B, N, 4]."""
    import tensorflow as tf

    sign = tf.constant([-1.0, 1.0], tf.float64)
    shape = tf.concat([tf.shape(env.centre)[:-1], [4]], 0)
    centre = tf.reshape(tf.repeat(env.centre, 2, axis=-1), shape)
    height = tf.reshape(tf.repeat(env.height, 2, axis=-1), shape)
    use = tf.reshape(tf.repeat(env.use, 2, axis=-1), shape)
    return centre, tf.reshape(env.scale * sign, shape), height, use


def _quadrature_terms(plx, err, m, v, env: _Envelopes):
    """log of each quadrature term [B, N, 4, K]; their logsumexp is log ∫ exp(_log_f) ds."""
    import tensorflow as tf

    nodes, weights = _half_hermite(QUADRATURE_NODES)
    k = len(nodes)
    centre, signed, height, use = _piece_geometry(env)
    x = centre[..., None] + np.sqrt(2.0) * signed[..., None] * nodes  # [B, N, 4, K]
    flat = tf.reshape(x, tf.concat([tf.shape(m), [4 * k]], 0))
    args = [a[..., None, None] for a in (plx, err, m, v)]
    log_r = _log_f(x, *args) - tf.reshape(_log_envelope(flat, env), tf.shape(x))
    base = height + tf.math.log(np.sqrt(2.0) * tf.abs(signed))
    terms = np.log(weights) + base[..., None] + log_r
    return tf.where(use[..., None], terms, -np.inf)


def log_parallax_integral(plx, plx_err, mean, var):
    """log ∫ N(ϖ | 10^(2 − s/5), σ_ϖ²) N(s | mean, var) ds [B, N] float64 (per mas).

    plx, plx_err: [B] or [B, N] (mas, finite, plx_err > 0); mean, var: [B, N] (mag, mag², var > 0).
    """
    import tensorflow as tf

    mean, var = tf.cast(mean, tf.float64), tf.cast(var, tf.float64)
    plx, err = (tf.broadcast_to(_per_draw(x), tf.shape(mean)) for x in (plx, plx_err))
    env = _envelopes(plx, err, mean, var)
    terms = _quadrature_terms(plx, err, mean, var, env)
    log_integral = tf.reduce_logsumexp(tf.reshape(terms, tf.concat([tf.shape(mean), [-1]], 0)), axis=-1)
    return log_integral - np.log(2.0 * np.pi) - tf.math.log(err) - 0.5 * tf.math.log(var)


def _per_draw(x):
    """[B] → [B, 1] (float64), [B, N] as is."""
    import tensorflow as tf

    x = tf.cast(x, tf.float64)
    return x[:, None] if x.shape.rank == 1 else x


# -- the likelihood factor ----------------------------------------------------------------------------
def usable_parallax(plx, plx_err):
    """bool, ``plx``'s shape: the parallax enters the likelihood (finite, with a finite error > 0)."""
    import tensorflow as tf

    return tf.math.is_finite(plx) & tf.math.is_finite(plx_err) & (plx_err > 0.0)


def luminosity(radius, teff):
    """L / L☉ = (R / R☉)² (Teff / Teff☉)⁴ (tensors or arrays)."""
    return radius ** 2 * (teff / TEFF_SUN) ** 4


def _usable(mu_hat, w_sum, theta, plx, plx_err):
    """(row has a usable parallax [B, 1], draw has finite μ̂, Teff, log g and [M/H] [B, N], cleaned
    arguments: μ̂ [B, N], W [B], θ [B, N, 3], ϖ, σ_ϖ [B])."""
    import tensorflow as tf

    plx, plx_err, w_sum = (tf.cast(x, tf.float32)[:, None] for x in (plx, plx_err, w_sum))
    row = usable_parallax(plx, plx_err) & (w_sum > 0.0)
    row &= tf.math.is_finite(w_sum)
    mu_hat, theta = tf.cast(mu_hat, tf.float32), tf.cast(theta, tf.float32)[..., :3]
    draw = tf.math.is_finite(mu_hat) & tf.reduce_all(tf.math.is_finite(theta), -1)
    clean = (tf.where(draw, mu_hat, 0.0), tf.where(row, w_sum, 1.0)[:, 0],
             tf.where(draw[..., None], theta, tf.constant([TEFF_SUN, LOGG_SUN, 0.0])),
             tf.where(row, plx, 0.0)[:, 0], tf.where(row, plx_err, 1.0)[:, 0])
    return row, draw, clean


def _s_moments(mu_hat, w_sum, theta, mass_prior: MassPrior):
    """(m_s, v_s, mass mean, mass std) [B, N] float64 at cleaned θ draws [B, N, 3]."""
    mass_mean, mass_std = mass_prior.moments(theta)
    return (*distance_modulus_moments(mu_hat, w_sum, theta[..., 1], mass_mean, mass_std), mass_mean, mass_std)


def parallax_log_likelihood(mu_hat, w_sum, theta, plx, plx_err, mass_prior: MassPrior = MassPrior()):
    """log L_ϖ(θ) [B, N] float32, to be added to the photometric log p(x | θ).

    Args:
      mu_hat: μ̂ [B, N] (``LikelihoodTerms.mu``); theta: the draws [B, N, ≥ 3] (Teff, log g, [M/H], …).
      w_sum: W = Σ_k 1/σ_k² [B] (``tf.reduce_sum(LikelihoodTerms.weight, -1)``).
      plx, plx_err: zero-point-corrected parallax and its 1σ [B], mas; NaN = no parallax.
      mass_prior: :class:`MassPrior`.

    Returns 0 where the row has no usable parallax (NaN/inf, σ ≤ 0) or no photometry (W = 0);
    −inf for draws whose μ̂, Teff, log g or [M/H] is not finite. Differentiable in mu_hat and θ.
    """
    import tensorflow as tf

    row, draw, (mu_hat, w_sum, theta, plx, plx_err) = _usable(mu_hat, w_sum, theta, plx, plx_err)
    mean, var, _, _ = _s_moments(mu_hat, w_sum, theta, mass_prior)
    log_l = tf.cast(log_parallax_integral(plx, plx_err, mean, var), tf.float32)
    return tf.where(row, tf.where(draw, log_l, -np.inf), 0.0)


# -- derived quantities -------------------------------------------------------------------------------
def _exp10(x):
    """10^x for a float tensor (tf.pow(10.0, x) fails in graphs when x is float64)."""
    import tensorflow as tf

    return tf.exp(x * _LN10)


def _uniforms(seed, shape, k: int):
    """Uniforms in (0, 1), float64 [B, N, k]; ``seed`` int32 [2] for the batch, or [B, 2] (row b's
    draws then depend on seed[b] only)."""
    import tensorflow as tf

    seed = tf.cast(seed, tf.int32)
    if seed.shape.rank == 2:
        u = tf.map_fn(lambda s: tf.random.stateless_uniform(tf.stack([shape[1], k]), s, dtype=tf.float64),
                      seed, fn_output_signature=tf.TensorSpec([None, k], tf.float64))
    else:
        u = tf.random.stateless_uniform(tf.concat([shape, [k]], 0), seed, dtype=tf.float64)
    return tf.clip_by_value(u, 1e-15, 1.0 - 1e-15)


def _pick(log_weights, u):
    """Index [B, N] of the category hit by u [B, N] under unnormalised log weights [B, N, C], and
    the position of u inside that category's share, in [0, 1)."""
    import tensorflow as tf

    w = tf.exp(log_weights - tf.reduce_max(log_weights, axis=-1, keepdims=True))
    cum = tf.cumsum(w, axis=-1)
    target = u * cum[..., -1]
    idx = tf.minimum(tf.reduce_sum(tf.cast(cum <= target[..., None], tf.int32), axis=-1), tf.shape(w)[-1] - 1)
    below = tf.gather(cum, idx, batch_dims=2) - tf.gather(w, idx, batch_dims=2)
    frac = (target - below) / tf.gather(w, idx, batch_dims=2)
    return idx, tf.clip_by_value(frac, 0.0, 1.0 - 1e-12)


def _sample_s(plx, err, mean, var, u_piece, u_cell):
    """One draw of s from ∝ N(ϖ | ϖ(s), σ²) N(s | mean, var) per element ([B, N] float64 each).

    The integrand is Σ_pieces envelope_piece × r: pick a piece (envelope × half) with its
    quadrature weight, then s inside it by inverse CDF in the half-normal's own probability
    coordinate, where the density is r: _SAMPLE_CELLS cells, uniform inside each."""
    import tensorflow as tf
    from scipy.special import ndtri

    env = _envelopes(plx, err, mean, var)
    terms = _quadrature_terms(plx, err, mean, var, env)
    piece, _ = _pick(tf.reduce_logsumexp(terms, axis=-1), u_piece)
    centre, signed, _, _ = (tf.gather(x, piece, batch_dims=2) for x in _piece_geometry(env))
    cells = ndtri(0.5 + 0.5 * (np.arange(_SAMPLE_CELLS) + 0.5) / _SAMPLE_CELLS)  # half-normal quantiles
    s_cells = centre[..., None] + signed[..., None] * cells  # [B, N, G]
    args = [a[..., None] for a in (plx, err, mean, var)]
    log_r = _log_f(s_cells, *args) - _log_envelope(s_cells, env)
    cell, frac = _pick(log_r, u_cell)
    prob = (tf.cast(cell, tf.float64) + frac) / _SAMPLE_CELLS
    return centre + signed * tf.math.ndtri(0.5 + 0.5 * prob)


def sample_derived(mu_hat, w_sum, theta, plx, plx_err, mass_prior: MassPrior = MassPrior(), seed=(0, 0)):
    """One draw of (s, log10 M) per θ draw from p(s, M | θ, x, ϖ), turned into physical quantities.

    s | θ, ϖ: from the 1-D integrand of :func:`log_parallax_integral` (quadrature weights pick a
    piece, an inverse CDF on 256 cells draws inside it); log10 M | s, θ: Gaussian in closed form,
    from the joint Gaussian of (μ, log10 M) given θ, with the mass prior N(m, τ²) at θ:
    mean m + 2.5 τ² (s − m_s) / v_s, variance τ² (1/W) / v_s.

    Args: as :func:`parallax_log_likelihood`, plus ``seed``: stateless int32 [2] for the batch, or
    [B, 2] (a star's draws then depend on its own seed only).

    Returns dict of float32 [B, N]: ``distance`` (pc), ``radius`` (R☉), ``mass`` (M☉) and
    ``luminosity`` (L☉, R² (Teff / 5772 K)⁴); NaN where the row has no usable parallax or no
    photometry, or the draw's μ̂, Teff, log g or [M/H] is not finite.
    """
    import tensorflow as tf

    row, draw, (mu_hat, w_sum, theta, plx, plx_err) = _usable(mu_hat, w_sum, theta, plx, plx_err)
    mean, var, mass_mean, mass_std = _s_moments(mu_hat, w_sum, theta, mass_prior)
    u = _uniforms(seed, tf.shape(mean), 3)
    plx, plx_err = (tf.broadcast_to(_per_draw(x), tf.shape(mean)) for x in (plx, plx_err))
    s = _sample_s(plx, plx_err, mean, var, u[..., 0], u[..., 1])
    tau2 = mass_std ** 2
    log_mass = (mass_mean + 2.5 * tau2 * (s - mean) / var
                + tf.sqrt(tau2 * (var - 6.25 * tau2) / var) * tf.math.ndtri(u[..., 2]))
    theta = tf.cast(theta, tf.float64)
    log_radius = 0.5 * (log_mass - (theta[..., 1] - LOGG_SUN))
    out = {"distance": _exp10(s / 5.0 + 1.0), "radius": _exp10(log_radius),
           "mass": _exp10(log_mass),
           "luminosity": luminosity(_exp10(log_radius), theta[..., 0])}
    keep = row & draw
    return {k: tf.where(keep, tf.cast(v, tf.float32), np.nan) for k, v in out.items()}


# -- simulation -----------------------------------------------------------------------------------------
def gaia_parallax_error(g_mag):
    """Typical Gaia DR3 parallax error [mas] at Gaia G [mag] (:data:`GAIA_DR3_PARALLAX_ERROR`):
    log-linear between the knots, flat brighter than the first, the last slope fainter; NaN for NaN."""
    import tensorflow as tf

    g = tf.cast(g_mag, tf.float64)
    knots = np.array(GAIA_DR3_PARALLAX_ERROR, np.float64)
    mag, log_err = knots[:, 0], np.log10(knots[:, 1])
    slopes = np.diff(log_err) / np.diff(mag)
    out = tf.fill(tf.shape(g), log_err[0]) + 0.0 * g  # NaN stays NaN
    for k, slope in enumerate(slopes):
        top = np.inf if k == len(slopes) - 1 else mag[k + 1] - mag[k]
        out += slope * tf.clip_by_value(g - mag[k], 0.0, top)
    return tf.cast(_exp10(out), tf.float32)


def simulate_parallax(theta, mu, g_mag, seed, mass_prior: MassPrior = MassPrior(), frac_err=None) -> SimulatedParallax:
    """Parallaxes for simulated stars (tests, ``evaluate``), all float32 [n].

    log10 M ~ the mass prior at θ [n, ≥ 3] (Teff, log g, [M/H], …); log10 R = ½ (log10 M − (log g −
    log g☉)); s = μ + 5 log10 R, with μ the star's magnitude offset (apparent = model magnitudes + μ,
    :mod:`irisml_tf.data.observation`); d = 10^(s/5 + 1) pc; ϖ_true = 1000 / d mas; σ_ϖ = ``frac_err``
    × ϖ_true if given, else :func:`gaia_parallax_error` at ``g_mag`` (the star's apparent Gaia G; NaN
    gives no parallax); ϖ = ϖ_true + N(0, σ_ϖ²) (zero-point corrected: no offset added). ``seed``:
    int32 [2] or [n, 2].
    """
    import tensorflow as tf

    theta, mu = tf.cast(theta, tf.float64), tf.cast(mu, tf.float64)
    logg = theta[:, 1]
    u = _uniforms(seed, tf.stack([tf.shape(logg)[0], 1]), 2)[:, 0, :]
    z = tf.math.ndtri(u)
    mass_mean, mass_std = mass_prior.moments(theta[:, None, :3])
    log_mass = mass_mean[:, 0] + mass_std[:, 0] * z[:, 0]
    log_radius = 0.5 * (log_mass - (logg - LOGG_SUN))
    distance = _exp10((mu + 5.0 * log_radius) / 5.0 + 1.0)
    true_plx = 1000.0 / distance
    if frac_err is None:
        err = tf.cast(gaia_parallax_error(g_mag), tf.float64)
    else:
        err = float(frac_err) * true_plx
    f32 = lambda x: tf.cast(x, tf.float32)  # noqa: E731
    return SimulatedParallax(f32(true_plx + err * z[:, 1]), f32(err), f32(_exp10(log_mass)),
                             f32(_exp10(log_radius)), f32(distance))
