"""One SPP run from a config: statistics, verdicts, spp.json and the plot.

The config (an ml_collections.ConfigDict or a dict) holds:

    models: list of 'name:variant' strings or dicts
            {model: 'nf_resnet:600', label, activation, ws, alpha,
             skip_gain_init, ...any other zoo model option}
    activation, skip_gain_init, alpha, ws: defaults for every model
    batch_size, image_size, channels, seed: the input batch
    dataset, split: real images instead of N(0, 1) (dataset '' = Gaussian)
    compile: 'auto' | 'blocks' | 'full'
    title: plot title;  plot: PNG file name (default spp.png)
    mean_tol, growth, var_tol: verdict tolerances (see verdict.py)
"""

import json
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, Optional

from nf_jax.analysis import inputs
from nf_jax.analysis.errors import SPPError
from nf_jax.analysis.plot import plot_spp
from nf_jax.analysis.signal import parse_model, signal_propagation
from nf_jax.analysis.verdict import diagnose

_MODEL_KEYS = ("activation", "skip_gain_init", "alpha", "ws")
_TOLERANCES = ("mean_tol", "growth", "var_tol")
DEFAULTS = dict(models=[], activation=None, skip_gain_init=1.0, alpha=None,
                ws=None, batch_size=8, image_size=224, channels=3, seed=0,
                dataset="", split="test", data_dir=None, compile="auto",
                title="", plot="spp.png", mean_tol=0.5, growth=2.0,
                var_tol=2.0)


def _plain(config) -> Dict[str, Any]:
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  config = dict(config or {})
  unknown = sorted(set(config) - set(DEFAULTS))
  if unknown:
    raise SPPError(f"Unknown SPP config key(s) {unknown}; valid keys: "
                   f"{', '.join(sorted(DEFAULTS))}.")
  out = dict(DEFAULTS)
  out.update({k: v for k, v in config.items()})
  return out


def parse_ws(value) -> Optional[bool]:
  """None/'' -> None; on/true/1 -> True; off/false/0 -> False."""
  if value is None or isinstance(value, bool):
    return value
  key = str(value).strip().lower()
  if key in ("", "none", "default"):
    return None
  if key in ("on", "true", "1", "yes"):
    return True
  if key in ("off", "false", "0", "no"):
    return False
  raise SPPError(f"ws must be on or off (or unset); got {value!r}.")


def model_entries(config: Dict[str, Any]):
  """The config's model list as dicts with every option filled in."""
  entries = []
  models = config["models"]
  if isinstance(models, str):
    models = [m for m in models.split(",") if m.strip()]
  if not models:
    raise SPPError("No models given; pass e.g. --models=nf_resnet:50 or a "
                   "config with a models list.")
  for m in models:
    entry = dict(m) if isinstance(m, dict) or hasattr(m, "items") else {
        "model": str(m)}
    if "model" not in entry:
      raise SPPError(f"Model entry {entry} has no 'model' key.")
    for key in _MODEL_KEYS:
      entry.setdefault(key, config[key])
    entry["ws"] = parse_ws(entry["ws"])
    entries.append(entry)
  return entries


def _label(entry) -> str:
  if entry.get("label"):
    return entry["label"]
  name, variant = parse_model(entry["model"])
  label = f"{name}-{variant}" if variant else name
  if entry.get("activation"):
    label += f" {entry['activation']}"
  if entry.get("ws") is not None:
    label += " WS" if entry["ws"] else " no-WS"
  return label


def peak_rss_gb() -> float:
  """Peak resident memory of this process (Linux: ru_maxrss is in KiB)."""
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / (1024.0 ** 3 if sys.platform == "darwin" else 1024.0 ** 2)


def run(config, outdir: str,
        progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
  """Computes, judges and plots every model; writes spp.json and the PNG.

  Nothing is written unless every model's statistics are finite.
  """
  say = progress or (lambda msg: None)
  t0 = time.time()
  use0 = resource.getrusage(resource.RUSAGE_SELF)
  cfg = _plain(config)
  entries = model_entries(cfg)
  if cfg["dataset"]:
    say(f"loading {cfg['batch_size']} images from {cfg['dataset']}/"
        f"{cfg['split']}")
    x = inputs.dataset_batch(cfg["dataset"], cfg["split"], cfg["batch_size"],
                             cfg["image_size"], cfg["channels"],
                             cfg["data_dir"])
    source = f"{cfg['dataset']}/{cfg['split']}"
  else:
    x = inputs.gaussian_batch(cfg["batch_size"], cfg["image_size"],
                              cfg["channels"], cfg["seed"])
    source = "N(0, 1)"
  tolerances = {k: cfg[k] for k in _TOLERANCES}
  results = []
  for i, entry in enumerate(entries):
    opts = {k: v for k, v in entry.items() if k not in ("model", "label")}
    say(f"[{i + 1}/{len(entries)}] {_label(entry)}")
    r = signal_propagation(entry["model"], x, label=_label(entry),
                           seed=cfg["seed"], channels=cfg["channels"],
                           compile=cfg["compile"], progress=say, **opts)
    diagnose(r, **tolerances)
    say(r.verdict.line())
    results.append(r)
  os.makedirs(outdir, exist_ok=True)
  plot_path = os.path.join(outdir, cfg["plot"])
  plot_spp(results, plot_path, title=cfg["title"] or None)
  use = resource.getrusage(resource.RUSAGE_SELF)
  summary = {"wall_s": round(time.time() - t0, 2),
             "cpu_s": round(use.ru_utime + use.ru_stime - use0.ru_utime
                            - use0.ru_stime, 2),
             "peak_rss_gb": round(peak_rss_gb(), 3),
             "input": {"source": source, "shape": list(x.shape)},
             "verdicts": {r.label: r.verdict.summary for r in results}}
  out = {"config": {k: v for k, v in cfg.items() if k != "models"},
         "summary": summary, "plot": os.path.basename(plot_path),
         "models": [r.to_dict() for r in results]}
  with open(os.path.join(outdir, "spp.json"), "w") as f:
    json.dump(out, f, indent=1)
  return {"summary": summary, "results": results, "plot": plot_path,
          "json": os.path.join(outdir, "spp.json")}
