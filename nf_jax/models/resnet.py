"""Pre-activation ResNets: NF-ResNet and the baselines built from the same blocks.

One module, four normalization schemes, so that a single switch changes only
how the signal is kept in check (Brock, De & Smith 2021):

* `nf`        Scaled WS convs, x_{i+1} = x_i + alpha * g_i * f_i(beta_i * x_i),
              gamma-scaled activations, SkipInit gain g_i.
* `unnorm`    the same network with the standardization removed: plain
              convs with fan-in (He-style) init, scaled for the gamma-scaled
              activation. The paper's mean-shift failure case.
* `skipinit`  plain He convs and activations, no alpha/beta downscaling,
              SkipInit gain (De & Smith 2020).
* `batchnorm` pre-activation BN-ReLU ResNet-V2 (He et al. 2016).

beta_i is 1 / the analytic std of the residual stream entering block i, from
Var(x_{i+1}) = Var(x_i) + alpha^2, reset to 1 by each stage's transition block,
whose shortcut convolves the activated, beta-scaled input. The input is
scaled before the activation, f(beta * x), as in the paper's h / beta; for
ReLU this equals the original code's f(x) * beta, for SiLU or GELU only the
former keeps the branch input at unit variance.
"""

import dataclasses
from typing import Callable, List, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from nf_jax.models import layers

NORMALIZATIONS = ("nf", "unnorm", "skipinit", "batchnorm")

# variant -> (block, blocks per stage, output width per stage, stem)
RESNET_VARIANTS = {
    "26": ("bottleneck", (2, 2, 2, 2), (256, 512, 1024, 2048), "imagenet"),
    "50": ("bottleneck", (3, 4, 6, 3), (256, 512, 1024, 2048), "imagenet"),
    "101": ("bottleneck", (3, 4, 23, 3), (256, 512, 1024, 2048), "imagenet"),
    "152": ("bottleneck", (3, 8, 36, 3), (256, 512, 1024, 2048), "imagenet"),
    "200": ("bottleneck", (3, 24, 36, 3), (256, 512, 1024, 2048), "imagenet"),
    "288": ("bottleneck", (24, 24, 24, 24), (256, 512, 1024, 2048), "imagenet"),
    "600": ("bottleneck", (50, 50, 50, 50), (256, 512, 1024, 2048), "imagenet"),
    # A CIFAR-style net for 28-32 px inputs (0.175 M params at 10 classes).
    "small": ("basic", (2, 2, 2), (16, 32, 64), "small"),
}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """Static description of one residual block, shared with analysis tools."""
  index: int            # block index over the whole network
  stage: int
  index_in_stage: int   # 0 for the stage's transition block
  in_ch: int
  out_ch: int
  stride: int
  beta: float           # 1 / expected std of the block's input
  expected_var: float   # analytic variance of the block's output
  stochdepth_rate: float


def plan_blocks(depths: Sequence[int], widths: Sequence[int],
                strides: Sequence[int], stem_ch: int, alpha: float,
                stochdepth_rate: float,
                use_beta: bool = True) -> List[BlockSpec]:
  """The alpha/beta variance recursion, written once for every family."""
  specs, ch, index, expected_var = [], stem_ch, 0, 1.0
  num_blocks = sum(depths)
  for stage, (depth, width, stride) in enumerate(zip(depths, widths, strides)):
    for i in range(depth):
      beta = 1.0 / expected_var ** 0.5 if use_beta else 1.0
      if i == 0:  # the transition shortcut restarts the stream at unit variance
        expected_var = 1.0
      expected_var += alpha ** 2
      specs.append(BlockSpec(index, stage, i, ch, int(width),
                             stride if i == 0 else 1, beta, expected_var,
                             stochdepth_rate * index / num_blocks))
      ch, index = int(width), index + 1
  return specs


@dataclasses.dataclass(frozen=True)
class ConvNorm:
  """Builds the convs and pre-activations of one normalization scheme.

  A plain object, not an `hk.Module`, so the modules it creates are named
  under whichever module calls it.
  """
  normalization: str
  act: Callable
  bn_axis: Optional[str] = None
  bn_decay: float = 0.9

  def conv(self, ch, k, stride=1, name=None):
    # One convolution layer for every scheme, so that they differ only in
    # normalization: BN convs are plain He-init convs without bias.
    return layers.ScaledWSConv2D(
        ch, k, stride=stride, standardize=self.normalization == "nf",
        with_bias=self.normalization != "batchnorm",
        init_scale=1.0 if self.normalization in ("nf", "unnorm") else 2.0,
        name=name)

  def pre(self, x, is_training, name):
    """Activation, preceded by BatchNorm in the BN baseline."""
    if self.normalization == "batchnorm":
      x = hk.BatchNorm(True, True, self.bn_decay, eps=1e-5,
                       cross_replica_axis=self.bn_axis, name=name)(
                           x, is_training=is_training)
    return self.act(x)


class ResNet(hk.Module):
  """Pre-activation ResNet with a selectable normalization scheme."""

  def __init__(self, num_classes: int, variant: str = "50",
               normalization: str = "nf", width: float = 1.0,
               alpha: float = 0.2, activation: str = "relu",
               skip_gain_init: float = 0.0, stochdepth_rate: float = 0.0,
               drop_rate: float = 0.0, se_ratio: float = 0.0,
               stem: Optional[str] = None, stem_stride: int = 1,
               bn_cross_replica_axis: Optional[str] = None,
               bn_decay: float = 0.9, name: Optional[str] = None):
    super().__init__(name=name)
    if normalization not in NORMALIZATIONS:
      raise ValueError(f"Unknown normalization {normalization!r}; valid: "
                       f"{', '.join(NORMALIZATIONS)}.")
    block, depths, widths, default_stem = RESNET_VARIANTS[variant]
    self.num_classes = num_classes
    self.normalization = normalization
    self.block_type = block
    self.stem_type = stem or default_stem
    self.stem_stride = stem_stride
    self.drop_rate = drop_rate or 0.0
    self.se_ratio = se_ratio or 0.0
    self.skip_gain_init = skip_gain_init
    # nf/unnorm: gamma-scaled activations (so unnorm differs from nf only in
    # the standardization); BN and SkipInit: the plain activation, with He
    # init for SkipInit's convs.
    self.ops = ConvNorm(normalization,
                        layers.scaled_activation(activation)
                        if normalization in ("nf", "unnorm")
                        else layers.base_activation(activation),
                        bn_cross_replica_axis, bn_decay)
    self.alpha = 1.0 if normalization in ("batchnorm", "skipinit") else alpha
    widths = [int(w * width) for w in widths]
    bottleneck = 4 if block == "bottleneck" else 1
    self.stem_ch = (int(64 * width) if self.stem_type == "imagenet"
                    else widths[0] // bottleneck)
    self.bottleneck = bottleneck
    strides = [1] + [2] * (len(depths) - 1)
    self.specs = plan_blocks(depths, widths, strides, self.stem_ch, self.alpha,
                             stochdepth_rate or 0.0,
                             use_beta=normalization in ("nf", "unnorm"))

  # -- forward ------------------------------------------------------------
  def __call__(self, x, is_training: bool, return_stats: bool = False):
    if self.stem_type == "imagenet":
      out = self.ops.conv(self.stem_ch, 7, 2, "stem_conv")(x)
      out = layers.max_pool(out, 3, 2)
    else:
      out = self.ops.conv(self.stem_ch, 3, self.stem_stride, "stem_conv")(x)
    stats = [layers.channel_stats(out) + (jnp.float32(0.0),)]
    for spec in self.specs:
      out, res_var = ResidualBlock(self, spec, name=f"block_{spec.index}")(
          out, is_training)
      if return_stats:
        stats.append(layers.channel_stats(out) + (res_var,))
    out = self.ops.pre(out, is_training, "final_bn")
    pool = jnp.mean(out, axis=(1, 2))
    if is_training and self.drop_rate > 0:
      pool = hk.dropout(hk.next_rng_key(), self.drop_rate, pool)
    logits = hk.Linear(self.num_classes,
                       w_init=hk.initializers.RandomNormal(0.01),
                       name="classifier")(pool)
    if not return_stats:
      return logits
    return logits, stack_stats(stats)


class ResidualBlock(hk.Module):
  """One pre-activation block (bottleneck or basic) of a `ResNet`."""

  def __init__(self, net: ResNet, spec: BlockSpec, name=None):
    super().__init__(name=name)
    self.net, self.spec = net, spec

  def __call__(self, x, is_training):
    net, spec, ops = self.net, self.spec, self.net.ops
    out = ops.pre(x * spec.beta, is_training, "bn0")
    shortcut = x
    if spec.stride > 1 or spec.in_ch != spec.out_ch:
      shortcut = ops.conv(spec.out_ch, 1, spec.stride, "conv_shortcut")(out)
    if net.block_type == "bottleneck":
      mid = spec.out_ch // net.bottleneck
      out = ops.conv(mid, 1, name="conv0")(out)
      out = ops.conv(mid, 3, spec.stride, "conv1")(
          ops.pre(out, is_training, "bn1"))
      out = ops.conv(spec.out_ch, 1, name="conv2")(
          ops.pre(out, is_training, "bn2"))
    else:
      out = ops.conv(spec.out_ch, 3, spec.stride, "conv0")(out)
      out = ops.conv(spec.out_ch, 3, name="conv1")(
          ops.pre(out, is_training, "bn1"))
    if net.se_ratio > 0:
      out = layers.SqueezeExcite(spec.out_ch, net.se_ratio, name="se")(out)
    res_var = layers.channel_stats(out)[1]
    out = layers.stochastic_depth(out, spec.stochdepth_rate, is_training)
    if net.normalization != "batchnorm":
      out = layers.skip_gain(out, net.skip_gain_init)
    return out * net.alpha + shortcut, res_var


def stack_stats(stats):
  """[(sq_mean, var, res_var)] per point -> dict of [num_blocks + 1] arrays.

  Entry 0 is the stem output (its residual variance is 0); entry i > 0 is the
  output of block i - 1.
  """
  sq_mean, var, res_var = (jnp.stack(s) for s in zip(*stats))
  return {"avg_sq_mean": sq_mean, "avg_var": var, "res_var": res_var}
