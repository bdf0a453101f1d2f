import numpy as np
import pytest

from irisml_tf.physics.prior import Prior, load_prior_config


def test_same_seed_same_draws(prior):
    a, b = prior.sample(5000, 42).numpy(), prior.sample(5000, 42).numpy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, prior.sample(5000, 43).numpy())


def test_prior_and_simulator_agree_on_support(prior, sim):
    theta = prior.sample(100_000, 1)
    lp = prior.log_prob(theta).numpy()
    mags, mask = sim(theta)
    assert np.all(np.isfinite(lp))
    assert mask.numpy().all()
    # uniform points in the box: finite prior density exactly where the simulator has support
    rng = np.random.default_rng(0)
    lo, hi = prior.lower, prior.upper
    u = rng.uniform(lo, hi, size=(200_000, 5)).astype(np.float32)
    fin = np.isfinite(prior.log_prob(u).numpy())
    assert np.array_equal(fin, sim.in_support(u).numpy())
    assert 0.2 < fin.mean() < 0.95


def test_normalised(prior):
    """Monte Carlo ∫p dθ over the box (log-uniform in teff) is 1."""
    rng = np.random.default_rng(1)
    n = 2_000_000
    lo, hi = prior.lower.astype(float), prior.upper.astype(float)
    lt = rng.uniform(np.log(lo[0]), np.log(hi[0]), n)
    x = np.c_[np.exp(lt), rng.uniform(lo[1:], hi[1:], (n, 4))].astype(np.float32)
    vol = (np.log(hi[0]) - np.log(lo[0])) * np.prod(hi[1:] - lo[1:])
    p = np.exp(prior.log_prob(x).numpy().astype(float)) * x[:, 0]
    est, err = p.mean() * vol, p.std() * vol / np.sqrt(n)
    assert abs(est - 1) < max(4 * err, 0.01)


def test_marginals_follow_config(prior):
    th = prior.sample(200_000, 5).numpy()
    assert th[:, 1].min() >= 0.1 and th[:, 1].max() <= 5.5
    assert th[:, 3].min() >= 0.003
    assert abs(np.mean(th[:, 3]) - (0.003 + 1.5)) < 0.03
    assert 2.5 <= th[:, 4].min() and th[:, 4].max() <= 4.5
    assert abs(np.median(th[:, 4]) - 3.13) < 0.01
    # 25 % halo around −1.49: a clear second mode
    assert 0.15 < np.mean(th[:, 2] < -0.9) < 0.35


def test_log_prob_outside_and_nan(prior):
    th = np.array([[5000, 4.0, 0.0, 1.0, 3.1], [5000, 4.0, 0.0, 1.0, 5.0], [np.nan, 4.0, 0.0, 1.0, 3.1],
                   [5000, 0.05, 0.0, 1.0, 3.1], [5000, 4.0, 0.0, 0.001, 3.1]], np.float32)
    lp = prior.log_prob(th).numpy()
    assert np.isfinite(lp[0]) and np.all(np.isneginf(lp[1:]))


def test_config_from_yaml(tmp_path, grid):
    p = tmp_path / "prior.yaml"
    p.write_text("av: {mean: 0.5}\nrv: {low: 3.0, high: 3.2}\n")
    pr = Prior(p, grid)
    th = pr.sample(20000, 0).numpy()
    assert abs(th[:, 3].mean() - 0.503) < 0.02 and th[:, 4].min() >= 3.0 and th[:, 4].max() <= 3.2


def test_config_yaml_reads_exponent_floats(tmp_path):
    p = tmp_path / "prior.yaml"
    p.write_text("av: {mean: 1e0, offset: 3E-3}\n")
    cfg = load_prior_config(p)
    assert cfg["av"]["mean"] == 1.0 and cfg["av"]["offset"] == 3e-3


@pytest.mark.parametrize("cfg, match", [
    ({"teff": {"low": 3000}}, "unknown key `teff`"),
    ({"av": {"scale": 1.0}}, "unknown key `av.scale`"),
    ({"av": {"mean": "big"}}, "`av.mean` must be a finite number"),
    ({"av": {"mean": -1.0}}, "av.mean"),
    ({"logg": {"low": 5.0, "high": 1.0}}, "logg.low"),
    ({"mh": {"components": []}}, "mh.components"),
])
def test_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        load_prior_config(cfg)
