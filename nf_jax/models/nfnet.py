"""NFNets F0-F7 and the wider F0+-F7+ (Brock, Smith, De & Simonyan 2021)."""

from typing import Optional

import haiku as hk

from nf_jax.models import layers
from nf_jax.models.grouped_block import GroupedNFBlock, head
from nf_jax.models.resnet import plan_blocks, stack_stats

_F_DEPTHS = {"F0": (1, 2, 6, 3), "F1": (2, 4, 12, 6), "F2": (3, 6, 18, 9),
             "F3": (4, 8, 24, 12), "F4": (5, 10, 30, 15),
             "F5": (6, 12, 36, 18), "F6": (7, 14, 42, 21),
             "F7": (8, 16, 48, 24)}
# (train resolution, test resolution, RandAugment layers+magnitude, dropout)
_F_RECIPE = {"F0": (192, 256, "405", 0.2), "F1": (224, 320, "410", 0.3),
             "F2": (256, 352, "410", 0.4), "F3": (320, 416, "415", 0.4),
             "F4": (384, 512, "415", 0.5), "F5": (416, 544, "415", 0.5),
             "F6": (448, 576, "415", 0.5), "F7": (480, 608, "415", 0.5)}

NFNET_VARIANTS = {}
for _k, _depth in _F_DEPTHS.items():
  _train, _test, _ra, _drop = _F_RECIPE[_k]
  _base = dict(depth=_depth, train_imsize=_train, test_imsize=_test,
               ra_level=_ra, drop_rate=_drop)
  NFNET_VARIANTS[_k] = dict(_base, width=(256, 512, 1536, 1536))
  NFNET_VARIANTS[_k + "+"] = dict(_base, width=(384, 768, 2048, 2048))


class NFNet(hk.Module):
  """NFNet: 4-conv stem, bottleneck ratio 0.5, group width 128, SE, GELU."""

  def __init__(self, num_classes: int, variant: str = "F0",
               width: float = 1.0, se_ratio: float = 0.5, alpha: float = 0.2,
               stochdepth_rate: float = 0.1, drop_rate: Optional[float] = None,
               activation: str = "gelu", group_size: int = 128,
               expansion: float = 0.5, final_conv_mult: float = 2.0,
               skip_gain_init: float = 0.0, name: Optional[str] = None):
    super().__init__(name=name)
    params = NFNET_VARIANTS[variant]
    self.num_classes = num_classes
    self.drop_rate = params["drop_rate"] if drop_rate is None else drop_rate
    self.act = layers.scaled_activation(activation)
    self.alpha, self.se_ratio = alpha, se_ratio
    self.group_size, self.expansion = group_size, expansion
    self.skip_gain_init = skip_gain_init
    widths = [int(w * width) for w in params["width"]]
    self.stem_ch = params["width"][0] // 2
    self.specs = plan_blocks(params["depth"], widths, (1, 2, 2, 2),
                             self.stem_ch, alpha, stochdepth_rate or 0.0)
    self.final_ch = int(final_conv_mult * widths[-1])

  def __call__(self, x, is_training: bool, return_stats: bool = False):
    act = self.act
    out = layers.ScaledWSConv2D(16, 3, 2, name="stem_conv0")(x)
    out = layers.ScaledWSConv2D(32, 3, name="stem_conv1")(act(out))
    out = layers.ScaledWSConv2D(64, 3, name="stem_conv2")(act(out))
    out = layers.ScaledWSConv2D(self.stem_ch, 3, 2, name="stem_conv3")(act(out))
    stats = [layers.channel_stats(out) + (0.0,)]
    for spec in self.specs:
      block = GroupedNFBlock(spec, int(spec.out_ch * self.expansion),
                             self.group_size, act, self.alpha, self.se_ratio,
                             two_convs=True, se_on_output=True,
                             skip_gain_init=self.skip_gain_init,
                             name=f"block_{spec.index}")
      out, res_var = block(out, is_training)
      if return_stats:
        stats.append(layers.channel_stats(out) + (res_var,))
    logits = head(out, act, self.final_ch, self.num_classes, self.drop_rate,
                  is_training, hk.initializers.RandomNormal(0.01))
    return (logits, stack_stats(stats)) if return_stats else logits
