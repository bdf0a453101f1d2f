import json

import numpy as np
import pytest
from scipy import stats

from irisml_tf.inference import metrics


# -- metrics on cases with known answers --------------------------------------------------------
def _gaussian_case(rng, s=4000, n=400, width=1.0, proposal=None):
    """Truth t ~ N(m, 1) given the posterior mean m: N(m, 1) is the exact posterior."""
    m = rng.normal(0.0, 3.0, size=(s, 2))
    truth = m + rng.standard_normal((s, 2))
    scale = proposal or width
    draws = m[:, None, :] + scale * rng.standard_normal((s, n, 2))
    weights = None
    if proposal is not None:  # weights of the exact posterior against a wider proposal (1st parameter)
        z = (draws - m[:, None, :])[..., 0]
        weights = stats.norm.pdf(z) / stats.norm.pdf(z, scale=proposal)
    return draws, truth, weights


def _binomial_ok(cov, levels, s, slack=0.01):
    tol = 4 * np.sqrt(levels * (1 - levels) / s)[:, None] + slack
    return np.all(np.abs(cov - levels[:, None]) <= tol)


def test_point_errors_known_values():
    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    est = truth + np.array([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [np.nan, 2.0]])
    pe = metrics.point_errors(est, truth)
    np.testing.assert_allclose(pe["rmse"], [np.sqrt(11 / 3), 1.0])
    np.testing.assert_allclose(pe["bias"], [1.0, 0.5])
    np.testing.assert_allclose(pe["mad"], [2.0, 0.0])  # |e − 1| = 0, 2, 2
    np.testing.assert_allclose(pe["nmad"], metrics.NMAD_SCALE * pe["mad"])
    np.testing.assert_array_equal(pe["n"], [3, 4])
    assert metrics.relative_rmse([110.0, 90.0, np.nan], [100.0, 100.0, 100.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same shape"):
        metrics.point_errors(est[:, :1], truth)


def test_pit_small_cases_and_weights():
    draws = np.array([1.0, 2.0, 3.0, 4.0])[None, :, None]
    assert metrics.pit(draws, np.array([[2.5]]))[0, 0] == 0.5
    assert metrics.pit(draws, np.array([[2.0]]))[0, 0] == pytest.approx(1.5 / 4)  # a tie counts half
    assert metrics.pit(draws, np.array([[2.5]]), np.array([[1.0, 1.0, 0.0, 2.0]]))[0, 0] == pytest.approx(0.5)
    assert metrics.pit(draws, np.array([[2.5]]), np.array([[3.0, 0.0, 0.0, 1.0]]))[0, 0] == pytest.approx(0.75)
    assert np.isnan(metrics.pit(draws, np.array([[2.5]]), np.zeros((1, 4)))[0, 0])  # no usable weight
    with pytest.raises(ValueError, match="weights"):
        metrics.pit(draws, np.array([[2.5]]), np.ones((1, 3)))


def test_exact_posterior_is_calibrated(rng):
    draws, truth, _ = _gaussian_case(rng)
    cov = metrics.coverage(draws, truth)
    assert cov.shape == (99, 2)
    assert _binomial_ok(cov, metrics.DEFAULT_LEVELS, len(truth))
    assert np.all(metrics.max_abs_deviation(cov) < 0.05)


def test_too_narrow_posterior_undercovers(rng):
    draws, truth, _ = _gaussian_case(rng, width=0.5)
    cov = metrics.coverage(draws, truth, [0.68])
    # P(|z| < 0.5) = 0.383 for truth ~ N(m, 1) and a 68 % interval of half-width 0.5
    np.testing.assert_allclose(cov[0], 0.383, atol=0.03)
    assert np.all(metrics.max_abs_deviation(metrics.coverage(draws, truth)) > 0.25)


def test_importance_weights_restore_calibration(rng):
    draws, truth, weights = _gaussian_case(rng, proposal=2.0)
    weighted = metrics.coverage(draws[..., :1], truth[:, :1], weights=weights)
    plain = metrics.coverage(draws[..., :1], truth[:, :1])
    assert _binomial_ok(weighted, metrics.DEFAULT_LEVELS, len(truth), slack=0.02)
    assert plain[49, 0] > 0.75  # the proposal alone is too wide: 0.5 interval covers ~82 %


def test_sbc_ranks_and_histogram(rng):
    draws, truth, _ = _gaussian_case(rng, s=3000, n=99)
    u = metrics.pit(draws, truth)
    ranks = metrics.sbc_ranks(u, 99)
    # with L = N unweighted draws the rank is the count of draws below the truth
    np.testing.assert_array_equal(ranks, np.sum(draws < truth[:, None, :], axis=1))
    good = metrics.rank_histogram(ranks, 99, bins=20)
    assert good["counts"].shape == (20, 2) and np.all(good["counts"].sum(0) == 3000)
    np.testing.assert_allclose(good["expected"].sum(0), 3000)
    assert np.all(good["pvalue"] > 1e-3)
    # too narrow: ∪-shaped, the end bins far above the uniform band
    narrow_u = metrics.pit(*_gaussian_case(rng, s=3000, n=99, width=0.5)[:2])
    narrow = metrics.rank_histogram(metrics.sbc_ranks(narrow_u, 99), 99)
    assert np.all(narrow["pvalue"] < 1e-10)
    assert np.all(narrow["counts"][0] > narrow["band_hi"][0]) and np.all(narrow["counts"][-1] > narrow["band_hi"][-1])
    # biased: sloped
    d, t, _ = _gaussian_case(rng, s=3000, n=99)
    sloped = metrics.rank_histogram(metrics.sbc_ranks(metrics.pit(d + 0.7, t), 99), 99)
    assert np.all(sloped["counts"][0] > 3 * sloped["counts"][-1])
    # unusable rows are skipped; uneven bins get proportional expectations
    h = metrics.rank_histogram(np.array([[0], [1], [2], [-1]]), 2, bins=2)
    assert h["n"][0] == 3 and h["counts"][:, 0].tolist() == [2, 1]
    np.testing.assert_allclose(h["expected"][:, 0], [2.0, 1.0])


def test_coverage_skips_stars_without_weight():
    u = np.array([[0.5], [np.nan], [0.99]])
    cov, n = metrics.coverage_from_pit(u, [0.5, 0.99])
    assert n.tolist() == [2] and cov[:, 0].tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="levels"):
        metrics.coverage_from_pit(u, [1.0])


def test_standard_errors_match_the_spread_of_repeated_samples(rng):
    """Each standard error ≈ the sd of its statistic over many samples of the same size."""
    n, reps = 200, 3000
    e = rng.laplace(scale=0.3, size=(reps, n))  # heavier tails than Gaussian: not just RMSE / √(2n)
    rmse = np.sqrt(np.mean(e ** 2, axis=1))
    se = np.mean([metrics.rmse_standard_error(row) for row in e[:300]])
    assert se > 1.2 * rmse.mean() / np.sqrt(2 * n)
    assert se == pytest.approx(rmse.std(), rel=0.15)
    x = rng.exponential(size=(reps, n))  # skewed, like IS efficiencies
    se = np.mean([metrics.median_standard_error(row) for row in x[:300]])
    assert se == pytest.approx(np.median(x, axis=1).std(), rel=0.15)
    cov = np.mean(rng.uniform(size=(reps, n)) < 0.68, axis=1)
    assert metrics.coverage_standard_error(0.68, n) == pytest.approx(cov.std(), rel=0.1)
    np.testing.assert_allclose(metrics.coverage_standard_error(np.array([0.5, 0.9]), 100), [0.05, 0.03])
    assert np.isnan(metrics.rmse_standard_error([1.0])) and np.isnan(metrics.median_standard_error([]))
    assert np.isnan(metrics.coverage_standard_error(0.5, 0))


def test_target_verdict_rounds_and_says_when_n_is_too_small():
    from irisml_tf.app.evaluate import target_verdict

    # compared at the precision shown (4 significant digits): both sides of 0.05 by float noise are 0.05,
    # which meets ≤ 0.05 for an exact statistic and is undecided for a noisy one, alike
    for v in (0.050000000000000044, 0.04999999999999999):
        assert target_verdict(v, 0.05, "max", 0.0, 5000) == "ok"
        assert target_verdict(v, 0.05, "max", 1e-4, 5000) == "n too small"
    assert target_verdict(0.05012, 0.05, "max", 1e-5, 5000) == "FAIL"
    assert target_verdict(0.05012, 0.05, "max", 1e-4, 5000) == "n too small"
    # coverage at n = 50: σ = √(0.25/50) = 0.071, so |dev − 0.05| ≤ 0.14 cannot be decided ...
    sigma_50 = metrics.coverage_standard_error(0.5, 50)
    assert target_verdict(0.12, 0.05, "max", sigma_50, 50) == "n too small"
    assert target_verdict(0.02, 0.05, "max", sigma_50, 50) == "n too small"
    # ... but a model far off the mark fails even there; at n = 5000 both are decided
    assert target_verdict(0.30, 0.05, "max", sigma_50, 50) == "FAIL"
    sigma_5000 = metrics.coverage_standard_error(0.5, 5000)
    assert target_verdict(0.02, 0.05, "max", sigma_5000, 5000) == "ok"
    assert target_verdict(0.12, 0.05, "max", sigma_5000, 5000) == "FAIL"
    # "min" targets, missing values, too few stars, unknown σ
    assert target_verdict(0.3, 0.1, "min", 0.01, 100) == "ok"
    assert target_verdict(0.05, 0.1, "min", 0.01, 100) == "FAIL"
    assert target_verdict(0.09, 0.1, "min", 0.01, 100) == "n too small"
    assert target_verdict(float("nan"), 0.1, "min", 0.01, 100) == "FAIL"
    assert target_verdict(0.3, 0.1, "min", 0.01, 1) == "n too small"
    assert target_verdict(0.3, 0.1, "min", float("nan"), 100) == "n too small"


def test_format_targets_shows_verdicts():
    from irisml_tf.app.evaluate import EFFICIENCY_TARGET, TARGETS, format_targets

    row = {"label": "x", "limit": 0.05, "kind": "max", "before": 0.050000000000000044, "after": 0.3,
           "pass_before": True, "pass_after": False, "verdict_before": "ok", "verdict_after": "n too small"}
    targets = {k: dict(row, label=label) for k, label, *_ in TARGETS}
    targets[EFFICIENCY_TARGET[0]] = {"label": "eff", "limit": 0.1, "kind": "min", "value": None, "pass": False,
                                     "verdict": "FAIL"}
    text = format_targets({"n": 50, "samples": 10, "seed": 0,
                           "sets": {"all": {"targets": targets, "stars_per_second": 1.0}}})
    assert "0.05 ok" in text and "0.3 n too small" in text and "n/a FAIL" in text
    assert "0.050000000000000044" not in text and "cannot decide" in text


# -- the observation model's fixed-band-set hook ------------------------------------------------
def test_force_bands_observes_exactly_the_set(prior, sim):
    import tensorflow as tf

    from irisml_tf.data.observation import ObservationModel
    from irisml_tf.physics.bands import band_index

    obs = ObservationModel()
    theta = prior.sample(2000, 7)
    mags, valid = sim(theta)
    free = {k: v.numpy() for k, v in obs(mags, valid, tf.constant([1, 2])).items()}
    want = np.zeros(25, bool)
    want[[band_index(b) for b in ("Gaia_G", "Gaia_BP", "Gaia_RP", "2MASS_Ks")]] = True
    forced = {k: v.numpy() for k, v in obs(mags, valid, tf.constant([1, 2]), force_bands=want).items()}
    present = forced["band_index"] >= 0
    np.testing.assert_array_equal(present, want[None] & valid.numpy())
    assert present[:, 0].all() and (present.sum(1) <= 4).all()
    assert forced["mag_err"][present].max() <= 0.3 + 1e-6 and forced["mag_err"][present].min() >= 0.002 - 1e-7
    # same star, same noise: bands present both ways are identical
    both = present & (free["band_index"] >= 0)
    assert both.sum() > 1000
    np.testing.assert_array_equal(forced["mag"][both], free["mag"][both])
    np.testing.assert_array_equal(forced["mag_err"][both], free["mag_err"][both])


# -- the test stars (irisml_tf.data.testsets) ----------------------------------------------------
def test_pack_observed():
    from irisml_tf.data.testsets import pack_observed

    x = {"band_index": np.array([[-1, 3, -1, 5], [2, -1, -1, -1]]), "mag": np.arange(8.0).reshape(2, 4)}
    out = pack_observed(x)
    assert out["band_index"].tolist() == [[3, 5], [2, -1]]
    assert out["mag"].tolist() == [[1.0, 3.0], [4.0, 5.0]]
    assert pack_observed({"band_index": -np.ones((2, 3), int)})["band_index"].shape == (2, 1)


def test_test_sets_share_stars_and_noise(prior, sim):
    from irisml_tf.data.observation import ObservationConfig
    from irisml_tf.data.testsets import BAND_SETS, simulate_test_sets

    obs = ObservationConfig.from_dict()
    theta, xs = simulate_test_sets(sim, prior, obs, 64, 5, ["all", "gaia", "random"])
    assert theta.shape == (64, 5) and theta.dtype == np.float32
    gaia = [sim.bands.index(b) for b in BAND_SETS["gaia"]]
    assert xs["gaia"]["band_index"].shape[1] <= 3 and np.isin(xs["gaia"]["band_index"], [-1, *gaia]).all()
    # same star, same noise: a band observed in two sets has the same magnitude and error
    for s in ("gaia", "random"):
        for k in ("mag", "mag_err"):
            for i in range(64):
                common, a, b = np.intersect1d(xs["all"]["band_index"][i], xs[s]["band_index"][i], return_indices=True)
                keep = common >= 0
                np.testing.assert_array_equal(xs["all"][k][i][a[keep]], xs[s][k][i][b[keep]])
    theta2, again = simulate_test_sets(sim, prior, obs.to_dict(), 64, 5, ["gaia"])
    np.testing.assert_array_equal(theta2, theta)
    np.testing.assert_array_equal(again["gaia"]["mag"], xs["gaia"]["mag"])
    _, bright = simulate_test_sets(sim, prior, obs, 64, 5, ["gaia"], ref_mag=(8.0, 9.0))

    def median_mag(x):
        return np.nanmedian(np.where(x["band_index"] >= 0, x["mag"], np.nan))

    assert median_mag(bright["gaia"]) < median_mag(xs["gaia"]) - 3  # reference 8-9 mag, not 8-20
    with pytest.raises(ValueError, match="unknown band set"):
        simulate_test_sets(sim, prior, obs, 4, 5, ["wise"])


# -- end to end through the CLI -----------------------------------------------------------------
def _strip_times(x):
    if isinstance(x, dict):
        return {k: _strip_times(v) for k, v in x.items() if "seconds" not in k and "per_second" not in k}
    if isinstance(x, list):
        return [_strip_times(v) for v in x]
    return x


def _cli(args):
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    return CliRunner().invoke(main, ["evaluate", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def evaluated(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    args = ["--model", str(tiny_export), "--n", "16", "--samples", "64", "--batch-size", "16",
            "--mcmc-steps", "40", "--corner-samples", "256", "--quiet", "--seed", "3", "--band-set", "all"]
    first = _cli([*args, "--band-set", "gaia_2mass_wise", "--parallax", "0.1", "--out", str(out / "a")])
    second = _cli([*args, "--out", str(out / "b"), "--no-plots"])  # the same seed, one set of the first
    return out, first, second


def test_evaluate_cli_writes_metrics_and_figures(evaluated):
    out, first, _ = evaluated
    assert first.exit_code == 0, first.output
    assert "teff RMSE / teff" in first.output and "stars at target ESS" in first.output
    assert "n too small" in first.output  # 16 stars cannot decide most targets
    sets = ["all", "gaia_2mass_wise", "all+plx", "gaia_2mass_wise+plx"]
    for name in ("metrics.json", "calibration.png", "is_diagnostics.png", "corner_star0.png",
                 *(f"{k}_{s}.{e}" for s in sets
                   for k, e in (("pred_vs_true", "png"), ("sbc", "png"), ("stars", "parquet")))):
        assert (out / "a" / name).stat().st_size > 0, name
    m = json.loads((out / "a" / "metrics.json").read_text())
    assert m["seed"] == 3 and m["n"] == 16 and len(m["levels"]) == 99
    assert list(m["sets"]) == sets
    for s in m["sets"].values():
        for stage in ("before", "after"):
            st = s[stage]
            assert set(st["point"]) == {"teff", "logg", "mh", "av", "rv"}
            assert set(st["point"]["teff"]) == {"rmse", "bias", "mad", "nmad", "n"}
            assert len(st["coverage"]["curve"]["av"]) == 99
            assert 0 <= st["coverage"]["max_abs_dev"]["logg"] <= 1
            assert len(st["sbc"]["counts"]["mh"]) == 20 and len(st["sbc"]["edges"]) == 21
            assert sum(st["sbc"]["counts"]["rv"]) == st["coverage"]["n"]
            assert st["rel_teff_rmse"] is None or st["rel_teff_rmse"] > 0
            assert "teff_rmse_4000_7000" in st
        isd = s["importance_sampling"]
        assert {"p5", "p50", "p95", "mean"} <= set(isd["efficiency"]) and 0 <= isd["frac_khat_gt_0.7"] <= 1
        assert s["stars_per_second"] > 0 and s["wall_seconds"] > 0
        want = {"rel_teff_rmse", "teff_rmse_4000_7000", "rmse_av", "coverage_rv", "reached_target"}
        assert want <= set(s["targets"])
        for key, t in s["targets"].items():
            for v in (t.get("verdict"), t.get("verdict_before"), t.get("verdict_after")):
                assert v in (None, "ok", "FAIL", "n too small"), (key, v)
    # the fixed sets have exactly their bands (where the model predicts them)
    assert m["sets"]["gaia_2mass_wise"]["n_bands"]["p5"] == 8 and m["sets"]["all"]["n_bands"]["p95"] == 25
    assert 0 <= m["sets"]["gaia_2mass_wise"]["frac_bands_at_err_max"] <= m["sets"]["all"]["frac_bands_at_err_max"] < 0.5
    c = m["corner"]
    assert c["set"] == "all" and c["mcmc"]["nsteps"] == 40 and len(c["mcmc"]["ess"]) == 5
    assert set(c["compare_to_npe"]["after"]["teff"]) >= {"median_diff_sigma", "frac_in_68"}
    assert m["model"]["meta"]["param_names"] == ["teff", "logg", "mh", "av", "rv"]


def test_evaluate_with_parallaxes_reports_derived_quantities(evaluated):
    """The +plx sets: the same stars with their simulated parallaxes (S/N 10), the derived
    quantities' coverage and the parallax targets; the sets without are untouched by them."""
    import pandas as pd

    out, first, _ = evaluated
    m = json.loads((out / "a" / "metrics.json").read_text())
    assert m["test_set"]["parallax"]["error"] == 0.1 and m["test_set"]["parallax"]["zero_point"] == 0.0
    plx = m["sets"]["gaia_2mass_wise+plx"]
    assert 7 < plx["parallax"]["snr"]["p50"] < 13  # S/N 10 in truth, noisy measurements
    for name in ("distance", "radius", "mass", "luminosity"):
        d = plx["parallax"]["derived"][name]
        assert d["n"] == 16 and 0 <= d["coverage_68"] <= 1 and d["median_abs_rel_err"] >= 0
        assert f"coverage68_{name}" in plx["targets"] and f"coverage68_{name}" not in m["sets"]["all"]["targets"]
    assert plx["targets"]["plx_rmse_logg"]["value"] == plx["after"]["point"]["logg"]["rmse"]
    assert "logg RMSE with plx" in first.output
    a, b = (pd.read_parquet(out / "a" / f"stars_{s}.parquet") for s in ("gaia_2mass_wise", "gaia_2mass_wise+plx"))
    np.testing.assert_array_equal(a["true_logg"], b["true_logg"])  # the same stars
    assert "parallax" not in a and np.all(b["distance_p16"] <= b["distance_p84"])
    np.testing.assert_allclose(1000.0 / b["true_distance"], b["parallax"], rtol=0.6)  # ~10 % errors


def test_test_parallaxes(sim, prior):
    """simulate_test_parallaxes: the model's distance relation, S/N 1/f or Gaia-like errors, seeded."""
    from irisml_tf.data.observation import ObservationConfig
    from irisml_tf.data.testsets import simulate_test_parallaxes, simulate_test_sets

    theta, xs = simulate_test_sets(sim, prior, ObservationConfig.from_dict(), 200, 5, ["gaia"])
    mu = xs["gaia"]["mu"]
    p = simulate_test_parallaxes(sim, theta, mu, 0.05, 1)
    radius = np.sqrt(p["mass"] / 10 ** (theta[:, 1] - 4.438))
    np.testing.assert_allclose(p["radius"], radius, rtol=1e-3)
    np.testing.assert_allclose(5 * np.log10(p["distance"] / 10) - 5 * np.log10(p["radius"]), mu, atol=1e-3)
    pull = (p["parallax"] - 1000.0 / p["distance"]) / p["parallax_error"]
    assert abs(np.std(pull) - 1) < 0.15 and np.allclose(p["parallax_error"], 0.05e3 / p["distance"], rtol=1e-4)
    again = simulate_test_parallaxes(sim, theta, mu, 0.05, 1)
    np.testing.assert_array_equal(again["parallax"], p["parallax"])
    gaia = simulate_test_parallaxes(sim, theta, mu, "gaia", 1)
    assert np.all(gaia["parallax_error"] >= 0.01)  # Gaia DR3: ≥ ~0.02 mas at the bright end
    with pytest.raises(ValueError, match="fraction"):
        simulate_test_parallaxes(sim, theta, mu, 2.0, 1)


def test_evaluate_same_seed_same_metrics(evaluated, tiny_export, tmp_path):
    out, first, second = evaluated
    assert second.exit_code == 0, second.output
    a = _strip_times(json.loads((out / "a" / "metrics.json").read_text()))
    b = _strip_times(json.loads((out / "b" / "metrics.json").read_text()))
    assert a["sets"]["all"] == b["sets"]["all"] and a["corner"] == b["corner"]
    # another seed: other stars
    other = _cli(["--model", str(tiny_export), "--n", "8", "--samples", "16", "--band-set", "gaia",
                  "--no-mcmc", "--no-plots", "--quiet", "--seed", "4", "--out", str(tmp_path / "c")])
    assert other.exit_code == 0, other.output
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert c["corner"]["truth"] != a["corner"]["truth"] and c["corner"]["mcmc"] is None
    r = _cli(["--model", str(tiny_export), "--parallax", "far", "--out", str(tmp_path / "d")])
    assert r.exit_code == 1 and "parallax errors: 'gaia' or a fraction" in r.output


def test_evaluate_cli_errors(tiny_export, tmp_path):
    r = _cli(["--model", str(tiny_export), "--samples", "100000", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "`samples` must be in 1 … 4096" in r.output
    r = _cli(["--model", str(tiny_export), "--ref-mag", "15", "12", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "ref_mag" in r.output
    r = _cli(["--model", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "not an exported irisml-tf model" in r.output
