"""emcee reference (irisml_tf.inference.mcmc) and `irisml-tf mcmc`: a star simulated at a known θ in
all 25 bands, short chains, the comparison with NPE on Gaussians of known overlap."""
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import norm

from irisml_tf.physics.bands import BAND_NAMES
from irisml_tf.physics.simulator import PARAM_NAMES

THETA = np.array([5500.0, 4.3, -0.2, 0.5, 3.1], np.float32)
ERR = 0.02
SYS = 0.01


@pytest.fixture(scope="module")
def star(sim):
    """(band_index, mag, mag_err) [25]: THETA at μ = 10 with Gaussian noise of σ ⊕ sys floor."""
    mags, valid = sim(THETA[None])
    assert valid.numpy().all()
    rng = np.random.default_rng(7)
    err = np.full(25, ERR, np.float32)
    mag = mags.numpy()[0] + 10.0 + rng.normal(0.0, np.hypot(ERR, SYS), 25)
    return np.arange(25, dtype=np.int32), mag.astype(np.float32), err


@pytest.fixture(scope="module")
def log_post(sim, prior):
    """One LogPosterior for every star of this module (the caller holds it)."""
    from irisml_tf.inference.mcmc import LogPosterior

    return LogPosterior(sim, prior, SYS)


def _opts(**kw):
    from irisml_tf.inference.mcmc import ChainOptions

    return ChainOptions(**kw)


@pytest.fixture(scope="module")
def chain(log_post, star):
    from irisml_tf.inference.mcmc import run_mcmc

    return run_mcmc(log_post, *star, _opts(nwalkers=32, nsteps=300, burn=100), seed=1)


def test_recovers_theta(chain):
    s = chain.summary()
    z = (s["median"] - THETA) / s["std"]
    assert np.all(np.abs(z) < 3.0), dict(zip(PARAM_NAMES, z))
    # a 25-band star pins teff to a few per cent
    assert 0 < s["std"][0] < 300
    assert chain.samples.shape == (200 * 32, 5)
    assert chain.chain.shape == (300, 32, 5) and chain.log_prob.shape == (300, 32)
    assert 0.2 < chain.acceptance < 0.8
    np.testing.assert_allclose(chain.ess, len(chain.samples) / chain.tau)
    assert chain.n_likelihood_calls == 4096 + 32 + 32 + 300 * 32  # init draws, jitter, start, steps
    assert not chain.converged  # 200 steps < 50 τ: the flag says so


def test_emcee_log_prob_is_likelihood_plus_prior(sim, prior, star, chain, log_post):
    """The values emcee stored are log_likelihood_theta + prior.log_prob (no second copy)."""
    from irisml_tf.inference.likelihood import log_likelihood_theta

    bi, mag, err = star
    inputs = {"band_index": bi[None], "mag": mag[None], "mag_err": err[None]}
    theta = chain.chain[-1].astype(np.float32)
    ref = (log_likelihood_theta(sim, theta[None], inputs, SYS)[0] + prior.log_prob(theta)).numpy()
    np.testing.assert_allclose(chain.log_prob[-1], ref, rtol=1e-6)
    # outside the prior (av < 0) and outside the grid (teff 1000 K): −inf, never NaN
    odd = np.array([[5500, 4.3, -0.2, -0.1, 3.1], [1000, 4.3, -0.2, 0.5, 3.1]], np.float32)
    lp = log_post  # the one the chain ran on: its trace is reused across stars
    assert np.all(lp(odd, *star) == -np.inf)
    assert lp.n_calls >= chain.n_likelihood_calls
    before = lp._fn.experimental_get_tracing_count()
    lp(theta[:16], bi[:8], mag[:8], err[:8])  # another star, another walker count: no retrace
    assert lp._fn.experimental_get_tracing_count() == before


def test_same_seed_same_chain(log_post, star):
    from irisml_tf.inference.mcmc import run_mcmc

    opts = _opts(nwalkers=16, nsteps=40, burn=10)
    a = run_mcmc(log_post, *star, opts, seed=5)
    b = run_mcmc(log_post, *star, opts, seed=5)
    c = run_mcmc(log_post, *star, opts, seed=6)
    np.testing.assert_array_equal(a.chain, b.chain)
    np.testing.assert_array_equal(a.log_prob, b.log_prob)
    assert not np.array_equal(a.chain, c.chain)


def test_target_ess_extends_the_chain(log_post, star, chain):
    from irisml_tf.inference.mcmc import run_mcmc

    init = chain.chain[-1]  # start in the posterior: a short burn-in suffices
    opts = _opts(nwalkers=32, nsteps=100, burn=20, max_steps=100_000, until_converged=False, target_ess=400)
    r = run_mcmc(log_post, *star, opts, seed=2, init=init)
    assert r.nsteps > 100
    assert r.ess.min() >= 400
    assert r.samples.shape == ((r.nsteps - 20) * 32, 5)


def _ar1(rho, steps, walkers=32, seed=0):
    """AR(1) chains [steps, walkers, 5] with τ = (1 + ρ) / (1 − ρ) (ρ = 1: a random walk)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((steps, walkers, 5))
    x[0] = rng.standard_normal((walkers, 5))
    noise = rng.standard_normal((steps, walkers, 5)) * (np.sqrt(1 - rho ** 2) if rho < 1 else 1.0)
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + noise[t]
    return x


def test_convergence_rule_on_known_chains():
    from irisml_tf.inference.mcmc import CONVERGED_TAUS, convergence

    long = convergence(_ar1(0.9, 4100), burn=100)  # τ = 19: 4000 steps = 210 τ
    np.testing.assert_allclose(long.tau, 19.0, rtol=0.15)
    assert long.length == 4000 and long.long_enough and long.stable and long.converged
    assert long.note() == ""
    short = convergence(_ar1(0.9, 600), burn=100)  # 500 steps = 26 τ
    assert not short.long_enough and not short.converged
    assert f"needs {CONVERGED_TAUS:g} τ" in short.note()
    # a random walk: τ grows with the chain, so it is never stable, however long
    walk = convergence(_ar1(1.0, 4100), burn=100)
    assert not walk.converged and walk.tau_change > 0.1 and "τ still changing" in walk.note()
    stuck = convergence(np.ones((200, 32, 5)), burn=10)  # walkers that never moved
    assert np.all(np.isinf(stuck.tau)) and not stuck.converged and "not estimable" in stuck.note()


class _Gaussian:
    """A LogPosterior stand-in: N(THETA, diag SD²) whatever the star (the walkers' start is given)."""

    SD = np.array([100.0, 0.1, 0.1, 0.05, 0.1])

    def __init__(self):
        self.n_calls = 0

    def __call__(self, theta, *star):
        self.n_calls += len(theta)
        return -0.5 * np.sum(((np.asarray(theta) - THETA) / self.SD) ** 2, axis=1)

    def start(self, nwalkers, seed=0):
        return THETA + self.SD * np.random.default_rng(seed).standard_normal((nwalkers, 5))


def test_runs_until_converged(star, monkeypatch):
    from irisml_tf.inference import mcmc

    # the rule at 10 τ and 30 % instead of 50 τ and 10 % (τ ≈ 60 steps here: the real rule takes
    # ~8000 steps, ~10 s of emcee overhead)
    monkeypatch.setattr(mcmc, "CONVERGED_TAUS", 10.0)
    monkeypatch.setattr(mcmc, "TAU_RTOL", 0.3)
    run_mcmc, CONVERGED_TAUS = mcmc.run_mcmc, mcmc.CONVERGED_TAUS
    g = _Gaussian()
    r = run_mcmc(g, *star, _opts(nwalkers=16, nsteps=60, burn=10, max_steps=50_000), init=g.start(16), seed=3)
    assert r.converged and not r.capped and r.status_codes() == []
    assert r.nsteps > 60 and r.nsteps - 10 >= CONVERGED_TAUS * r.tau.max()
    assert r.convergence.stable and r.nsteps < 50_000
    assert r.samples.shape == ((r.nsteps - 10) * 16, 5)
    np.testing.assert_allclose(r.samples.std(axis=0), _Gaussian.SD, rtol=0.2)
    # the same seed, the same segments
    again = run_mcmc(g, *star, _opts(nwalkers=16, nsteps=60, burn=10, max_steps=50_000), init=g.start(16), seed=3)
    np.testing.assert_array_equal(again.chain, r.chain)


def test_cap_stops_an_unconverged_chain_and_says_so(star):
    from irisml_tf.inference.mcmc import run_mcmc

    g = _Gaussian()
    r = run_mcmc(g, *star, _opts(nwalkers=16, nsteps=100, burn=20, max_steps=300), init=g.start(16))
    assert r.nsteps == 300 and r.max_steps == 300 and not r.converged and r.capped
    (code,) = r.status_codes()
    assert code.startswith("mcmc:not_converged(stopped at max_steps 300: ") and "needs 50 τ" in code
    assert ";" not in code and "=" not in code  # one status code (irisml_tf.columns.status_key)
    # a fixed-length chain (max_steps = nsteps) is never extended
    fixed = run_mcmc(g, *star, _opts(nwalkers=16, nsteps=100, burn=20), init=g.start(16))
    assert fixed.nsteps == 100 and fixed.capped


def test_mcmc_reference_starts_and_compares(log_post, star, chain):
    from irisml_tf.inference.mcmc import compare_to_npe, mcmc_reference

    npe = chain.samples[::10]  # stand-in NPE draws: from the posterior itself
    w = np.ones(len(npe))
    opts = _opts(nwalkers=16, nsteps=30, burn=10)
    ref = mcmc_reference(log_post, *star, opts, npe_samples=npe, npe_weights=w, init="npe", seed=[4, 1])
    assert ref.init == "npe" and ref.mcmc.nsteps == 30
    # the walkers start on distinct NPE draws; a degenerate (resampled, repeated) set is no start
    from irisml_tf.inference.mcmc import npe_init

    start = npe_init(npe, w, 16, np.random.default_rng(0))
    assert len(np.unique(start, axis=0)) == 16 and all(any(np.allclose(x, y) for y in npe) for x in start)
    assert npe_init(np.repeat(npe[:3], 50, axis=0), np.ones(150), 16, np.random.default_rng(0)) is None
    assert ref.before == compare_to_npe(ref.mcmc.samples, npe)
    assert ref.after == compare_to_npe(ref.mcmc.samples, npe, w)
    few = np.where(np.arange(len(npe)) < 5, 1.0, 0.0)
    assert mcmc_reference(log_post, *star, opts, npe_samples=npe, npe_weights=few, init="npe").init == \
        "prior(npe_weights_too_few)"
    alone = mcmc_reference(log_post, *star, opts, seed=[4, 1])
    assert alone.init == "prior" and alone.before is None and alone.after is None
    with pytest.raises(ValueError, match="needs `npe_samples`"):
        mcmc_reference(log_post, *star, opts, init="npe")
    with pytest.raises(ValueError, match="`init` must be one of"):
        mcmc_reference(log_post, *star, opts, init="flow")


def test_bad_inputs_named(log_post, star):
    from irisml_tf.inference.mcmc import run_mcmc

    bi, mag, err = star
    with pytest.raises(ValueError, match="`init`"):
        run_mcmc(log_post, bi, mag, err, _opts(nwalkers=16, nsteps=10, burn=0), init=np.zeros((8, 5)))
    bad_init = np.tile(THETA, (16, 1)).astype(np.float64)
    bad_init[3, 3] = -1.0  # av < 0
    with pytest.raises(ValueError, match=r"walkers \[3\]"):
        run_mcmc(log_post, bi, mag, err, _opts(nwalkers=16, nsteps=10, burn=0), init=bad_init)
    one = np.where(np.arange(25) == 0, 0, -1).astype(np.int32)
    with pytest.raises(ValueError, match="1 usable band"):
        run_mcmc(log_post, one, mag, err, _opts(nsteps=10, burn=0))
    with pytest.raises(ValueError, match="burn"):
        run_mcmc(log_post, bi, mag, err, _opts(nsteps=10, burn=10))
    with pytest.raises(ValueError, match="nwalkers"):
        run_mcmc(log_post, bi, mag, err, _opts(nwalkers=15))
    with pytest.raises(ValueError, match="max_steps"):
        _opts(nsteps=100, burn=10, max_steps=50)


def test_compare_to_npe_known_answer():
    from irisml_tf.inference.mcmc import compare_to_npe

    rng = np.random.default_rng(0)
    loc = np.array([5000.0, 4.0, -0.5, 1.0, 3.1])
    scale = np.array([100.0, 0.3, 0.1, 0.05, 0.2])
    shift = np.array([0.0, 0.5, -1.0, 0.25, 2.0])  # NPE median − MCMC median, in MCMC σ
    n = 200_000
    mcmc = loc + scale * rng.standard_normal((n, 5))
    npe = loc + scale * (shift + rng.standard_normal((n, 5)))

    def expected(level, s):  # P(|Z − s| inside the central interval of N(s, 1)) for Z ~ N(0, 1)
        h = norm.ppf(0.5 + level / 2)
        return norm.cdf(s + h) - norm.cdf(s - h)

    for weights, tol in ((None, 0.01), ("gauss", 0.02)):
        if weights is None:
            out = compare_to_npe(mcmc, npe)
        else:  # draws 1.5× too wide, importance-weighted back to N(shift, 1): weights must be used
            u = 1.5 * rng.standard_normal((n, 5))
            w = np.exp(np.sum(norm.logpdf(u) - norm.logpdf(u, scale=1.5), axis=1))
            out = compare_to_npe(mcmc, loc + scale * (shift + u), w)
            unweighted = compare_to_npe(mcmc, loc + scale * (shift + u))
            assert unweighted["teff"]["frac_in_68"] > expected(0.68, 0.0) + 0.1  # too wide without
        for i, p in enumerate(PARAM_NAMES):
            assert out[p]["median_diff_sigma"] == pytest.approx(shift[i], abs=tol), (weights, p)
            assert out[p]["frac_in_68"] == pytest.approx(expected(0.68, shift[i]), abs=tol), (weights, p)
            assert out[p]["frac_in_95"] == pytest.approx(expected(0.95, shift[i]), abs=tol), (weights, p)
            assert out[p]["std_mcmc"] == pytest.approx(scale[i], rel=0.01)


def test_npe_init():
    from irisml_tf.inference.mcmc import npe_init

    samples = np.arange(100 * 5, dtype=np.float64).reshape(100, 5)
    w = np.zeros(100)
    w[:40] = 1.0
    init = npe_init(samples, w, 32, np.random.default_rng(0))
    assert init.shape == (32, 5) and len(np.unique(init[:, 0])) == 32 and init[:, 0].max() < 200
    assert npe_init(samples, np.where(np.arange(100) < 10, 1.0, 0.0), 32, np.random.default_rng(0)) is None


def test_parse_rows():
    from irisml_tf.app.mcmc import parse_rows

    assert parse_rows("0,3, 5-7,3", 10) == [0, 3, 5, 6, 7]
    for spec, msg in (("12", "10 rows"), ("7-5", "low-high"), ("a", "not a row"), (",", "no rows")):
        with pytest.raises(ValueError, match=msg):
            parse_rows(spec, 10)


def _catalog(star, path):
    bi, mag, err = star
    row = {"source_id": 11}
    for j, b in enumerate(BAND_NAMES):
        row[b], row[f"{b}_err"] = float(mag[j]), float(err[j])
    few = {k: (v if k in ("source_id", "Gaia_G", "Gaia_G_err", "Gaia_BP", "Gaia_BP_err") else np.nan)
           for k, v in row.items()}
    few["source_id"] = 12
    pd.DataFrame([row, few, dict(row, source_id=13)]).to_csv(path, index=False)


def test_cli_without_model(tmp_path, star):
    from irisml_tf.catalog import read_table
    from irisml_tf.cli.main import main

    _catalog(star, tmp_path / "cat.csv")
    args = ["mcmc", str(tmp_path / "cat.csv"), "--out", str(tmp_path / "out.parquet"), "--no-npe",
            "--walkers", "16", "--steps", "60", "--max-steps", "60", "--burn", "20",
            "--samples-out", str(tmp_path / "s.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    out = read_table(tmp_path / "out.parquet")
    assert out["row"].tolist() == [0, 1, 2] and out["source_id"].tolist() == [11, 12, 13]
    # 60 steps cannot reach 50 τ: the cap is hit, and the row's status says so (no longer "ok")
    assert out["status"][0].startswith("mcmc:not_converged(stopped at max_steps 60: ")
    assert out["status"][1].startswith("skipped:too_few_bands(2<")
    assert not out["converged"][0] and "WARNING: 2 chain(s) not converged (rows 0, 2)" in r.output
    assert np.isfinite(out["teff_median"][0]) and np.isnan(out["teff_median"][1])
    assert "teff_npe_dmed_sigma" not in out
    z = dict(np.load(tmp_path / "s.npz"))
    assert z["row"].tolist() == [0, 2] and z["mcmc_samples"].shape == (2, 40 * 16, 5)
    # rows 0 and 2 hold the same star; the row enters the seed, so their chains differ ...
    assert not np.array_equal(z["mcmc_samples"][0], z["mcmc_samples"][1])
    # ... and a row's chain does not depend on the other rows chosen
    r = CliRunner().invoke(main, args[:2] + ["--rows", "2", *args[2:]])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["mcmc_samples"][0], z["mcmc_samples"][1])
    r = CliRunner().invoke(main, args[:2] + ["--rows", "9", *args[2:]])
    assert r.exit_code != 0 and "3 rows" in r.output


def test_cli_with_model(tmp_path, star, tiny_export):
    from irisml_tf.catalog import read_table
    from irisml_tf.cli.main import main

    _catalog(star, tmp_path / "cat.csv")
    args = ["mcmc", str(tmp_path / "cat.csv"), "--rows", "0-1", "--out", str(tmp_path / "out.csv"),
            "--model", str(tiny_export), "--walkers", "16", "--steps", "60", "--max-steps", "60", "--burn", "20",
            "--npe-samples", "500", "--init", "npe", "--samples-out", str(tmp_path / "s.npz"),
            "--plots", str(tmp_path / "plots")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "NPE−MCMC median / σ" in r.output
    out = read_table(tmp_path / "out.csv")
    assert out["row"].tolist() == [0, 1]
    for p in PARAM_NAMES:
        for col in (f"{p}_npe_median", f"{p}_npe_dmed_sigma", f"{p}_in_npe68", f"{p}_in_npe95"):
            assert np.isfinite(out[col][0]) and np.isnan(out[col][1]), col
        assert 0 <= out[f"{p}_in_npe68"][0] <= out[f"{p}_in_npe95"][0] <= 1
    # the NPE's diagnostics named as `infer` names them; its quality flags as flag:<name> status codes
    assert out["ess"][0] > 0 and 0 < out["is_efficiency"][0] <= 1 and np.isfinite(out["khat"][0])
    assert not {"npe_ess", "npe_efficiency", "npe_khat", "npe_flag_bits"} & set(out.columns)
    from irisml_tf.serving import load_model

    codes = out["status"][0].split(";")
    assert all(c.startswith(("flag:", "mcmc:", "mcmc_init:")) for c in codes), codes
    assert {c[5:] for c in codes if c.startswith("flag:")} <= set(load_model(tiny_export).meta.flag_bits)
    z = dict(np.load(tmp_path / "s.npz"))
    assert z["row"].tolist() == [0]
    assert z["npe_samples"].shape == (1, 500, 5) and z["npe_weights"].shape == (1, 500)
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["mcmc_row0.png"]


# -- the engine's target: parallax, per-star A_V prior, the user's prior ---------------------------
def _true_parallax(mass=1.0, mu=10.0):
    """ϖ (mas) of THETA at offset μ for a star of ``mass`` M☉: R from log g and M, d from μ and R."""
    radius = np.sqrt(mass / 10 ** (THETA[1] - 4.438))
    return 1000.0 / 10 ** ((mu + 5 * np.log10(radius)) / 5 + 1)


def test_log_posterior_is_the_engines_target(sim, prior, star):
    """LogPosterior with conditions = the engine's likelihood (parallax term included) + the prior
    with the user's parameters and the star's A_V prior; a giant is ruled out by a dwarf's parallax."""
    from irisml_tf.inference.mcmc import LogPosterior
    from irisml_tf.inference.posterior_target import log_likelihood_with_parallax
    from irisml_tf.physics.parallax import MassPrior
    from irisml_tf.physics.prior import load_user_prior

    user = load_user_prior({"av": {"mean": 0.3, "max": 3.0}}, prior.config, prior.lower, prior.upper)
    lp = LogPosterior(sim, prior, SYS, prior_params=user.params, mass_prior=MassPrior())
    bi, mag, err = star
    plx = _true_parallax()
    cond = {"plx": plx, "plx_err": 0.01 * plx, "av_prior": 0.5, "av_prior_err": 0.1}
    theta = np.array([THETA, [*THETA[:1], 2.0, *THETA[2:]], [*THETA[:3], 0.9, THETA[4]]], np.float32)
    inputs = {"band_index": bi[None], "mag": mag[None], "mag_err": err[None],
              "plx": np.float32([plx]), "plx_err": np.float32([0.01 * plx])}
    ref = (log_likelihood_with_parallax(sim, theta[None], inputs, SYS, MassPrior())[0]
           + prior.log_prob(theta[None], user.params, [0.5], [0.1], [np.nan])[0]).numpy()
    got = lp(theta, bi, mag, err, cond)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    plain = lp(theta, bi, mag, err)
    # log g 2 at a dwarf's distance needs a mass 2.3 dex off the mass prior's (τ 0.4): ~16 nats worse
    assert got[0] - plain[0] > got[1] - plain[1] + 10
    assert plain[0] != LogPosterior(sim, prior, SYS)(theta, bi, mag, err)[0]  # the user's A_V prior counts
    with pytest.raises(ValueError, match="unknown key"):
        lp(theta, bi, mag, err, {"parallax": 1.0})


def test_chain_with_a_parallax_pins_logg(log_post, star):
    """emcee on the dwarf in Gaia + 2MASS + WISE (colours alone leave log g 1.2-4.3) with a 1 %
    parallax: log g within 2 σ of the truth, σ near the mass prior's 0.4 dex, ≥ 2x narrower."""
    from irisml_tf.data.testsets import BAND_SETS
    from irisml_tf.inference.mcmc import run_mcmc

    keep = np.array([BAND_NAMES.index(b) for b in BAND_SETS["gaia_2mass_wise"]])
    few = tuple(a[keep] for a in star)
    plx = _true_parallax()
    opts = _opts(nwalkers=32, nsteps=300, burn=100)
    res = run_mcmc(log_post, *few, opts, seed=1, conditions={"plx": plx, "plx_err": 0.01 * plx})
    plain = run_mcmc(log_post, *few, opts, seed=1)
    s, p = res.summary(), plain.summary()
    assert abs(s["median"][1] - THETA[1]) < 2 * s["std"][1] and s["std"][1] < 0.6
    assert s["p84"][1] - s["p16"][1] < (p["p84"][1] - p["p16"][1]) / 2


def test_cli_reads_parallax_columns(tmp_path, star):
    """`irisml-tf mcmc` reads the parallax as `infer` does: a usable one narrows log g, a bad one is
    a status code and the row runs on its colours."""
    from irisml_tf.catalog import read_table
    from irisml_tf.cli.main import main

    _catalog(star, tmp_path / "cat.csv")
    df = pd.read_csv(tmp_path / "cat.csv")
    plx = _true_parallax() - 0.017  # the default zero point is subtracted again
    df["parallax"], df["parallax_error"] = [plx, plx, plx], [0.01 * plx, 0.01 * plx, -1.0]
    df.to_csv(tmp_path / "cat.csv", index=False)
    r = CliRunner().invoke(main, ["mcmc", str(tmp_path / "cat.csv"), "--out", str(tmp_path / "o.csv"), "--no-npe",
                                  "--rows", "0,2", "--walkers", "16", "--steps", "200", "--max-steps", "200",
                                  "--burn", "100"])
    assert r.exit_code == 0, r.output
    assert "parallax: parallax ± parallax_error (mas)" in r.output
    out = read_table(tmp_path / "o.csv")
    assert "parallax:nonpositive_error" in out["status"][1] and "parallax" not in out["status"][0]
    assert out["logg_std"][0] < out["logg_std"][1]
    # derived quantities as infer writes them (the star: 1 M☉, at the distance of its 1 % parallax)
    assert abs(out["distance_median"][0] * _true_parallax() / 1000.0 - 1.0) < 0.05
    assert out["distance_p16"][0] < out["distance_median"][0] < out["distance_p84"][0]
    assert 0.3 < out["mass_median"][0] < 3.0 and np.isfinite(out["radius_median"][0])
    assert np.isfinite(out["luminosity_median"][0])
    assert all(np.isnan(out[f"{d}_median"][1]) for d in ("distance", "radius", "mass", "luminosity"))
