"""Checks and resolves a training config before anything is built or written.

`resolve` fills the values that depend on the model variant *after*
command-line overrides (the original NFNet configs computed them inside
get_config(), so overriding the variant kept the F0 values). `validate` turns
every bad value into one `ConfigError` that says what is wrong and what would
be right; it runs before compilation and before the workdir is touched.
"""

import json
import os
from typing import List, Tuple

import ml_collections

from nf_jax.models import registry
from nf_jax.models.errors import UnknownNameError

# Weight decay of the published recipes, by model family.
_RECIPE_WEIGHT_DECAY = {"nfnet": 2e-5, "nf_regnet": 5e-5}
_DEFAULT_WEIGHT_DECAY = 5e-5
AUGMENTATIONS = ("none", "pad_crop_flip", "rrc_flip")
PRECISIONS = ("float32", "bfloat16")
NONFINITE = ("stop", "skip")
DRY_RUN_IMSIZE, DRY_RUN_BATCH = 32, 16


class ConfigError(ValueError):
  """A bad experiment config; the message says what would be right."""


def eval_sets(config) -> List[Tuple[str, str]]:
  """`'ds:split,ds2:split2'` -> [(ds, split), ...]."""
  sets = []
  for item in filter(None, (s.strip() for s in config.eval_sets.split(","))):
    name, _, split = item.rpartition(":")
    if not name or not split:
      raise ConfigError(f"config.eval_sets entry {item!r} is not "
                        "'dataset:split' (e.g. 'fashion_mnist:test').")
    sets.append((name, split))
  return sets


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns a copy with variant-dependent placeholders filled in."""
  c = ml_collections.ConfigDict(config.to_dict())
  info = _model_info(c)
  if c.dry_run:  # fake data at a tiny resolution; the loop takes one step
    c.dataset = f"fake:{DRY_RUN_IMSIZE}x{DRY_RUN_IMSIZE}x3:1000"
    c.train_split, c.eval_sets = "train", f"{c.dataset}:test"
    c.image_size = c.eval_image_size = DRY_RUN_IMSIZE
    c.batch_size = DRY_RUN_BATCH
    c.num_data_workers = 0
  published = c.model.name in ("nfnet", "nf_regnet")  # per-variant sizes
  if c.image_size is None and published:
    c.image_size = info["train_imsize"]
  if c.eval_image_size is None:
    c.eval_image_size = info["test_imsize"] if published else c.image_size
  kw = c.model.kwargs
  if "drop_rate" in kw and kw.drop_rate is None:
    kw.drop_rate = info["drop_rate"]
  if c.optimizer.weight_decay is None:
    c.optimizer.weight_decay = _RECIPE_WEIGHT_DECAY.get(
        c.model.name, _DEFAULT_WEIGHT_DECAY)
  if c.augment.randaugment_layers is None or (
      c.augment.randaugment_magnitude is None):
    ra = info["ra_level"]  # e.g. '405': 4 layers, magnitude 5
    layers, magnitude = (int(ra[0]), int(ra[1:])) if ra else (0, 0)
    if c.augment.randaugment_layers is None:
      c.augment.randaugment_layers = layers
    if c.augment.randaugment_magnitude is None:
      c.augment.randaugment_magnitude = magnitude
  return c


def _model_info(c):
  try:
    return registry.variant_info(c.model.name, c.model.variant)
  except UnknownNameError as e:
    raise ConfigError(f"config.model: {e}") from None


def validate(c: ml_collections.ConfigDict, num_devices: int,
             num_processes: int = 1) -> None:
  """Raises ConfigError for the first problem found; builds nothing."""
  try:
    registry.validate(c.model.name, c.model.variant,
                      **{k: v for k, v in c.model.kwargs.items()
                         if v is not None})
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  if c.batch_size <= 0 or c.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size={c.batch_size} must be a positive multiple of the "
        f"{num_devices} devices in use; try "
        f"--config.batch_size={max(1, round(c.batch_size / num_devices)) * num_devices}.")
  if c.batch_size % num_processes:
    raise ConfigError(f"config.batch_size={c.batch_size} is not divisible by "
                      f"the {num_processes} processes.")
  if c.augment.kind not in AUGMENTATIONS:
    raise ConfigError(f"config.augment.kind={c.augment.kind!r}; valid: "
                      f"{', '.join(AUGMENTATIONS)}.")
  if c.precision not in PRECISIONS:
    raise ConfigError(f"config.precision={c.precision!r}; valid: "
                      f"{', '.join(PRECISIONS)}.")
  if c.on_nonfinite not in NONFINITE:
    raise ConfigError(f"config.on_nonfinite={c.on_nonfinite!r}; valid: "
                      f"{', '.join(NONFINITE)}.")
  for key in ("num_epochs", "log_every_steps"):
    if c[key] <= 0:
      raise ConfigError(f"config.{key}={c[key]} must be positive.")
  if not 0.0 <= c.ema_decay < 1.0:
    raise ConfigError(f"config.ema_decay={c.ema_decay} must be in [0, 1).")
  eval_sets(c)


def check_workdir(c: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that holds a different experiment's run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} exists but cannot be read ({e}); use a fresh "
                      "--workdir or remove the file.") from None
  mine = json.loads(c.to_json())
  keys = ("experiment", "dataset", "batch_size", "model", "seed")
  diff = [k for k in keys if old.get(k) != mine.get(k)]
  if diff:
    raise ConfigError(
        f"--workdir={workdir} holds a different run (config.json differs in "
        f"{', '.join(diff)}). Use a new --workdir, or the same config to "
        "resume that run.")
