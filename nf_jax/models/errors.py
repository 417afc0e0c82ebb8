"""Errors raised for bad model configuration."""

from typing import Iterable


class UnknownNameError(ValueError):
  """An unknown model, variant or activation name; lists the valid names."""

  def __init__(self, kind: str, name, valid: Iterable[str]):
    self.kind, self.name, self.valid = kind, name, list(valid)
    super().__init__(f"Unknown {kind} {name!r}. Valid {kind} names: "
                     f"{', '.join(self.valid)}.")
