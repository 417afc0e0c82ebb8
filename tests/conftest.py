"""Test setup: 8 fake CPU devices so that sharded code paths run anywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before JAX is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
from nf_jax.train import parallel  # imports JAX; its backends start later

# The trainer's XLA:CPU speed flags too, so that tests compile like it.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
     *parallel.cpu_compiler_flags()])
