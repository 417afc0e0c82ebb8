"""Signal propagation statistics of NF-ResNet-50 and its unnormalized twin.

Checks the paper's claims at initialization (Brock, De & Smith 2021): with
Scaled WS the average channel variance follows the beta/alpha recursion
1 + k alpha^2 and the channel means stay near zero; with plain convs (no WS;
He-style fan-in init scaled for the gamma activation) the squared channel
mean grows with depth (mean shift).

128 px keeps the last stage at 4x4: at 64 px (2x2) the variance over the
8 * 2 * 2 strongly correlated values of a channel is biased low by about 13 %
in the last stage, so the check would fail for statistical, not modelling,
reasons.
"""

import numpy as np
import pytest

from nf_jax import analysis
from nf_jax.models import registry

ALPHA = 0.2
BATCH, SIZE = 8, 128


@pytest.fixture(scope="module")
def batch():
  return analysis.gaussian_batch(BATCH, SIZE, seed=0)


_CACHE = {}


def _spp(batch, family="nf_resnet", activation="relu", **kw):
  key = (family, activation, tuple(sorted(kw.items())))
  if key not in _CACHE:
    _CACHE[key] = analysis.signal_propagation(
        f"{family}:50", batch, activation=activation, alpha=ALPHA,
        skip_gain_init=1.0, **kw)
  return _CACHE[key]


def _specs(**kw):
  import haiku as hk  # pylint: disable=g-import-not-at-top
  box = {}
  hk.transform(lambda: box.setdefault(
      "m", registry.create("nf_resnet", 10, "50", alpha=ALPHA, **kw))).init(None)
  return box["m"].specs


def test_expected_variance_is_blockspec_recursion(batch):
  r = _spp(batch)
  specs = _specs()
  np.testing.assert_allclose(r.expected_var[1:],
                             [s.expected_var for s in specs])
  # 1 + k alpha^2, k = blocks since (and including) the transition.
  np.testing.assert_allclose(
      r.expected_var[1:], [1 + (s.index_in_stage + 1) * ALPHA ** 2
                           for s in specs])
  assert list(r.stage[1:]) == [s.stage for s in specs]


def test_nf_resnet50_relu_variance_follows_recursion(batch):
  r = _spp(batch, activation="relu")
  ratio = r.avg_var[1:] / r.expected_var[1:]
  assert np.all(np.abs(ratio - 1) < 0.10), np.round(ratio, 3)
  assert np.all(r.avg_sq_mean[1:] < 0.05), r.avg_sq_mean
  # The residual branches preserve variance (padding trims the last stage).
  assert np.all((r.res_var[1:] > 0.7) & (r.res_var[1:] < 1.1)), r.res_var


def test_nf_resnet50_silu_variance_with_unit_variance_stem(batch):
  """SiLU follows 1 + k alpha^2 to 10 % when the stem emits unit variance.

  The 'small' stem is a single WS conv (no max-pool); stride 4 keeps every
  stage at the resolution of the ImageNet stem.
  """
  r = _spp(batch, activation="silu", stem="small", stem_stride=4)
  assert abs(r.avg_var[0] - 1) < 0.1  # the stem output is unit variance
  ratio = r.avg_var[1:] / r.expected_var[1:]
  assert np.all(np.abs(ratio - 1) < 0.10), np.round(ratio, 3)
  assert np.all(r.avg_sq_mean[1:] < 0.05), r.avg_sq_mean


def test_nf_resnet50_silu_max_pool_stem_offset(batch):
  """With the max-pool stem, SiLU sits a constant factor above 1 + k alpha^2.

  The 3x3 max-pool leaves each stem channel with mean ~1.45 and variance
  ~0.36 instead of N(0, 1). The first transition block convolves
  gamma * f(stem output) (beta = 1) for its shortcut: for ReLU, which is
  nearly linear there, that has variance ~1 by coincidence (0.36 * gamma^2
  ~= 1.06 minus the clipped tail), for SiLU ~1.13. beta divides by the
  analytic, not the measured, std, so every later transition passes the
  excess on: all blocks sit ~13-22 % high. Relative to the first block the
  recursion still holds to 10 %, and the means stay tiny.
  """
  r = _spp(batch, activation="silu")
  assert r.avg_var[0] < 0.5 and r.avg_sq_mean[0] > 1.5  # max-pool stem
  ratio = r.avg_var[1:] / r.expected_var[1:]
  assert 1.05 < ratio[0] < 1.25, ratio[0]
  rel = ratio / ratio[0]
  assert np.all(np.abs(rel - 1) < 0.10), np.round(rel, 3)
  assert np.all(r.avg_sq_mean[1:] < 0.05), r.avg_sq_mean
  relu = _spp(batch, activation="relu")
  assert abs(relu.avg_var[1] / relu.expected_var[1] - 1) < 0.05


def test_unnorm_resnet50_mean_shift(batch):
  r = _spp(batch, family="unnorm_resnet", activation="relu")
  last = r.stage == r.stage.max()
  first = r.stage == 0
  assert r.avg_sq_mean[last].max() > 1.0, r.avg_sq_mean
  assert np.median(r.avg_sq_mean[last]) > 4 * np.median(r.avg_sq_mean[first])
  # Stage by stage the squared mean grows with depth.
  per_stage = [np.median(r.avg_sq_mean[r.stage == s]) for s in range(4)]
  assert all(b > a for a, b in zip(per_stage, per_stage[1:])), per_stage
  # WS is what removes it: same network, WS on.
  assert _spp(batch).avg_sq_mean[last].max() < 0.05


def test_ws_option_switches_family():
  assert analysis.model_kwargs("nf_resnet", "50", ws=False)[0] == "unnorm_resnet"
  assert analysis.model_kwargs("unnorm_resnet", "50", ws=True)[0] == "nf_resnet"
  with pytest.raises(analysis.ModelOptionError, match="cannot be switched"):
    analysis.model_kwargs("nfnet", "F0", ws=False)


def test_verdicts(batch):
  assert analysis.diagnose(_spp(batch)).summary == "healthy"
  assert analysis.diagnose(_spp(batch, activation="silu")).summary == "healthy"
  v = analysis.diagnose(_spp(batch, family="unnorm_resnet"))
  assert "mean shift" in v.problems, v.line()
  assert v.numbers["sq_mean_last_max"] > 1.0
