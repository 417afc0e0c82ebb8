"""Durability: exact resume after SIGKILL, damaged checkpoints, NaN states."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nf_jax.train import checkpoint, train_lib
from tests.test_train import read_metrics, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


def _command(workdir):
  return [sys.executable, "-m", "launch.main",
          "--config=experiments/fashion_mnist_nf_resnet.py",
          f"--workdir={workdir}", "--config.dataset=fake:28x28x1:10",
          "--config.eval_sets=fake:28x28x1:10:test", "--config.batch_size=64",
          f"--config.num_epochs={STEPS * 64 / 2048}",
          "--config.log_every_steps=1", "--config.checkpoint_every_steps=1",
          "--config.eval_every_epochs=100", "--config.augment.kind=pad_crop_flip"]


def _final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  return step, restored.state


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}/{k}"))
    return out
  if isinstance(tree, (list, tuple)):
    out = {}
    for i, v in enumerate(tree):
      out.update(_flatten(v, f"{prefix}/{i}"))
    return out
  return {prefix: np.asarray(tree)}


def test_sigkill_then_resume_is_bit_identical(tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)   # both runs: main's own 2 host devices
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run(_command(straight), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=600)
  kill_after = random.Random().randint(2, STEPS - 3)
  proc = subprocess.Popen(_command(killed), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = os.path.join(killed, "checkpoints")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    done = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if (
        os.path.isdir(ckpts)) else []
    if done and max(done) >= kill_after:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  subprocess.run(_command(killed), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=600)
  step_a, state_a = _final_params(straight)
  step_b, state_b = _final_params(killed)
  assert step_a == step_b == STEPS
  flat_a, flat_b = _flatten(state_a), _flatten(state_b)
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)
  steps_logged = [r["step"] for r in read_metrics(killed)]
  assert steps_logged == list(range(1, STEPS + 1))  # one record per step


def test_damaged_newest_checkpoint_falls_back(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  c = tiny_config(num_devices=2, checkpoint_every_steps=2)
  train_lib.train_and_evaluate(c, workdir)           # checkpoints 2 and 4
  newest = os.path.join(workdir, "checkpoints", "4")
  for root, _, files in os.walk(newest):
    for name in files:
      if name != "_CHECKPOINT_METADATA":
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  longer = tiny_config(num_devices=2, checkpoint_every_steps=2)
  longer.num_epochs = 6 * 64 / 2048
  train_lib.train_and_evaluate(longer, workdir)
  assert [r["step"] for r in read_metrics(workdir)] == list(range(1, 7))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", "4"))
  assert "damaged" in caplog.text
  steps = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).steps()
  assert max(steps) == 6 and 2 in steps   # the last good one was kept


def test_nonfinite_state_is_never_checkpointed(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ck"))
  ckpt.save(1, {"w": jnp.ones(3)}, {"step": 1})
  with pytest.raises(checkpoint.NonFiniteStateError, match="step 2"):
    ckpt.save(2, {"w": jnp.array([1.0, jnp.nan, 0.0])}, {"step": 2})
  assert ckpt.steps() == [1]


def test_sigterm_saves_and_exits_for_resume(tmp_path):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  workdir = str(tmp_path / "run")
  cmd = [a if "num_epochs" not in a else "--config.num_epochs=5"
         for a in _command(workdir)]
  cmd = [a for a in cmd if "checkpoint_every_steps" not in a]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 600
  while time.time() < deadline and not (
      os.path.exists(metrics) and open(metrics).read().count("\n") >= 2):
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143
  assert "rerun the same command to resume" in err
  steps = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).steps()
  assert len(steps) == 1 and steps[0] >= 2


def test_nonfinite_updates_can_be_skipped(tmp_path):
  c = tiny_config(num_devices=2, on_nonfinite="skip")
  c.optimizer.base_lr = 1e30
  c.optimizer.warmup_epochs = 0.0
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(c, workdir)
  records = read_metrics(workdir)
  assert records[-1]["step"] == 4 and records[-1]["nonfinite_skips"] >= 1
  step, state = _final_params(workdir)
  assert step == 4
  for v in _flatten(state["params"] if isinstance(state, dict) else
                    state[0]).values():
    assert np.all(np.isfinite(v))
