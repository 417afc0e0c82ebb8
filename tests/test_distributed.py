"""Multi-process runs: 2 local processes x 2 CPU devices over gloo."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from tests.test_train import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=experiments/fashion_mnist_nf_resnet.py",
        "--config.dataset=fake:28x28x1:10",
        "--config.eval_sets=fake:28x28x1:10:test", "--config.batch_size=64",
        "--config.num_epochs=0.125", "--config.log_every_steps=1",
        "--config.eval_every_epochs=100", "--config.augment.kind=none"]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # each process sets its own device count
  return env


def test_two_processes_match_one_process(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  subprocess.run([sys.executable, "-m", "launch.local_multiprocess",
                  "--num_processes=2", "--devices_per_process=2", "--", *ARGS,
                  f"--workdir={multi}"], cwd=REPO, env=_env(), check=True,
                 capture_output=True, timeout=600)
  subprocess.run([sys.executable, "-m", "launch.main", *ARGS,
                  "--config.num_devices=4", f"--workdir={single}"],
                 cwd=REPO, env=_env(), check=True, capture_output=True,
                 timeout=600)
  a = [r["train/loss"] for r in read_metrics(str(multi))]
  b = [r["train/loss"] for r in read_metrics(str(single))]
  assert len(a) == len(b) == 4
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_a_dead_process_stops_the_other(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "run"
  long_run = [a for a in ARGS if "num_epochs" not in a] + [
      "--config.num_epochs=5"]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.main", *long_run, f"--workdir={workdir}",
       "--config.num_devices=1", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}",
       "--heartbeat_timeout_seconds=10"],
      cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (
      metrics.exists() and metrics.read_text().count("\n") >= 2):
    assert all(p.poll() is None for p in procs), "a process ended early"
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  try:
    procs[0].wait(timeout=180)
  finally:
    if procs[0].poll() is None:
      procs[0].kill()
  assert procs[0].returncode != 0
  assert time.time() - killed_at < 180
