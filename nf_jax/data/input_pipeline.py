"""The input pipeline: TFDS sources, grain execution, numpy augmentation.

    info = dataset_info(name, data_dir=None)
    it = train_iterator(name, split, batch_size=..., seed=..., ...)
    batch = next(it)   # image f32 [B,H,W,C], label i32 [B], label_dist f32 [B,K]
    state = it.get_state(); it.set_state(state)      # JSON-serializable
    for batch in eval_batches(name, split, batch_size=...): ...  # + mask
    global_batch = to_global_batch(batch, sharding)

Design:
- Training batch `step` is a pure function of (seed, process, step): epoch
  `e = step // steps_per_epoch` uses permutation `e` of this process's shard;
  augmentation uses `np.random.default_rng([seed, process_index, step])`.
  So the iterator state is just the next step, and restoring it continues
  with exactly the batches an uninterrupted iterator would produce, whatever
  `num_workers` is.
- grain runs it: `MapDataset.range(steps_per_epoch).repeat()` mapped with the
  batch function, `to_iter_dataset` with a background thread that prepares
  the next batches while the training step runs (`num_workers > 0` adds
  grain worker processes via `mp_prefetch`).
- Sharding: each epoch has one global permutation; training step s uses
  global batch s of it, and process p of P takes rows [p*b, (p+1)*b) of that
  batch. So which examples a step sees does not depend on the process layout
  (augmentation draws do: they are seeded per process). Evaluation: process
  p evaluates examples p, p+P, ...; all processes yield the same number of
  eval batches, padded with mask 0.
- Labels: `label` is the int label (of the un-mixed image); `label_dist` is
  always present, one-hot without mixup/cutmix and soft with them. Label
  smoothing is left to the loss.
"""
import dataclasses
import json
import threading

from absl import flags
import grain
import jax
import numpy as np

from nf_jax.data import augment
from nf_jax.data import sources
from nf_jax.data.errors import DatasetError
from nf_jax.data.sources import DatasetInfo

__all__ = ["DatasetError", "DatasetInfo", "dataset_info", "train_iterator",
           "eval_batches", "to_global_batch", "TrainIterator"]

AUGMENTATIONS = ("none", "pad_crop_flip", "rrc_flip")


def dataset_info(name: str, data_dir=None) -> DatasetInfo:
  """Classes, image shape, split sizes and normalization of a dataset.

  Builds Fashion-MNIST on first use. Raises DatasetError for unknown names.
  """
  return sources.dataset_info(name, data_dir)


def _process(process_index, process_count):
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in "
                     f"[0, {process_count})")
  return process_index, process_count


def _check_size(info, image_size):
  if image_size is None and None in info.image_shape[:2]:
    raise DatasetError(f"Dataset {info.name!r} has variable-size images "
                       f"{info.image_shape}; pass image_size.")


@dataclasses.dataclass(frozen=True)
class _TrainSpec:
  name: str
  split: str
  batch_size: int
  seed: int
  image_size: int | None
  augment: str
  mixup_alpha: float
  cutmix_alpha: float
  randaugment_layers: int
  randaugment_magnitude: float
  process_index: int
  process_count: int


class _TrainBatch:
  """step -> batch; picklable so grain worker processes can run it."""

  def __init__(self, spec: _TrainSpec, data_dir):
    self.spec = spec
    self.data_dir = data_dir
    self.info = sources.dataset_info(spec.name, data_dir)
    self._source = None
    self.num_examples = n = self.info.num_examples[spec.split]
    global_batch = spec.batch_size * spec.process_count
    self.steps_per_epoch = n // global_batch
    if self.steps_per_epoch == 0:
      raise DatasetError(
          f"{spec.name}:{spec.split} has {n} examples; fewer than one global "
          f"batch of {global_batch}.")
    self._perms = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    d = dict(self.__dict__)
    d["_source"], d["_perms"], d["_lock"] = None, {}, None
    return d

  def __setstate__(self, d):
    self.__dict__.update(d)
    self._lock = threading.Lock()

  @property
  def source(self):
    if self._source is None:
      self._source = sources.get_source(self.spec.name, self.spec.split,
                                        self.data_dir)
    return self._source

  def _permutation(self, epoch):
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = np.random.default_rng(
            [self.spec.seed, 0x5EED, epoch]).permutation(self.num_examples)
        self._perms = {e: v for e, v in self._perms.items()
                       if e >= epoch - 1}
        self._perms[epoch] = perm
      return perm

  def indices(self, step: int) -> np.ndarray:
    """Dataset indices of training batch `step` on this process: its slice
    of the global batch, which does not depend on the number of processes."""
    epoch, i = divmod(step, self.steps_per_epoch)
    b, p = self.spec.batch_size, self.spec.process_index
    global_batch = b * self.spec.process_count
    batch = self._permutation(epoch)[i * global_batch:(i + 1) * global_batch]
    return batch[p * b:(p + 1) * b]

  def __call__(self, step: int, _=None) -> dict:
    spec = self.spec
    images, labels = self.source.get(self.indices(step))
    rng = np.random.default_rng([spec.seed, spec.process_index, step])
    size = spec.image_size
    if spec.augment == "rrc_flip":
      if size is None:
        size = self.info.image_shape[0]
      images = augment.rrc_flip(images, size, rng)
    else:
      images = augment.eval_preprocess(images, size)
      if spec.augment == "pad_crop_flip":
        images = augment.pad_crop_flip(images, rng)
    if spec.randaugment_layers > 0:
      images = augment.randaugment(images, spec.randaugment_layers,
                                   spec.randaugment_magnitude, rng)
    image = augment.normalize(images, self.info.mean, self.info.std)
    label_dist = augment.one_hot(labels, self.info.num_classes)
    image, label_dist = augment.mixup_cutmix(
        image, label_dist, rng, spec.mixup_alpha, spec.cutmix_alpha)
    return dict(image=image, label=labels.astype(np.int32),
                label_dist=label_dist)


class TrainIterator:
  """Infinite iterator over training batches with exact get/set_state."""

  def __init__(self, batch_fn: _TrainBatch, num_workers: int = 0,
               num_threads: int = 1, prefetch: int = 4):
    self._fn = batch_fn
    self._num_workers = num_workers
    self._read = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=prefetch)
    self._dataset = (grain.MapDataset.range(batch_fn.steps_per_epoch)
                     .repeat().map_with_index(batch_fn))
    self._step = 0
    self._it = None

  @property
  def steps_per_epoch(self) -> int:
    return self._fn.steps_per_epoch

  @property
  def step(self) -> int:
    """Index of the batch the next `next()` returns."""
    return self._step

  def _start(self):
    ds = self._dataset[self._step:].to_iter_dataset(self._read)
    if self._num_workers > 0:
      # grain's worker processes read absl flags; outside an absl app they
      # are unparsed, which is fine to declare (defaults are used).
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._num_workers))
    self._it = iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._step += 1
    return batch

  def get_state(self) -> dict:
    """JSON-serializable state: the next step and what the batches depend on."""
    return {"step": self._step, "spec": dataclasses.asdict(self._fn.spec)}

  def set_state(self, state) -> None:
    if isinstance(state, (str, bytes)):
      state = json.loads(state)
    mine = dataclasses.asdict(self._fn.spec)
    theirs = dict(state.get("spec", mine))
    if "image_size" in theirs and isinstance(theirs["image_size"], list):
      theirs["image_size"] = tuple(theirs["image_size"])
    diff = {k: (theirs.get(k), v) for k, v in mine.items()
            if theirs.get(k) != v}
    if diff:
      raise DatasetError("Cannot restore input-pipeline state saved with "
                         "different settings (saved, current): "
                         f"{diff}. Restore with the settings it was saved "
                         "with, or start the input pipeline afresh.")
    self._step = int(state["step"])
    self._it = None  # restarted lazily at the new step

  def close(self):
    self._it = None


def train_iterator(name: str, split: str, *, batch_size: int, seed: int,
                   image_size=None, augment: str = "none",
                   mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                   randaugment_layers: int = 0,
                   randaugment_magnitude: float = 0, data_dir=None,
                   process_index=None, process_count=None,
                   num_workers: int = 0, num_threads: int = 1,
                   prefetch: int = 4) -> TrainIterator:
  """Infinite, shuffled (anew each epoch), augmented per-process batches.

  Args:
    batch_size: per-process batch size (drop remainder each epoch).
    seed: fixes the order and the augmentation.
    image_size: output side; None keeps the native size.
    augment: 'none' | 'pad_crop_flip' | 'rrc_flip'.
    num_workers: grain worker processes (0: a background thread only).
    num_threads, prefetch: grain threads and batches prepared ahead.
  """
  if augment not in AUGMENTATIONS:
    raise ValueError(f"augment={augment!r}; expected one of {AUGMENTATIONS}")
  p, pc = _process(process_index, process_count)
  info = dataset_info(name, data_dir)
  if augment != "rrc_flip":
    _check_size(info, image_size)
  elif image_size is None and None in info.image_shape[:2]:
    raise DatasetError("rrc_flip on variable-size images needs image_size")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  spec = _TrainSpec(name, split, int(batch_size), int(seed), image_size,
                    augment, float(mixup_alpha), float(cutmix_alpha),
                    int(randaugment_layers), float(randaugment_magnitude),
                    p, pc)
  fn = _TrainBatch(spec, data_dir)
  fn.source  # pylint: disable=pointless-statement  # load/validate now
  return TrainIterator(fn, num_workers=num_workers, num_threads=num_threads,
                       prefetch=prefetch)


class _EvalBatch:

  def __init__(self, name, split, batch_size, image_size, data_dir, p, pc):
    self.info = sources.dataset_info(name, data_dir)
    self.source = sources.get_source(name, split, data_dir)
    n = len(self.source)
    self.local = np.arange(p, n, pc)
    per_process = -(-n // pc)  # the largest shard
    self.num_batches = -(-per_process // batch_size)
    self.batch_size = batch_size
    self.image_size = image_size

  def __call__(self, b: int) -> dict:
    idx = self.local[b * self.batch_size:(b + 1) * self.batch_size]
    valid = len(idx)
    if valid:
      images, labels = self.source.get(idx)
      images = augment.eval_preprocess(images, self.image_size)
    else:
      h, w, c = self.info.image_shape
      images = np.zeros((0, self.image_size or h, self.image_size or w, c),
                        np.uint8)
      labels = np.zeros((0,), np.int32)
    pad = self.batch_size - valid
    if pad:
      images = np.concatenate(
          [images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.zeros((self.batch_size,), np.float32)
    mask[:valid] = 1.0
    return dict(image=augment.normalize(images, self.info.mean, self.info.std),
                label=labels.astype(np.int32), mask=mask)


def eval_batches(name: str, split: str, *, batch_size: int, image_size=None,
                 data_dir=None, process_index=None, process_count=None):
  """Yields fixed-size batches covering each of this process's examples once;
  padding rows have mask 0. All processes yield the same number of batches."""
  p, pc = _process(process_index, process_count)
  info = dataset_info(name, data_dir)
  _check_size(info, image_size)
  fn = _EvalBatch(name, split, int(batch_size), image_size, data_dir, p, pc)
  ds = grain.MapDataset.range(fn.num_batches).map(fn)
  yield from ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                  prefetch_buffer_size=2))


def to_global_batch(local_batch: dict, sharding) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded by `sharding`
  (e.g. NamedSharding(mesh, P('data'))) along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
