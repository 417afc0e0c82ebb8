"""Exceptions and warnings raised by nf_jax.scaling."""


class ScalingDataError(ValueError):
  """Bad input data: one clear message naming the file, line or run, and the problem."""


class ScalingFitWarning(UserWarning):
  """A fit finished but did not converge (or converged only approximately)."""
