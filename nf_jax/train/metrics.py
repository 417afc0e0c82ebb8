"""Metrics: `metrics.jsonl` (the contract with nf_jax.scaling), TensorBoard
event files (tensorboardX, no TensorFlow needed) and a live progress line.

Only process 0 writes; other processes get a writer that does nothing.
Each JSON line is flushed as soon as it is written, so a crash loses nothing
already logged.
"""

import json
import math
import os
import sys
import time
from typing import Dict, Optional

import numpy as np


def _plain(v):
  v = np.asarray(v).item() if hasattr(v, "shape") or isinstance(
      v, (np.generic,)) else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/Inf: write "nan" / "inf" explicitly
  return v


class MetricsWriter:
  """Appends one JSON object per logged step to `workdir/metrics.jsonl`."""

  def __init__(self, workdir: str, enabled: bool = True,
               tensorboard: bool = True):
    self.enabled = enabled
    self._file = self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        self._tb = None

  def write(self, step: int, metrics: Dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: _plain(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self):
    if self._file:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """One live line on stderr: step, rate, ETA, latest loss (process 0 only)."""

  def __init__(self, total_steps: int, enabled: bool = True, stream=None):
    stream = sys.stderr if stream is None else stream
    self.total, self.enabled, self.stream = total_steps, enabled, stream
    self._t0: Optional[float] = None
    self._s0 = 0
    self._tty = hasattr(stream, "isatty") and stream.isatty()

  def start(self, step: int):
    self._t0, self._s0 = time.time(), step

  def update(self, step: int, loss: float, images_per_sec: float,
             final: bool = False):
    if not self.enabled or self._t0 is None:
      return
    elapsed = time.time() - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    eta_s = "?" if not math.isfinite(eta) else time.strftime(
        "%H:%M:%S", time.gmtime(eta))
    line = (f"step {step}/{self.total} ({100.0 * step / self.total:.1f}%) "
            f"{rate:.2f} steps/s {images_per_sec:.0f} img/s "
            f"ETA {eta_s} loss {loss:.4f}")
    end = "\n" if (final or not self._tty) else ""
    self.stream.write(("\r" if self._tty else "") + line + end)
    self.stream.flush()

  def evaluation(self, step: int, results: Dict) -> None:
    """One line per evaluation: `eval step N: <set> loss .. top1 .. top5 ..`."""
    if not self.enabled or not results:
      return
    by_set: Dict[str, Dict[str, float]] = {}
    for key, value in results.items():
      name, metric = key[len("eval/"):].rsplit("/", 1)
      by_set.setdefault(name, {})[metric] = value
    parts = [f"{name} " + " ".join(f"{m} {v:.4f}" for m, v in sorted(ms.items()))
             for name, ms in by_set.items()]
    self.stream.write(("\n" if self._tty else "") +
                      f"eval step {step}: " + "; ".join(parts) + "\n")
    self.stream.flush()
