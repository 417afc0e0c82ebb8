"""Tests of nf_jax.models.layers: Scaled WS, gamma activations, SE, stochdepth."""

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nf_jax.models import layers
from nf_jax.models.errors import UnknownNameError


def _key(seed):
  # `unsafe_rbg` keys compile much faster on CPU than threefry ones; haiku and
  # jax.random accept them like any other key.
  return jax.random.key(seed, impl="unsafe_rbg")


# ---------------------------------------------------------------------------
# Scaled Weight Standardization.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (1, 1, 16, 5), (3, 3, 2, 6),
                                   (7, 7, 3, 64)])
def test_standardize_weight_moments(shape):
  rng = np.random.default_rng(0)
  # A raw weight far from standardized: shifted, scaled, per-channel different.
  w = rng.normal(size=shape) * rng.uniform(0.1, 3.0, shape[-1]) + rng.normal(
      size=shape[-1])
  gain = rng.uniform(0.5, 2.0, shape[-1])
  w_hat = np.asarray(layers.standardize_weight(jnp.asarray(w, jnp.float32),
                                               jnp.asarray(gain, jnp.float32)),
                     np.float64)
  fan_in = int(np.prod(shape[:-1]))
  flat = w_hat.reshape(fan_in, shape[-1])
  np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(flat.var(0), gain ** 2 / fan_in, rtol=1e-4)
  np.testing.assert_allclose((flat ** 2).sum(0), gain ** 2, rtol=1e-4)
  assert w_hat.dtype == np.float64 and layers.standardize_weight(
      jnp.asarray(w, jnp.bfloat16), jnp.ones(shape[-1])).dtype == jnp.float32


def _standardize_reference(w, gain, eps=1e-4):
  """Scaled WS written out directly, differentiated by autodiff."""
  flat = w.reshape(-1, w.shape[-1])
  mean, var = jnp.mean(flat, axis=0), jnp.var(flat, axis=0)
  scale = gain * jax.lax.rsqrt(jnp.maximum(flat.shape[0] * var, eps))
  return ((flat - mean) * scale).reshape(w.shape)


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (1, 1, 16, 5)])
def test_standardize_weight_gradient_matches_autodiff(shape):
  rng = np.random.default_rng(3)
  w = rng.normal(size=shape) * rng.uniform(0.1, 3.0, shape[-1]) + rng.normal(
      size=shape[-1])
  # A nearly constant column: fan_in * variance under the eps floor.
  w[..., 0] = 0.25 + 1e-4 * rng.normal(size=shape[:-1])
  gain = rng.uniform(0.5, 2.0, shape[-1])
  cot = rng.normal(size=shape)
  args = (jnp.asarray(w, jnp.float32), jnp.asarray(gain, jnp.float32))
  loss = lambda f: lambda w, g: jnp.sum(f(w, g) * cot)
  ours = jax.grad(loss(layers.standardize_weight), argnums=(0, 1))(*args)
  ref = jax.grad(loss(_standardize_reference), argnums=(0, 1))(*args)
  chex.assert_trees_all_close(layers.standardize_weight(*args),
                              _standardize_reference(*args), atol=1e-5)
  chex.assert_trees_all_close(ours, ref, rtol=1e-4, atol=1e-5)


def _conv_apply(x, **kw):
  f = hk.transform(lambda x: layers.ScaledWSConv2D(**kw, name="conv")(x))
  params = f.init(_key(0), x)
  return params, f.apply(params, None, x)


@pytest.mark.parametrize(
    "kw,in_hw,out_hw",
    [(dict(output_channels=8, kernel_shape=3), 9, 9),
     (dict(output_channels=8, kernel_shape=3, stride=2), 9, 5),
     (dict(output_channels=8, kernel_shape=3, padding="VALID"), 9, 7),
     (dict(output_channels=8, kernel_shape=3, stride=2, padding="VALID"), 9, 4),
     # 1x1 convs, strided and not, SAME and VALID.
     (dict(output_channels=6, kernel_shape=1, stride=2), 8, 4),
     (dict(output_channels=6, kernel_shape=1, stride=2), 9, 5),
     (dict(output_channels=6, kernel_shape=1, stride=2, padding="VALID"), 9, 5),
     (dict(output_channels=6, kernel_shape=1), 9, 9),
     (dict(output_channels=8, kernel_shape=1, feature_group_count=2), 9, 9),
     (dict(output_channels=8, kernel_shape=3, feature_group_count=4), 9, 9),
     (dict(output_channels=12, kernel_shape=3, stride=2, padding="VALID",
           feature_group_count=2), 9, 4)])
def test_ws_conv_shapes_params_and_output(kw, in_hw, out_hw):
  in_ch = 8
  x = jax.random.normal(_key(1), (2, in_hw, in_hw, in_ch))
  params, out = _conv_apply(x, **kw)
  groups = kw.get("feature_group_count", 1)
  k, c_out = kw["kernel_shape"], kw["output_channels"]
  p = params["conv"]
  assert sorted(p) == ["b", "gain", "w"]
  chex.assert_shape(p["w"], (k, k, in_ch // groups, c_out))
  np.testing.assert_array_equal(p["gain"], np.ones(c_out))
  np.testing.assert_array_equal(p["b"], np.zeros(c_out))
  chex.assert_shape(out, (2, out_hw, out_hw, c_out))
  # The output is the convolution with the standardized weight, plus bias:
  # check against an explicit lax conv with a non-trivial gain and bias.
  rng = np.random.default_rng(2)
  p = {"w": p["w"], "gain": jnp.asarray(rng.uniform(0.5, 2, c_out), jnp.float32),
       "b": jnp.asarray(rng.normal(size=c_out), jnp.float32)}
  out = hk.transform(lambda x: layers.ScaledWSConv2D(**kw, name="conv")(x)
                     ).apply({"conv": p}, None, x)
  w_hat = layers.standardize_weight(p["w"], p["gain"])
  ref = jax.lax.conv_general_dilated(
      x, w_hat, (kw.get("stride", 1),) * 2, kw.get("padding", "SAME"),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups) + p["b"]
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_ws_conv_removes_mean_shift_and_has_unit_variance():
  # WS weights sum to zero per output channel, so a constant input (any mean
  # shift) maps to exactly the bias; on i.i.d. N(0, 1) inputs the output
  # variance is gain^2 = 1 (Brock et al. 2021, section 4.1).
  kw = dict(output_channels=64, kernel_shape=3, padding="VALID")
  const = jnp.full((1, 5, 5, 32), 3.7)
  _, out = _conv_apply(const, **kw)
  np.testing.assert_allclose(out, 0.0, atol=1e-4)
  x = jax.random.normal(_key(3), (16, 20, 20, 32))
  _, out = _conv_apply(x, **kw)
  out = np.asarray(out, np.float64).reshape(-1, 64)
  assert abs(out.mean()) < 0.02
  np.testing.assert_allclose(out.var(0).mean(), 1.0, rtol=0.03)


def test_ws_conv_without_standardization_is_a_plain_conv():
  x = jax.random.normal(_key(4), (2, 8, 8, 4))
  kw = dict(output_channels=6, kernel_shape=3, stride=2, standardize=False)
  params, out = _conv_apply(x, **kw)
  p = params["conv"]
  assert sorted(p) == ["b", "w"]
  b = jnp.arange(6.0)
  out = hk.transform(lambda x: layers.ScaledWSConv2D(**kw, name="conv")(x)
                     ).apply({"conv": {"w": p["w"], "b": b}}, None, x)
  ref = jax.lax.conv_general_dilated(
      x, p["w"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(out, ref + b, rtol=1e-5, atol=1e-5)
  # Fan-in init for the unnormalized baselines: Var(w) = init_scale / fan_in
  # (truncated normal, so a loose tolerance).
  for scale in (1.0, 2.0):
    big = hk.transform(lambda x, s=scale: layers.ScaledWSConv2D(
        256, 3, standardize=False, with_bias=False, init_scale=s,
        name="conv")(x))
    w = np.asarray(big.init(_key(5), jnp.zeros((1, 4, 4, 64)))["conv"]["w"])
    np.testing.assert_allclose(w.var(), scale / (9 * 64), rtol=0.1)


def test_ws_conv_rejects_bad_groups():
  with pytest.raises(ValueError, match="divisible"):
    _conv_apply(jnp.zeros((1, 4, 4, 6)), output_channels=4,
                feature_group_count=4)


@pytest.mark.parametrize("hw,stride,padding", [
    (8, 1, "SAME"), ((9, 6), 1, "VALID"), (8, 2, "SAME"), (9, 2, "VALID"),
    ((7, 10), 3, "SAME"), (9, 2, ((0, 0), (0, 0))), (6, 1, ((1, 0), (0, 1)))])
def test_conv2d_1x1_matches_lax_values_and_gradients(hw, stride, padding):
  """conv2d's own 1x1 gradients (matmuls, interior-padded dx) == autodiff.

  The last case has real padding, which conv2d leaves to XLA's convolution.
  """
  h, w_ = (hw, hw) if isinstance(hw, int) else hw
  x = jax.random.normal(_key(0), (3, h, w_, 5))
  w = jax.random.normal(_key(1), (1, 1, 5, 7))
  ref_fn = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO",
                                                          "NHWC"))
  ours_fn = lambda x, w: layers.conv2d(x, w, stride, padding)
  ref, ref_vjp = jax.vjp(ref_fn, x, w)
  ours, ours_vjp = jax.vjp(jax.jit(ours_fn), x, w)
  chex.assert_trees_all_close(ours, ref, atol=1e-5, rtol=1e-5)
  g = jax.random.normal(_key(2), ref.shape)
  chex.assert_trees_all_close(ours_vjp(g), ref_vjp(g), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("hw,window,stride", [(8, 3, 2), (9, 3, 2), (7, 3, 1),
                                              (6, 2, 2), ((9, 6), 3, 2)])
def test_max_pool_matches_haiku_values_and_gradient(hw, window, stride):
  h, w = hw if isinstance(hw, tuple) else (hw, hw)
  # Distinct values, so there are no ties and the subgradient is unique.
  x = jax.random.permutation(_key(7), jnp.arange(2 * h * w * 3.0))
  x = x.reshape(2, h, w, 3)
  ref = lambda v: hk.max_pool(v, (1, window, window, 1),
                              (1, stride, stride, 1), "SAME")
  ours = lambda v: layers.max_pool(v, window, stride)
  chex.assert_trees_all_equal(ours(x), ref(x))
  cot = jax.random.normal(_key(8), ref(x).shape)
  grad = lambda f: jax.grad(lambda v: jnp.sum(f(v) * cot))(x)
  chex.assert_trees_all_close(grad(ours), grad(ref))


# ---------------------------------------------------------------------------
# Gamma-scaled activations.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian_samples():
  return jax.random.normal(jax.random.PRNGKey(0), (4_000_000,), jnp.float32)


@pytest.mark.parametrize("name", sorted(layers.ACTIVATION_GAMMAS))
def test_activation_gamma_matches_monte_carlo(name, gaussian_samples):
  f = layers.base_activation(name)
  y = np.asarray(f(gaussian_samples), np.float64)
  gamma_mc = 1.0 / y.std()
  np.testing.assert_allclose(layers.ACTIVATION_GAMMAS[name], gamma_mc,
                             rtol=3e-3)
  # The scaled activation therefore has (near) unit variance on N(0, 1).
  z = np.asarray(layers.scaled_activation(name)(gaussian_samples), np.float64)
  np.testing.assert_allclose(z.var(), 1.0, rtol=6e-3)


def test_activation_table_is_complete_and_has_published_values():
  assert set(layers.ACTIVATION_GAMMAS) == set(layers._BASE_ACTIVATIONS)
  assert layers.ACTIVATION_GAMMAS["relu"] == 1.7139588594436646
  assert layers.ACTIVATION_GAMMAS["silu"] == 1.7881293296813965
  assert layers.ACTIVATION_GAMMAS["gelu"] == 1.7015043497085571


def test_scaled_activation_is_gamma_times_base():
  x = jnp.linspace(-4.0, 4.0, 101)
  for name, gamma in layers.ACTIVATION_GAMMAS.items():
    np.testing.assert_allclose(
        layers.scaled_activation(name)(x),
        np.asarray(layers.base_activation(name)(x)) * np.float32(gamma),
        rtol=1e-6, atol=1e-6, err_msg=name)
  # bfloat16 in, bfloat16 out.
  assert layers.scaled_activation("relu")(x.astype(jnp.bfloat16)).dtype == (
      jnp.bfloat16)


@pytest.mark.parametrize("alias,canonical", [("swish", "silu"),
                                             ("SWISH", "silu"),
                                             ("linear", "identity"),
                                             ("softsign", "soft_sign"),
                                             ("Relu", "relu")])
def test_activation_aliases(alias, canonical):
  assert layers.canonical_activation(alias) == canonical
  x = jnp.linspace(-3.0, 3.0, 13)
  np.testing.assert_array_equal(layers.scaled_activation(alias)(x),
                                layers.scaled_activation(canonical)(x))


def test_unknown_activation_lists_valid_names():
  with pytest.raises(UnknownNameError) as e:
    layers.scaled_activation("relu7")
  assert isinstance(e.value, ValueError)
  msg = str(e.value)
  assert "relu7" in msg
  for name in ("relu", "silu", "gelu", "swish"):
    assert name in msg
  assert "silu" in e.value.valid
  with pytest.raises(UnknownNameError):
    layers.base_activation("nope")


# ---------------------------------------------------------------------------
# Squeeze-excite, stochastic depth, skip gain, channel stats.
# ---------------------------------------------------------------------------


def test_squeeze_excite_is_two_sigmoid_times_input():
  f = hk.transform(lambda x: layers.SqueezeExcite(12, 0.5, name="se")(x))
  x = jax.random.normal(_key(6), (3, 5, 5, 12))
  params = f.init(_key(7), x)
  chex.assert_shape(params["se/fc0"]["w"], (12, 6))
  chex.assert_shape(params["se/fc1"]["w"], (6, 12))
  # Non-zero biases make the check stronger.
  params = jax.tree.map(lambda p: p + 0.1, params)
  out = f.apply(params, None, x)
  chex.assert_shape(out, x.shape)
  p0, p1 = params["se/fc0"], params["se/fc1"]
  h = np.asarray(x).mean(axis=(1, 2))
  h = np.maximum(h @ p0["w"] + p0["b"], 0.0)
  s = 1.0 / (1.0 + np.exp(-(h @ p1["w"] + p1["b"])))
  np.testing.assert_allclose(out, 2.0 * s[:, None, None, :] * np.asarray(x),
                             rtol=1e-5, atol=1e-6)
  ratio = np.asarray(out) / np.asarray(x)
  assert np.all((ratio > 0) & (ratio < 2))


def test_squeeze_excite_hidden_width_is_at_least_one():
  f = hk.transform(lambda x: layers.SqueezeExcite(3, 0.1, name="se")(x))
  params = f.init(_key(0), jnp.ones((1, 2, 2, 3)))
  chex.assert_shape(params["se/fc0"]["w"], (3, 1))


def _stochdepth(x, rate, is_training, seed=0):
  f = hk.transform(lambda x: layers.stochastic_depth(x, rate, is_training))
  return np.asarray(f.apply({}, _key(seed) if is_training else None, x))


def test_stochastic_depth_drops_whole_examples():
  x = jax.random.normal(_key(8), (2000, 3, 3, 4)) + 5.0  # no exact zeros
  out = _stochdepth(x, 0.5, True)
  flat_out = out.reshape(2000, -1)
  dropped = np.all(flat_out == 0, axis=1)
  kept = np.all(flat_out == np.asarray(x).reshape(2000, -1), axis=1)
  # Every example is either dropped entirely or passed through unchanged (no
  # 1 / keep_prob rescaling), at a rate close to 0.5.
  assert np.all(dropped ^ kept)
  assert 0.45 < dropped.mean() < 0.55
  # A different rng drops different examples.
  other = np.all(_stochdepth(x, 0.5, True, seed=1).reshape(2000, -1) == 0, 1)
  assert np.any(other != dropped)
  # Rate 0.2 drops about 20 %.
  dropped = np.all(_stochdepth(x, 0.2, True).reshape(2000, -1) == 0, axis=1)
  assert 0.16 < dropped.mean() < 0.24


def test_stochastic_depth_identity_at_eval_and_rate_zero():
  x = jax.random.normal(_key(9), (64, 2, 2, 3))
  np.testing.assert_array_equal(_stochdepth(x, 0.5, False), x)
  np.testing.assert_array_equal(_stochdepth(x, 0.0, True), x)


def test_skip_gain_parameter():
  f = hk.transform(lambda x: layers.skip_gain(x, 0.25))
  x = jnp.arange(6.0).reshape(2, 3)
  params = f.init(None, x)
  assert list(jax.tree_util.tree_leaves(params)) == [0.25]
  np.testing.assert_allclose(f.apply(params, None, x), 0.25 * x)
  params = jax.tree.map(lambda p: p * 0 + 3.0, params)
  np.testing.assert_allclose(f.apply(params, None, x), 3.0 * x)


def test_channel_stats():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 3, 3, 5)) * np.arange(1, 6) + np.arange(5)
  sq_mean, var = layers.channel_stats(jnp.asarray(x, jnp.float32))
  flat = x.reshape(-1, 5)
  np.testing.assert_allclose(sq_mean, np.mean(flat.mean(0) ** 2), rtol=1e-5)
  np.testing.assert_allclose(var, np.mean(flat.var(0)), rtol=1e-5)
