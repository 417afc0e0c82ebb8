"""nf_jax.train.parallel: host devices, the mesh and data_parallel."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from nf_jax.train import parallel


def test_configure_host_devices_after_init():
  n = len(jax.devices())  # the backend is up: same count is a no-op
  assert parallel.configure_host_devices(n) == n
  with pytest.raises(RuntimeError, match="already initialized"):
    parallel.configure_host_devices(n + 1)
  with pytest.raises(ValueError, match=">= 1"):
    parallel.configure_host_devices(0)


def test_make_mesh_checks_count():
  mesh = parallel.make_mesh(4)
  assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.devices.size == 4
  with pytest.raises(ValueError, match="only"):
    parallel.make_mesh(len(jax.devices()) + 1)


def test_data_parallel_means_over_devices():
  mesh = parallel.make_mesh(8)

  def per_device(w, x):
    local = jnp.mean(x * w)          # this device's slice only
    return jax.lax.pmean(local, parallel.DATA_AXIS), x.shape[0]

  fn = parallel.data_parallel(per_device, mesh, in_specs=(P(), P("data")),
                              out_specs=(P(), P()))
  x = jax.device_put(jnp.arange(16.0), parallel.batch_sharded(mesh))
  mean, local_rows = fn(jnp.float32(2.0), x)
  np.testing.assert_allclose(mean, 2.0 * np.arange(16.0).mean())
  assert int(local_rows) == 2


def test_conftest_uses_the_trainers_cpu_compiler_flags():
  # Tests compile with the same XLA:CPU flags as the trainer; on the jaxlib
  # this project is tested with, that includes the convolution flag.
  if not parallel.cpu_compiler_flags():
    pytest.skip("this jaxlib release is not in CPU_COMPILER_FLAGS_JAXLIB: "
                "re-run launch.benchmark with the flags and add it there.")
  for flag in parallel.cpu_compiler_flags():
    assert flag in os.environ.get("XLA_FLAGS", "")


def test_cpu_compiler_flags_only_on_checked_jaxlib(monkeypatch):
  monkeypatch.setattr(parallel.importlib.metadata, "version",
                      lambda name: "99.1.0")
  assert parallel.cpu_compiler_flags() == ()
  monkeypatch.setattr(parallel.importlib.metadata, "version",
                      lambda name: "0.10.7")
  assert parallel.cpu_compiler_flags() == parallel.CPU_COMPILER_FLAGS


def test_configure_host_devices_sets_flags_and_keeps_the_users(monkeypatch):
  # As if called before JAX started: the flags it would put in XLA_FLAGS.
  monkeypatch.setattr(parallel, "_backends_initialized", lambda: False)
  n = len(jax.devices())
  monkeypatch.setenv("XLA_FLAGS", "")
  assert parallel.configure_host_devices(n) == n
  flags = os.environ["XLA_FLAGS"].split()
  assert f"--xla_force_host_platform_device_count={n}" in flags
  for flag in parallel.HOST_COLLECTIVE_FLAGS + parallel.cpu_compiler_flags():
    assert flag in flags
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
  monkeypatch.setenv("XLA_FLAGS", mine)
  parallel.configure_host_devices(n)
  flags = os.environ["XLA_FLAGS"].split()
  assert mine in flags and not set(parallel.cpu_compiler_flags()) & set(flags)
