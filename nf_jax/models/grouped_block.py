"""The NF block shared by NF-RegNets and NFNets: grouped 3x3 convs and SE.

x_{i+1} = x_i + alpha * g_i * f_i(beta_i * x_i) with an average-pool shortcut
at strided transitions (Brock, Smith, De & Simonyan 2021).
"""

from typing import Callable, Optional

import haiku as hk
import jax.numpy as jnp

from nf_jax.models import layers
from nf_jax.models.resnet import BlockSpec


class GroupedNFBlock(hk.Module):
  """Expand (1x1) -> grouped 3x3 (x1 or x2) -> contract (1x1), with SE.

  `se_on_output=False` places SE on the expanded width before the contraction
  (NF-RegNet); True places it on the block output (NFNet).
  """

  def __init__(self, spec: BlockSpec, mid_ch: int, group_size: int,
               act: Callable, alpha: float, se_ratio: float,
               two_convs: bool, se_on_output: bool, skip_gain_init: float,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.spec = spec
    self.groups = max(1, mid_ch // group_size)
    self.mid_ch = group_size * self.groups
    self.act, self.alpha, self.se_ratio = act, alpha, se_ratio
    self.two_convs, self.se_on_output = two_convs, se_on_output
    self.skip_gain_init = skip_gain_init

  def __call__(self, x, is_training):
    spec, act = self.spec, self.act
    out = act(x * spec.beta)
    shortcut = x
    if spec.stride > 1:
      shortcut = hk.avg_pool(out, (1, spec.stride, spec.stride, 1),
                             (1, spec.stride, spec.stride, 1), "SAME")
    elif spec.in_ch != spec.out_ch:
      shortcut = out
    if spec.stride > 1 or spec.in_ch != spec.out_ch:
      shortcut = layers.ScaledWSConv2D(spec.out_ch, 1,
                                       name="conv_shortcut")(shortcut)
    out = layers.ScaledWSConv2D(self.mid_ch, 1, name="conv0")(out)
    out = layers.ScaledWSConv2D(self.mid_ch, 3, spec.stride,
                                feature_group_count=self.groups,
                                name="conv1")(act(out))
    if self.two_convs:
      out = layers.ScaledWSConv2D(self.mid_ch, 3,
                                  feature_group_count=self.groups,
                                  name="conv1b")(act(out))
    if not self.se_on_output:
      out = layers.SqueezeExcite(self.mid_ch, self.se_ratio, name="se")(out)
    out = layers.ScaledWSConv2D(spec.out_ch, 1, name="conv2")(act(out))
    if self.se_on_output:
      out = layers.SqueezeExcite(spec.out_ch, self.se_ratio, name="se")(out)
    res_var = layers.channel_stats(out)[1]
    out = layers.stochastic_depth(out, spec.stochdepth_rate, is_training)
    out = layers.skip_gain(out, self.skip_gain_init)
    return out * self.alpha + shortcut, res_var


def head(out, act, final_ch: int, num_classes: int, drop_rate: float,
         is_training: bool, fc_init):
  """Final 1x1 WS conv, activation, global average pool, dropout, classifier."""
  out = act(layers.ScaledWSConv2D(final_ch, 1, name="final_conv")(out))
  pool = jnp.mean(out, axis=(1, 2))
  if is_training and drop_rate > 0:
    pool = hk.dropout(hk.next_rng_key(), drop_rate, pool)
  return hk.Linear(num_classes, w_init=fc_init, name="classifier")(pool)
