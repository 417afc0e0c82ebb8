r"""Measures the training input pipeline's throughput (images/s).

Default: the default experiment's train pipeline -- Fashion-MNIST, batch 256
per process, pad_crop_flip, 28 px. Prints one table row per configuration:
wall-clock images/s of `next(iterator)` after warm-up (median of --runs runs
of --steps batches) and the CPU time the process spent per image, i.e. how
much of the cores the loader takes from the training step.

  python -m launch.benchmark_input
  python -m launch.benchmark_input --augment=rrc_flip --image_size=28 \
      --mixup_alpha=0.2 --randaugment_layers=2 --randaugment_magnitude=9
"""
import resource
import statistics
import time

from absl import app
from absl import flags

from nf_jax.data import input_pipeline as ip

_DATASET = flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name.")
_SPLIT = flags.DEFINE_string("split", "train", "Split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Per-process batch size.")
_AUGMENT = flags.DEFINE_string("augment", "pad_crop_flip", "Augmentation.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Output side.")
_MIXUP = flags.DEFINE_float("mixup_alpha", 0.0, "Mixup alpha.")
_CUTMIX = flags.DEFINE_float("cutmix_alpha", 0.0, "CutMix alpha.")
_RA_LAYERS = flags.DEFINE_integer("randaugment_layers", 0, "RandAugment ops.")
_RA_MAG = flags.DEFINE_float("randaugment_magnitude", 0, "RandAugment level.")
_THREADS = flags.DEFINE_multi_integer("num_threads", [1], "grain threads; "
                                      "repeat the flag to compare values.")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "grain worker processes.")
_STEPS = flags.DEFINE_integer("steps", 100, "Batches per run.")
_RUNS = flags.DEFINE_integer("runs", 5, "Runs (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Batches before timing.")


def _cpu_seconds():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def measure(num_threads):
  t0 = time.perf_counter()
  it = ip.train_iterator(
      _DATASET.value, _SPLIT.value, batch_size=_BATCH.value, seed=0,
      image_size=_IMAGE_SIZE.value, augment=_AUGMENT.value,
      mixup_alpha=_MIXUP.value, cutmix_alpha=_CUTMIX.value,
      randaugment_layers=_RA_LAYERS.value,
      randaugment_magnitude=_RA_MAG.value, data_dir=_DATA_DIR.value,
      num_workers=_WORKERS.value, num_threads=num_threads)
  for _ in range(_WARMUP.value):
    next(it)
  startup = time.perf_counter() - t0
  rates, cpu = [], []
  for _ in range(_RUNS.value):
    c0, t0 = _cpu_seconds(), time.perf_counter()
    for _ in range(_STEPS.value):
      next(it)
    dt, dc = time.perf_counter() - t0, _cpu_seconds() - c0
    n = _STEPS.value * _BATCH.value
    rates.append(n / dt)
    cpu.append(dc / n * 1e6)
  return startup, statistics.median(rates), statistics.median(cpu)


def main(argv):
  del argv
  print(f"| dataset | batch | augment | threads | workers | startup s "
        f"| images/s (median of {_RUNS.value}) | CPU us/image |")
  print("|---|---|---|---|---|---|---|---|")
  aug = _AUGMENT.value
  extras = [f"mixup {_MIXUP.value}" if _MIXUP.value else "",
            f"cutmix {_CUTMIX.value}" if _CUTMIX.value else "",
            f"RA {_RA_LAYERS.value}x{_RA_MAG.value:g}" if _RA_LAYERS.value
            else ""]
  aug = " + ".join([aug] + [e for e in extras if e])
  for threads in _THREADS.value:
    startup, rate, cpu = measure(threads)
    print(f"| {_DATASET.value} | {_BATCH.value} | {aug} | {threads} | "
          f"{_WORKERS.value} | {startup:.1f} | {rate:,.0f} | {cpu:.1f} |",
          flush=True)


if __name__ == "__main__":
  app.run(main)
