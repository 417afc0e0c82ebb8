"""Reading and validating IDX files (the MNIST / Fashion-MNIST file format).

An IDX file is a big-endian header -- two zero bytes, a dtype code, the number
of dimensions, then one uint32 per dimension -- followed by the raw values.
Files may be gzip-compressed (``*.gz``).
"""
import gzip
import os

import numpy as np


class IdxError(ValueError):
  """An IDX file is missing, truncated, or not what it claims to be."""


# IDX type code -> numpy big-endian dtype.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      head = f.read(2)
      f.seek(0)
      if head == b"\x1f\x8b":  # gzip magic, whatever the file is called
        with gzip.GzipFile(fileobj=f) as g:
          return g.read()
      return f.read()
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise IdxError(f"Cannot read IDX file {path}: {e}") from e


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of an (uncompressed) IDX file into a numpy array."""
  if len(data) < 4:
    raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX header")
  if data[0] != 0 or data[1] != 0:
    raise IdxError(f"{name}: bad magic number {data[:4].hex()} (an IDX file "
                   "starts with two zero bytes, a type code and a rank)")
  code, ndim = data[2], data[3]
  if code not in _DTYPES:
    raise IdxError(f"{name}: unknown IDX type code 0x{code:02x}")
  if ndim == 0:
    raise IdxError(f"{name}: IDX rank must be at least 1")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise IdxError(f"{name}: truncated header")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
  dtype = _DTYPES[code]
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - header != expected:
    raise IdxError(f"{name}: header says shape {shape} ({expected} bytes of "
                   f"data) but the file holds {len(data) - header} bytes; "
                   "the file is truncated or corrupt")
  arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
  return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzip-compressed)."""
  return parse_idx(_read_bytes(path), name=os.fspath(path))


def write_idx(path: str, array: np.ndarray, *, compress: bool = True) -> None:
  """Writes ``array`` (uint8) as an IDX file; used by tests and tools."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f"write_idx only writes uint8, got {array.dtype}")
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(
      array.shape, ">u4").tobytes()
  data = header + array.tobytes()
  if compress:
    with gzip.open(path, "wb") as f:
      f.write(data)
  else:
    with open(path, "wb") as f:
      f.write(data)


def read_images_and_labels(images_path: str, labels_path: str):
  """Reads a (images, labels) IDX pair and checks that they agree.

  Returns:
    images: uint8 [N, H, W, 1]; labels: int64 [N].
  """
  images = read_idx(images_path)
  labels = read_idx(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise IdxError(f"{images_path}: expected uint8 images of rank 3 "
                   f"(magic 0x00000803), got {images.dtype} rank {images.ndim}")
  if labels.ndim != 1 or labels.dtype != np.uint8:
    raise IdxError(f"{labels_path}: expected uint8 labels of rank 1 "
                   f"(magic 0x00000801), got {labels.dtype} rank {labels.ndim}")
  if len(images) != len(labels):
    raise IdxError(f"{images_path} holds {len(images)} images but "
                   f"{labels_path} holds {len(labels)} labels")
  return images[..., None], labels.astype(np.int64)
