"""Data parallelism over a 1-D device mesh, including forced host CPU devices.

On a CPU machine a plain `jax.jit` step keeps about one core busy. Splitting
each batch over several *host devices* (one XLA:CPU device per core, via
`--xla_force_host_platform_device_count`) runs the per-device programs
concurrently and is how this project trains on CPU.

Usage (before anything touches a JAX backend)::

    parallel.configure_host_devices(2)      # no-op on GPU/TPU hosts
    mesh = parallel.make_mesh()
    step = parallel.data_parallel(per_device_step, mesh,
                                  in_specs=(P(), P('data')),
                                  out_specs=(P(), P()))

`per_device_step` sees its slice of the batch and is written over the named
axis `'data'`: gradients and metrics are `lax.pmean(x, 'data')`'d.

Reliable collectives on host devices
------------------------------------
XLA:CPU implements an in-process all-reduce as a rendezvous of the
participating devices. Its "collective call" rendezvous aborts the process
after `--xla_cpu_collective_call_terminate_timeout_seconds` (default 40 s)
with "rendezvous termination timeout" when one device's program arrives that
much later than the other's. On a small, shared CPU, one device can lag that
far behind (all host devices share one intra-op thread pool sized to the
cores, which they also share with the compiler and other processes; a
ResNet-50 forward and backward pass before the gradient all-reduce takes tens
of seconds on a loaded 2-core machine). This is the likely cause of the abort
seen on an NF model; it was not reproduced while writing this (the flags are
from openxla/xla#32115, for jax-ml/jax#31818).
`HOST_COLLECTIVE_FLAGS` raises that limit, and the warning threshold, so a
slow step waits instead of killing the run; a genuinely hung program still
aborts, after 10 minutes.
"""

import importlib.metadata
import os
import re
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Appended to XLA_FLAGS by `configure_host_devices`. See the module docstring.
HOST_COLLECTIVE_FLAGS = (
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120",
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
    "--xla_cpu_collective_timeout_seconds=1800",
)

# Also appended by `configure_host_devices`, for speed on CPU: XLA:CPU's own
# convolution kernels instead of YNNPACK's (YNNPACK keeps its matmuls and
# reductions). NF-ResNet-50's training step at batch 16, 128 px ran ~1.14x
# faster with it, together with that session's `layers.conv2d`, which sent
# 1x1 kernels to XLA's convolution instead of a matmul (docs/benchmark.md,
# second session). The flag is experimental in XLA and XLA aborts on
# flags it does not know, so it is only added on the jaxlib releases it was
# checked with (`cpu_compiler_flags()`); a user's own value in XLA_FLAGS wins.
CPU_COMPILER_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)
CPU_COMPILER_FLAGS_JAXLIB = ((0, 10),)   # (major, minor) releases checked


def cpu_compiler_flags() -> tuple:
  """`CPU_COMPILER_FLAGS` on a checked jaxlib release, else ()."""
  try:
    version = importlib.metadata.version("jaxlib")
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return ()
  return CPU_COMPILER_FLAGS if major_minor in CPU_COMPILER_FLAGS_JAXLIB else ()

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def _backends_initialized() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # pragma: no cover - API drift
    return False


def _flag_value(flags: str, name: str) -> Optional[str]:
  m = re.search(re.escape(name) + r"=(\S+)", flags)
  return m.group(1) if m else None


def configure_host_devices(num_devices: Optional[int] = None) -> int:
  """Makes the CPU backend expose `num_devices` devices (default: all cores).

  Sets `XLA_FLAGS` (device count, the collective timeouts of
  `HOST_COLLECTIVE_FLAGS` and the speed flags of `cpu_compiler_flags()`;
  flags already in `XLA_FLAGS` keep their value) and must run before JAX
  initializes its backends, i.e. before the first `jax.devices()`, array
  creation or `jit` call.
  Idempotent: calling it again with the same count does nothing. Returns the
  number of CPU devices that will be (or already are) available.

  Raises:
    ValueError: `num_devices` < 1.
    RuntimeError: backends were already initialized with a different count
      (too late to change it in this process).
  """
  if num_devices is None:
    num_devices = os.cpu_count() or 1
  num_devices = int(num_devices)
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
  if _backends_initialized():
    have = len(jax.devices("cpu"))
    if have != num_devices:
      raise RuntimeError(
          f"JAX's CPU backend is already initialized with {have} device(s); "
          f"cannot switch to {num_devices}. Call configure_host_devices("
          f"{num_devices}) before any JAX computation, or start the process "
          f"with XLA_FLAGS={_DEVICE_COUNT_FLAG}={num_devices}.")
    return have
  flags = os.environ.get("XLA_FLAGS", "")
  current = _flag_value(flags, _DEVICE_COUNT_FLAG)
  if current is not None and int(current) != num_devices:
    flags = re.sub(re.escape(_DEVICE_COUNT_FLAG) + r"=\S+", "", flags)
    current = None
  parts = flags.split()
  if current is None:
    parts.append(f"{_DEVICE_COUNT_FLAG}={num_devices}")
  for flag in HOST_COLLECTIVE_FLAGS + cpu_compiler_flags():
    name = flag.split("=")[0]
    if _flag_value(flags, name) is None:  # keep a user's explicit choice
      parts.append(flag)
  os.environ["XLA_FLAGS"] = " ".join(parts)
  # jax_num_cpu_devices overrides the XLA flag when set; keep them in step.
  try:
    jax.config.update("jax_num_cpu_devices", num_devices)
  except (AttributeError, ValueError, RuntimeError):  # pragma: no cover
    pass
  return num_devices


def make_mesh(num_devices: Optional[int] = None,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh over axis `'data'` of the first `num_devices` devices."""
  if devices is None:
    devices = jax.devices()
    if num_devices is not None:
      if num_devices > len(devices):
        raise ValueError(f"Asked for {num_devices} devices but only "
                         f"{len(devices)} are available ({devices[0].platform}"
                         f"); call configure_host_devices({num_devices}) "
                         "first on CPU.")
      devices = devices[:num_devices]
  return Mesh(list(devices), (DATA_AXIS,))


def data_parallel(per_device_fn: Callable, mesh: Mesh, in_specs, out_specs,
                  donate_argnums: Sequence[int] = ()) -> Callable:
  """`jax.jit(jax.shard_map(per_device_fn, ...))` over `mesh`.

  `in_specs` / `out_specs` follow `jax.shard_map`: `P()` for replicated
  values (parameters, optimizer state), `P('data')` for values split along
  their leading axis (the batch). The per-device function reduces over the
  named axis itself (`lax.pmean(grads, 'data')`).
  """
  mapped = jax.shard_map(per_device_fn, mesh=mesh, in_specs=in_specs,
                         out_specs=out_specs)
  return jax.jit(mapped, donate_argnums=tuple(donate_argnums))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))
