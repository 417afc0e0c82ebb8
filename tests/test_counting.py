"""Parameter and multiply-add counts: published numbers and hand counts."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import pytest

from nf_jax.models import counting, registry


@functools.lru_cache(maxsize=None)
def _counts(name, variant, res, num_classes=1000, macs=True):
  model = registry.transform(name, num_classes, variant)
  shape = (res, res, 3)
  return (counting.count_params(model, shape),
          counting.count_macs(model, shape) if macs else None)


def test_nf_resnet50_params():
  params, _ = _counts("nf_resnet", "50", 224, macs=False)
  assert params == 25_557_048
  assert round(params / 1e6, 2) == 25.56


def test_nf_regnet_b0_params_and_macs():
  params, macs = _counts("nf_regnet", "B0", 224)
  assert round(params / 1e6, 2) == 8.60
  assert round(macs / 1e9, 3) == 0.444


def test_nfnet_f0_params_and_macs():
  params, macs = _counts("nfnet", "F0", 256)
  assert round(params / 1e6, 2) == 71.49
  assert round(macs / 1e9, 2) == 12.38


def _conv(k, cin, cout, ws=True):
  return k * k * cin * cout + (2 * cout if ws else 0)


def _small_resnet_counts(res, num_classes):
  """Hand count of NF-ResNet-small (basic blocks, WS convs with gain + bias)."""
  params = _conv(3, 3, 16) + 64 * num_classes + num_classes
  macs = res * res * 16 * 27 + 64 * num_classes
  cin, hw = 16, res
  for stage, width in enumerate((16, 32, 64)):
    for i in range(2):
      stride = 2 if stage > 0 and i == 0 else 1
      hw //= stride
      params += _conv(3, cin, width) + _conv(3, width, width) + 1
      macs += hw * hw * width * 9 * (cin + width)
      if cin != width:
        params += _conv(1, cin, width)
        macs += hw * hw * width * cin
      cin = width
  return params, macs


@pytest.mark.parametrize("res", [32, 64])
def test_small_resnet_matches_hand_count(res):
  params, macs = _counts("nf_resnet", "small", res, num_classes=10)
  assert (params, macs) == _small_resnet_counts(res, 10)
  assert round(params / 1e6, 3) == 0.175  # as documented in RESNET_VARIANTS


def test_params_do_not_depend_on_resolution():
  assert (_counts("nf_regnet", "B0", 64, macs=False)[0] ==
          _counts("nf_regnet", "B0", 224)[0])


def test_count_macs_convs_groups_and_dense():
  def forward(x, is_training):
    del is_training
    x = hk.Conv2D(8, 3, stride=2, padding="SAME")(x)            # 8x8x8 out
    x = hk.Conv2D(16, 3, feature_group_count=4, padding="VALID")(x)  # 6x6x16
    x = hk.Conv2D(4, 1)(x)                                       # 6x6x4
    x = hk.Flatten()(x)
    return hk.Linear(5)(x)

  model = hk.transform_with_state(forward)
  macs = counting.count_macs(model, (16, 16, 3))
  expected = (8 * 8 * 8 * 3 * 9        # dense 3x3 conv, stride 2
              + 6 * 6 * 16 * 2 * 9     # grouped: 8 / 4 = 2 inputs per group
              + 6 * 6 * 4 * 16         # 1x1 conv
              + 5 * 6 * 6 * 4)         # linear
  assert macs == expected
  params = counting.count_params(model, (16, 16, 3))
  assert params == ((3 * 9 * 8 + 8) + (2 * 9 * 16 + 16) + (16 * 4 + 4)
                    + (144 * 5 + 5))


def test_count_macs_sees_inside_nested_jaxprs():
  def forward(x, is_training):
    del is_training
    w = hk.get_parameter("w", (4, 3), init=jnp.ones)
    return jax.jit(lambda a: jax.checkpoint(lambda b: b @ w)(a))(x)

  model = hk.transform_with_state(forward)
  assert counting.count_macs(model, (4,)) == 12
  assert counting.count_params(model, (4,)) == 12
