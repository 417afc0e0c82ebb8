r"""Training-step throughput: NF-ResNet vs BN-ResNet vs PyTorch timm, on CPU.

Measures a full training step (forward, backward, SGD-momentum update; jitted;
timed after warm-up) in images/s, the median of several runs, with the FLOP
utilization against a large fp32 matmul measured in the same run. Every
configuration is timed round-robin (one run of each per round), so that load
from other processes on a shared machine hits all of them alike; compare the
ratios, which are what the targets are about.

  python -m launch.benchmark                                  # JAX only
  python -m launch.benchmark --torch_python=/work/bench-venv/bin/python

JAX is measured on 1 device and on `--num_devices` host devices (data
parallel, `nf_jax.train.parallel`): the batch is split over the devices and
gradients are `pmean`'d, so both columns run the same global batch. PyTorch
timm runs in a subprocess with the given interpreter (or this one if torch and
timm import here), `torch.set_num_threads(--torch_threads)`, and whichever
memory format (channels_last or contiguous) is faster in its warm-up.

FLOPs per image = 3 x 2 x MACs of one forward pass (`nf_jax.models.count_macs`;
backward ~ 2x forward); utilization = achieved FLOP/s / matmul peak.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["nf_resnet:50", "bn_resnet:50"],
                  "name:variant pairs timed at --batch_size, --image_size.")
flags.DEFINE_integer("batch_size", 16, "Global batch of the ResNet-50 rows.")
flags.DEFINE_integer("image_size", 128, "Input resolution of those rows.")
flags.DEFINE_bool("small", True, "Also time the default experiment's model: "
                  "nf_resnet 'small', 28x28x1, stem_stride=2, 10 classes.")
flags.DEFINE_integer("small_batch_size", 256, "Batch of the small-model row.")
flags.DEFINE_list("num_devices", ["1", "2"],
                  "Device counts to time every JAX model on (host devices on "
                  "CPU, configured before JAX starts).")
flags.DEFINE_integer("repeats", 7, "Timed runs (rounds) per configuration.")
flags.DEFINE_integer("steps", 2, "Steps per timed run (min 1).")
flags.DEFINE_integer("small_steps", 10, "Steps per timed run, small model.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_float("learning_rate", 1e-3, "SGD learning rate (momentum 0.9).")
flags.DEFINE_integer("peak_size", 2048, "n of the n x n fp32 matmul peak.")
flags.DEFINE_bool("timm", True, "Time timm's model when torch is available.")
flags.DEFINE_string("torch_python", None,
                    "Python interpreter with torch + timm (run as a "
                    "subprocess). Default: this interpreter, if it has them.")
flags.DEFINE_string("timm_model", "nf_resnet50", "timm model name.")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
flags.DEFINE_enum("torch_memory_format", "auto",
                  ["auto", "channels_last", "contiguous"],
                  "auto: the faster of the two in the warm-up.")
flags.DEFINE_string("json_out", None, "Also write the results here.")
flags.DEFINE_float("max_seconds", 0.0, "Stop timing after the round that "
                   "passes this many seconds (0: run all --repeats); the "
                   "table then uses the completed rounds. Ctrl-C does the "
                   "same.")


# ---------------------------------------------------------------------------
# PyTorch / timm side: a small worker speaking JSON lines on stdin/stdout, so
# that it can run under another interpreter and still be interleaved.
# ---------------------------------------------------------------------------
TORCH_WORKER = r'''
import json, sys, time
import torch, timm

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
B, R = cfg["batch"], cfg["res"]

def build(fmt):
    model = timm.create_model(cfg["model"], num_classes=1000, pretrained=False)
    x = torch.randn(B, 3, R, R)
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
    y = torch.randint(0, 1000, (B,))
    loss_fn = torch.nn.CrossEntropyLoss()
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step

def timed(step, n):
    t = time.perf_counter()
    for _ in range(n):
        loss = step()
    loss.item()
    return time.perf_counter() - t

fmts = (["channels_last", "contiguous"] if cfg["memory_format"] == "auto"
        else [cfg["memory_format"]])
trial = {}
for fmt in fmts:
    step = build(fmt)
    for _ in range(cfg["warmup"]):
        step()
    trial[fmt] = min(timed(step, 1) for _ in range(2))
best = min(trial, key=trial.get)
step = build(best) if best != fmts[-1] else step
for _ in range(cfg["warmup"]):
    step()
print(json.dumps({"ready": True, "memory_format": best, "trial_s": trial,
                  "torch": torch.__version__, "timm": timm.__version__,
                  "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd.get("op") != "run":
        break
    print(json.dumps({"seconds": timed(step, cmd["steps"])}), flush=True)
'''


class TorchWorker:
  """A timm training step in a subprocess; `run(n)` -> seconds for n steps."""

  def __init__(self, python: str, cfg: Dict):
    self.proc = subprocess.Popen(
        [python, "-c", TORCH_WORKER, json.dumps(cfg)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, bufsize=1)
    self.info = self._read()

  def _read(self) -> Dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"timm worker exited (code {self.proc.wait()}).")
    return json.loads(line)

  def run(self, steps: int) -> float:
    self.proc.stdin.write(json.dumps({"op": "run", "steps": steps}) + "\n")
    return self._read()["seconds"]

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


def find_torch_python() -> Optional[str]:
  """--torch_python, else this interpreter when it can import torch + timm."""
  if FLAGS.torch_python:
    return FLAGS.torch_python
  probe = subprocess.run([sys.executable, "-c", "import torch, timm"],
                         capture_output=True)
  return sys.executable if probe.returncode == 0 else None


# ---------------------------------------------------------------------------
# JAX side.
# ---------------------------------------------------------------------------
def make_jax_step(name, variant, batch, res, channels, num_classes, ndev,
                  model_kwargs, lr):
  """(run(n) -> seconds, flops per image) for one model and device count."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from nf_jax.models import count_macs, registry  # pylint: disable=g-import-not-at-top
  from nf_jax.train import parallel, steps  # pylint: disable=g-import-not-at-top

  if batch % ndev:
    raise ValueError(f"batch {batch} is not divisible by {ndev} devices.")
  net = registry.transform(name, num_classes, variant, **model_kwargs)
  rng = jax.random.PRNGKey(0)
  x = jax.random.normal(rng, (batch, res, res, channels), jnp.float32)
  y = jax.random.randint(rng, (batch,), 0, num_classes)
  params, state = net.init(rng, x[:1], True)
  # The trainer's own step (pcast, pmean, optimizer, metrics), with plain
  # SGD + momentum 0.9 to match the PyTorch side.
  opt = optax.sgd(lr, momentum=0.9)
  train_state = steps.TrainState(params, state, opt.init(params), params,
                                 jnp.zeros((), jnp.int32), rng,
                                 jnp.zeros((), jnp.int32))
  per_device_step = steps.make_train_step(
      net, opt, lambda step: lr, label_smoothing=0.0, ema_decay=0.0,
      skip_nonfinite=False)
  mesh = parallel.make_mesh(ndev)
  step = parallel.data_parallel(
      per_device_step, mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
      out_specs=(P(), P()), donate_argnums=(0,))
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  carry = jax.device_put(train_state, rep)
  batch_arrays = jax.device_put(
      {"image": x, "label": y, "label_dist": jax.nn.one_hot(y, num_classes)},
      shard)

  def run(n: int) -> float:
    nonlocal carry
    t = time.perf_counter()
    for _ in range(n):
      carry, metrics = step(carry, batch_arrays)
    metrics["train/loss"].block_until_ready()
    return time.perf_counter() - t

  t = time.perf_counter()
  run(1)  # compile
  compile_s = time.perf_counter() - t
  macs = count_macs(net, (res, res, channels))
  return run, 6.0 * macs, compile_s


def make_peak(n: int):
  """run(k) -> seconds of k n x n fp32 matmuls (2 n^3 flops each)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()

  def run(k: int) -> float:
    t = time.perf_counter()
    for _ in range(k):
      out = dot(a, b)
    out.block_until_ready()
    return time.perf_counter() - t
  return run


class Job:
  """One table row: a timed callable and how to turn seconds into img/s."""

  def __init__(self, label: str, run: Callable[[int], float], batch: int,
               steps: int, flops_per_image: Optional[float], devices: str,
               model: str, res: int, note: str = ""):
    self.label, self.run, self.batch, self.steps = label, run, batch, steps
    self.flops_per_image, self.devices, self.model = (flops_per_image,
                                                      devices, model)
    self.res, self.note = res, note
    self.times: List[float] = []

  @property
  def images_per_s(self) -> float:
    return self.batch * self.steps / statistics.median(self.times)


def main(argv):
  del argv
  device_counts = sorted({int(n) for n in FLAGS.num_devices})
  # Must precede any JAX computation: fixes the CPU device count and the
  # collective timeouts for the rest of the process.
  from nf_jax.train import parallel  # pylint: disable=g-import-not-at-top
  parallel.configure_host_devices(max(device_counts))
  import jax  # pylint: disable=g-import-not-at-top

  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), {os.cpu_count()} cores, "
        f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}", flush=True)

  jobs: List[Job] = []
  specs = []
  for item in FLAGS.models:
    name, _, variant = item.partition(":")
    specs.append((name, variant or "50", FLAGS.batch_size, FLAGS.image_size,
                  3, 1000, {}, FLAGS.steps))
  if FLAGS.small:
    specs.append(("nf_resnet", "small", FLAGS.small_batch_size, 28, 1, 10,
                  {"stem_stride": 2}, FLAGS.small_steps))
  for name, variant, batch, res, ch, classes, kwargs, steps in specs:
    for ndev in device_counts:
      run, flops, compile_s = make_jax_step(name, variant, batch, res, ch,
                                            classes, ndev, kwargs,
                                            FLAGS.learning_rate)
      label = f"{name}-{variant}"
      print(f"compiled {label} on {ndev} device(s) in {compile_s:.1f} s",
            flush=True)
      jobs.append(Job(label, run, batch, max(1, steps), flops,
                      f"jax x{ndev}", f"{name}:{variant}", res))

  worker = None
  if FLAGS.timm:
    python = find_torch_python()
    if python is None:
      print("timm: torch/timm not importable and no --torch_python; skipped.")
    else:
      worker = TorchWorker(python, {
          "model": FLAGS.timm_model, "batch": FLAGS.batch_size,
          "res": FLAGS.image_size, "threads": FLAGS.torch_threads,
          "lr": FLAGS.learning_rate, "warmup": FLAGS.warmup,
          "memory_format": FLAGS.torch_memory_format})
      info = worker.info
      print(f"timm {info['timm']} / torch {info['torch']}: {FLAGS.timm_model}"
            f", {info['threads']} threads, {info['memory_format']} (warm-up "
            f"s/step: {info['trial_s']})", flush=True)
      nf = [j for j in jobs if j.model == "nf_resnet:50"]
      jobs.append(Job(f"timm {FLAGS.timm_model}", worker.run,
                      FLAGS.batch_size, max(1, FLAGS.steps),
                      nf[0].flops_per_image if nf else None,
                      f"torch x{info['threads']}t", "timm",
                      FLAGS.image_size, info["memory_format"]))

  peak_run = make_peak(FLAGS.peak_size)
  peak_times: List[float] = []
  peak_k = 5

  for job in jobs:
    if job.devices.startswith("jax"):
      job.run(FLAGS.warmup)
  start = time.perf_counter()
  try:
    for r in range(FLAGS.repeats):
      peak = peak_run(peak_k)
      times = [job.run(job.steps) for job in jobs]
      peak_times.append(peak)  # only complete rounds count
      for job, t in zip(jobs, times):
        job.times.append(t)
      print(f"round {r + 1}/{FLAGS.repeats}: " + ", ".join(
          f"{j.label} {j.devices} {j.batch * j.steps / j.times[-1]:.1f}"
          for j in jobs) + f" img/s; load {os.getloadavg()[0]:.1f}",
            flush=True)
      if FLAGS.max_seconds and time.perf_counter() - start > FLAGS.max_seconds:
        print(f"--max_seconds={FLAGS.max_seconds:g} reached after {r + 1} "
              "round(s).", flush=True)
        break
  except KeyboardInterrupt:
    print(f"interrupted; using {len(peak_times)} complete round(s).")
  if not peak_times:
    raise SystemExit("No complete timing round.")
  n_rounds = len(peak_times)
  if worker is not None:
    worker.close()

  peak = 2 * FLAGS.peak_size ** 3 * peak_k / statistics.median(peak_times)
  rows = []
  print()
  print(f"Training step (fwd + bwd + SGD-momentum), median of {n_rounds}"
        f" runs; matmul peak {peak / 1e9:.1f} GFLOP/s "
        f"({FLAGS.peak_size}^2 fp32 jnp.dot); "
        f"load average at end {os.getloadavg()[0]:.2f}")
  header = (f"{'model':<22}{'input':>14}{'batch':>7}{'runs on':>14}"
            f"{'img/s':>9}{'GFLOP/s':>9}{'util':>7}")
  print(header)
  print("-" * len(header))
  for j in jobs:
    ips = j.images_per_s
    gf = ips * j.flops_per_image / 1e9 if j.flops_per_image else float("nan")
    util = gf * 1e9 / peak
    ch = 1 if j.model.endswith("small") else 3
    inp = f"{j.res}x{j.res}x{ch}"
    print(f"{j.label:<22}{inp:>14}{j.batch:>7}{j.devices:>14}{ips:>9.1f}"
          f"{gf:>9.1f}{util:>7.1%}")
    rows.append({"model": j.label, "input": inp, "batch": j.batch,
                 "runs_on": j.devices, "images_per_s": ips, "gflops": gf,
                 "utilization": util, "times_s": j.times, "steps": j.steps,
                 "note": j.note})

  def best(model):
    cands = [j for j in jobs if j.model == model]
    return max(cands, key=lambda j: j.images_per_s) if cands else None

  print()
  ratios = {}
  nf, bn = best("nf_resnet:50"), best("bn_resnet:50")
  for ndev in device_counts:
    a = [j for j in jobs if j.model == "nf_resnet:50" and
         j.devices == f"jax x{ndev}"]
    b = [j for j in jobs if j.model == "bn_resnet:50" and
         j.devices == f"jax x{ndev}"]
    if a and b:
      ratios[f"nf/bn x{ndev}"] = a[0].images_per_s / b[0].images_per_s
  for model in {j.model for j in jobs if j.devices.startswith("jax")}:
    one = [j for j in jobs if j.model == model and j.devices == "jax x1"]
    many = [j for j in jobs if j.model == model and
            j.devices == f"jax x{device_counts[-1]}"]
    if one and many and len(device_counts) > 1:
      ratios[f"{model} x{device_counts[-1]}/x1"] = (many[0].images_per_s /
                                                   one[0].images_per_s)
  if nf and bn:
    ratios["nf best/bn best"] = nf.images_per_s / bn.images_per_s
  timm = best("timm")
  if nf and timm:
    ratios["nf best/timm"] = nf.images_per_s / timm.images_per_s
  for k, v in sorted(ratios.items()):
    print(f"  {k:<32}{v:6.2f}x")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({"peak_gflops": peak / 1e9, "rows": rows, "ratios": ratios,
                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "argv": sys.argv}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
