"""The data package's one exception type."""


class DatasetError(ValueError):
  """A dataset cannot be found, built or read; the message says what to do."""
