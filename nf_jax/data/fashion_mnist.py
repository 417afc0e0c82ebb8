"""Fashion-MNIST as a TFDS dataset of the project's own (``nf_fashion_mnist``).

TFDS's ``fashion_mnist`` checks the checksums of the gzip files it downloads;
the Debian package ``dataset-fashion-mnist`` ships the same data with different
gzip headers, so TFDS rejects it. This builder reads the IDX files itself from
the first of these places that has all four:

  1. a directory given as ``source_dir`` (``prepare(source_dir=...)``) or in
     the environment variable ``NF_JAX_FASHION_MNIST_DIR``;
  2. the Debian package's directory ``/usr/share/datasets/fashion-mnist``;
  3. a download of the canonical files (short timeout; needs the network).

It writes an ``array_record`` dataset into ``data_dir`` (argument, else
``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``) once; later calls reuse it.
TFDS writes into an ``incomplete.*`` directory and renames it only when every
split is written, so an interrupted build never looks prepared, and a file lock
keeps concurrent processes from building at the same time.
No TensorFlow is needed, neither to build nor to read.
"""
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import urllib.request

import numpy as np
import tensorflow_datasets as tfds

from nf_jax.data import idx
from nf_jax.data.errors import DatasetError

NAME = "nf_fashion_mnist"
ENV_SOURCE_DIR = "NF_JAX_FASHION_MNIST_DIR"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOAD_TIMEOUT_S = 10.0
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal",
               "shirt", "sneaker", "bag", "ankle_boot")
MEAN = (0.2860,)
STD = (0.3530,)


def default_data_dir(data_dir=None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or (
      "~/tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def _file_in(directory: str, name: str):
  """The path of `name` (or its uncompressed twin) in `directory`, or None."""
  for candidate in (name, name[:-len(".gz")]):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def _missing(directory: str):
  return [n for pair in FILES.values() for n in pair
          if _file_in(directory, n) is None]


def _download(target_dir: str, base_url: str, timeout: float) -> None:
  os.makedirs(target_dir, exist_ok=True)
  for name in (n for pair in FILES.values() for n in pair):
    if _file_in(target_dir, name):
      continue
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=name + ".")
    try:
      with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
          base_url + name, timeout=timeout) as response:
        shutil.copyfileobj(response, out)
      idx.read_idx(tmp)  # validate before it gets its final name
      os.replace(tmp, os.path.join(target_dir, name))
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)


def find_source_dir(source_dir=None, *, download_dir=None,
                    base_url=None, timeout=None) -> str:
  """Returns a directory holding the four Fashion-MNIST IDX files.

  Tries (1) `source_dir` or $NF_JAX_FASHION_MNIST_DIR, (2) DEBIAN_DIR,
  (3) downloading into `download_dir`; raises one DatasetError naming all
  three when none works.
  """
  tried = []
  explicit = source_dir or os.environ.get(ENV_SOURCE_DIR)
  if explicit:
    explicit = os.path.expanduser(os.fspath(explicit))
    missing = _missing(explicit)
    if not missing:
      return explicit
    tried.append(f"(1) directory {explicit!r} (argument or ${ENV_SOURCE_DIR})"
                 f": missing {', '.join(missing)}")
    logging.warning("Fashion-MNIST: %s; trying the next source.", tried[-1])
  else:
    tried.append(f"(1) a directory given as argument (source_dir=) or in "
                 f"${ENV_SOURCE_DIR}: not set")
  if not _missing(DEBIAN_DIR):
    return DEBIAN_DIR
  tried.append(f"(2) Debian package dataset-fashion-mnist in {DEBIAN_DIR}: "
               f"not installed (apt-get install dataset-fashion-mnist)")
  base_url = base_url or BASE_URL
  if download_dir is not None:
    try:
      _download(download_dir, base_url,
                DOWNLOAD_TIMEOUT_S if timeout is None else timeout)
      return download_dir
    except (OSError, ValueError) as e:
      tried.append(f"(3) download from {base_url}: failed ({e})")
  else:
    tried.append("(3) download: no download directory")
  raise DatasetError("Cannot find the Fashion-MNIST IDX files "
                     "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
                     " t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)."
                     " Tried:\n  " + "\n  ".join(tried) +
                     "\nProvide any one of these.")


class NfFashionMnist(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST read from local gzip IDX files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built from IDX files; Tensor image feature."}
  # No TFDS checksum file: this builder validates the IDX files itself (and
  # TFDS's checksum lookup needs the `importlib_resources` backport).
  url_infos = None

  def __init__(self, *, source_dir=None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al. 2017), 28x28 grayscale, "
                    "10 classes, read from local IDX files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=(28, 28, 1), dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    source = find_source_dir(
        self._source_dir,
        download_dir=os.path.join(os.fspath(self.data_dir_root), "downloads",
                                  "nf_fashion_mnist"))
    logging.info("Building %s from %s", NAME, source)
    out = {}
    for split, (images_name, labels_name) in FILES.items():
      images, labels = idx.read_images_and_labels(
          _file_in(source, images_name), _file_in(source, labels_name))
      if images.shape[1:3] != (28, 28):
        raise DatasetError(f"{source}/{images_name}: images are "
                           f"{images.shape[1:3]}, Fashion-MNIST is 28x28")
      if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{source}/{labels_name}: label {labels.max()} "
                           "out of range 0..9")
      out[split] = self._generate_examples(images, labels)
    return out

  def _generate_examples(self, images, labels):
    for i in range(len(images)):
      yield i, {"image": images[i], "label": int(labels[i])}


@contextlib.contextmanager
def _lock(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(data_dir=None, source_dir=None) -> NfFashionMnist:
  """Builds the dataset into `data_dir` unless it is there; returns builder."""
  data_dir = default_data_dir(data_dir)
  builder = NfFashionMnist(data_dir=data_dir, source_dir=source_dir,
                           file_format="array_record")
  if builder.is_prepared():
    return builder
  with _lock(os.path.join(data_dir, f".{NAME}.lock")):
    builder = NfFashionMnist(data_dir=data_dir, source_dir=source_dir,
                             file_format="array_record")
    if not builder.is_prepared():
      builder.download_and_prepare()
      builder = NfFashionMnist(data_dir=data_dir, source_dir=source_dir,
                               file_format="array_record")
  return builder
