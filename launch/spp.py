r"""Signal propagation plots for models of the zoo, in one command.

    python -m launch.spp --models=nf_resnet:600,bn_resnet:600 \
        --activation=relu --batch_size=8 --image_size=224 --outdir=/tmp/spp
    python -m launch.spp --config=experiments/spp_paper.py:600 --outdir=/tmp/spp

Writes OUTDIR/spp.json (per block: stage, avg channel squared mean, avg
channel variance, residual variance, analytic variance; a verdict per model)
and OUTDIR/spp.png, then prints one verdict line per model and the run's wall
time and peak memory. --activation takes a comma list: every model is run
with every activation. With --config, the model list comes from the config,
and the input flags (--batch_size, --image_size, --seed, --dataset) override
its values only when given. Bad input exits with status 1 and one line.
"""

import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "An experiments/spp_*.py config (get_config(arg)).",
    lock_config=False)
_MODELS = flags.DEFINE_list("models", None,
                            "Models as name:variant, e.g. nf_resnet:600.")
_ACTIVATION = flags.DEFINE_list(
    "activation", None, "Activation(s); each model runs with each one. "
    "Default: the model's own.")
_SKIP_GAIN = flags.DEFINE_float(
    "skip_gain_init", 1.0, "SkipInit gain at init (0 hides non-transition "
    "blocks: they are the identity).")
_ALPHA = flags.DEFINE_float("alpha", None, "alpha (default: the model's).")
_WS = flags.DEFINE_enum("ws", None, ["on", "off"],
                        "Scaled WS on/off (nf_resnet <-> unnorm_resnet).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Input batch size.")
_IMSIZE = flags.DEFINE_integer("image_size", 224, "Input resolution (px).")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Input channels.")
_SEED = flags.DEFINE_integer("seed", 0, "Input and parameter seed.")
_DATASET = flags.DEFINE_string(
    "dataset", "", "Real images from this dataset (e.g. fashion_mnist) "
    "instead of N(0, 1).")
_SPLIT = flags.DEFINE_string("split", "test", "Dataset split.")
_COMPILE = flags.DEFINE_enum(
    "compile", "auto", ["auto", "blocks", "full"],
    "blocks: compile each distinct block once; full: jit the whole net.")
_TITLE = flags.DEFINE_string("title", "", "Plot title.")
_OUTDIR = flags.DEFINE_string("outdir", "spp_out",
                              "Where spp.json and the PNG go.")

_OVERRIDES = {"batch_size": _BATCH, "image_size": _IMSIZE, "seed": _SEED,
              "dataset": _DATASET, "split": _SPLIT, "channels": _CHANNELS,
              "compile": _COMPILE, "title": _TITLE}


def _config():
  if _CONFIG.value is not None:
    cfg = _CONFIG.value.to_dict()
    for key, flag in _OVERRIDES.items():
      if flags.FLAGS[flag.name].present:
        cfg[key] = flag.value
    if _MODELS.value:
      cfg["models"] = _MODELS.value
    return cfg
  activations = _ACTIVATION.value or [None]
  models = [{"model": m, "activation": a}
            for m in (_MODELS.value or []) for a in activations]
  cfg = {key: flag.value for key, flag in _OVERRIDES.items()}
  cfg.update(models=models, skip_gain_init=_SKIP_GAIN.value,
             alpha=_ALPHA.value, ws=_WS.value)
  return cfg


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.time()

  def progress(msg):
    print(f"[{time.time() - start:7.1f}s] {msg}", flush=True)

  # Imported here so that --help stays fast.
  from nf_jax.analysis import report  # pylint: disable=g-import-not-at-top
  try:
    out = report.run(_config(), _OUTDIR.value, progress)
  except ValueError as e:  # SPPError, UnknownNameError, DatasetError, ...
    print(f"spp: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  print("\nVerdicts:")
  for r in out["results"]:
    print("  " + r.verdict.line())
  s = out["summary"]
  print(f"\nWrote {out['json']} and {out['plot']}")
  print(f"Summary: wall {s['wall_s']:.1f}s (incl. compile), CPU "
        f"{s['cpu_s']:.1f}s, peak RSS "
        f"{s['peak_rss_gb']:.2f} GB, input {s['input']['source']} "
        f"{tuple(s['input']['shape'])}")


if __name__ == "__main__":
  app.run(main)
