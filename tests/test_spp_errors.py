"""SPP inputs, options, verdicts, plots and the command, on small models."""

import json
import os
import subprocess
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nf_jax import analysis
from nf_jax.models import registry
from nf_jax.models.resnet import stack_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_batch(n=8, size=32, channels=3):
  return analysis.gaussian_batch(n, size, channels)


# -- verdicts -----------------------------------------------------------------
def _synthetic(var, sq, stages):
  expected = [1.0]
  for i, s in enumerate(stages[1:], 1):
    expected.append(1.0 + 0.04 * (1 + (i - 1 - stages[1:].index(s))))
  return np.asarray(var), np.asarray(sq), np.asarray(stages), np.asarray(
      expected)


def test_verdict_synthetic_cases():
  stages = [-1] + [0] * 5 + [1] * 5
  exp = _synthetic(np.ones(11), np.zeros(11), stages)[3]
  healthy = analysis.judge("h", np.full(11, 0.01), exp * 1.05, stages, exp)
  assert healthy.summary == "healthy"
  exploding = analysis.judge("x", np.full(11, 0.01), 2.0 ** np.arange(11),
                             stages, exp)
  assert exploding.problems == ["variance explosion"]
  assert exploding.numbers["var_ratio_worst_block"] == 9
  collapsing = analysis.judge("c", np.full(11, 0.01), 0.5 ** np.arange(11),
                              stages, exp)
  assert collapsing.problems == ["variance collapse"]
  shifting = analysis.judge("m", np.linspace(0, 3, 11), exp, stages, exp)
  assert shifting.problems == ["mean shift"]
  assert "mean shift" in shifting.line() and "3" in shifting.line()
  # A mean that is large but flat across depth is no mean *shift*.
  flat = analysis.judge("f", np.full(11, 0.8), exp, stages, exp)
  assert flat.summary == "healthy"


def test_verdict_skipinit_gain_one_explodes():
  r = analysis.signal_propagation("skipinit_resnet:small", small_batch())
  v = analysis.diagnose(r)
  assert "variance explosion" in v.problems, v.line()


def test_skip_gain_zero_expectation_is_flat():
  r = analysis.signal_propagation("nf_resnet:small", small_batch(),
                                  skip_gain_init=0.0)
  np.testing.assert_allclose(r.expected_var, 1.0)
  assert analysis.diagnose(r).summary == "healthy"


# -- bad input ----------------------------------------------------------------
def test_unknown_model():
  with pytest.raises(ValueError, match="Unknown model 'resnet9000'"):
    analysis.signal_propagation("resnet9000", small_batch())


def test_unknown_variant_and_activation():
  with pytest.raises(ValueError, match="variant"):
    analysis.signal_propagation("nf_resnet:7", small_batch())
  with pytest.raises(ValueError, match="activation"):
    analysis.signal_propagation("nf_resnet:small", small_batch(),
                                activation="wiggle")


@pytest.mark.parametrize("x,match", [
    (np.zeros((8, 32, 32)), "4-D"),
    (np.zeros((8, 32, 32, 1)), "1 channels but the model expects 3"),
    (np.zeros((1, 32, 32, 3)), "at least 2"),
    (np.full((8, 32, 32, 3), np.nan), "NaN"),
])
def test_bad_input_batch(x, match):
  with pytest.raises(analysis.InputShapeError, match=match):
    analysis.signal_propagation("nf_resnet:small", x)


def test_too_small_image():
  with pytest.raises(analysis.InputShapeError, match="at least 32 px"):
    analysis.signal_propagation("nf_resnet:50", small_batch(size=16))


def test_params_that_do_not_fit_the_input():
  model = registry.transform("nf_resnet", 10, "small")
  params, state = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                             True)
  with pytest.raises(analysis.InputShapeError, match="does not fit"):
    analysis.signal_propagation("nf_resnet:small", small_batch(channels=5),
                                channels=5, params=params, state=state)


def _blowup(x, is_training):
  """A model whose stream overflows at its third block."""
  del is_training
  stats = [(jnp.float32(0.0), jnp.var(x), jnp.float32(0.0))]
  for i in range(5):
    x = x * (1e30 if i == 2 else 1.0)
    x = x * 1e10 if i >= 2 else x
    stats.append((jnp.mean(x) ** 2, jnp.var(x), jnp.var(x)))
  return jnp.zeros((x.shape[0], 10)), stack_stats(stats)


def test_non_finite_statistic_names_block():
  with pytest.raises(analysis.NonFiniteStatisticError,
                     match=r"first at block 2 \(stage 0\)") as e:
    analysis.signal_propagation(_blowup, small_batch())
  assert e.value.point == 3
  assert "\n" not in str(e.value)


def test_plot_refuses_nan(tmp_path):
  r = analysis.signal_propagation("nf_resnet:small", small_batch())
  r.avg_var[3] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    analysis.plot_spp([r], str(tmp_path / "x.png"))
  assert not (tmp_path / "x.png").exists()


# -- own models ---------------------------------------------------------------
def test_own_model_matches_zoo():
  def my_net(x, is_training):
    net = registry.create("nf_resnet", 10, "small", skip_gain_init=1.0)
    return net(x, is_training=is_training, return_stats=True)

  box = {}
  hk.transform(lambda: box.setdefault(
      "m", registry.create("nf_resnet", 10, "small"))).init(None)
  mine = analysis.signal_propagation(my_net, small_batch(),
                                     specs=box["m"].specs)
  zoo = analysis.signal_propagation("nf_resnet:small", small_batch())
  np.testing.assert_allclose(mine.avg_var, zoo.avg_var, rtol=1e-4)
  np.testing.assert_allclose(mine.expected_var, zoo.expected_var)
  assert mine.label == "my_net"
  with pytest.raises(analysis.ModelOptionError, match="zoo models only"):
    analysis.signal_propagation(my_net, small_batch(), activation="silu")


def test_block_compile_matches_full_compile_statistically():
  x = analysis.gaussian_batch(16, 32)
  full = analysis.signal_propagation("nf_resnet:small", x, compile="full")
  blocks = analysis.signal_propagation("nf_resnet:small", x, compile="blocks")
  assert blocks.timing["block_programs"] == 5  # 3 stages, stage 0 has 1
  np.testing.assert_allclose(blocks.avg_var, full.avg_var, rtol=0.15)
  np.testing.assert_allclose(blocks.expected_var, full.expected_var)


# -- the command --------------------------------------------------------------
def _spp_cmd(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "launch.spp", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def test_command_writes_json_and_plot(tmp_path):
  out = _spp_cmd("--models=nf_resnet:small,unnorm_resnet:small",
                 "--activation=relu", "--image_size=32",
                 f"--outdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-2000:]
  data = json.loads((tmp_path / "spp.json").read_text())
  assert [m["label"] for m in data["models"]] == [
      "nf_resnet-small relu", "unnorm_resnet-small relu"]
  first = data["models"][0]
  assert len(first["points"]) == 7 and first["points"][1]["block"] == 0
  assert {"avg_sq_mean", "avg_var", "res_var", "expected_var",
          "stage"} <= set(first["points"][1])
  assert first["verdict"]["verdict"] == "healthy"
  assert "mean shift" in data["models"][1]["verdict"]["verdict"]
  assert (tmp_path / "spp.png").stat().st_size > 10_000
  assert "Verdicts:" in out.stdout and "peak RSS" in out.stdout
  assert data["summary"]["peak_rss_gb"] > 0


@pytest.mark.parametrize("args,match", [
    (["--models=resnet9000"], "Unknown model 'resnet9000'"),
    (["--models=nf_resnet:50", "--image_size=16"], "at least 32 px"),
    (["--models=nfnet:F0", "--ws=off"], "cannot be switched off"),
])
def test_command_bad_input_one_line(tmp_path, args, match):
  out = _spp_cmd(*args, f"--outdir={tmp_path}")
  assert out.returncode == 1
  errors = [l for l in out.stderr.splitlines()
            if l.strip() and not l.startswith(("I", "W"))]
  assert len(errors) == 1 and errors[0].startswith("spp: error:"), out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "spp.json").exists()
