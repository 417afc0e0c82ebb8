"""Input batches for SPPs: a unit Gaussian, or real images from a dataset."""

from typing import Optional

import numpy as np

from nf_jax.analysis.errors import InputShapeError, SPPError


def gaussian_batch(batch_size: int, image_size: int, channels: int = 3,
                   seed: int = 0) -> np.ndarray:
  """An N(0, 1) batch [batch_size, image_size, image_size, channels], f32."""
  if batch_size < 1 or image_size < 1 or channels < 1:
    raise InputShapeError(
        f"Input batch needs positive sizes; got batch_size={batch_size}, "
        f"image_size={image_size}, channels={channels}.")
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch_size, image_size, image_size, channels),
                             dtype=np.float32)


def dataset_batch(name: str, split: str = "test", batch_size: int = 8,
                  image_size: Optional[int] = None, channels: int = 3,
                  data_dir: Optional[str] = None) -> np.ndarray:
  """The first `batch_size` normalized images of a dataset split.

  Uses `nf_jax.data.input_pipeline.eval_batches` (imported only here).
  Single-channel images (e.g. Fashion-MNIST) are repeated to `channels`.
  """
  try:
    from nf_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    eval_batches = input_pipeline.eval_batches
  except (ImportError, AttributeError) as e:
    raise SPPError(f"Real-image SPPs need nf_jax.data.input_pipeline."
                   f"eval_batches, which is not available ({e}); use the "
                   f"Gaussian input instead.") from None
  batch = next(iter(eval_batches(name, split, batch_size=batch_size,
                                 image_size=image_size, data_dir=data_dir)))
  images = np.asarray(batch["image"], np.float32)
  if "mask" in batch:
    images = images[np.asarray(batch["mask"]) > 0]
  if images.ndim == 4 and images.shape[-1] == 1 and channels > 1:
    images = np.repeat(images, channels, axis=-1)
  return images


def check_batch(x, channels: Optional[int], min_size: int = 1) -> None:
  """One clear error if `x` is not a finite [N, H, W, channels] batch."""
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) != 4:
    raise InputShapeError(
        f"Input batch must be 4-D [batch, height, width, channels]; got "
        f"shape {shape}.")
  n, h, w, c = shape
  if channels is not None and c != channels:
    raise InputShapeError(
        f"Input batch has {c} channels but the model expects {channels} "
        f"(shape {shape}); pass channels={c} to analyse a {c}-channel model.")
  if n < 2:
    raise InputShapeError(f"Input batch has {n} example(s); SPP statistics "
                          f"over N, H, W need a batch of at least 2.")
  if min(h, w) < min_size:
    raise InputShapeError(
        f"Input images are {h}x{w} px, smaller than the network's total "
        f"downsampling factor {min_size}; use at least {min_size} px.")
  if not np.all(np.isfinite(np.asarray(x))):
    raise InputShapeError("Input batch contains NaN or infinite values.")
