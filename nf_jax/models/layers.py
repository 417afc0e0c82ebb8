"""Building blocks of normalizer-free networks.

* `ScaledWSConv2D`: Scaled Weight Standardization (Brock, De & Smith 2021, eq. 3)
  W_hat = g * (W - mean(W)) / sqrt(max(N * var(W), eps)), per output channel.
* Gamma-scaled activations: f(x) * gamma with gamma = 1 / std(f(x)), x ~ N(0, 1),
  so that a unit-Gaussian input leaves the activation with unit variance.
* Squeeze-excite, stochastic depth and the SkipInit scalar gain.
"""

import functools
from typing import Callable, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp

from nf_jax.models.errors import UnknownNameError

# gamma = 1 / std(f(x)) for x ~ N(0, 1). Values as published with the original
# NF-ResNet / NFNet code (float32); tests re-derive every one of them.
# `gelu` is JAX's default (tanh-approximate) GELU; `leaky_relu` has slope 0.01.
ACTIVATION_GAMMAS = {
    "identity": 1.0,
    "relu": 1.7139588594436646,
    "relu6": 1.7131484746932983,
    "silu": 1.7881293296813965,
    "gelu": 1.7015043497085571,
    "tanh": 1.5939117670059204,
    "elu": 1.2716004848480225,
    "celu": 1.270926833152771,
    "selu": 1.0008515119552612,
    "softplus": 1.9203323125839233,
    "sigmoid": 4.803835391998291,
    "leaky_relu": 1.70590341091156,
    "soft_sign": 2.338853120803833,
    "log_sigmoid": 1.9193484783172607,
}

_BASE_ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
    "soft_sign": jax.nn.soft_sign,
    "log_sigmoid": jax.nn.log_sigmoid,
}

ACTIVATION_ALIASES = {"swish": "silu", "linear": "identity", "none": "identity",
                      "softsign": "soft_sign", "leakyrelu": "leaky_relu"}


def canonical_activation(name: str) -> str:
  """Resolves aliases (`swish` -> `silu`); raises UnknownNameError otherwise."""
  key = str(name).lower()
  key = ACTIVATION_ALIASES.get(key, key)
  if key not in _BASE_ACTIVATIONS:
    raise UnknownNameError("activation", name,
                           sorted(_BASE_ACTIVATIONS) + sorted(ACTIVATION_ALIASES))
  return key


def base_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The plain activation f, without the gamma factor."""
  return _BASE_ACTIVATIONS[canonical_activation(name)]


def scaled_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The gamma-scaled activation x -> gamma * f(x)."""
  key = canonical_activation(name)
  fn, gamma = _BASE_ACTIVATIONS[key], ACTIVATION_GAMMAS[key]
  if gamma == 1.0:
    return fn
  return lambda x: fn(x) * jnp.asarray(gamma, x.dtype)


def standardize_weight(w: jax.Array, gain: jax.Array, eps: float = 1e-4):
  """Scaled WS over all axes but the last (output channels), in float32.

  The weight is viewed as a (fan_in, out) matrix, so that mean and variance
  are single-axis reductions (XLA:CPU ran the forward and backward of
  NF-ResNet-50's 53 standardizations in 124 ms when reducing over the three
  leading axes of the 4-D kernel, 34 ms on the 2-D view), and the gradient is
  the closed form of `_standardize_2d`, which reads the weight fewer times
  than autodiff of the same formula (docs/benchmark.md).
  """
  w32 = w.astype(jnp.float32).reshape(-1, w.shape[-1])
  out = _standardize_2d(w32, gain.astype(jnp.float32), float(eps))
  return out.reshape(w.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _standardize_2d(w, gain, eps):
  """(w - mean) * gain / sqrt(max(n var, eps)), per column of w (n, out)."""
  return _standardize_2d_fwd(w, gain, eps)[0]


def _standardize_2d_fwd(w, gain, eps):
  n = w.shape[0]
  mean = jnp.mean(w, axis=0)
  # Variance in one pass over w, shifted by the first row so that a large
  # mean does not cancel the variance away in float32.
  shifted = w - w[:1]
  var = jnp.maximum(jnp.mean(jnp.square(shifted), axis=0) -
                    jnp.square(mean - w[0]), 0.0)
  inv = jax.lax.rsqrt(jnp.maximum(n * var, eps))
  scale = inv * gain
  return w * scale - mean * scale, (w, gain, mean, inv, n * var > eps)


def _standardize_2d_bwd(eps, res, g):
  del eps
  w, gain, mean, inv, above_eps = res
  n = w.shape[0]
  sum_g = jnp.sum(g, axis=0)
  sum_gu = jnp.sum(g * (w - mean), axis=0)
  # With w_hat = gain * (w - mean) * inv and inv = (n var)^(-1/2):
  # dw = gain * inv * (g - mean(g) - (w - mean) * sum(g (w - mean)) inv^2),
  # the last term only where n var is above the eps floor (inv constant
  # below it).
  proj = jnp.where(above_eps, sum_gu * jnp.square(inv), 0.0)
  dw = (inv * gain) * (g - sum_g / n - (w - mean) * proj)
  return dw, sum_gu * inv


_standardize_2d.defvjp(_standardize_2d_fwd, _standardize_2d_bwd)


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1,
           padding: Union[str, Sequence] = "SAME",
           feature_group_count: int = 1) -> jax.Array:
  """NHWC x HWIO convolution (`lax.conv_general_dilated`).

  Ungrouped 1x1 kernels without padding go through `_conv1x1`, whose
  gradients are matmuls; everything else is XLA's convolution, which with
  the trainer's `parallel.cpu_compiler_flags()` (XLA:CPU's own convolution
  kernels instead of YNNPACK's) is the faster choice on CPU
  (docs/benchmark.md). Both custom gradients (`_conv1x1` and
  `standardize_weight`'s) are `jax.custom_vjp`s: reverse mode only, so
  `jax.jvp` / `jax.jacfwd` through a model raise.
  """
  if (w.shape[0] == 1 and w.shape[1] == 1 and feature_group_count == 1 and
      (isinstance(padding, str) or
       all(tuple(p) == (0, 0) for p in padding))):
    # A 1x1 window never needs padding: SAME, VALID and zero padding agree.
    return _conv1x1(x, w, int(stride))
  return _conv(x, w, stride, padding, feature_group_count)


def _conv(x, w, stride, padding, feature_group_count=1):
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(stride, stride), padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=feature_group_count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv1x1(x, w, stride):
  """1x1 convolution; its input and weight gradients are plain matmuls.

  XLA's own transpose of a convolution computes the weight gradient as a
  convolution over (C, H, W, N)-transposed activations, and XLA:CPU fuses
  that transpose into the elementwise producer of the activations, where it
  runs several times slower than the matmul itself. As a matmul with the
  (N H W) axis contracted on both sides, (x^T g), no copy is needed; the
  input gradient (g w^T) likewise reads the kernel in place instead of a
  transposed copy. NF-ResNet-50 trains ~9 % faster (docs/benchmark.md).
  """
  return _conv(x, w, stride, "VALID")


def _conv1x1_fwd(x, w, stride):
  return _conv1x1(x, w, stride), (x, w)


def _conv1x1_bwd(stride, res, g):
  x, w = res
  w2 = w.reshape(w.shape[2:])
  dx = jax.lax.dot_general(g, w2, (((3,), (1,)), ((), ())))
  if stride > 1:
    # The strided 1x1 conv reads x[:, ::s, ::s]; scatter back by interior
    # padding (zeros in between, and after the last row/column read).
    cfg = [(0, 0, 0)] + [(0, x.shape[a] - (g.shape[a] - 1) * stride - 1,
                          stride - 1) for a in (1, 2)] + [(0, 0, 0)]
    dx = jax.lax.pad(dx, jnp.zeros((), dx.dtype), cfg)
    x = x[:, ::stride, ::stride, :]
  m = g.shape[0] * g.shape[1] * g.shape[2]
  dw = jax.lax.dot_general(x.reshape(m, x.shape[3]), g.reshape(m, g.shape[3]),
                           (((0,), (0,)), ((), ())))
  return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_conv1x1.defvjp(_conv1x1_fwd, _conv1x1_bwd)


def _max_pool_1d(x: jax.Array, axis: int, window: int, stride: int):
  """SAME max-pool along one axis, as the maximum of strided slices."""
  size = x.shape[axis]
  out = -(-size // stride)
  pad = max((out - 1) * stride + window - size, 0)
  cfg = [(0, 0)] * x.ndim
  cfg[axis] = (pad // 2, pad - pad // 2)
  x = jnp.pad(x, cfg, constant_values=-jnp.inf)
  result = None
  for i in range(window):
    tap = jax.lax.slice_in_dim(x, i, i + (out - 1) * stride + 1, stride, axis)
    result = tap if result is None else jnp.maximum(result, tap)
  return result


def max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """NHWC max-pool with SAME padding, separable: along W, then along H.

  Same values as `hk.max_pool(x, (1, k, k, 1), (1, s, s, 1), "SAME")` (a
  k x k maximum is a k-maximum of k-maxima). Each pass is the maximum of k
  strided slices, so the gradient is a chain of elementwise selects instead
  of XLA's select-and-scatter, and the second pass already works on the
  W-pooled tensor. On XLA:CPU the stem's pool forward + backward (16x64x64x64)
  took 66 ms with `hk.max_pool`, 36 ms as nine 2-D slices, and the separable
  form made a ResNet-50 step another ~2 % faster. Ties split the gradient
  evenly instead of sending it to one element; both are valid subgradients.
  """
  return _max_pool_1d(_max_pool_1d(x, 2, window, stride), 1, window, stride)


class ScaledWSConv2D(hk.Module):
  """2-D convolution with Scaled Weight Standardization, gain and bias.

  Parameters: `w` (raw weight, fan-in variance-scaling init), `gain` (per
  output channel, init 1) and `b` (per output channel, init 0).
  `standardize=False` turns it into a plain convolution with bias (the
  unnormalized baselines): `w` is then used as is, drawn with fan-in
  variance scaling of `init_scale` (1 after a gamma-scaled activation, which
  already has unit variance; 2, He init, after a plain ReLU).
  """

  def __init__(self, output_channels: int, kernel_shape: int = 3,
               stride: int = 1, padding: Union[str, Sequence] = "SAME",
               feature_group_count: int = 1, standardize: bool = True,
               with_bias: bool = True, eps: float = 1e-4,
               init_scale: float = 1.0, name: Optional[str] = None):
    super().__init__(name=name)
    self.output_channels = int(output_channels)
    self.kernel_shape = int(kernel_shape)
    self.stride = int(stride)
    self.padding = padding
    self.feature_group_count = int(feature_group_count)
    self.standardize = standardize
    self.with_bias = with_bias
    self.eps = eps
    self.init_scale = init_scale

  def __call__(self, x: jax.Array) -> jax.Array:
    in_ch = x.shape[-1]
    if in_ch % self.feature_group_count:
      raise ValueError(f"{self.module_name}: {in_ch} input channels are not "
                       f"divisible by {self.feature_group_count} groups.")
    k = self.kernel_shape
    shape = (k, k, in_ch // self.feature_group_count, self.output_channels)
    init = hk.initializers.VarianceScaling(self.init_scale, "fan_in", "normal")
    w = hk.get_parameter("w", shape, init=init)
    if self.standardize:
      gain = hk.get_parameter("gain", (self.output_channels,), init=jnp.ones)
      w = standardize_weight(w, gain, self.eps)
    out = conv2d(x, w.astype(x.dtype), self.stride, self.padding,
                 self.feature_group_count)
    if self.with_bias:
      b = hk.get_parameter("b", (self.output_channels,), init=jnp.zeros)
      out = out + b.astype(out.dtype)
    return out


class SqueezeExcite(hk.Module):
  """Squeeze-excite: returns 2 * sigmoid(fc1(relu(fc0(mean_hw(x))))) * x."""

  def __init__(self, channels: int, se_ratio: float = 0.5,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.channels = channels
    self.hidden = max(1, int(channels * se_ratio))

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jnp.mean(x, axis=(1, 2))
    h = jax.nn.relu(hk.Linear(self.hidden, name="fc0")(h))
    h = jax.nn.sigmoid(hk.Linear(self.channels, name="fc1")(h))
    return 2.0 * h[:, None, None, :] * x


def stochastic_depth(x: jax.Array, rate: float, is_training: bool) -> jax.Array:
  """Drops the whole residual branch per example with probability `rate`.

  Identity at evaluation and when rate == 0. Like the original NF code, kept
  examples are not rescaled by 1 / keep_prob.
  """
  if not is_training or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(hk.next_rng_key(), 1.0 - rate,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * keep.astype(x.dtype)


def skip_gain(x: jax.Array, init_value: float) -> jax.Array:
  """Multiplies a residual branch by a learnable scalar (SkipInit)."""
  g = hk.get_parameter("skip_gain", (), init=hk.initializers.Constant(init_value))
  return x * g.astype(x.dtype)


def channel_stats(x: jax.Array):
  """(average channel squared mean, average channel variance) over N, H, W."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.var(x, axis=(0, 1, 2))
  return jnp.mean(jnp.square(mean)), jnp.mean(var)
