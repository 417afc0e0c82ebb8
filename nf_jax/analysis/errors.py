"""Errors of the signal-propagation analysis: one line each, all ValueErrors."""


class SPPError(ValueError):
  """Bad input to a signal propagation plot; the message says what to fix."""


class ModelOptionError(SPPError):
  """An SPP option the chosen model cannot honour (e.g. WS off on an NFNet)."""


class InputShapeError(SPPError):
  """The input batch does not fit the model (rank, channels, size)."""


class NonFiniteStatisticError(SPPError):
  """A statistic is NaN or infinite; names the first block where it appears."""

  def __init__(self, message: str, point: int):
    super().__init__(message)
    self.point = point
