"""Multi-process setup: `jax.distributed.initialize` when a run spans hosts.

* Explicit: `--coordinator_address=host:port --num_processes=N
  --process_id=i` (any cluster, or several processes on one machine).
* Auto-detected: TPU VM pods and SLURM jobs with more than one task, where
  JAX reads the topology from the environment.
* Otherwise a single process: nothing to do.

Processes watch each other through the coordination service's heartbeats: if
one dies, the others abort with an error after `heartbeat_timeout_seconds`
instead of waiting forever in a collective. On CPU, cross-process
collectives use gloo.
"""

import logging
import os
from typing import Optional

import jax

log = logging.getLogger(__name__)


def _cluster_detected() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               heartbeat_timeout_seconds: int = 60) -> bool:
  """Joins the multi-process run if there is one; returns whether it did.

  Must run before JAX initializes its backends.
  """
  explicit = coordinator_address is not None
  if explicit and (num_processes is None or process_id is None):
    raise ValueError("--coordinator_address needs --num_processes and "
                     "--process_id as well.")
  if not explicit and not _cluster_detected():
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  log.info("Process %d of %d joined the run.", jax.process_index(),
           jax.process_count())
  return True
