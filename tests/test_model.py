"""Tests of the model layer (irisml_tf.model): tiny sizes, CPU, the whole file well under 60 s."""
from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from irisml_tf.model import (
    DEFAULT_LOWER,
    DEFAULT_UPPER,
    PARAM_NAMES,
    ConditionalMADE,
    ConditionalMAF,
    GaussianMixtureBase,
    MaskedDense,
    ParameterTransform,
    PosteriorModel,
    SetEncoder,
    TransformerBlock,
    fit_standardization,
    made_degrees,
)

TINY = dict(embed_dim=16, num_heads=2, num_blocks=2, mlp_dim=32, flow_blocks=2,
            made_hidden=[16, 16], mixture_components=0, dropout=0.0)
LOWER = np.array(DEFAULT_LOWER)
UPPER = np.array(DEFAULT_UPPER)


# -- helpers ---------------------------------------------------------------------------------
def make_batch(batch=6, width=8, seed=0):
    """Padded batch with padding scattered between present bands (not only at the end)."""
    rng = np.random.default_rng(seed)
    band_index = np.full((batch, width), -1, np.int32)
    mag = np.full((batch, width), np.nan, np.float32)  # garbage in the padding
    err = np.full((batch, width), np.nan, np.float32)
    for b in range(batch):
        n = rng.integers(1, width + 1)
        cols = rng.choice(width, n, replace=False)
        band_index[b, cols] = rng.choice(25, n, replace=False)
        mag[b, cols] = rng.normal(15.0, 1.5, n)
        err[b, cols] = rng.uniform(0.005, 0.3, n)
    return band_index, mag, err


def make_theta(batch, seed=0):
    rng = np.random.default_rng(seed)
    return (LOWER + (UPPER - LOWER) * rng.uniform(0.05, 0.95, (batch, 5))).astype(np.float32)


def permute_and_pad(band_index, mag, err, extra=5, seed=1):
    """Permute every row's tokens independently and append `extra` padding columns (NaN mags)."""
    rng = np.random.default_rng(seed)
    b, k = band_index.shape
    out = [np.concatenate([a, np.full((b, extra), fill, a.dtype)], axis=1)
           for a, fill in ((band_index, -1), (mag, np.nan), (err, np.nan))]
    for row in range(b):
        perm = rng.permutation(k + extra)
        for a in out:
            a[row] = a[row, perm]
    return out


def randomize(layer, std, seed=0):
    """Overwrite every trainable variable of `layer` with N(0, std²) draws."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(rng.normal(0.0, std, v.shape).astype(np.float32))


def perturb(layer, std, seed=0):
    """Add N(0, std²) noise to every trainable variable (a non-trivial but tame flow)."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(v.numpy() + rng.normal(0.0, std, v.shape).astype(np.float32))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = PosteriorModel.from_config(TINY)
    perturb(m.flow, 0.1, seed=1)
    return m


@pytest.fixture(scope="module")
def mixture_model():
    keras.utils.set_random_seed(1)
    m = PosteriorModel.from_config(dict(TINY, mixture_components=3))
    perturb(m.flow, 0.1, seed=2)
    return m


# -- parameter transform ---------------------------------------------------------------------
def test_param_names_order():
    assert PARAM_NAMES == ("teff", "logg", "mh", "av", "rv")


def test_transform_roundtrip_and_closed_support():
    t = ParameterTransform(loc=[0.1, -0.2, 0.3, -1.0, 0.0], scale=[1.5, 0.7, 1.0, 2.0, 1.2])
    z = tf.constant(np.random.default_rng(0).normal(0, 2, (1000, 5)))  # float64
    np.testing.assert_allclose(t.inverse(t.forward(z)).numpy(), z.numpy(), atol=1e-8)
    extreme = tf.constant([[1e30, -1e30, np.inf, -np.inf, 50.0],
                           [-50.0, 50.0, -1e4, 1e4, 0.0]], tf.float32)
    theta = t.forward(extreme).numpy()
    assert np.all(np.isfinite(theta))
    assert np.all((theta >= LOWER.astype(np.float32)) & (theta <= UPPER.astype(np.float32)))


def test_transform_inverse_is_finite_on_and_beyond_the_bounds():
    t = ParameterTransform()
    theta = np.stack([LOWER, UPPER, LOWER - 1.0, UPPER + 1.0]).astype(np.float32)
    z = t.inverse(theta).numpy()
    assert np.all(np.isfinite(z))
    assert np.all(np.isfinite(t.inverse_log_det_jacobian(theta, event_ndims=1).numpy()))


@pytest.mark.parametrize("dtype", [tf.float64, tf.float32])
def test_transform_log_det_matches_autodiff_jacobian(dtype):
    t = ParameterTransform(loc=[0.1, -0.2, 0.3, -1.0, 0.0], scale=[1.5, 0.7, 1.0, 2.0, 1.2])
    z = tf.constant(np.random.default_rng(1).normal(0, 1.5, (64, 5)), dtype)
    with tf.GradientTape() as tape:
        tape.watch(z)
        theta = t.forward(z)
    jac = tape.batch_jacobian(theta, z)  # [N, 5, 5]
    _, expected = tf.linalg.slogdet(tf.cast(jac, tf.float64))
    rtol = 1e-9 if dtype == tf.float64 else 1e-4
    got = t.forward_log_det_jacobian(z, event_ndims=1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=rtol, atol=rtol)
    back = t.inverse_log_det_jacobian(theta, event_ndims=1)
    np.testing.assert_allclose(back.numpy(), -expected.numpy(), rtol=rtol * 10, atol=rtol * 100)


def test_fit_standardization_gives_unit_scale():
    rng = np.random.default_rng(2)
    theta = np.column_stack([np.exp(rng.uniform(np.log(3000), np.log(9000), 5000)),
                             rng.uniform(0.1, 5.5, 5000), rng.normal(-0.1, 0.3, 5000),
                             0.003 + rng.exponential(1.5, 5000), rng.normal(3.1, 0.2, 5000)])
    loc, scale = fit_standardization(theta)
    z = ParameterTransform(loc=loc, scale=scale).inverse(tf.constant(theta)).numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-6)


# -- MADE ------------------------------------------------------------------------------------
def test_made_is_autoregressive_and_sees_the_context():
    made = ConditionalMADE(event_dim=5, context_dim=3, hidden_units=[12, 12],
                           output_init_scale=0.5)
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 5)), tf.float32)
    c = tf.constant(np.random.default_rng(4).normal(size=(4, 3)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, c])
        shift, log_scale = made(x, conditional_input=c)
    for out in (shift, log_scale):
        jx = np.abs(tape.batch_jacobian(out, x).numpy()).max(0)  # [out j, in i]
        jc = np.abs(tape.batch_jacobian(out, c).numpy()).max(0)
        assert np.all(np.triu(jx) == 0.0), "output j must not depend on inputs i >= j"
        assert np.all(np.tril(jx, -1)[np.tril_indices(5, -1)] > 0), "lost an allowed link"
        assert np.all(jc.max(1) > 0), "every output must see the context"
    with pytest.raises(ValueError, match="conditional_input"):
        made(x)


def test_made_degrees():
    deg = made_degrees(3, [4])
    assert deg == [[1, 2, 3], [0, 1, 2, 0], [1, 2, 3, 1, 2, 3]]
    mask = MaskedDense(deg[1], deg[2], strict=True).mask
    assert mask.shape == (4, 6) and not mask[:, 0].all() and mask[[0, 3], 0].all()


# -- encoder ---------------------------------------------------------------------------------
def test_encoder_permutation_and_padding_invariance(model):
    bi, mag, err = make_batch()
    ref = model.context(bi, mag, err).numpy()
    assert ref.shape == (6, TINY["embed_dim"]) and np.all(np.isfinite(ref))
    got = model.context(*permute_and_pad(bi, mag, err)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # ...and it does look at the magnitudes (the check above can fail):
    mag2 = mag.copy()
    row, col = 0, np.flatnonzero(bi[0] >= 0)[0]
    mag2[row, col] += 0.5
    assert np.abs(model.context(bi, mag2, err).numpy()[row] - ref[row]).max() > 1e-4


def test_encoder_invariance_on_the_dropout_attention_path():
    """With dropout > 0 Keras's attention takes its explicit masked-softmax path: check it too."""
    keras.utils.set_random_seed(4)
    encoder = SetEncoder(embed_dim=8, num_heads=2, num_blocks=2, mlp_dim=16, dropout=0.2)
    bi, mag, err = make_batch(seed=21)
    ref = encoder(bi, mag, err).numpy()
    np.testing.assert_allclose(encoder(*permute_and_pad(bi, mag, err, seed=22)).numpy(), ref,
                               atol=1e-5)


def test_encoder_with_no_present_band_is_finite(model):
    bi = np.full((2, 3), -1, np.int32)
    out = model.context(bi, np.full((2, 3), np.nan, np.float32),
                        np.full((2, 3), np.nan, np.float32)).numpy()
    assert np.all(np.isfinite(out))


def test_log_prob_permutation_and_padding_invariance(model, mixture_model):
    bi, mag, err = make_batch(seed=5)
    theta = make_theta(6, seed=5)
    for m in (model, mixture_model):
        ref = m.log_prob(theta, bi, mag, err).numpy()
        assert ref.shape == (6,) and np.all(np.isfinite(ref))
        got = m.log_prob(theta, *permute_and_pad(bi, mag, err, seed=7)).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_log_prob_outside_the_box_is_minus_inf_and_on_the_bounds_finite(model):
    bi, mag, err = make_batch(batch=4, seed=23)
    theta = np.stack([LOWER, UPPER, LOWER - [1, 0, 0, 0, 0], UPPER + [0, 0, 0, 0.1, 0]])
    log_q = model.log_prob(theta.astype(np.float64), bi, mag, err).numpy()
    assert np.all(np.isfinite(log_q[:2])) and np.all(log_q[2:] == -np.inf)


# -- density normalisation -------------------------------------------------------------------
def test_one_dimensional_flow_integrates_to_one():
    keras.utils.set_random_seed(3)
    flow = ConditionalMAF(event_dim=1, context_dim=3, num_blocks=3, hidden_units=[8],
                          mixture_components=2)
    flow.build()
    perturb(flow, 0.7, seed=3)
    grid = np.linspace(-40.0, 40.0, 40001).astype(np.float32)
    context = tf.tile(tf.constant([[0.3, -1.0, 2.0]]), [grid.size, 1])
    log_q = flow.log_prob(grid[:, None], context).numpy()
    density = np.exp(log_q.astype(np.float64))
    assert density[0] < 1e-12 and density[-1] < 1e-12
    integral = np.trapezoid(density, grid)
    assert abs(integral - 1.0) < 1e-3, integral
    # Not trivially a unit Gaussian, so the check above has teeth:
    gauss = -0.5 * grid**2 - 0.5 * np.log(2 * np.pi)
    assert np.abs(log_q - gauss)[np.abs(grid) < 2].max() > 0.05


def test_posterior_density_normalises_in_physical_units(model):
    """Vol · E_uniform[q(θ|x)] = ∫ q dθ = 1 over the support box (includes every log-det)."""
    bi, mag, err = make_batch(batch=1, seed=11)
    n = 100_000
    rng = np.random.default_rng(12)
    theta = (LOWER + (UPPER - LOWER) * rng.uniform(size=(n, 5))).astype(np.float32)
    log_q = model.log_prob(theta, np.repeat(bi, n, 0), np.repeat(mag, n, 0),
                           np.repeat(err, n, 0)).numpy().astype(np.float64)
    q_vol = np.exp(log_q + np.log(UPPER - LOWER).sum())
    estimate, stderr = q_vol.mean(), q_vol.std() / np.sqrt(n)
    assert stderr < 0.02
    assert abs(estimate - 1.0) < 4 * stderr + 1e-3, (estimate, stderr)


# -- samples ---------------------------------------------------------------------------------
def test_sample_and_log_prob_agree_with_log_prob(model, mixture_model):
    bi, mag, err = make_batch(batch=3, seed=13)
    for m in (model, mixture_model):
        theta, log_q = m.sample_and_log_prob(7, bi, mag, err, seed=[3, 4])
        assert theta.shape == (3, 7, 5) and log_q.shape == (3, 7)
        again = m.log_prob(tf.reshape(theta, [-1, 5]), np.repeat(bi, 7, 0),
                           np.repeat(mag, 7, 0), np.repeat(err, 7, 0))
        np.testing.assert_allclose(log_q.numpy().ravel(), again.numpy(), atol=2e-3, rtol=1e-4)
        np.testing.assert_array_equal(m.sample(7, bi, mag, err, seed=[3, 4]).numpy(),
                                      theta.numpy())


@pytest.mark.parametrize("mixture", [0, 2])
def test_no_sample_leaves_the_support_even_with_large_weights(mixture):
    keras.utils.set_random_seed(5)
    m = PosteriorModel.from_config(dict(TINY, mixture_components=mixture))
    randomize(m, 3.0, seed=5)
    bi, mag, err = make_batch(batch=10, seed=14)
    theta = m.sample(10_000, bi, mag, err, seed=[5, 6]).numpy().reshape(-1, 5)
    assert theta.shape == (100_000, 5)
    assert np.all(np.isfinite(theta))
    assert np.all(theta >= LOWER.astype(np.float32)) and np.all(theta <= UPPER.astype(np.float32))


def test_same_seed_same_samples(model):
    bi, mag, err = make_batch(batch=2, seed=15)
    a = model.sample(50, bi, mag, err, seed=tf.constant([7, 8], tf.int32)).numpy()
    b = model.sample(50, bi, mag, err, seed=np.array([7, 8], np.int64)).numpy()
    c = model.sample(50, bi, mag, err, seed=[7, 9]).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    d = model.sample(50, bi, mag, err).numpy()
    e = model.sample(50, bi, mag, err).numpy()
    assert not np.allclose(d, e)  # no seed: fresh samples
    graph = tf.function(lambda n, s: model.sample(n, bi, mag, err, seed=s),
                        input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)])
    np.testing.assert_allclose(graph(50, tf.constant([7, 8])).numpy(), a, rtol=1e-5, atol=1e-3)


def test_per_star_seeds_make_a_star_independent_of_its_batch(model):
    bi, mag, err = make_batch(batch=3, seed=16)
    seeds = np.array([[1, 2], [3, 4], [5, 6]], np.int32)
    whole = model.sample(40, bi, mag, err, seed=seeds).numpy()
    alone = model.sample(40, bi[1:2], mag[1:2], err[1:2], seed=seeds[1:2]).numpy()
    np.testing.assert_allclose(whole[1], alone[0], rtol=1e-5, atol=1e-4)
    swapped = model.sample(40, bi[::-1], mag[::-1], err[::-1], seed=seeds[::-1]).numpy()
    np.testing.assert_allclose(swapped[::-1], whole, rtol=1e-5, atol=1e-4)
    other = model.sample(40, bi, mag, err, seed=seeds + 1).numpy()
    assert not np.allclose(other, whole)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        model.sample(40, bi, mag, err, seed=np.zeros((3, 3), np.int32))


def test_conditioning_is_routed_inside_tf_function(model):
    """Two flows in one graph get uniquified bijector names (maf0_1...): routing must follow."""
    bi, mag, err = make_batch(seed=16)
    theta = make_theta(6, seed=16)
    eager = model.log_prob(theta, bi, mag, err).numpy()

    @tf.function
    def twice():
        return (model.log_prob(theta, bi, mag, err), model.log_prob(theta, bi, mag, err))

    first, second = twice()
    np.testing.assert_allclose(first.numpy(), eager, atol=1e-5)
    np.testing.assert_allclose(second.numpy(), eager, atol=1e-5)


# -- training signal -------------------------------------------------------------------------
@pytest.mark.parametrize("mixture", [0, 3])
def test_gradients_are_finite_and_reach_every_variable(mixture):
    keras.utils.set_random_seed(6)
    m = PosteriorModel.from_config(dict(TINY, mixture_components=mixture, dropout=0.1))
    bi, mag, err = make_batch(batch=16, seed=17)
    theta = make_theta(16, seed=17)
    with tf.GradientTape() as tape:
        loss = m.nll(theta, dict(band_index=bi, mag=mag, mag_err=err))
    variables = m.trainable_variables
    grads = tape.gradient(loss, variables)
    assert np.isfinite(loss.numpy())
    names = {v.path for v in variables}
    assert any("encoder" in n for n in names) and any("flow" in n for n in names)
    if mixture:
        assert any("mixture_base" in n for n in names)
    for v, g in zip(variables, grads):
        assert g is not None, f"no gradient reaches {v.path}"
        g = tf.convert_to_tensor(g).numpy()
        assert np.all(np.isfinite(g)), v.path
        assert np.abs(g).max() > 0, f"zero gradient for {v.path}"


# -- serialisation ---------------------------------------------------------------------------
def _layers():
    return [
        MaskedDense([1, 2], [0, 1, 2], strict=True, name="md"),
        ConditionalMADE(5, 7, [9, 9], activation="gelu", log_scale_bound=2.0),
        GaussianMixtureBase(3, 5, init_spread=0.5),
        ConditionalMAF(5, 7, num_blocks=2, hidden_units=[8], mixture_components=2),
        TransformerBlock(8, 2, 16, dropout=0.1),
        SetEncoder(num_bands=25, embed_dim=8, num_heads=2, num_blocks=1, mlp_dim=16),
        PosteriorModel(**dict(TINY, param_loc=[0.0] * 5, param_scale=[1.0, 2, 3, 4, 5])),
    ]


@pytest.mark.parametrize("layer", _layers(), ids=lambda layer: type(layer).__name__)
def test_serialize_deserialize_reserialize(layer):
    first = keras.saving.serialize_keras_object(layer)
    assert first["registered_name"].startswith("irisml_tf>")
    clone = keras.saving.deserialize_keras_object(first)
    assert type(clone) is type(layer)
    assert keras.saving.serialize_keras_object(clone) == first
    # get_config holds exactly the constructor arguments (plus Keras's own name/trainable/dtype)
    params = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert set(layer.get_config()) - {"name", "trainable", "dtype"} == params


def test_save_and_load_weights_round_trip(model, tmp_path):
    bi, mag, err = make_batch(seed=18)
    theta = make_theta(6, seed=18)
    ref = model.log_prob(theta, bi, mag, err).numpy()
    path = str(tmp_path / "posterior.weights.h5")
    model.save_weights(path)
    keras.utils.set_random_seed(99)
    fresh = PosteriorModel.from_config(model.get_config())
    assert not np.array_equal(fresh.log_prob(theta, bi, mag, err).numpy(), ref)
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.log_prob(theta, bi, mag, err).numpy(), ref)


def test_keras_file_round_trip(mixture_model, tmp_path):
    bi, mag, err = make_batch(seed=19)
    theta = make_theta(6, seed=19)
    path = str(tmp_path / "posterior.keras")
    mixture_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PosteriorModel)
    np.testing.assert_array_equal(loaded.log_prob(theta, bi, mag, err).numpy(),
                                  mixture_model.log_prob(theta, bi, mag, err).numpy())


# -- argument checks -------------------------------------------------------------------------
def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_heads"):
        PosteriorModel.from_config(dict(TINY, embed_dim=15, num_heads=2))
    with pytest.raises(ValueError, match="lower"):
        PosteriorModel(lower=[0.0, 1.0])
    with pytest.raises(ValueError, match="scale"):
        PosteriorModel(param_scale=[1.0, 1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="seed"):
        bi, mag, err = make_batch(batch=1)
        PosteriorModel(**TINY).sample(2, bi, mag, err, seed=[1, 2, 3])
