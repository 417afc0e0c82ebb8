"""Preemption-safe checkpoints with orbax.

* `Checkpointer.save(step, state, data_state)` writes the train state and the
  input iterator's state as one atomic orbax checkpoint (orbax writes to a
  temporary directory and renames it when complete, on every process), and
  keeps the last `keep` of them.
* `Checkpointer.restore_latest(abstract_state)` returns the newest checkpoint
  that restores cleanly. A damaged one (unreadable, truncated, or holding
  non-finite values) is moved aside to `damaged/` with a warning, never
  deleted, and the previous one is tried, so the last good checkpoint is
  never lost to retention.
* Non-finite states are refused by `save` (`NonFiniteStateError`).
"""

import logging
import os
import shutil
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class NonFiniteStateError(FloatingPointError):
  """Refused to checkpoint a state holding NaN or Inf."""


def all_finite(tree) -> bool:
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  if not leaves:
    return True
  return bool(jax.device_get(jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(x)) for x in leaves]))))


class Checkpointer:
  """Saves and restores (train state, data-iterator state) under `directory`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=False))

  def steps(self):
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict) -> None:
    if not all_finite(state):
      raise NonFiniteStateError(
          f"Not checkpointing step {step}: the state holds NaN/Inf.")
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state)), force=True)
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state) -> Optional[Tuple[int, Any, dict]]:
    """(step, state, data_state) of the newest good checkpoint, or None."""
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
        if not all_finite(restored.state):
          raise NonFiniteStateError("restored values are not finite")
        return step, restored.state, restored.data
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(self.directory, "damaged", str(step))
    log.warning("Checkpoint at step %d is damaged (%s: %s); moving it to %s "
                "and falling back to the previous one.", step,
                type(error).__name__, str(error)[:200], dst)
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      if os.path.exists(dst):
        shutil.rmtree(dst)
      os.replace(src, dst)
    self._manager.reload()

  def close(self):
    self._manager.close()


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) for restoring into `state`'s layout."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype,
                                     sharding=getattr(x, "sharding", None)),
      state)
