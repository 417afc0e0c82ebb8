"""Trainer: end-to-end runs, device equivalence, config errors, optimizer."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import fashion_mnist_nf_resnet
from nf_jax.train import config_lib, optimizer, train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = fashion_mnist_nf_resnet.get_config()
  c.dataset = "fake:28x28x1:10"
  c.eval_sets = "fake:28x28x1:10:test"
  c.batch_size = 64
  c.num_epochs = 4 * 64 / 2048   # 4 steps of the 2048-example fake split
  c.log_every_steps = 1
  c.eval_every_epochs = 100.0
  c.augment.kind = "none"
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    target = c
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_few_step_end_to_end(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  final = train_lib.train_and_evaluate(tiny_config(num_devices=2), workdir)
  printed = capsys.readouterr().err
  assert "step 4/4 (100.0%)" in printed
  # The final evaluation is printed, not only written to metrics.jsonl.
  top1 = final["eval/fake:28x28x1:10/test/top1"]
  assert "eval step 4: fake:28x28x1:10/test loss" in printed
  assert f"top1 {top1:.4f}" in printed
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for r in records:
    for key in ("examples_seen", "flops", "train/loss", "lr", "grad_norm",
                "images_per_sec"):
      assert key in r and np.isfinite(r[key]), key
  assert records[-1]["examples_seen"] == 4 * 64
  info = json.load(open(os.path.join(workdir, "model_info.json")))
  assert info["params"] > 100_000
  assert records[-1]["flops"] == 4 * 64 * info["flops_per_example"]
  evals = {k for k in final if k.startswith("eval/")}
  assert evals == {f"eval/fake:28x28x1:10/test/{m}"
                   for m in ("loss", "top1", "top5")}
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["optimizer"]["weight_decay"] == 5e-4
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_one_vs_eight_devices_same_losses(tmp_path):
  losses = {}
  for n in (1, 8):
    train_lib.train_and_evaluate(tiny_config(num_devices=n),
                                 str(tmp_path / f"d{n}"))
    losses[n] = [r["train/loss"] for r in read_metrics(str(tmp_path / f"d{n}"))]
  np.testing.assert_allclose(losses[1], losses[8], rtol=2e-5)
  assert losses[1][0] != losses[1][-1]  # it did train


@pytest.mark.parametrize("overrides,needle", [
    ({"batch_size": 60}, "multiple of the 8 devices"),
    ({"model.name": "nf_resnett"}, "Unknown model 'nf_resnett'"),
    ({"model.variant": "51"}, "Valid nf_resnet variant names"),
    ({"dataset": "no_such_dataset_xyz"}, "no_such_dataset_xyz"),
    ({"model.kwargs.activation": "rleu"}, "Unknown activation 'rleu'"),
    ({"augment.kind": "mixmatch"}, "pad_crop_flip"),
    ({"eval_sets": "fashion_mnist"}, "'dataset:split'"),
])
def test_bad_config_fails_before_writing(tmp_path, overrides, needle):
  workdir = str(tmp_path / "run")
  with pytest.raises(config_lib.ConfigError, match=None) as e:
    train_lib.train_and_evaluate(tiny_config(**overrides), workdir)
  assert needle in str(e.value)
  assert not os.path.exists(workdir)


def test_workdir_of_another_experiment_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  other = tiny_config()
  other.experiment = "something_else"
  (workdir / "config.json").write_text(other.to_json())
  before = (workdir / "config.json").read_text()
  with pytest.raises(config_lib.ConfigError, match="different run"):
    train_lib.train_and_evaluate(tiny_config(), str(workdir))
  assert (workdir / "config.json").read_text() == before


@pytest.mark.parametrize("flag,needle", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.batch_size=abc", "batch_size"),
])
def test_command_line_config_errors(tmp_path, flag, needle):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.main",
       "--config=experiments/fashion_mnist_nf_resnet.py",
       f"--workdir={workdir}", flag],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert needle in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_variant_values_resolved_after_override():
  from experiments import imagenet_nfnet_f0  # pylint: disable=g-import-not-at-top
  c = imagenet_nfnet_f0.get_config()
  c.model.variant = "F3"
  r = config_lib.resolve(c)
  assert (r.image_size, r.eval_image_size) == (320, 416)
  assert r.model.kwargs.drop_rate == 0.4
  assert (r.augment.randaugment_layers, r.augment.randaugment_magnitude) == (
      4, 15)
  assert r.optimizer.weight_decay == 2e-5
  explicit = imagenet_nfnet_f0.get_config()
  explicit.model.kwargs.drop_rate = 0.1
  assert config_lib.resolve(explicit).model.kwargs.drop_rate == 0.1


# -- optimizer ------------------------------------------------------------

def _params():
  return {"net/conv": {"w": jnp.full((1, 1, 2, 2), 2.0),
                       "gain": jnp.ones((2,)), "b": jnp.zeros((2,))},
          "net/block_0": {"skip_gain": jnp.asarray(0.5)},
          "net/classifier": {"w": jnp.full((2, 3), 3.0), "b": jnp.zeros(3)}}


def test_masks_select_the_right_parameters():
  params = _params()
  decay = optimizer.decay_mask(params)
  assert decay["net/conv"] == {"w": True, "gain": False, "b": False}
  assert decay["net/block_0"] == {"skip_gain": False}
  assert decay["net/classifier"] == {"w": True, "b": False}
  agc = optimizer.agc_mask("classifier")(params)
  assert agc["net/classifier"] == {"w": False, "b": True}
  assert agc["net/conv"] == {"w": True, "gain": True, "b": True}


def test_update_order_agc_then_decay_then_nesterov():
  """One step checked against the hand-computed update."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  opt = ml_collections.ConfigDict(dict(
      base_lr=0.1, warmup_epochs=0.0, momentum=0.9, nesterov=True,
      weight_decay=0.01, agc_clip=0.01, agc_exclude="classifier"))
  lr = 0.5
  tx = optimizer.make_optimizer(opt, lambda step: lr)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1.0), params)
  updates, _ = tx.update(grads, tx.init(params), params)

  def expected(p, g, clip, decay):
    if clip:  # unit-wise AGC: max norm = 0.01 * max(||p||, 1e-3)
      axes = tuple(range(p.ndim - 1)) if p.ndim > 1 else None
      pn = np.sqrt(np.sum(np.square(p), axis=axes, keepdims=p.ndim > 1))
      gn = np.sqrt(np.sum(np.square(g), axis=axes, keepdims=p.ndim > 1))
      max_norm = 0.01 * np.maximum(pn, 1e-3)
      g = np.where(gn > max_norm, g * max_norm / np.maximum(gn, 1e-6), g)
    if decay:
      g = g + 0.01 * p
    # Nesterov from zero momentum: d = g + 0.9 * g
    return -lr * (g + 0.9 * g)

  decay = optimizer.decay_mask(params)
  agc = optimizer.agc_mask("classifier")(params)
  for mod in params:
    for name in params[mod]:
      p, g = np.asarray(params[mod][name]), np.asarray(grads[mod][name])
      np.testing.assert_allclose(
          updates[mod][name], expected(p, g, agc[mod][name],
                                       decay[mod][name]),
          rtol=1e-5, atol=1e-7, err_msg=f"{mod}/{name}")


def test_agc_skips_classifier_weight():
  import ml_collections  # pylint: disable=g-import-not-at-top
  opt = ml_collections.ConfigDict(dict(
      base_lr=0.1, warmup_epochs=0.0, momentum=0.0, nesterov=False,
      weight_decay=0.0, agc_clip=0.01, agc_exclude="classifier"))
  tx = optimizer.make_optimizer(opt, lambda step: 1.0)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates["net/classifier"]["w"],
                              -grads["net/classifier"]["w"])
  assert float(jnp.max(jnp.abs(updates["net/conv"]["w"]))) < 1.0


def test_learning_rate_schedule_scales_with_batch():
  import ml_collections  # pylint: disable=g-import-not-at-top
  opt = ml_collections.ConfigDict(dict(base_lr=0.1, warmup_epochs=1.0))
  sched = optimizer.learning_rate_schedule(opt, 1024, 100, 10)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(10)), 0.4, rtol=1e-6)
  assert float(sched(100)) < 1e-6


def test_nonfinite_loss_stops_with_step(tmp_path):
  c = tiny_config(**{"optimizer.base_lr": 1e30, "optimizer.warmup_epochs": 0.0})
  with pytest.raises(train_lib.NonFiniteError, match="at step"):
    train_lib.train_and_evaluate(c, str(tmp_path / "run"))


def test_dry_run_of_imagenet_recipe(tmp_path):
  from experiments import imagenet_nfnet_f0  # pylint: disable=g-import-not-at-top
  c = imagenet_nfnet_f0.get_config()
  c.dry_run = True
  final = train_lib.train_and_evaluate(c, str(tmp_path / "dry"))
  assert np.isfinite(final["train/loss"])
  assert final["examples_seen"] == config_lib.DRY_RUN_BATCH
