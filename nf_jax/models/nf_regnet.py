"""Normalizer-Free RegNets B0-B8 (Brock, De & Smith 2021, section 6)."""

from typing import Optional

import haiku as hk

from nf_jax.models import layers
from nf_jax.models.grouped_block import GroupedNFBlock, head
from nf_jax.models.resnet import plan_blocks, stack_stats

# Stage widths and depths, train/test resolution and dropout per variant.
NF_REGNET_VARIANTS = {
    "B0": dict(width=(48, 104, 208, 440), depth=(1, 3, 6, 6),
               train_imsize=192, test_imsize=224, drop_rate=0.2),
    "B1": dict(width=(48, 104, 208, 440), depth=(2, 4, 7, 7),
               train_imsize=224, test_imsize=256, drop_rate=0.2),
    "B2": dict(width=(56, 112, 232, 488), depth=(2, 4, 8, 8),
               train_imsize=240, test_imsize=272, drop_rate=0.3),
    "B3": dict(width=(56, 128, 248, 528), depth=(2, 5, 9, 9),
               train_imsize=288, test_imsize=320, drop_rate=0.3),
    "B4": dict(width=(64, 144, 288, 616), depth=(2, 6, 11, 11),
               train_imsize=320, test_imsize=384, drop_rate=0.4),
    "B5": dict(width=(80, 168, 336, 704), depth=(3, 7, 14, 14),
               train_imsize=384, test_imsize=456, drop_rate=0.4),
    "B6": dict(width=(88, 184, 376, 792), depth=(3, 8, 16, 16),
               train_imsize=448, test_imsize=528, drop_rate=0.5),
    "B7": dict(width=(96, 208, 416, 880), depth=(4, 10, 19, 19),
               train_imsize=512, test_imsize=600, drop_rate=0.5),
    "B8": dict(width=(104, 232, 456, 968), depth=(4, 11, 22, 22),
               train_imsize=600, test_imsize=672, drop_rate=0.5),
}


class NFRegNet(hk.Module):
  """NF-RegNet: EfficientNet-like inverted bottlenecks, group width 8, SE."""

  def __init__(self, num_classes: int, variant: str = "B0",
               width: float = 0.75, expansion: float = 2.25,
               group_size: int = 8, se_ratio: float = 0.5, alpha: float = 0.2,
               stochdepth_rate: float = 0.1, drop_rate: Optional[float] = None,
               activation: str = "silu", skip_gain_init: float = 0.0,
               name: Optional[str] = None):
    super().__init__(name=name)
    params = NF_REGNET_VARIANTS[variant]
    self.num_classes = num_classes
    self.drop_rate = params["drop_rate"] if drop_rate is None else drop_rate
    self.act = layers.scaled_activation(activation)
    self.alpha, self.expansion = alpha, expansion
    self.group_size, self.se_ratio = group_size, se_ratio
    self.skip_gain_init = skip_gain_init
    widths = [int(w * width) for w in params["width"]]
    self.stem_ch = widths[0]
    self.specs = plan_blocks(params["depth"], widths, (2, 2, 2, 2),
                             self.stem_ch, alpha, stochdepth_rate or 0.0)
    self.final_ch = int(1280 * widths[-1] // 440)

  def __call__(self, x, is_training: bool, return_stats: bool = False):
    out = layers.ScaledWSConv2D(self.stem_ch, 3, 2, name="stem_conv")(x)
    stats = [layers.channel_stats(out) + (0.0,)]
    for spec in self.specs:
      # The first block uses an expansion ratio of 1, following EfficientNet.
      expand = 1.0 if spec.index == 0 else self.expansion
      block = GroupedNFBlock(spec, int(spec.in_ch * expand), self.group_size,
                             self.act, self.alpha, self.se_ratio,
                             two_convs=False, se_on_output=False,
                             skip_gain_init=self.skip_gain_init,
                             name=f"block_{spec.index}")
      out, res_var = block(out, is_training)
      if return_stats:
        stats.append(layers.channel_stats(out) + (res_var,))
    logits = head(out, self.act, self.final_ch, self.num_classes,
                  self.drop_rate, is_training, hk.initializers.Constant(0.0))
    return (logits, stack_stats(stats)) if return_stats else logits
