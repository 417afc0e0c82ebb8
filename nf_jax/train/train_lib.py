"""`train_and_evaluate(config, workdir)`: the training loop, top to bottom.

Sections: config checks, mesh, data, model and optimizer, workdir records,
step functions, loop (log, evaluate). Everything that can be wrong with the
config is reported before anything is compiled or written.
"""

import json
import logging
import math
import os
import signal
import time
from typing import Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from nf_jax.data import input_pipeline
from nf_jax.models import registry
from nf_jax.models.counting import count_macs, count_params
from nf_jax.train import config_lib, optimizer, parallel
from nf_jax.train.checkpoint import Checkpointer, abstract_like
from nf_jax.train.metrics import MetricsWriter, Progress
from nf_jax.train.steps import TrainState, make_eval_step, make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  """The loss or gradient became NaN/Inf and config.on_nonfinite == 'stop'."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""


class _StopFlag:
  """Turns SIGTERM (a preemption notice) into a flag the loop polls."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _truncate_metrics(workdir: str, step: int) -> None:
  """On resume, lines logged after the restored step move to
  metrics.preempted.jsonl: they are re-run, so the main file stays one
  record per step, and nothing is deleted."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep, moved = [], []
  for line in lines:
    try:
      (keep if json.loads(line)["step"] <= step else moved).append(line)
    except (ValueError, KeyError):
      moved.append(line)  # a line cut short by the crash
  if not moved:
    return
  with open(os.path.join(workdir, "metrics.preempted.jsonl"), "a") as f:
    f.writelines(moved)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


def _set_precision(model_name: str, precision: str) -> None:
  """Haiku mixed-precision policies: float32 params, compute in `precision`;
  BatchNorm always computes in float32."""
  cls = registry.module_class(model_name)
  if precision == "float32":
    hk.mixed_precision.clear_policy(cls)
    hk.mixed_precision.clear_policy(hk.BatchNorm)
    return
  hk.mixed_precision.set_policy(cls, jmp.get_policy(
      f"params=float32,compute={precision},output=float32"))
  hk.mixed_precision.set_policy(hk.BatchNorm, jmp.get_policy("float32"))


def _data_info(config):
  try:
    return input_pipeline.dataset_info(config.dataset, config.data_dir)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.dataset={config.dataset!r}: {e}") \
        from None


def setup(config: ml_collections.ConfigDict, workdir: Optional[str] = None):
  """Resolves and checks the config; returns (config, mesh, data info)."""
  config = config_lib.resolve(config)
  # config.num_devices counts devices per process (0: all local devices).
  local = config.num_devices or jax.local_device_count()
  if local > jax.local_device_count():
    raise config_lib.ConfigError(
        f"config.num_devices={local} but this process sees only "
        f"{jax.local_device_count()} {jax.devices()[0].platform} devices.")
  by_process = {}
  for d in jax.devices():
    by_process.setdefault(d.process_index, []).append(d)
  devices = [d for p in sorted(by_process) for d in by_process[p][:local]]
  num_devices = len(devices)
  config_lib.validate(config, num_devices, jax.process_count())
  info = _data_info(config)
  for name, _ in config_lib.eval_sets(config):
    eval_info = _data_info(ml_collections.ConfigDict(
        {"dataset": name, "data_dir": config.data_dir}))
    if eval_info.num_classes != info.num_classes:
      raise config_lib.ConfigError(
          f"eval set {name!r} has {eval_info.num_classes} classes but the "
          f"training set {config.dataset!r} has {info.num_classes}; eval sets "
          "must share the training label space.")
  if workdir is not None:
    config_lib.check_workdir(config, workdir)
  mesh = parallel.make_mesh(devices=devices)
  return config, mesh, info


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)  # atomic: never a half-written file


def _evaluate(eval_step, params, model_state, config, mesh, info) -> Dict:
  sharding = parallel.batch_sharded(mesh)
  local_batch = config.batch_size // jax.process_count()
  results = {}
  for name, split in config_lib.eval_sets(config):
    totals = None
    for batch in input_pipeline.eval_batches(
        name, split, batch_size=local_batch,
        image_size=config.eval_image_size, data_dir=config.data_dir):
      sums = eval_step(params, model_state,
                       input_pipeline.to_global_batch(batch, sharding))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    n = max(float(totals["count"]), 1.0)
    for k in ("loss", "top1", "top5"):
      results[f"eval/{name}/{split}/{k}"] = float(totals[k]) / n
  del info
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains and evaluates; returns the last logged metrics."""
  # -- Config checks and mesh (nothing written, nothing compiled yet) -----
  config, mesh, info = setup(config, workdir)
  is_chief = jax.process_index() == 0
  num_devices = mesh.devices.size

  # -- Data -----------------------------------------------------------------
  image_size = config.image_size or info.image_shape[0]
  local_batch = config.batch_size // jax.process_count()
  train_it = input_pipeline.train_iterator(
      config.dataset, config.train_split, batch_size=local_batch,
      seed=config.seed, image_size=config.image_size,
      augment=config.augment.kind, mixup_alpha=config.augment.mixup_alpha,
      cutmix_alpha=config.augment.cutmix_alpha,
      randaugment_layers=config.augment.randaugment_layers,
      randaugment_magnitude=config.augment.randaugment_magnitude,
      data_dir=config.data_dir, num_workers=config.num_data_workers)
  num_train = info.num_examples[config.train_split]
  steps_per_epoch = num_train // config.batch_size
  total_steps = 1 if config.dry_run else max(
      1, int(math.ceil(config.num_epochs * steps_per_epoch)))

  # -- Model and optimizer ----------------------------------------------------
  _set_precision(config.model.name, config.precision)
  model_kwargs = {k: v for k, v in config.model.kwargs.items()
                  if v is not None}
  if config.model.name == "bn_resnet" and config.sync_batchnorm:
    model_kwargs["bn_cross_replica_axis"] = parallel.DATA_AXIS
  model = registry.transform(config.model.name, info.num_classes,
                             config.model.variant, **model_kwargs)
  schedule = optimizer.learning_rate_schedule(
      config.optimizer, config.batch_size, total_steps, steps_per_epoch)
  tx = optimizer.make_optimizer(config.optimizer, schedule)
  input_shape = (image_size, image_size, info.image_shape[-1])
  macs = count_macs(model, input_shape)
  model_info = {"params": count_params(model, input_shape),
                "macs_per_example": macs,
                # forward + backward = 3 forward passes, 2 FLOPs per MAC
                "flops_per_example": 6 * macs,
                "image_size": image_size, "num_devices": num_devices,
                "num_processes": jax.process_count()}

  per_device = config.batch_size // num_devices
  dummy = jnp.zeros((per_device,) + input_shape, jnp.float32)

  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state = model.init(init_rng, dummy, is_training=True)
    return TrainState(params, model_state, tx.init(params), params,
                      jnp.zeros((), jnp.int32), state_rng,
                      jnp.zeros((), jnp.int32))

  state = jax.jit(init_state, out_shardings=parallel.replicated(mesh))(
      jax.random.PRNGKey(config.seed))

  # -- Restore: the same workdir resumes where the last good checkpoint was --
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      config.keep_checkpoints)
  restored = ckpt.restore_latest(abstract_like(state))
  if restored is not None:
    restored_step, state, data_state = restored
    train_it.set_state(data_state)
    if is_chief:
      _truncate_metrics(workdir, restored_step)
    if restored_step >= total_steps:
      log.info("Run in %s already finished at step %d; nothing to do.",
               workdir, restored_step)
      ckpt.close()
      train_it.close()
      return {"step": restored_step, "already_finished": True}
    log.info("Resuming from the checkpoint at step %d.", restored_step)

  # -- Workdir records (only once the config is known to be good) -------------
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), json.loads(
        config.to_json()))
    _write_json(os.path.join(workdir, "model_info.json"), model_info)
  writer = MetricsWriter(workdir, enabled=is_chief)
  progress = Progress(total_steps, enabled=is_chief)

  # -- Step functions -----------------------------------------------------------
  train_step = parallel.data_parallel(
      make_train_step(model, tx, schedule,
                      label_smoothing=config.label_smoothing,
                      ema_decay=config.ema_decay,
                      skip_nonfinite=config.on_nonfinite == "skip"),
      mesh, in_specs=(P(), P(parallel.DATA_AXIS)), out_specs=(P(), P()),
      donate_argnums=(0,))
  eval_step = parallel.data_parallel(
      make_eval_step(model), mesh,
      in_specs=(P(), P(), P(parallel.DATA_AXIS)), out_specs=P())
  batch_sharding = parallel.batch_sharded(mesh)
  eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))

  # -- Loop ---------------------------------------------------------------------------
  step = int(state.step)
  pending, last = [], {}
  t_log, step_log = time.time(), step
  t_ckpt = time.time()
  progress.start(step)
  log.info("Training %s for %d steps (%d per epoch) on %d device(s).",
           config.model.name, total_steps, steps_per_epoch, num_devices)
  with _StopFlag() as stop:
    while step < total_steps:
      batch = input_pipeline.to_global_batch(next(train_it), batch_sharding)
      state, metrics = train_step(state, batch)
      pending.append(metrics)
      step += 1
      is_last = step == total_steps
      stopping = stop.requested  # read once: the signal can come any time
      save_due = (is_last or stopping or
                  step % config.checkpoint_every_steps == 0 or
                  time.time() - t_ckpt > 60 * config.checkpoint_every_minutes)
      if (step % config.log_every_steps and not is_last and step % eval_every
          and not save_due):
        continue
      # Fetch the accumulated per-step metrics; check finiteness first.
      fetched = jax.device_get(pending)
      pending = []
      _check_finite(fetched, step, config.on_nonfinite)
      elapsed = time.time() - t_log
      record = {k: float(np.mean([m[k] for m in fetched]))
                for k in ("train/loss", "train/top1", "grad_norm")}
      record.update({
          "lr": float(fetched[-1]["lr"]),
          "examples_seen": step * config.batch_size,
          "epoch": step / steps_per_epoch,
          "flops": float(step) * config.batch_size * model_info[
              "flops_per_example"],
          "images_per_sec": (step - step_log) * config.batch_size / max(
              elapsed, 1e-9),
          "nonfinite_skips": int(state.nonfinite_skips)})
      if step % eval_every == 0 or is_last:
        params = state.ema_params if config.ema_decay > 0 else state.params
        evaluation = _evaluate(eval_step, params, state.model_state, config,
                               mesh, info)
        record.update(evaluation)
      else:
        evaluation = {}
      writer.write(step, record)
      progress.update(step, record["train/loss"], record["images_per_sec"],
                      final=is_last)
      progress.evaluation(step, evaluation)
      last = record
      if save_due:
        ckpt.save(step, state, train_it.get_state())
        t_ckpt = time.time()
      t_log, step_log = time.time(), step  # eval and saving are not training
      if stopping and not is_last:
        writer.close()
        ckpt.close()
        raise Preempted(f"SIGTERM at step {step}: checkpoint saved in "
                        f"{ckpt.directory}; rerun the same command to resume.")
  writer.close()
  ckpt.close()
  train_it.close()
  return last


def _check_finite(fetched, step: int, on_nonfinite: str) -> None:
  first_step = step - len(fetched) + 1
  for i, m in enumerate(fetched):
    if not bool(m["finite"]) and on_nonfinite == "stop":
      raise NonFiniteError(
          f"Non-finite loss or gradient at step {first_step + i} "
          f"(loss={float(m['train/loss'])}, grad_norm="
          f"{float(m['grad_norm'])}). Lower the learning rate, enable AGC "
          "(--config.optimizer.agc_clip=0.01), or set "
          "--config.on_nonfinite=skip to skip such updates.")
