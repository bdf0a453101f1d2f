import numpy as np
import pytest
import tensorflow as tf

from irisml_tf.physics.extinction import f99_curve


def _nodes(grid, rng, n, av=0.0, rv=3.1):
    """n random nodes whose (floor) cell is complete, as θ rows."""
    cells = np.argwhere(grid.cell_ok)
    c = cells[rng.choice(len(cells), n)]
    return np.stack([grid.teff[c[:, 0]], grid.logg[c[:, 1]], grid.mh[c[:, 2]],
                     np.full(n, av), np.full(n, rv)], 1).astype(np.float32), c


def test_av_definition():
    for rv in (2.3, 3.1, 5.1):
        assert f99_curve(np.array([5414.0]), rv)[0] == pytest.approx(1.0, abs=1e-12)


def test_exact_at_nodes(grid, sim, rng):
    theta, c = _nodes(grid, rng, 3000)
    mags, mask = sim(theta)
    ref = grid.mag[c[:, 0], c[:, 1], c[:, 2]]
    valid = grid.valid[c[:, 0], c[:, 1], c[:, 2]]
    assert np.array_equal(mask.numpy(), valid)
    assert np.abs(mags.numpy() - ref)[valid].max() <= 1e-4


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_continuous_across_cell_borders(grid, sim, rng, axis):
    """Approach interior cell faces from both sides: the values meet."""
    theta, _ = _nodes(grid, rng, 400, av=2.0, rv=3.3)
    for j in (0, 1, 2):
        if j != axis:  # move off the node along the other axes, inside the cell
            step = np.diff([grid.teff, grid.logg, grid.mh][j]).min()
            theta[:, j] = theta[:, j] + (0.37 * step if j else 0.37 * 100.0)
    eps = [1e-3, 1e-5, 1e-5][axis]
    lo, hi = theta.copy(), theta.copy()
    lo[:, axis] -= eps
    hi[:, axis] += eps
    m_lo, v_lo = sim(lo)
    m_hi, v_hi = sim(hi)
    both = v_lo.numpy() & v_hi.numpy()
    assert both.sum() > 1000
    assert np.abs(m_lo.numpy() - m_hi.numpy())[both].max() < 2e-3


def test_extinction_monotonic_in_av(prior, sim):
    theta = prior.sample(2000, 7).numpy()
    av = np.linspace(0.0, 15.0, 61, dtype=np.float32)
    rows = np.repeat(theta, len(av), 0)
    rows[:, 3] = np.tile(av, len(theta))
    mags, mask = sim(rows)
    clear = sim(np.c_[theta[:, :3], np.zeros(len(theta)), theta[:, 4]].astype(np.float32))[0].numpy()
    a = mags.numpy() - np.repeat(clear, len(av), 0)
    a = a.reshape(len(theta), len(av), -1)
    assert mask.numpy().all()
    assert np.all(np.diff(a, axis=1) > 0), "A_b must grow with A_V in every band"
    assert np.abs(a[:, 0]).max() == 0.0


def test_rv_behaviour(sim):
    """Higher R_V: flatter law, so less extinction relative to A_V in the UV and blue; F99's IR
    anchors scale with R_V, so A_Ks/A_V barely moves."""
    th = np.array([[5750, 4.5, 0.0, 1.0, 2.5], [5750, 4.5, 0.0, 1.0, 5.0]], np.float32)
    m, _ = sim(th)
    m0, _ = sim(np.c_[th[:, :3], [0, 0], th[:, 4]].astype(np.float32))
    a = (m - m0).numpy()
    bands = list(sim.bands)
    assert a[0, bands.index("GALEX_NUV")] > a[1, bands.index("GALEX_NUV")]
    assert a[0, bands.index("SDSS_u")] > a[1, bands.index("SDSS_u")]
    assert a[0, bands.index("2MASS_Ks")] == pytest.approx(a[1, bands.index("2MASS_Ks")], rel=0.1)


def test_bad_theta_is_masked_not_nan(sim):
    theta = np.array([[np.nan, 4.0, 0.0, 1.0, 3.1],
                      [5000, np.inf, 0.0, 1.0, 3.1],
                      [1000, 4.0, 0.0, 1.0, 3.1],
                      [5000, 4.0, 0.0, -1.0, 3.1],
                      [5000, 4.0, 0.0, 16.0, 3.1],
                      [5000, 4.0, 0.0, 1.0, 9.0],
                      [15500, 0.0, 0.0, 1.0, 3.1],  # inside the box, no grid cell there
                      [5000, 4.0, 0.0, 1.0, 3.1]], np.float32)
    mags, mask = sim(theta)
    mags, mask = mags.numpy(), mask.numpy()
    assert np.all(np.isfinite(mags))
    assert not mask[:7].any() and mask[7].all()
    assert np.all(mags[:7] == 0)
    with pytest.raises(ValueError, match="shape"):
        sim(np.zeros((3, 4), np.float32))


def test_gradients_finite(prior, sim):
    theta = tf.Variable(prior.sample(512, 3))
    with tf.GradientTape() as tape:
        mags, mask = sim(theta)
        loss = tf.reduce_sum(tf.where(mask, mags, 0.0))
    grad = tape.gradient(loss, theta).numpy()
    assert np.all(np.isfinite(grad))
    assert np.all(np.abs(grad[:, 3]) > 0.1)  # d mag / d A_V ~ k_b summed over bands
    # finite differences in A_V agree with autodiff
    th = theta.numpy().astype(np.float32)
    h = 1e-2
    up, dn = th.copy(), th.copy()
    up[:, 3] += h
    dn[:, 3] = np.maximum(dn[:, 3] - h, 0)
    fd = (tf.reduce_sum(sim(up)[0], 1) - tf.reduce_sum(sim(dn)[0], 1)).numpy() / (up[:, 3] - dn[:, 3])
    np.testing.assert_allclose(grad[:, 3], fd, rtol=0.05, atol=0.05)


def test_batched_equals_single(prior, sim):
    theta = prior.sample(64, 11).numpy()
    full = sim(theta)[0].numpy()
    one = np.concatenate([sim(theta[i:i + 1])[0].numpy() for i in range(0, 64, 16)])
    np.testing.assert_allclose(full[::16], one, atol=1e-5)
