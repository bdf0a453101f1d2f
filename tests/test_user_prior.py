"""The user's prior at inference: merged on the training prior, refused/warned when wider, its
parameters as a tensor, per-star A_V priors (log_prob against scipy, normalised) and their columns."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy import stats

from irisml_tf.physics.prior import (
    DEFAULT_PRIOR,
    PRIOR_PARAM_NAMES,
    Prior,
    compare_to_training,
    config_from_params,
    load_prior_config,
    load_user_prior,
    prior_params,
)
from irisml_tf.prior_columns import match_av_prior_columns, read_av_prior

NEARBY = {"av": {"mean": 0.1, "max": 2.0}}
HALO = {"mh": {"components": [{"weight": 1, "mean": -1.5, "std": 0.4}]}}
GIANTS = {"logg": {"low": 0.1, "high": 3.5}}
ALL_THREE = {**NEARBY, **HALO, **GIANTS, "rv": {"mean": 3.1, "std": 0.1, "low": 2.8, "high": 3.4}}
# [M/H] far below the cells present at log g < 0.5 (and above the grid): the truncation matters
LOW_G_POOR = {"logg": {"high": 1.0}, "mh": {"components": [{"weight": 1, "mean": -2.3, "std": 0.3},
                                                           {"weight": 0.5, "mean": 0.7, "std": 0.1}]}}
STAR = [5000.0, 4.4, 0.0, 1.0, 3.1]  # a θ inside the grid's support


# -- configs ----------------------------------------------------------------------------------------
def test_keys_left_out_keep_the_training_values():
    training = load_prior_config({"av": {"mean": 1.0, "max": 10.0}, "rv": {"std": 0.25}})
    cfg = load_prior_config({"av": {"mean": 0.1}, **HALO}, base=training)
    assert cfg["av"] == {"offset": 0.003, "mean": 0.1, "max": 10.0}
    assert cfg["rv"]["std"] == 0.25 and cfg["logg"] == DEFAULT_PRIOR["logg"]
    assert cfg["mh"]["components"] == HALO["mh"]["components"]  # a list is replaced whole
    assert training["av"]["mean"] == 1.0 and training["mh"] == DEFAULT_PRIOR["mh"]  # base untouched


@pytest.mark.parametrize("user", [NEARBY, HALO, GIANTS, ALL_THREE, {"av": {"mean": 2.0}}, None])
def test_narrower_priors_are_accepted_quietly(user):
    up = load_user_prior(user, DEFAULT_PRIOR)
    assert up.warnings == ()
    assert np.array_equal(up.params, prior_params(up.config))


@pytest.mark.parametrize("user, key", [
    ({"av": {"max": 20.0}}, "`av.max` = 20"), ({"av": {"offset": 0.0}}, "`av.offset`"),
    ({"logg": {"low": -0.5}}, "`logg.low`"), ({"logg": {"high": 6.0}}, "`logg.high`"),
    ({"rv": {"low": 2.3}}, "`rv.low`"), ({"rv": {"high": 5.0}}, "`rv.high`"),
])
def test_support_beyond_the_training_prior_is_refused(user, key):
    with pytest.raises(ValueError, match=f"prior: {key}.*outside the model's training prior"):
        load_user_prior(user, DEFAULT_PRIOR)


def test_support_compared_within_the_model_box():
    lower, upper = [2800, 0.1, -2.5, 0.003, 2.5], [16000, 5.5, 0.75, 15.0, 4.5]
    # av.max 16 reaches past the training prior's 15, but the model's box (the grid) ends at 15
    assert load_user_prior({"av": {"max": 16.0}}, DEFAULT_PRIOR, lower, upper).config["av"]["max"] == 16.0
    with pytest.raises(ValueError, match="`av.max`"):
        load_user_prior({"av": {"max": 16.0}}, DEFAULT_PRIOR)


@pytest.mark.parametrize("user, match", [
    ({"av": {"scale": 1.0}}, "unknown key `av.scale`"),
    ({"av": {"max": 0.001}}, "`av.max` > `av.offset`"),
    ({"rv": {"std": "wide"}}, "`rv.std` must be a finite number"),
    ({"mh": {"components": [{"weight": 1, "mean": 0, "std": 0.1}] * 5}}, "`mh.components` has 5"),
])
def test_bad_user_prior(user, match):
    with pytest.raises(ValueError, match=match):
        load_user_prior(user, DEFAULT_PRIOR)


@pytest.mark.parametrize("user, key, region", [
    ({"av": {"mean": 3.0}}, "`av`", "A_V > 10"),
    ({"rv": {"std": 0.3}}, "`rv`", "R_V < 2.5"),
    ({"rv": {"mean": 3.6}}, "`rv`", "R_V > 3.7"),
    ({"mh": {"components": [{"weight": 1, "mean": 0.3, "std": 1.0}]}}, "`mh`", "[M/H] > "),
])
def test_heavier_tails_are_warned_about(user, key, region):
    warnings = load_user_prior(user, DEFAULT_PRIOR).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith(f"prior: {key} puts") and region in warnings[0]
    mass = float(warnings[0].split(" puts ")[1].split(" %")[0])
    assert 1.0 < mass < 100.0


def test_av_tail_mass_is_the_exponential_tail():
    """av.mean 3 vs 1.5: the training prior's least likely 0.1 % is A_V > a ≈ 10.4; the user's mass
    there is (e^(−(a − 0.003)/3) − e^(−(15 − 0.003)/3)) / (1 − e^(−(15 − 0.003)/3)) ≈ 2.6 %."""
    (w,) = compare_to_training(load_prior_config({"av": {"mean": 3.0}}), DEFAULT_PRIOR)
    a = 0.003 - 1.5 * np.log(1e-3 + np.exp(-(15 - 0.003) / 1.5) * (1 - 1e-3))
    assert abs(float(w.split("A_V > ")[1].split(")")[0]) - a) < 0.06
    tail = np.exp(-(15 - 0.003) / 3)
    mass = (np.exp(-(a - 0.003) / 3) - tail) / (1 - tail)
    assert abs(float(w.split(" puts ")[1].split(" %")[0]) - 100 * mass) < 0.06


# -- the parameter vector ---------------------------------------------------------------------------
def test_param_vector_layout_round_trip(prior):
    assert len(PRIOR_PARAM_NAMES) == 21 and PRIOR_PARAM_NAMES[:2] == ("logg.low", "logg.high")
    vec = prior_params(ALL_THREE)
    assert vec.dtype == np.float32 and vec[PRIOR_PARAM_NAMES.index("av.max")] == 2.0
    assert vec[PRIOR_PARAM_NAMES.index("mh.weight1")] == 0  # padding
    back = config_from_params(vec)
    assert back["mh"]["components"] == [{"weight": 1.0, "mean": np.float32(-1.5), "std": np.float32(0.4)}]
    assert np.array_equal(prior_params(back), vec)
    assert np.array_equal(prior.params.numpy(), prior_params(DEFAULT_PRIOR))
    with pytest.raises(ValueError, match="`rv.std`"):
        config_from_params(np.where(np.array(PRIOR_PARAM_NAMES) == "rv.std", -1, vec))


def _same(a, b):
    """Equal up to float32 rounding (graphs traced for other shapes may round the last bit apart)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and np.array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-6, atol=1e-6)
    return True


@pytest.mark.parametrize("key, value", [("logg.high", 0.0), ("rv.std", -1.0), ("av.mean", 0.0),
                                        ("mh.weight0", 0.0), ("av.max", np.nan)])
def test_impossible_params_give_minus_inf_not_nan(prior, key, value):
    vec = prior_params(None)
    vec[PRIOR_PARAM_NAMES.index(key)] = value
    if key == "mh.weight0":
        vec[PRIOR_PARAM_NAMES.index("mh.weight1")] = 0.0
    assert np.all(np.isneginf(prior.log_prob(_points(prior, 200), params=vec).numpy()))


def _points(prior, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.uniform(prior.lower, prior.upper, size=(n, 5)).astype(np.float32)
    return np.concatenate([prior.sample(n, seed).numpy(), u])


def test_default_params_are_the_config(prior):
    th = _points(prior)
    _same(prior.log_prob(th).numpy(), prior.log_prob(th, params=prior.params).numpy())


@pytest.mark.parametrize("user", [NEARBY, HALO, GIANTS, ALL_THREE])
def test_params_as_tensor_equal_a_prior_built_from_them(prior, grid, user):
    own = Prior(load_prior_config(user), grid)
    th = _points(prior, seed=1)
    a, b = prior.log_prob(th, params=own.params).numpy(), own.log_prob(th).numpy()
    assert _same(a, b) and np.isfinite(b).mean() > 0.05


@pytest.mark.parametrize("user", [ALL_THREE, LOW_G_POOR])
def test_user_prior_through_params_is_normalised(prior, user):
    """Monte Carlo ∫p dθ = 1 for a user prior given as a tensor, over its box."""
    cfg = load_prior_config(user)
    lo = np.array([2800, cfg["logg"]["low"], -2.5, cfg["av"]["offset"], cfg["rv"]["low"]])
    hi = np.array([16000, cfg["logg"]["high"], 0.75, cfg["av"]["max"], cfg["rv"]["high"]])
    rng = np.random.default_rng(2)
    n = 1_000_000
    lt = rng.uniform(np.log(lo[0]), np.log(hi[0]), n)
    x = np.c_[np.exp(lt), rng.uniform(lo[1:], hi[1:], (n, 4))].astype(np.float32)
    vol = (np.log(hi[0]) - np.log(lo[0])) * np.prod(hi[1:] - lo[1:])
    p = np.exp(prior.log_prob(x, params=prior_params(cfg)).numpy().astype(float)) * x[:, 0]
    est, err = p.mean() * vol, p.std() * vol / np.sqrt(n)
    assert abs(est - 1) < max(4 * err, 0.02)


def test_mh_and_teff_factors_integrate_to_one(prior, grid):
    """For fixed log g, A_V, R_V: ∫∫ p dteff d[M/H] = p(log g) p(A_V) p(R_V), also where the [M/H]
    mixture sits on cells the grid lacks (log g < 0.5). teff's factor is constant per cell in
    teff·p(teff), so its cells' midpoints integrate it exactly; [M/H] by 500 midpoints per cell."""
    cfg = load_prior_config(LOW_G_POOR)
    lt = np.log10(grid.teff)
    mid_t = 10 ** (0.5 * (lt[1:] + lt[:-1]))
    edges = grid.mh
    h = (edges[1] - edges[0]) / 500
    mid_m = np.arange(edges[0] + h / 2, edges[-1], h)
    t, m = (a.ravel() for a in np.meshgrid(mid_t, mid_m))
    for logg in (0.3, 0.8):
        th = np.c_[t, np.full_like(t, logg), m, np.full_like(t, 1.0), np.full_like(t, 3.1)].astype(np.float32)
        p = np.exp(prior.log_prob(th, params=prior_params(cfg)).numpy().astype(float))
        integral = np.sum(p * t * np.log(10) * np.diff(lt)[np.searchsorted(mid_t, t)] * h)
        want = (1 / (1.0 - 0.1) * stats.truncexpon(b=(15 - 0.003) / 1.5, loc=0.003, scale=1.5).pdf(1.0)
                * stats.truncnorm((2.5 - 3.13) / 0.18, (4.5 - 3.13) / 0.18, loc=3.13, scale=0.18).pdf(3.1))
        assert abs(integral / want - 1) < 1e-3, logg


# -- per-star A_V priors ----------------------------------------------------------------------------
# (av_prior, av_prior_err, av_max): narrow near 0, with a bound, bound only, mean below the support,
# mean above the grid's 15, mean above its bound, broad
CASES = [(0.1, 0.05, np.nan), (0.05, 0.02, 0.5), (np.nan, np.nan, 1.0), (-0.025, 0.01, np.nan),
         (16.0, 0.4, np.nan), (3.0, 2.0, 2.0), (1.0, 5.0, np.nan)]


def _along_av(av):
    th = np.tile(np.array(STAR, np.float32), (len(av), 1))
    th[:, 3] = av
    return th


def _scipy_av_factor(prior, av, mu, sd, av_max):
    lo, hi = prior.av_low, prior.av_high if np.isnan(av_max) else min(prior.av_high, av_max)
    if np.isnan(mu):
        return stats.truncexpon(b=(hi - lo) / prior.config["av"]["mean"], loc=lo,
                                scale=prior.config["av"]["mean"]).logpdf(av)
    return stats.truncnorm((lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd).logpdf(av)


@pytest.mark.parametrize("mu, sd, av_max", CASES)
def test_av_factor_matches_scipy(prior, mu, sd, av_max):
    av = np.concatenate([np.linspace(prior.av_low, prior.av_high, 301), [0.0, 0.004, 0.0301, 0.51, 14.999]])
    av = av.astype(np.float32)
    th = _along_av(av)
    base = prior.log_prob(th).numpy().astype(float)
    rows = prior.log_prob(th, av_prior=np.full(len(av), mu), av_prior_err=np.full(len(av), sd),
                          av_max=np.full(len(av), av_max)).numpy().astype(float)
    want = _scipy_av_factor(prior, av.astype(float), mu, sd, av_max)
    have_exp = _scipy_av_factor(prior, av.astype(float), np.nan, np.nan, np.nan)
    assert np.array_equal(np.isfinite(rows), np.isfinite(want))
    f = np.isfinite(want)
    # the other factors are unchanged: rows − base is the A_V factor's change alone
    np.testing.assert_allclose(rows[f] - base[f], want[f] - have_exp[f], rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("mu, sd, av_max", CASES)
def test_av_factor_integrates_to_one(prior, mu, sd, av_max):
    """∫ p(θ) dA_V with the star's A_V prior equals it without (the other factors' product), so the
    star's truncated factor is normalised, however narrow or far into its tail."""
    av = np.linspace(prior.av_low, prior.av_high, 200_001)  # step 7.5e-5 ≪ the narrowest σ, 0.01
    th = _along_av(av.astype(np.float32))
    rows = prior.log_prob(th, av_prior=np.full(len(av), mu), av_prior_err=np.full(len(av), sd),
                          av_max=np.full(len(av), av_max))
    with_row = np.trapezoid(np.exp(rows.numpy().astype(float)), av)
    without = np.trapezoid(np.exp(prior.log_prob(th).numpy().astype(float)), av)
    assert abs(with_row / without - 1) < 2e-3


def test_nan_rows_are_the_file_prior(prior):
    th = _points(prior, 5000)
    base = prior.log_prob(th).numpy()
    nan = np.full(len(th), np.nan)
    _same(prior.log_prob(th, av_prior=nan, av_prior_err=nan, av_max=nan).numpy(), base)
    mu = np.where(np.arange(len(th)) % 2 == 0, 0.2, np.nan)
    mixed = prior.log_prob(th, av_prior=mu, av_prior_err=np.full(len(th), 0.1)).numpy()
    _same(mixed[1::2], base[1::2])
    f = np.isfinite(base[::2])
    assert np.mean(np.abs(mixed[::2][f] - base[::2][f]) > 0.1) > 0.9


def test_per_star_arrays_broadcast_over_draws(prior):
    b, n = 4, 300
    th = prior.sample(b * n, 3).numpy()
    mu, sd = np.array([0.2, np.nan, 1.0, 3.0]), np.array([0.1, 0.1, 0.5, 1.0])
    av_max = np.array([1.0, 2.0, np.nan, 2.5])
    flat = prior.log_prob(th, av_prior=np.repeat(mu, n), av_prior_err=np.repeat(sd, n),
                          av_max=np.repeat(av_max, n)).numpy()
    batched = prior.log_prob(th.reshape(b, n, 5), av_prior=mu, av_prior_err=sd, av_max=av_max).numpy()
    assert batched.shape == (b, n) and _same(batched.reshape(-1), flat)
    one = prior.log_prob(th.reshape(b, n, 5), av_prior=0.2, av_prior_err=0.1).numpy()  # one value for all
    _same(one.reshape(-1), prior.log_prob(th, av_prior=np.full(b * n, 0.2), av_prior_err=np.full(b * n, 0.1)))


def test_gradients_are_finite(prior):
    """The sampler climbs log p(x|θ) p(θ): dlog p/dθ is finite wherever log p is, per-star priors on."""

    th = tf.constant(_points(prior, 2000, seed=4))
    n = th.shape[0]
    with tf.GradientTape() as tape:
        tape.watch(th)
        lp = prior.log_prob(th, params=prior_params(ALL_THREE), av_prior=np.full(n, 0.3),
                            av_prior_err=np.full(n, 0.1), av_max=np.where(np.arange(n) % 2 == 0, 1.0, np.nan))
    grad = tape.gradient(lp, th).numpy()
    f = np.isfinite(lp.numpy())
    assert f.mean() > 0.05 and np.isfinite(grad).all() and np.all(grad[~f] == 0)


def test_signature_takes_the_prior_per_request(prior, tmp_path):
    """A SavedModel signature with the parameter vector and the per-star A_V prior as inputs gives
    what the library gives, for a prior other than the one traced with."""

    spec = [tf.TensorSpec([None, None, 5], tf.float32), tf.TensorSpec([len(PRIOR_PARAM_NAMES)], tf.float32)]
    spec += [tf.TensorSpec([None], tf.float32)] * 3
    module = tf.Module()
    module.prior = prior
    module.log_prior = tf.function(lambda *a: prior.log_prob(a[0], *a[1:]), input_signature=spec)
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    th = prior.sample(600, 5).numpy().reshape(3, 200, 5)
    rows = [np.array([0.2, np.nan, 1.0], np.float32), np.array([0.1, np.nan, 0.3], np.float32),
            np.array([np.nan, 2.0, 1.5], np.float32)]
    for cfg in (DEFAULT_PRIOR, ALL_THREE):
        got = loaded.log_prior(th, prior_params(cfg), *rows).numpy()
        _same(got, prior.log_prob(th, prior_params(cfg), *rows).numpy())


# -- catalogue columns ------------------------------------------------------------------------------
BAD = pd.DataFrame({
    " AV_Prior": [0.1, "abc", 0.1, 0.1, 0.1, 20.0, None, None, None, np.inf, "", 1.0, 0.1, 0.1],
    "av_prior_ERR": [0.05, 0.05, -0.05, None, "x", 0.5, 0.05, None, None, 0.1, "", 0.1, 0.0, np.inf],
    "av_max": [2.0, None, None, None, None, None, None, 0.0, "big", -1, "", 0.5, None, None],
    "other": range(14)})
BAD_CODES = [[], ["prior:av_prior_ignored(text)"], ["prior:av_prior_ignored(nonpositive_err)"],
             ["prior:av_prior_ignored(no_err)"], ["prior:av_prior_ignored(text_err)"],
             ["prior:av_prior_ignored(outside_support)"], ["prior:av_prior_err_ignored(no_av_prior)"],
             ["prior:av_max_ignored(below_support)"], ["prior:av_max_ignored(text)"],
             ["prior:av_prior_ignored(inf)", "prior:av_max_ignored(below_support)"], [],
             ["prior:av_prior_ignored(outside_support)"], ["prior:av_prior_ignored(nonpositive_err)"],
             ["prior:av_prior_ignored(inf_err)"]]


def test_prior_columns_each_bad_case(prior):
    got = read_av_prior(BAD, prior.av_low, prior.av_high)
    assert got.columns == (" AV_Prior", "av_prior_ERR", "av_max")
    assert got.codes == BAD_CODES
    assert len(got.av_prior) == len(BAD)  # no row lost
    np.testing.assert_array_equal(got.av_prior[[0, 11]], [0.1, np.nan])
    np.testing.assert_array_equal(got.av_max[[0, 7, 11]], [2.0, np.nan, 0.5])
    used = ~np.isnan(got.av_prior)
    assert used.sum() == 1 and np.array_equal(np.isnan(got.av_prior_err), ~used)


def test_graph_applies_the_same_rule_to_raw_values(prior):
    """A TF Serving client sending the raw (numeric) values gets what the cleaned columns give."""
    raw = BAD.drop(columns="other").apply(pd.to_numeric, errors="coerce").to_numpy(float).T
    got = read_av_prior(BAD, prior.av_low, prior.av_high)
    th = np.tile(np.array(STAR, np.float32), (len(BAD), 1))
    th[:, 3] = 0.3
    a = prior.log_prob(th, av_prior=raw[0], av_prior_err=raw[1], av_max=raw[2]).numpy()
    b = prior.log_prob(th, av_prior=got.av_prior, av_prior_err=got.av_prior_err, av_max=got.av_max).numpy()
    _same(a, b)


def test_no_prior_columns():
    got = read_av_prior(pd.DataFrame({"Gaia_G": [12.0, 13.0]}), 0.003, 15.0)
    assert got.columns == () and got.codes == [[], []] and np.isnan(got.av_max).all()
    assert match_av_prior_columns(["AV_MAX", "av_max", "azero_gspphot"]) == {"av_max": "AV_MAX"}
