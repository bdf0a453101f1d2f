"""Inference core: likelihood (μ marginalised), PSIS k̂, importance weights, summaries, flags."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from irisml_tf.inference import (
    FLAG_BITS,
    chi2_pvalue,
    compute_flags,
    edge_fraction,
    effective_sample_size,
    flag_names,
    importance_weights,
    leave_one_band_out,
    likelihood_terms,
    log_likelihood,
    log_likelihood_theta,
    psis,
    resample,
    run_importance_sampling,
    summarize,
    weighted_quantiles,
)
from irisml_tf.inference.flags import best_sample_index
from irisml_tf.inference.likelihood import default_sys_floor

SYS = 0.01
NB = 25


# -- helpers ------------------------------------------------------------------------------------
def _ll_numpy_integral(model, band_index, mag, err, sys_floor):
    """log ∫ Π_k N(mag_k | model_k + μ, err_k² + floor²) dμ by brute-force quadrature."""
    obs = band_index >= 0
    m, e = mag[obs], err[obs]
    mod = model[band_index[obs]]
    var = e ** 2 + sys_floor ** 2
    r = m - mod
    centre, width = np.average(r, weights=1 / var), 12 * np.sqrt(1 / np.sum(1 / var))
    mu = np.linspace(centre - width, centre + width, 200001)
    logp = (-0.5 * (r[None, :] - mu[:, None]) ** 2 / var - 0.5 * np.log(2 * np.pi * var)).sum(1)
    top = logp.max()
    return top + np.log(np.trapezoid(np.exp(logp - top), mu))


def _np_weighted_quantile(x, w, q):
    """Midpoint-rule weighted quantile (the definition summaries.py documents)."""
    keep = w > 0
    x, w = x[keep], w[keep]
    order = np.argsort(x)
    x, w = x[order], w[order]
    c = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, c, x)


def _gpdfit_reference(x):
    """Zhang & Stephens (2009) with the PSIS weakly informative prior, straight from the papers."""
    x = np.sort(x)
    n = len(x)
    m = 30 + int(np.floor(np.sqrt(n)))
    j = np.arange(1, m + 1)
    theta = 1 / x[-1] + (1 - np.sqrt(m / (j - 0.5))) / (3 * x[int(np.floor(n / 4 + 0.5)) - 1])
    k = np.array([np.mean(np.log1p(-t * x)) for t in theta])
    prof = n * (np.log(-theta / k) - k - 1)
    w = np.exp(prof - prof.max())
    w /= w.sum()
    theta_hat = np.sum(w * theta)
    k = np.mean(np.log1p(-theta_hat * x))
    sigma = -k / theta_hat
    return (n * k + 10 * 0.5) / (n + 10), sigma


def _psis_reference(lw):
    lw = np.asarray(lw, float)
    s = len(lw)
    fin = np.isfinite(lw)
    tail_len = min(int(np.ceil(min(0.2 * s, 3 * np.sqrt(s)))), fin.sum() - 1)
    if tail_len <= 4:
        return lw.copy(), np.inf
    top = lw[fin].max()
    lw = lw - top
    order = np.argsort(np.where(fin, lw, -np.inf))[::-1]
    tail, cutoff = order[:tail_len], lw[order[tail_len]]
    k, sigma = _gpdfit_reference(np.exp(lw[tail]) - np.exp(cutoff))
    p = (np.arange(tail_len) + 0.5) / tail_len
    out = lw.copy()
    out[tail[::-1]] = np.minimum(np.log(sigma / k * ((1 - p) ** (-k) - 1) + np.exp(cutoff)), 0.0)
    return out + top, k


def _star(sim, theta, bands, err=0.01, mu=10.0, seed=0, noise=True):
    """One observed star at θ: padded (band_index, mag, mag_err) with one pad slot at the end."""
    mags, valid = sim(np.asarray([theta], np.float32))
    mags, valid = mags.numpy()[0], valid.numpy()[0]
    bands = [b for b in bands if valid[b]]
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(err ** 2 + SYS ** 2)
    mag = mags[bands] + mu + (rng.normal(size=len(bands)) * sigma if noise else 0.0)
    k = len(bands) + 1
    bi = np.full((1, k), -1, np.int32)
    bi[0, :-1] = bands
    m = np.zeros((1, k), np.float32)
    m[0, :-1] = mag
    e = np.zeros((1, k), np.float32)
    e[0, :-1] = err
    return {"band_index": bi, "mag": m, "mag_err": e}


THETA_SUN = [5800.0, 4.4, 0.0, 0.6, 3.1]
THETA_GIANT = [4600.0, 2.5, -0.4, 2.0, 3.3]


@pytest.fixture(scope="module")
def tiny_model():
    from irisml_tf.model.posterior import PosteriorModel

    return PosteriorModel(embed_dim=16, num_heads=2, num_blocks=1, mlp_dim=32, flow_blocks=2,
                          made_hidden=[32])


# -- likelihood -----------------------------------------------------------------------------------
def test_sys_floor_is_the_observation_models():
    from irisml_tf.data.observation import ObservationModel

    assert default_sys_floor() == ObservationModel().sys_floor


def test_likelihood_equals_numerical_integral(rng):
    b, n = 3, 4
    model = rng.uniform(-2, 8, (b, n, NB)).astype(np.float32)
    valid = np.ones((b, n, NB), bool)
    band_index = np.array([[0, 3, 7, 12, -1, -1], [1, 2, 20, 21, 22, 24], [5, -1, 9, -1, 11, -1]],
                          np.int32)
    err = rng.uniform(0.02, 0.2, band_index.shape).astype(np.float32)
    mag = np.zeros(band_index.shape, np.float32)
    for i in range(b):  # data near the first sample, shifted by μ = 11
        obs = band_index[i] >= 0
        mag[i, obs] = model[i, 0, band_index[i, obs]] + 11.0 + rng.normal(0, 0.1, obs.sum())
    ll = log_likelihood(model, valid, band_index, mag, err, SYS).numpy()
    for i in range(b):
        for j in range(n):
            ref = _ll_numpy_integral(model[i, j].astype(float), band_index[i], mag[i].astype(float),
                                     err[i].astype(float), SYS)
            assert ll[i, j] == pytest.approx(ref, rel=1e-4, abs=2e-3)
    terms = likelihood_terms(model, valid, band_index, mag, err, SYS)
    # μ̂ and χ² against the weighted least-squares fit
    for i in range(b):
        obs = band_index[i] >= 0
        w = 1 / (err[i, obs].astype(float) ** 2 + SYS ** 2)
        r = mag[i, obs] - model[i, 0, band_index[i, obs]].astype(float)
        mu = np.sum(w * r) / w.sum()
        assert terms.mu.numpy()[i, 0] == pytest.approx(mu, abs=1e-4)
        assert terms.chi2.numpy()[i, 0] == pytest.approx(np.sum(w * (r - mu) ** 2), rel=1e-3)
        np.testing.assert_allclose(terms.residual.numpy()[i, 0, obs], r - mu, atol=1e-4)
        assert np.all(terms.residual.numpy()[i, :, ~obs] == 0)
    assert terms.n_bands.numpy().tolist() == [4, 6, 3]


def test_likelihood_invariant_to_constant_offset(rng):
    model = rng.uniform(-2, 8, (2, 5, NB)).astype(np.float32)
    valid = np.ones_like(model, bool)
    band_index = np.array([[0, 1, 2, 10, -1], [4, 8, 15, 16, 17]], np.int32)
    mag = rng.uniform(12, 16, band_index.shape).astype(np.float32)
    err = rng.uniform(0.01, 0.1, band_index.shape).astype(np.float32)
    a = likelihood_terms(model, valid, band_index, mag, err, SYS)
    b = likelihood_terms(model, valid, band_index, mag + 3.7, err, SYS)
    np.testing.assert_allclose(a.log_lik.numpy(), b.log_lik.numpy(), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(b.mu.numpy() - a.mu.numpy(), 3.7, atol=1e-4)


def test_pads_ignored(rng):
    model = rng.uniform(-2, 8, (1, 6, NB)).astype(np.float32)
    valid = np.ones_like(model, bool)
    valid[:, :, 3] = False  # band 3 invalid everywhere: only ever named by a pad
    bands = np.array([0, 5, 9, 14], np.int32)
    mag = rng.uniform(12, 16, 4).astype(np.float32)
    err = rng.uniform(0.01, 0.1, 4).astype(np.float32)
    ref = log_likelihood(model, valid, bands[None], mag[None], err[None], SYS).numpy()
    # shuffled slots interleaved with pads carrying garbage (NaN, huge values, invalid band data)
    perm = rng.permutation(4)
    bi = np.array([[-1, bands[perm[0]], -1, bands[perm[1]], bands[perm[2]], -1, bands[perm[3]]]], np.int32)
    m = np.array([[np.nan, *mag[perm[:1]], 1e30, *mag[perm[1:3]], -99.0, mag[perm[3]]]], np.float32)
    e = np.array([[0.0, *err[perm[:1]], np.inf, *err[perm[1:3]], -1.0, err[perm[3]]]], np.float32)
    out = log_likelihood(model, valid, bi, m, e, SYS).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    assert np.all(np.isfinite(out))


def test_invalid_observed_band_gives_minus_inf(rng):
    model = rng.uniform(-2, 8, (1, 3, NB)).astype(np.float32)
    valid = np.ones_like(model, bool)
    valid[0, 1, 7] = False  # sample 1: band 7 invalid
    valid[0, 2, 8] = False  # sample 2: band 8 invalid but not observed
    bi = np.array([[2, 7, 11, -1]], np.int32)
    mag = np.array([[14.0, 15.0, 13.5, 0.0]], np.float32)
    err = np.array([[0.05, 0.05, 0.05, 0.0]], np.float32)
    terms = likelihood_terms(model, valid, bi, mag, err, SYS)
    ll = terms.log_lik.numpy()[0]
    assert np.isfinite(ll[0]) and ll[1] == -np.inf and np.isfinite(ll[2])
    assert terms.supported.numpy().tolist() == [[True, False, True]]
    assert terms.chi2.numpy()[0, 1] == np.inf and np.all(np.isfinite(terms.mu.numpy()))


def test_one_band_and_no_band():
    model = np.full((2, 2, NB), 3.0, np.float32)
    valid = np.ones_like(model, bool)
    bi = np.array([[4, -1], [-1, -1]], np.int32)
    mag = np.array([[12.0, 0.0], [0.0, 0.0]], np.float32)
    err = np.array([[0.03, 0.0], [0.0, 0.0]], np.float32)
    terms = likelihood_terms(model, valid, bi, mag, err, SYS)
    # one magnitude with a free μ carries no information; no magnitude neither
    np.testing.assert_allclose(terms.log_lik.numpy(), 0.0, atol=1e-6)
    assert terms.n_bands.numpy().tolist() == [1, 0]


def test_likelihood_peaks_at_the_truth(sim):
    bands = list(range(NB))
    for theta in (THETA_SUN, THETA_GIANT):
        inputs = _star(sim, theta, bands, err=0.02, seed=3)
        steps = np.diag([0.08 * theta[0], 0.7, 0.4, 0.25, 0.6]).astype(np.float32)
        cand = np.concatenate([[theta], theta + steps, theta - steps]).astype(np.float32)
        ll = log_likelihood_theta(sim, cand[None], inputs, SYS).numpy()[0]
        assert np.isfinite(ll[0]) and np.argmax(ll) == 0, ll  # a step may leave the support: −inf
        # and the gradient at the truth is finite (differentiable end to end)
        t = tf.Variable(np.asarray(theta, np.float32)[None, None])
        with tf.GradientTape() as tape:
            val = log_likelihood_theta(sim, t, inputs, SYS)
        assert np.all(np.isfinite(tape.gradient(val, t).numpy()))


# -- PSIS --------------------------------------------------------------------------------------
def test_psis_matches_numpy_reference(rng):
    s, b = 1500, 6
    x = rng.normal(size=(b, s))
    sig = np.array([0.8, 1.2, 1.6, 2.0, 2.5, 1.4])[:, None]
    lw = (0.5 * x ** 2 * (1 - 1 / sig ** 2) - np.log(sig)) + 3.0
    lw[4, : s - 200] = -np.inf  # few finite weights: tail capped at (finite − 1)
    lw[5, ::3] = -np.inf
    smoothed, khat = psis(tf.constant(lw, tf.float64))
    smoothed, khat = smoothed.numpy(), khat.numpy()
    for i in range(b):
        ref_sm, ref_k = _psis_reference(lw[i])
        assert khat[i] == pytest.approx(ref_k, abs=1e-8)
        np.testing.assert_allclose(smoothed[i][np.isfinite(ref_sm)], ref_sm[np.isfinite(ref_sm)], atol=1e-8)
        assert np.array_equal(np.isfinite(smoothed[i]), np.isfinite(lw[i]))
        assert smoothed[i][np.isfinite(lw[i])].max() <= lw[i][np.isfinite(lw[i])].max() + 1e-12
    # float32 input: the same k̂ to float32 precision
    k32 = psis(tf.constant(lw, tf.float32))[1].numpy()
    np.testing.assert_allclose(k32, khat, atol=2e-3)


@pytest.mark.parametrize("sigma", [1.5, 2.0])
def test_khat_known_heavy_tail(sigma):
    """q = N(0, 1), p = N(0, σ²): w ∝ exp(x²(1 − 1/σ²)/2) has a Pareto tail with k = 1 − 1/σ²."""
    x = tf.random.stateless_normal([32, 10000], seed=[7, int(10 * sigma)])
    lw = 0.5 * tf.square(x) * (1 - 1 / sigma ** 2)
    khat = psis(lw)[1].numpy()
    # k̂ converges slowly here (log factors), from below: allow 0.1 on the mean of 32 replicas
    assert abs(khat.mean() - (1 - 1 / sigma ** 2)) < 0.1
    if sigma == 2.0:
        assert np.mean(khat > 0.5) > 0.9


def test_khat_light_tail():
    x = tf.random.stateless_normal([32, 4000], seed=[3, 4])
    lw = 0.5 * tf.square(x) * (1 - 1 / 0.7 ** 2)  # σ < 1: bounded weights
    khat = psis(lw)[1].numpy()
    assert np.all(khat < 0.3)


def test_psis_degenerate_rows():
    lw = np.full((4, 200), -np.inf, np.float32)
    lw[1, :4] = [0.0, 1.0, 2.0, 3.0]  # 4 finite weights: too few
    lw[2, :] = 0.5  # constant weights: no tail at all
    lw[3, :50] = np.linspace(-5, 0, 50)  # 50 finite: fitted
    smoothed, khat = psis(lw)
    khat = khat.numpy()
    assert khat[0] == np.inf and khat[1] == np.inf and khat[2] == -np.inf and np.isfinite(khat[3])
    assert not np.any(np.isnan(smoothed.numpy()))
    np.testing.assert_array_equal(smoothed.numpy()[:3], lw[:3])
    # S = 1 and S = 2 do not crash
    assert psis(tf.zeros([3, 1]))[1].numpy().tolist() == [np.inf] * 3
    assert psis(tf.zeros([2, 2]))[1].shape == (2,)


# -- importance weights --------------------------------------------------------------------------
def test_ess_equal_and_dominant_weights():
    n = 500
    zero = np.zeros((1, n), np.float32)
    iw = importance_weights(zero, zero, zero)
    assert iw["ess"].numpy()[0] == pytest.approx(n, rel=1e-5)
    assert iw["efficiency"].numpy()[0] == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(iw["weights"].numpy(), 1.0 / n, rtol=1e-5)
    assert iw["khat"].numpy()[0] < 0.7
    lw = np.full((1, n), -200.0, np.float32)
    lw[0, 17] = 0.0
    iw = importance_weights(lw, zero, zero)
    assert iw["ess"].numpy()[0] == pytest.approx(1.0, rel=1e-5)
    assert effective_sample_size(np.array([[1.0, 1.0, 0.0, 0.0]])).numpy()[0] == pytest.approx(2.0)


def test_weights_combination_and_all_minus_inf_rows(rng):
    b, n = 3, 64
    log_lik = rng.normal(size=(b, n)).astype(np.float32)
    log_prior = rng.normal(size=(b, n)).astype(np.float32)
    log_q = rng.normal(size=(b, n)).astype(np.float32)
    log_prior[0, :10] = -np.inf
    log_lik[0, 10:20] = -np.inf
    log_q[0, 20] = -np.inf  # would be +inf: dropped
    log_q[0, 21] = np.nan
    log_lik[1] = -np.inf  # no sample fits
    log_prior[2, :] = -np.inf
    iw = importance_weights(log_lik, log_prior, log_q)
    lw, w = iw["log_weights"].numpy(), iw["weights"].numpy()
    assert np.all(lw[0, :22] == -np.inf) and np.all(w[0, :22] == 0)
    np.testing.assert_allclose(lw[0, 22:], (log_lik + log_prior - log_q)[0, 22:], rtol=1e-6)
    ref = np.exp(lw[0, 22:] - lw[0, 22:].max())
    np.testing.assert_allclose(w[0, 22:], ref / ref.sum(), rtol=1e-5)
    for key in ("weights", "ess", "efficiency", "khat", "psis_log_weights", "log_weights"):
        assert not np.any(np.isnan(iw[key].numpy())), key
    assert iw["ess"].numpy()[1:].tolist() == [0.0, 0.0]
    assert np.all(w[1:] == 0) and np.all(iw["khat"].numpy()[1:] == np.inf)
    assert np.all(iw["log_evidence"].numpy()[1:] == -np.inf)
    # the summaries of rows without weight are NaN (no estimate), the others finite
    s = summarize(rng.normal(size=(b, n, 5)).astype(np.float32), w)
    assert np.all(np.isfinite(s["median"].numpy()[0])) and np.all(np.isnan(s["std"].numpy()[1:]))


# -- summaries -----------------------------------------------------------------------------------
def test_weighted_quantiles_match_numpy(rng):
    b, n = 4, 301
    x = rng.normal(size=(b, n, 5)).astype(np.float32) * [1000, 1, 0.3, 0.5, 0.2] + [5000, 4, 0, 1, 3]
    w = rng.exponential(size=(b, n)).astype(np.float32)
    w[1, :100] = 0.0
    w[2, rng.choice(n, 5)] *= 50
    qs = (0.5, 0.16, 0.84, 0.01, 0.999)
    out = weighted_quantiles(x, w, qs).numpy()  # [B, Q, D]
    for i in range(b):
        for d in range(5):
            ref = _np_weighted_quantile(x[i, :, d].astype(float), w[i].astype(float), np.array(qs))
            np.testing.assert_allclose(out[i, :, d], ref, rtol=2e-6, atol=1e-5 * abs(ref).max())
    # equal weights: NumPy's "hazen" quantiles; summarize(None) is the unweighted version
    s = summarize(x, None)
    np.testing.assert_allclose(s["median"].numpy(), np.quantile(x, 0.5, axis=1, method="hazen"), rtol=1e-6)
    np.testing.assert_allclose(s["p16"].numpy(), np.quantile(x, 0.16, axis=1, method="hazen"), rtol=1e-6)
    np.testing.assert_allclose(s["mean"].numpy(), x.mean(1), rtol=1e-5)
    np.testing.assert_allclose(s["std"].numpy(), x.std(1), rtol=1e-4)
    sw = summarize(x, w)
    for i in range(b):
        mean = np.average(x[i].astype(float), weights=w[i], axis=0)
        std = np.sqrt(np.average((x[i] - mean) ** 2, weights=w[i], axis=0))
        np.testing.assert_allclose(sw["mean"].numpy()[i], mean, rtol=1e-5)
        np.testing.assert_allclose(sw["std"].numpy()[i], std, rtol=1e-3)


# -- resampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling(rng, method):
    b, n = 3, 50
    samples = rng.normal(size=(b, n, 5)).astype(np.float32)
    w = rng.exponential(size=(b, n)).astype(np.float32)
    w[0, ::2] = 0.0
    w[0, -1] = 0.0
    w[2] = 0.0
    d1, i1 = resample(samples, w, 4000, [3, 9], method)
    d2, i2 = resample(samples, w, 4000, [3, 9], method)
    d3, _ = resample(samples, w, 4000, [4, 9], method)
    assert np.array_equal(d1.numpy(), d2.numpy(), equal_nan=True)
    assert not np.array_equal(d1.numpy()[:2], d3.numpy()[:2])
    idx = i1.numpy()
    assert np.all(w[0][idx[0]] > 0) and np.all(idx[2] == -1) and np.all(np.isnan(d1.numpy()[2]))
    np.testing.assert_array_equal(d1.numpy()[:2], np.take_along_axis(samples[:2], idx[:2, :, None], 1))
    freq = np.bincount(idx[1], minlength=n) / idx.shape[1]
    tol = 0.002 if method == "systematic" else 0.02
    np.testing.assert_allclose(freq, w[1] / w[1].sum(), atol=tol)


# -- flags -----------------------------------------------------------------------------------------
def test_chi2_pvalue_matches_scipy():
    chi2 = np.array([0.5, 3.0, 10.0, 40.0, np.inf, 2.0], np.float32)
    dof = np.array([1, 2, 5, 12, 3, 0])
    p = chi2_pvalue(chi2, dof).numpy()
    np.testing.assert_allclose(p[:4], stats.chi2.sf(chi2[:4], dof[:4]), rtol=1e-4)
    assert p[4] == 0.0 and p[5] == 1.0


def test_leave_one_band_out_names_corrupted_band(sim):
    bands = [0, 1, 2, 4, 5, 6, 7, 8, 20, 21, 22, 23, 24]  # Gaia, PS1, 2MASS, WISE
    bad = 6
    clean = _star(sim, THETA_SUN, bands, err=0.01, seed=5)
    dirty = {k: v.copy() for k, v in clean.items()}
    slot = int(np.where(dirty["band_index"][0] == bad)[0][0])
    dirty["mag"][0, slot] += 1.0
    messy = {k: v.copy() for k, v in clean.items()}  # bad everywhere: no single band to blame
    messy["mag"][0, :-1] += np.random.default_rng(2).choice([-0.3, 0.3], len(bands))
    inputs = {k: np.concatenate([clean[k], dirty[k], messy[k]]) for k in clean}
    jitter = tf.random.stateless_normal([3, 32, 5], [1, 1]) * [20.0, 0.05, 0.03, 0.02, 0.03]
    theta = tf.tile(tf.constant(THETA_SUN, tf.float32)[None, None], [3, 32, 1])
    theta = tf.concat([theta[:, :1], theta[:, 1:] + jitter[:, 1:]], axis=1)
    terms = log_likelihood_theta(sim, theta, inputs, SYS, return_terms=True)
    best = best_sample_index(terms.log_lik)
    outlier, delta = leave_one_band_out(terms, best, inputs["band_index"], threshold=25.0)
    assert outlier.numpy().tolist() == [-1, bad, -1]
    assert delta.numpy()[1, slot] > 1000 and delta.numpy()[0].max() < 25
    assert delta.numpy()[2].max() > 25  # large, but a small part of a huge χ²
    # Δ equals the χ² drop of an explicit refit without the band (μ re-estimated), at the best θ
    b1 = int(best.numpy()[1])
    keep = (inputs["band_index"][1] >= 0) & (inputs["band_index"][1] != bad)
    w = 1 / (inputs["mag_err"][1, keep].astype(float) ** 2 + SYS ** 2)
    mags = sim(theta[1, b1][None])[0].numpy()[0]
    r = inputs["mag"][1, keep] - mags[inputs["band_index"][1, keep]]
    chi2_rest = np.sum(w * (r - np.sum(w * r) / w.sum()) ** 2)
    assert terms.chi2.numpy()[1, b1] - chi2_rest == pytest.approx(delta.numpy()[1, slot], rel=1e-3)
    # the same through compute_flags: the dirty and the messy stars also fail the χ² test
    n = theta.shape[1]
    weights = tf.fill([3, n], 1.0 / n)
    log_prior = tf.zeros([3, n])
    lo = np.array([2800, 0.1, -2.5, 0.003, 2.5], np.float32)
    hi = np.array([16000, 5.5, 0.75, 15, 4.5], np.float32)
    flags = compute_flags(terms, inputs["band_index"], theta, weights, log_prior,
                          tf.constant([0.5, 0.5, 0.005]), tf.constant([0.2, 0.9, 0.2]), lo, hi)
    assert flags["bad_chi2"].numpy().tolist() == [False, True, True]
    assert flags["outlier_band"].numpy().tolist() == [-1, bad, -1]
    assert flags["high_khat"].numpy().tolist() == [False, True, False]
    assert flags["low_efficiency"].numpy().tolist() == [False, False, True]
    assert flags["outside_grid"].numpy().tolist() == [False, False, False]
    bits = flags["bits"].numpy()
    assert flag_names(bits[0]) == [] and set(flag_names(bits[1])) == {"bad_chi2", "outlier", "high_khat"}
    assert bits[1] == FLAG_BITS["bad_chi2"] | FLAG_BITS["outlier"] | FLAG_BITS["high_khat"]


def test_edge_fraction():
    lo = np.array([2800, 0.1, -2.5, 0.003, 2.5], np.float32)
    hi = np.array([16000, 5.5, 0.75, 15, 4.5], np.float32)
    theta = np.tile(np.array([5800, 4.4, 0.0, 0.6, 3.1], np.float32), (2, 4, 1))
    theta[1, :3, 0] = 15900.0  # piled at the hot edge of the grid
    theta[0, :3, 3] = 0.003  # A_V at its bound is normal: not a grid dimension
    w = np.array([[0.25] * 4, [0.3, 0.3, 0.3, 0.1]], np.float32)
    np.testing.assert_allclose(edge_fraction(theta, w, lo, hi).numpy(), [0.0, 0.9], atol=1e-6)


def test_outside_grid_and_no_weight_flags(rng):
    """Posterior piled at the grid edge, or most flow samples outside the support, or nothing fits."""
    lo = np.array([2800, 0.1, -2.5, 0.003, 2.5], np.float32)
    hi = np.array([16000, 5.5, 0.75, 15, 4.5], np.float32)
    b, n, k = 3, 40, 4
    theta = np.tile(np.array([5800, 4.4, 0.0, 0.6, 3.1], np.float32), (b, n, 1))
    theta[0, :, 0] = 15950.0
    model = rng.normal(size=(b, n, NB)).astype(np.float32)
    valid = np.ones_like(model, bool)
    valid[2, :, 1] = False  # star 2 observes band 1, never valid in the model
    bi = np.tile(np.arange(k, dtype=np.int32), (b, 1))
    mag = rng.normal(size=(b, k)).astype(np.float32)
    err = np.full((b, k), 0.5, np.float32)
    terms = likelihood_terms(model, valid, bi, mag, err, SYS)
    log_prior = np.zeros((b, n), np.float32)
    log_prior[1, :30] = -np.inf  # 75 % of star 1's flow samples outside the prior support
    iw = importance_weights(terms.log_lik, log_prior, np.zeros((b, n), np.float32))
    flags = compute_flags(terms, bi, theta, iw["weights"], log_prior, iw["efficiency"], iw["khat"],
                          lo, hi)
    assert flags["outside_grid"].numpy().tolist() == [True, True, True]
    assert flags["no_weight"].numpy().tolist() == [False, False, True]
    np.testing.assert_allclose(flags["unsupported_fraction"].numpy(), [0.0, 0.75, 1.0])
    assert flags["outlier_band"].numpy()[2] == -1 and flags["chi2"].numpy()[2] == np.inf


# -- end to end, traced once with a symbolic batch ------------------------------------------------
def test_run_importance_sampling_traced(sim, prior, tiny_model):
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), spec, spec,
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)])
    def infer(band_index, mag, mag_err, num_samples, seed):
        return run_importance_sampling(tiny_model, sim, prior,
                                       {"band_index": band_index, "mag": mag, "mag_err": mag_err},
                                       num_samples, seed, SYS, num_resample=num_samples)

    a = _star(sim, THETA_SUN, range(NB), err=0.03, seed=1)
    g = _star(sim, THETA_GIANT, [0, 1, 2, 20, 21, 22], err=0.05, seed=2)
    k = a["band_index"].shape[1]
    pad = lambda v, fill: np.pad(v, ((0, 0), (0, k - v.shape[1])), constant_values=fill)  # noqa: E731
    inputs = {key: np.concatenate([a[key], pad(g[key], -1 if key == "band_index" else 0)])
              for key in a}
    args = (inputs["band_index"], inputs["mag"], inputs["mag_err"])
    out = infer(*args, tf.constant(200), tf.constant([1, 2]))
    again = infer(*args, tf.constant(200), tf.constant([1, 2]))
    small = infer(g["band_index"], g["mag"], g["mag_err"], tf.constant(64), tf.constant([5, 6]))
    assert infer.experimental_get_tracing_count() == 1
    b, n = 2, 200
    shapes = {"samples": (b, n, 5), "log_q": (b, n), "log_weights": (b, n), "weights": (b, n),
              "ess": (b,), "efficiency": (b,), "khat": (b,), "median": (b, 5), "p16": (b, 5),
              "p84": (b, 5), "mean": (b, 5), "std": (b, 5), "q_median": (b, 5), "flag_bits": (b,),
              "outlier_band": (b,), "chi2": (b,), "resampled": (b, n, 5)}
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
    for key in ("samples", "log_q", "ess", "efficiency", "q_median", "q_std", "flag_bits", "weights"):
        assert np.all(np.isfinite(out[key].numpy())), key
    assert out["flag_bits"].dtype == tf.int32 and out["outlier_band"].dtype == tf.int32
    for key in out:
        np.testing.assert_array_equal(out[key].numpy(), again[key].numpy())
    assert small["samples"].shape == (1, 64, 5)
    ess = out["ess"].numpy()
    assert np.all((ess >= 0) & (ess <= n + 1e-3))
    np.testing.assert_allclose(out["weights"].numpy().sum(1)[ess > 0], 1.0, rtol=1e-5)
    has = ess > 0
    assert np.all(np.isfinite(out["median"].numpy()[has]))
    lo, hi = prior.lower, prior.upper
    med = out["median"].numpy()[has]
    assert np.all((med >= lo - 1e-3 * np.abs(lo)) & (med <= hi * 1.001))


def test_graph_only_savedmodel_roundtrip(sim, prior, tmp_path):
    """Likelihood, weights, PSIS, summaries, flags and resampling save as plain graph ops and run
    in a process that never imports irisml_tf or tensorflow_probability."""
    import json
    import subprocess
    import sys

    class Core(tf.Module):
        def __init__(self):
            super().__init__()
            self.sim, self.prior = sim, prior

        @tf.function(input_signature=[tf.TensorSpec([None, None, 5], tf.float32),
                                      tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.int32),
                                      tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([2], tf.int32)])
        def core(self, samples, log_q, band_index, mag, mag_err, seed):
            inputs = {"band_index": band_index, "mag": mag, "mag_err": mag_err}
            terms = log_likelihood_theta(self.sim, samples, inputs, SYS, return_terms=True)
            log_prior = tf.reshape(self.prior.log_prob(tf.reshape(samples, [-1, 5])), tf.shape(log_q))
            iw = importance_weights(terms.log_lik, log_prior, log_q)
            out = {k: iw[k] for k in ("log_weights", "ess", "khat")}
            out.update(summarize(samples, iw["weights"]))
            flags = compute_flags(terms, band_index, samples, iw["weights"], log_prior,
                                  iw["efficiency"], iw["khat"], self.prior.lower, self.prior.upper)
            out["bits"], out["outlier_band"] = flags["bits"], flags["outlier_band"]
            out["resampled"] = resample(samples, iw["weights"], 16, seed)[0]
            return out

    star = _star(sim, THETA_SUN, range(NB), err=0.03, seed=1)
    jitter = np.random.default_rng(0).normal(size=(1, 50, 5)) * [150, 0.2, 0.1, 0.1, 0.1]
    samples = (np.asarray(THETA_SUN) + jitter).astype(np.float32)
    log_q = np.zeros((1, 50), np.float32)
    args = [samples, log_q, star["band_index"], star["mag"], star["mag_err"], np.array([1, 2], np.int32)]
    module = Core()
    ref = {k: v.numpy() for k, v in module.core(*args).items()}
    tf.saved_model.save(module, str(tmp_path / "core"), signatures={"core": module.core})
    np.savez(tmp_path / "args.npz", *args)
    script = f"""
import json, sys, numpy as np, tensorflow as tf
a = np.load({str(tmp_path / 'args.npz')!r})
f = tf.saved_model.load({str(tmp_path / 'core')!r}).signatures["core"]
names = ["samples", "log_q", "band_index", "mag", "mag_err", "seed"]
out = f(**{{n: tf.constant(a[f"arr_{{i}}"]) for i, n in enumerate(names)}})
assert not any(m.startswith(("irisml_tf", "tensorflow_probability")) for m in sys.modules)
print(json.dumps({{k: v.numpy().tolist() for k, v in out.items()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, value in ref.items():
        np.testing.assert_allclose(np.asarray(got[key], value.dtype), value, rtol=1e-6, atol=1e-6)
