"""The optimizer chain: AGC -> decoupled-from-gains weight decay -> Nesterov SGD.

Gradients reach `update` already all-reduced (`lax.pmean` in the train step),
so AGC clips the global gradient. Order, as in the NFNet paper's recipe:

  1. adaptive gradient clipping (unit-wise, lambda = `agc_clip`) of every
     parameter except the classifier weight, as in the original NFNet code;
  2. L2 weight decay on conv and linear weights only (params named `w`);
     gains, biases, skip gains and BatchNorm scale/offset are not decayed;
  3. SGD with Nesterov momentum and a warmup + cosine learning-rate schedule.
"""

from typing import Callable

import jax
import ml_collections
import optax


def _path_names(path):
  return [getattr(k, "key", getattr(k, "name", str(k))) for k in path]


def is_weight(path, _) -> bool:
  """True for conv/linear weights (`.../w`): the leaves that get decayed."""
  return _path_names(path)[-1] == "w"


def agc_mask(exclude: str) -> Callable:
  """Mask for AGC: every parameter except the weight of modules whose name
  contains `exclude` (the classifier)."""
  def clipped(path, value):
    names = _path_names(path)
    excluded = bool(exclude) and any(exclude in n for n in names[:-1])
    return not (excluded and is_weight(path, value))
  return lambda params: jax.tree_util.tree_map_with_path(clipped, params)


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(is_weight, params)


def learning_rate_schedule(opt: ml_collections.ConfigDict, batch_size: int,
                           total_steps: int, steps_per_epoch: float):
  """LR = base_lr * batch / 256, linear warmup, then cosine decay to 0."""
  peak = opt.base_lr * batch_size / 256.0
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  warmup = min(warmup, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup,
                                            max(total_steps, 1), 0.0)


def make_optimizer(opt: ml_collections.ConfigDict,
                   schedule) -> optax.GradientTransformation:
  parts = []
  if opt.agc_clip > 0:
    parts.append(optax.masked(optax.adaptive_grad_clip(opt.agc_clip),
                              agc_mask(opt.agc_exclude)))
  if opt.weight_decay > 0:
    parts.append(optax.add_decayed_weights(opt.weight_decay, decay_mask))
  parts.append(optax.sgd(schedule, momentum=opt.momentum,
                         nesterov=opt.nesterov))
  return optax.chain(*parts)
