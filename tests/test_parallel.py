"""nf_jax.train.parallel: host devices, the mesh and data_parallel."""

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
