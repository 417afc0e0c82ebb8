"""Test setup: 8 fake CPU devices so that sharded code paths run anywhere."""

import os

# The trainer's XLA:CPU flags too (nf_jax.train.parallel.CPU_COMPILER_FLAGS,
# spelled out here because importing nf_jax would import JAX first).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") +
    " --xla_force_host_platform_device_count=8"
    " --xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
