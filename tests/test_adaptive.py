"""Adaptive importance sampling on targets whose answer is known (issue 10, Deliver 4), and the
batched Student-t mixture it fits.

Every row of one batch is a different test star: a Gaussian-mixture target in 5-D with a known
normalising constant, proposed by a broad diagonal Gaussian "flow". The whole engine runs inside
one ``tf.function`` whose batch size is dynamic (a module-scoped fixture traces it once).
"""
import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from irisml_tf.inference import mixture
from irisml_tf.inference.adaptive import AdaptiveOptions, adaptive_importance_sampling, row_normal, star_seeds

D = 5
C = 2  # Gaussian components per target (unused ones have zero mass)
OPTIONS = AdaptiveOptions(target_ess=400.0, max_draws=6256, n0=256, draws_per_round=500,
                          locate_starts=4)


# -- the synthetic problem ------------------------------------------------------------------------
def _log_normal(u, mean, chol):
    """log N(u; mean, LLᵀ): u [B, N, D], mean [B, D], chol [B, D, D] → [B, N]."""
    y = tf.linalg.triangular_solve(chol, tf.linalg.matrix_transpose(u - mean[:, None, :]))
    log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), -1)
    return -0.5 * tf.reduce_sum(y * y, 1) - log_det[:, None] - 0.5 * D * math.log(2 * math.pi)


def log_target(c, u):
    terms = [c["log_mass"][:, j, None] + _log_normal(u, c["mean"][:, j], c["chol"][:, j])
             for j in range(C)]
    return c["log_z"][:, None] + tf.reduce_logsumexp(tf.stack(terms, -1), -1)


def flow_sample(c, n, seeds):
    u = c["flow_mean"][:, None] + c["flow_scale"][:, None] * row_normal(seeds, n, D)
    z = (u - c["flow_mean"][:, None]) / c["flow_scale"][:, None]
    log_q = tf.reduce_sum(-0.5 * z * z - tf.math.log(c["flow_scale"][:, None])
                          - 0.5 * math.log(2 * math.pi), -1)
    return u, log_q


def correlated_cov(rho=0.99, scales=(1.0, 0.1, 0.01, 0.3, 0.05)):
    """AR(1)-correlated covariance (|ρ| up to 0.99 between neighbours), scales 100× apart."""
    idx = np.arange(D)
    corr = rho ** np.abs(idx[:, None] - idx[None, :]) * np.where((idx[:, None] + idx[None, :]) % 2, -1, 1)
    s = np.asarray(scales)
    return corr * s[:, None] * s[None, :]


def star(means, covs, masses, log_z, flow_mean, flow_scale):
    """One row's conditions (numpy) from its components."""
    means, covs, masses = list(means), list(covs), list(masses)
    while len(means) < C:
        means.append(np.zeros(D)), covs.append(np.eye(D)), masses.append(0.0)
    with np.errstate(divide="ignore"):
        log_mass = np.log(np.asarray(masses, np.float64))
    return {"mean": np.array(means), "chol": np.linalg.cholesky(np.array(covs)), "log_mass": log_mass,
            "log_z": np.float64(log_z), "flow_mean": np.asarray(flow_mean, np.float64),
            "flow_scale": np.full(D, float(flow_scale))}


def batch(rows):
    return {k: tf.constant(np.stack([r[k] for r in rows]), tf.float32) for k in rows[0]}


CORRELATED = star([np.array([0.5, -0.2, 0.1, 0.0, 0.3])], [correlated_cov()], [1.0], 1.7,
                  flow_mean=[1.5, -0.5, 0.3, 0.6, 0.5], flow_scale=2.0)
_DIR = np.array([1.0, 0.5, -0.5, 0.2, 0.0]) / np.linalg.norm([1.0, 0.5, -0.5, 0.2, 0.0])
# two modes 15 σ apart, masses 0.3 / 0.7, the flow broad over both (as a trained flow is: a mode
# whose basin of attraction no round-0 draw reaches cannot be found)
BIMODAL = star([-1.5 * _DIR, 1.5 * _DIR], [0.04 * np.eye(D), 0.04 * correlated_cov(0.5, np.ones(D))],
               [0.3, 0.7], -2.3, flow_mean=np.zeros(D), flow_scale=1.5)
# the flow misses: the target sits ~9 flow σ away from the flow's centre and is 10× narrower
MISSED = star([np.full(D, 9.0 / math.sqrt(D))], [0.01 * correlated_cov(0.9, np.ones(D))], [1.0],
              0.4, flow_mean=np.zeros(D), flow_scale=1.0)
ROWS = {"correlated": CORRELATED, "bimodal": BIMODAL, "missed": MISSED}


def _spec(rows):
    return {k: tf.TensorSpec([None, *np.shape(v)], tf.float32) for k, v in rows[0].items()}


def make_engine(options):
    spec = _spec([CORRELATED])

    @tf.function(input_signature=[spec, tf.TensorSpec([None, 2], tf.int32)])
    def engine(conditions, seeds):
        return adaptive_importance_sampling(log_target, flow_sample, conditions, seeds, D, options)
    return engine


@pytest.fixture(scope="module")
def engine():
    return make_engine(OPTIONS)


@pytest.fixture(scope="module")
def result(engine):
    """The three test stars in one batch, keys 0, 1, 2."""
    seeds = star_seeds(tf.constant([3, 4]), tf.range(3, dtype=tf.int64))
    return engine(batch(list(ROWS.values())), seeds)


def weighted_moments(res, row):
    w = res.weights[row].numpy().astype(np.float64)
    u = res.draws[row].numpy().astype(np.float64)
    mean = w @ u
    diff = u - mean
    return mean, np.einsum("n,ni,nj->ij", w, diff, diff)


# -- correctness ----------------------------------------------------------------------------------
def test_correlated_gaussian_moments_within_monte_carlo_error(result):
    ess = float(result.ess[0])
    assert bool(result.converged[0]) and ess >= OPTIONS.target_ess
    mean, cov = weighted_moments(result, 0)
    sd = np.sqrt(np.diag(correlated_cov()))
    # 4 MC standard errors (the error of a weighted mean is ≈ σ/√ESS)
    np.testing.assert_array_less(np.abs(mean - CORRELATED["mean"][0]) / sd, 4.0 / math.sqrt(ess))
    np.testing.assert_array_less(np.abs(np.diag(cov) / sd ** 2 - 1.0), 4.0 * math.sqrt(2.0 / ess))
    corr = cov / np.outer(np.sqrt(np.diag(cov)), np.sqrt(np.diag(cov)))
    true_corr = correlated_cov() / np.outer(sd, sd)
    np.testing.assert_allclose(corr, true_corr, atol=4.0 * (1 - 0.99 ** 2) / math.sqrt(ess) + 0.01)
    assert float(result.khat[0]) < 0.7


def test_bimodal_keeps_both_modes_with_their_mass(result):
    ess = float(result.ess[1])
    assert bool(result.converged[1])
    w = result.weights[1].numpy()
    side = result.draws[1].numpy() @ _DIR < 0  # the 0.3 mode
    mass = w[side].sum()
    assert abs(mass - 0.3) < 4.0 * math.sqrt(0.3 * 0.7 / ess), mass
    # each mode's mean is right too
    for sel, m in ((side, BIMODAL["mean"][0]), (~side, BIMODAL["mean"][1])):
        mean = (w[sel] @ result.draws[1].numpy()[sel]) / w[sel].sum()
        np.testing.assert_allclose(mean, m, atol=0.1)
    assert int(result.n_modes[1]) >= 2


def test_missed_star_is_found(result):
    assert bool(result.converged[2]), (float(result.ess[2]), int(result.rounds[2]))
    mean, cov = weighted_moments(result, 2)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(mean - MISSED["mean"][0]) / 0.1, 4.0 / math.sqrt(float(result.ess[2])))
    np.testing.assert_allclose(sd, 0.1, rtol=0.15)


def test_evidence_matches_the_exact_normalising_constant(result):
    for row, name in enumerate(ROWS):
        ess = float(result.ess[row])
        exact = float(ROWS[name]["log_z"])
        # relative MC error of the evidence ≈ 1/√ESS (the frozen rounds' weights are unbiased)
        assert abs(float(result.log_evidence[row]) - exact) < 4.0 / math.sqrt(ess) + 0.02, name


def test_counts_and_padding(result):
    n = result.n_draws.numpy()
    rounds = result.rounds.numpy()
    np.testing.assert_array_equal(n, OPTIONS.n0 + OPTIONS.draws_per_round * (rounds - 1))
    assert np.all(result.n_target_evals.numpy() > n)  # the gradient steps are counted too
    w = result.weights.numpy()
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    for row in range(3):
        assert np.all(w[row, n[row]:] == 0) and np.all(result.draws[row, n[row]:].numpy() == 0)
        if rounds[row] > 1:  # the round-0 flow draws carry no weight once fit rounds exist
            assert np.all(w[row, :OPTIONS.n0] == 0)
        # only the weighted rounds' slots carry weight (once frozen: the frozen rounds', from n0)
        stop = OPTIONS.n0 + OPTIONS.draws_per_round * (int(result.weighted_rounds[row]) - 1)
        assert np.all(w[row, stop:] == 0) and np.count_nonzero(w[row, OPTIONS.n0:stop]) > (stop - OPTIONS.n0) // 2
    # the frozen rounds: the correlated and the missed star adapt, then sample a frozen proposal
    assert np.all(result.weighted_rounds.numpy()[[0, 2]] < rounds[[0, 2]])


# a long curved ridge (a "banana": u1 bent by 0.5 (u0² − 1), u0 ~ N(0, 1)), as the teff–A_V
# degeneracy of a star with few bands is; the flow draws the ridge exactly, 1.2x wider
_BEND, _SCALES = 0.5, np.array([1.0, 0.1, 0.3, 0.3, 0.3])


def _banana_log_prob(u, widen=1.0):
    r = tf.concat([u[..., :1], u[..., 1:2] - _BEND * (u[..., :1] ** 2 - 1.0), u[..., 2:]], -1) / (widen * _SCALES)
    return (tf.reduce_sum(-0.5 * r * r, -1) - float(np.sum(np.log(widen * _SCALES)))
            - 0.5 * D * math.log(2 * math.pi))


def _banana_flow(c, n, seeds):
    z = row_normal(seeds, n, D) * (1.2 * _SCALES)
    u = tf.concat([z[..., :1], z[..., 1:2] + _BEND * (z[..., :1] ** 2 - 1.0), z[..., 2:]], -1)
    return u, _banana_log_prob(u, 1.2)


def _banana_tail_mass(freeze_at):
    """Mean weighted mass beyond 2σ along the ridge over 64 rows (exact: 0.0455)."""
    opt = AdaptiveOptions(target_ess=1000.0, max_draws=10256, n0=256, draws_per_round=500, freeze_at=freeze_at)
    res = adaptive_importance_sampling(lambda c, u: _banana_log_prob(u), _banana_flow, {"row": tf.zeros([64])},
                                       star_seeds(tf.constant([5, 6]), tf.range(64, dtype=tf.int64)), D, opt)
    w = res.weights.numpy().astype(np.float64)
    return float(np.mean(np.sum(w * (np.abs(res.draws.numpy()[..., 0]) > 2.0), 1)))


@pytest.mark.slow  # two engine runs of 64 rows at ESS 1000: ~40 s
def test_the_ends_of_a_curved_ridge_keep_their_mass():
    """The fitted t mixture does not follow a curved ridge, and the adaptive rounds' weights are
    biased in its sparse ends: each fit is evaluated at the draws it was fitted to, which lowers
    the weight of exactly the draws that reached there. Weighting every adaptive round (freeze_at
    = inf) put the 4.55 % beyond 2σ at 0.036 ± 0.001 (ESS ≈ 1100, k̂ ≈ 0.3: nothing flagged it;
    with one defensive t at 0.025); the frozen final rounds give 0.042 ± 0.001 (the rest is the
    finite-ESS deficit of a proposal with lighter tails than the target)."""
    exact = 2 * stats.norm.sf(2.0)
    assert abs(_banana_tail_mass(AdaptiveOptions().freeze_at) - exact) < 0.006
    assert abs(_banana_tail_mass(math.inf) - exact) > 0.006


# -- seeds, batches, tracing ----------------------------------------------------------------------
def test_same_seed_same_draws_and_rows_independent_of_their_batch(engine, result):
    rows = list(ROWS.values())
    keys = tf.range(3, dtype=tf.int64)
    again = engine(batch(rows), star_seeds(tf.constant([3, 4]), keys))
    np.testing.assert_array_equal(again.draws.numpy(), result.draws.numpy())
    np.testing.assert_array_equal(again.weights.numpy(), result.weights.numpy())
    # the missed star alone, and the bimodal star behind the others: same result per key
    alone = engine(batch([rows[2]]), star_seeds(tf.constant([3, 4]), keys[2:]))
    np.testing.assert_array_equal(alone.draws.numpy()[0], result.draws.numpy()[2])
    # at another position in a batch of another size: bit for bit (rows padded to whole packets)
    order = [2, 0, 1, 0]
    mixed = engine(batch([rows[i] for i in order]), star_seeds(tf.constant([3, 4]), tf.gather(keys, order)))
    for i, j in enumerate(order):
        np.testing.assert_array_equal(mixed.draws.numpy()[i], result.draws.numpy()[j])
        np.testing.assert_array_equal(mixed.weights.numpy()[i], result.weights.numpy()[j])
    other = engine(batch(rows), star_seeds(tf.constant([3, 5]), keys))
    assert not np.array_equal(other.draws.numpy(), result.draws.numpy())


def test_row_padding_helpers():
    from irisml_tf.inference.rows import ROW_MULTIPLE, pad_batch, row_indices, scatter_rows

    (x, s), b = pad_batch((tf.constant([[1.0], [2.0], [3.0]]), tf.constant([7, 8, 9])))
    assert int(b) == 3 and x.shape[0] == ROW_MULTIPLE and s.numpy().tolist()[2:] == [9] * (ROW_MULTIPLE - 2)
    empty, b = pad_batch(tf.zeros([0, 2]))
    assert int(b) == 0 and empty.shape == (0, 2)
    idx, n = row_indices(tf.constant([False, True, False, True]))
    assert int(n) == 2 and idx.numpy().tolist() == [1, 3] + [1] * (ROW_MULTIPLE - 2)
    none, zero = row_indices(tf.zeros([5], tf.bool))
    assert int(zero) == 0 and none.shape == (0,)
    base = tf.zeros([4])
    out = scatter_rows(base, idx, n, tf.gather(tf.constant([0.0, 5.0, 0.0, 6.0]), idx) + 1)
    assert out.numpy().tolist() == [0.0, 6.0, 0.0, 7.0]
    assert scatter_rows(base, none, zero, tf.zeros([0])).numpy().tolist() == [0.0] * 4


def test_traced_call_matches_eager_and_takes_any_batch_size(engine, result):
    assert len(engine._list_all_concrete_functions_for_serialization()) == 1
    eager = adaptive_importance_sampling(log_target, flow_sample, batch([MISSED]),
                                         star_seeds(tf.constant([3, 4]), tf.constant([2], tf.int64)),
                                         D, OPTIONS)
    np.testing.assert_allclose(eager.draws.numpy()[0], result.draws.numpy()[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eager.ess.numpy()[0], result.ess.numpy()[2], rtol=1e-3)
    empty = engine({k: v[:0] for k, v in batch([CORRELATED]).items()}, tf.zeros([0, 2], tf.int32))
    assert empty.draws.shape[0] == 0 and empty.ess.shape == (0,)


def test_by_weighted_slots_equals_the_whole_storage(rng):
    """Summaries over each row's weighted slots (rows grouped by their rounds: round 0's slots
    for one round, the fit rounds' after them) equal those over the whole storage, where the other
    slots carry zero weight."""
    from irisml_tf.inference.adaptive import by_weighted_slots
    from irisml_tf.inference.summaries import SUMMARY_NAMES, summarize

    opt = AdaptiveOptions(max_draws=256 + 3 * 100, n0=256, draws_per_round=100)
    rounds = np.array([1, 3, 2, 4, 3], np.int32)
    slot = np.arange(opt.slots)[None, :]
    r = rounds[:, None]
    used = np.where(r == 1, slot < opt.n0, (slot >= opt.n0) & (slot < opt.n0 + 100 * (r - 1)))
    draws = rng.normal(size=(5, opt.slots, D)).astype(np.float32)
    weights = np.where(used, rng.uniform(0.1, 1.0, (5, opt.slots)), 0.0).astype(np.float32)
    nan = tf.fill([5, D], float("nan"))
    part = by_weighted_slots(lambda a: summarize(*a), (tf.constant(draws), tf.constant(weights)),
                             tf.constant(rounds), opt, {k: nan for k in SUMMARY_NAMES})
    whole = summarize(draws, weights)
    for k in SUMMARY_NAMES:
        np.testing.assert_allclose(part[k].numpy(), whole[k].numpy(), rtol=1e-5, atol=1e-6)
    unseen = by_weighted_slots(lambda a: summarize(*a), (tf.constant(draws), tf.constant(weights)),
                               tf.constant([9, 1, 1, 1, 1]), opt, {k: nan for k in SUMMARY_NAMES})
    assert np.all(np.isnan(unseen["median"].numpy()[0]))  # a row in no group keeps ``init``


def test_one_start_traces_and_converges():
    """locate_starts = 1 (the mode search's start count is static; one start once failed to trace)."""
    one = make_engine(dataclasses.replace(OPTIONS, locate_starts=1))
    res = one(batch([CORRELATED, MISSED]), star_seeds(tf.constant([3, 4]), tf.range(2, dtype=tf.int64)))
    assert np.all(res.converged.numpy())


def test_stop_rule_and_impossible_budget():
    rows = [CORRELATED, MISSED]
    seeds = star_seeds(tf.constant([1, 2]), tf.range(2, dtype=tf.int64))
    tight = dataclasses.replace(OPTIONS, target_ess=1e6, max_draws=1256)
    res = adaptive_importance_sampling(log_target, flow_sample, batch(rows), seeds, D, tight)
    assert not np.any(res.converged.numpy())
    np.testing.assert_array_equal(res.n_draws.numpy(), tight.slots)
    assert tight.slots == 1256 and np.all(res.rounds.numpy() == 3)


def test_options_are_validated():
    for bad in ({"target_ess": 0.0}, {"alpha": 1.0}, {"max_draws": 10, "n0": 256}, {"df": 1.5},
                {"num_components": 0}, {"n0": 2.5}, {"max_rounds": -1}, {"widen": 0.5},
                {"learning_rate": (0.1,)}, {"temper_ess": float("nan")}, {"freeze_at": 0.0},
                {"freeze_at": 2.0}):
        with pytest.raises(ValueError):
            AdaptiveOptions(**bad)
    opts = AdaptiveOptions(max_draws=3300, n0=256, draws_per_round=1000)
    assert opts.rounds == 3 and opts.slots == 3256
    assert AdaptiveOptions(max_rounds=1).rounds == 1


# -- the mixture ----------------------------------------------------------------------------------
def _random_mixture(rng, k=3, df=5.0):
    a = rng.normal(size=(1, k, D, D)) * 0.3
    cov = a @ np.swapaxes(a, -1, -2) + 0.2 * np.eye(D)
    w = rng.dirichlet(np.ones(k), size=1)
    return mixture.Mixture(tf.constant(np.log(w)), tf.constant(rng.normal(size=(1, k, D)) * 2),
                           tf.constant(np.linalg.cholesky(cov))), w[0], cov[0]


def test_mixture_log_prob_matches_scipy(rng):
    mix, w, cov = _random_mixture(rng)
    x = rng.normal(size=(1, 50, D)) * 2
    for df in (5.0, math.inf):
        ours = mixture.log_prob(mix, tf.constant(x), df).numpy()[0]
        comp = [stats.multivariate_t(mix.loc[0, j].numpy(), cov[j], df=df) if df < math.inf
                else stats.multivariate_normal(mix.loc[0, j].numpy(), cov[j]) for j in range(3)]
        ref = np.log(sum(w[j] * comp[j].pdf(x[0]) for j in range(3)))
        np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_mixture_sample_and_fit_recover_a_mixture(rng):
    mix, w, _ = _random_mixture(rng, k=2, df=7.0)
    n = 20000
    gen = np.random.default_rng(1)
    x = mixture.sample(mix, 7.0, gen.normal(size=(1, n, D)), gen.uniform(size=(1, n)),
                       gen.chisquare(7.0, size=(1, n)))
    comp = tf.argmin(tf.reduce_sum(tf.square(x[:, :, None] - mix.loc[:, None]), -1), -1)
    assert abs(float(tf.reduce_mean(tf.cast(comp == 0, tf.float64))) - w[0]) < 0.02
    # EM from a perturbed start, with a weak prior at the truth, gets the parameters back
    start = mixture.Mixture(tf.math.log(tf.constant([[0.5, 0.5]], tf.float64)), mix.loc + 0.5,
                            tf.eye(D, batch_shape=[1, 2], dtype=tf.float64))
    fit = mixture.fit(start, start, x, tf.ones([1, n], tf.float64), 7.0, 30, 1.0, 1.0,
                      tf.ones([1, D], tf.float64), 1e-8, 100.0)
    np.testing.assert_allclose(np.exp(fit.log_weights.numpy()), w[None], atol=0.02)
    np.testing.assert_allclose(fit.loc.numpy(), mix.loc.numpy(), atol=0.1)
    np.testing.assert_allclose(fit.covariance().numpy(), mix.covariance().numpy(), atol=0.1)


def test_fit_keeps_dead_components_dead_and_respects_the_floor(rng):
    mix, _, _ = _random_mixture(rng, k=2)
    dead = mixture.Mixture(tf.constant([[0.0, -np.inf]], tf.float64), mix.loc, mix.scale_tril)
    x = tf.constant(rng.normal(size=(1, 3, D)))  # three draws: a collapsing fit without the floor
    fit = mixture.fit(dead, dead, x, tf.ones([1, 3], tf.float64), 5.0, 10, 0.01, 1.0,
                      tf.ones([1, D], tf.float64), 0.05, 4.0)
    assert np.isneginf(fit.log_weights.numpy()[0, 1])
    evals = np.linalg.eigvalsh(fit.covariance().numpy()[0, 0])
    assert evals.min() >= 0.05 * (1 - 1e-6)


def test_saved_model_signature_round_trip(tmp_path, result):
    """The engine exports as a SavedModel signature (dynamic B) and reloads with the same draws."""
    names = sorted(CORRELATED)
    specs = [tf.TensorSpec([None, *np.shape(CORRELATED[k])], tf.float32, name=k) for k in names]

    @tf.function(input_signature=[*specs, tf.TensorSpec([None, 2], tf.int32, name="seeds")])
    def serve(*args):
        res = adaptive_importance_sampling(log_target, flow_sample, dict(zip(names, args[:-1])),
                                           args[-1], D, OPTIONS)
        return res._asdict()

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": serve})
    loaded = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    out = loaded(**batch(list(ROWS.values())),
                 seeds=star_seeds(tf.constant([3, 4]), tf.range(3, dtype=tf.int64)))
    np.testing.assert_array_equal(out["draws"].numpy(), result.draws.numpy())
    np.testing.assert_array_equal(out["ess"].numpy(), result.ess.numpy())


# -- the stellar problem ---------------------------------------------------------------------------
def test_posterior_problem_matches_the_model_and_runs(sim, prior):
    """The adapter's flow draws carry the flow's own log density, its target is log p(x|θ) +
    log p(θ) + log|dθ/dz| in the flow's space, and the engine runs on it (an untrained model)."""
    from irisml_tf.inference.likelihood import log_likelihood_theta
    from irisml_tf.inference.posterior_target import posterior_problem
    from irisml_tf.model import PosteriorModel

    model = PosteriorModel.from_config(dict(embed_dim=16, num_heads=2, num_blocks=1, mlp_dim=32,
                                            flow_blocks=2, made_hidden=[32, 32]))
    theta = prior.sample(3, seed=1)
    mags, _ = sim(theta)
    inputs = {"band_index": tf.tile(tf.range(8)[None], [3, 1]), "mag": mags[:, :8] + 10.0,
              "mag_err": tf.fill([3, 8], 0.05)}
    p = posterior_problem(model, sim, prior, inputs, 0.01)
    z, log_q = p.flow_sample(p.conditions, 7, star_seeds(tf.constant([1, 2]), tf.range(3, dtype=tf.int64)))
    assert z.shape == (3, 7, 5) and log_q.shape == (3, 7)
    context = tf.repeat(p.conditions["context"], 7, axis=0)
    np.testing.assert_allclose(log_q.numpy().ravel(),
                               model.flow.log_prob(tf.reshape(z, [-1, 5]), context).numpy(), rtol=1e-4, atol=1e-4)
    th = p.theta(z)
    expect = (log_likelihood_theta(sim, th, inputs, 0.01)
              + tf.reshape(prior.log_prob(tf.reshape(th, [-1, 5])), [3, 7])
              + model.parameter_transform().forward_log_det_jacobian(z, event_ndims=1))
    np.testing.assert_allclose(p.log_target(p.conditions, z).numpy(), expect.numpy(), rtol=1e-5, atol=1e-3)
    tiny = AdaptiveOptions(target_ess=50.0, max_draws=296, n0=32, draws_per_round=88, locate_steps=3,
                           newton_steps=2, fit_draws=64)
    res = adaptive_importance_sampling(p.log_target, p.flow_sample, p.conditions,
                                       star_seeds(tf.constant([1, 2]), tf.range(3, dtype=tf.int64)), 5, tiny)
    assert res.draws.shape == (3, tiny.slots, 5) and np.all(res.n_draws.numpy() <= tiny.slots)
    assert np.all(np.isfinite(res.ess.numpy()))
