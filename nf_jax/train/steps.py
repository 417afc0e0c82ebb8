"""Per-device train and eval steps over the named mesh axis `data`.

Written in the pmap programming model: each function sees its device's slice
of the global batch, all-reduces with `lax.pmean`/`lax.psum` over `data`, and
returns replicated results. `nf_jax.train.parallel.data_parallel` maps them
over the device mesh with `jax.shard_map` inside `jax.jit`.
"""

from typing import Any, Callable, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

AXIS = "data"


class TrainState(NamedTuple):
  """Everything a run needs to continue: one small pytree."""
  params: Any
  model_state: Any
  opt_state: Any
  ema_params: Any    # None-free: equals params when the EMA is off
  step: jax.Array    # int32 scalar
  rng: jax.Array     # base key; per-step keys are fold_in(rng, step)
  nonfinite_skips: jax.Array  # int32: updates skipped for NaN/Inf


def cross_entropy(logits, label_dist, smoothing: float):
  num_classes = logits.shape[-1]
  targets = label_dist * (1.0 - smoothing) + smoothing / num_classes
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(model: hk.TransformedWithState,
                    tx: optax.GradientTransformation, schedule: Callable,
                    *, label_smoothing: float, ema_decay: float,
                    skip_nonfinite: bool):
  """Returns train_step(state, batch) -> (state, metrics), per device."""

  def loss_fn(params, model_state, rng, batch):
    logits, model_state = model.apply(params, model_state, rng,
                                      batch["image"], is_training=True)
    loss = jnp.mean(cross_entropy(logits, batch["label_dist"],
                                  label_smoothing))
    top1 = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (model_state, top1)

  def train_step(state: TrainState, batch):
    # Distinct randomness per step and per device (dropout, stochastic depth).
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                             jax.lax.axis_index(AXIS))
    # Mark the replicated params as per-device values so that their gradient
    # is this device's gradient (shard_map would otherwise psum it for us),
    # then average explicitly: the pmap programming model.
    params = jax.lax.pcast(state.params, AXIS, to="varying")
    (loss, (model_state, top1)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, state.model_state, rng, batch)
    grads, loss, top1, model_state = jax.lax.pmean(
        (grads, loss, top1, model_state), AXIS)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if ema_decay > 0:
      ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
    else:
      ema = params
    new = TrainState(params, model_state, opt_state, ema, state.step + 1,
                     state.rng, state.nonfinite_skips)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:  # keep the old state but count the step as taken
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new,
                         state._replace(step=state.step + 1))
      new = new._replace(nonfinite_skips=state.nonfinite_skips +
                         (~finite).astype(jnp.int32))
    metrics = {"train/loss": loss, "train/top1": top1,
               "grad_norm": grad_norm, "lr": schedule(state.step),
               "finite": finite}
    return new, metrics

  return train_step


def make_eval_step(model: hk.TransformedWithState):
  """Returns eval_step(params, model_state, batch) -> summed metrics.

  The loss is the plain cross-entropy (no label smoothing): the quantity
  that scaling laws are fitted to.
  """

  def eval_step(params, model_state, batch):
    logits, _ = model.apply(params, model_state, None, batch["image"],
                            is_training=False)
    mask = batch["mask"].astype(jnp.float32)
    one_hot = jax.nn.one_hot(batch["label"], logits.shape[-1])
    loss = cross_entropy(logits, one_hot, 0.0)
    top5_idx = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    top1 = jnp.argmax(logits, -1) == batch["label"]
    top5 = jnp.any(top5_idx == batch["label"][:, None], axis=-1)
    sums = {"loss": jnp.sum(loss * mask), "top1": jnp.sum(top1 * mask),
            "top5": jnp.sum(top5 * mask), "count": jnp.sum(mask)}
    return jax.lax.psum(sums, AXIS)

  return eval_step
