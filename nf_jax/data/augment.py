"""Batch preprocessing and augmentation in numpy (and PIL where per-example).

Every function takes an explicit ``np.random.Generator``; the pipeline seeds
it from (seed, process, step), so a resumed run sees identical batches.
Images are uint8 NHWC until ``normalize``; mixing works on float32.
"""
import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps


# ---------------------------------------------------------------- resizing ---

def _to_pil(x):
  return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)


def _from_pil(img, channels):
  x = np.asarray(img, np.uint8)
  return x[..., None] if x.ndim == 2 else x[..., :channels]


def resize_batch(images: np.ndarray, size) -> np.ndarray:
  """Resizes uint8 [B, H, W, C] to (size, size) with PIL bilinear."""
  if images.shape[1:3] == (size, size):
    return images
  c = images.shape[-1]
  return np.stack([_from_pil(_to_pil(x).resize((size, size), Image.BILINEAR),
                             c) for x in images])


def center_crop_resize(image: np.ndarray, size: int, crop_padding: int = 32):
  """ImageNet eval: central crop of size/(size+pad) of the shorter side."""
  h, w, c = image.shape
  crop = int(round(size / (size + crop_padding) * min(h, w)))
  top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
  img = _to_pil(image[top:top + crop, left:left + crop])
  return _from_pil(img.resize((size, size), Image.BICUBIC), c)


def eval_preprocess(images, size):
  """Fixed-shape batches: optional resize; lists (variable size): center
  crop + resize (`size` is required then)."""
  if isinstance(images, np.ndarray):
    return images if size is None else resize_batch(images, size)
  if size is None:
    raise ValueError("image_size is required for variable-size images")
  return np.stack([center_crop_resize(x, size) for x in images])


# ------------------------------------------------------- small-image crops ---

def pad_amount(size: int) -> int:
  """4 pixels for 28-32 px images, an eighth of the side above that."""
  return 4 if size <= 32 else max(4, size // 8)


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator,
                  pad: int | None = None) -> np.ndarray:
  """Zero-pads each side by `pad`, takes a random crop of the original size,
  and flips half the images left-right. Vectorized over the batch."""
  b, h, w, c = images.shape
  pad = pad_amount(min(h, w)) if pad is None else pad
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  oy = rng.integers(0, 2 * pad + 1, b)
  ox = rng.integers(0, 2 * pad + 1, b)
  flip = rng.random(b) < 0.5
  windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), (1, 2))
  crops = windows[np.arange(b), oy, ox]  # [B, C, h, w]
  out = np.ascontiguousarray(np.moveaxis(crops, 1, -1))
  out[flip] = out[flip, :, ::-1]
  return out


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  flip = rng.random(len(images)) < 0.5
  out = np.array(images, copy=True)
  out[flip] = out[flip, :, ::-1]
  return out


# --------------------------------------------------- random-resized crop ---

def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style crop: area fraction in `scale`, aspect in `ratio`."""
  h, w, c = image.shape
  area = h * w
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw = int(round(np.sqrt(target * aspect)))
    ch = int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top = int(rng.integers(0, h - ch + 1))
      left = int(rng.integers(0, w - cw + 1))
      break
  else:  # Fall back to a central crop.
    ch = cw = min(h, w)
    top, left = (h - ch) // 2, (w - cw) // 2
  img = _to_pil(image[top:top + ch, left:left + cw])
  return _from_pil(img.resize((size, size), Image.BICUBIC), c)


def rrc_flip(images, size: int, rng: np.random.Generator) -> np.ndarray:
  """Random-resized crop to `size` then flip; per example (PIL)."""
  out = np.stack([random_resized_crop(x, size, rng) for x in images])
  return random_flip(out, rng)


# ------------------------------------------------------------ RandAugment ---

_MAX_LEVEL = 10.0


def _signed(v, rng):
  return v if rng.random() < 0.5 else -v


def _affine(img, matrix):
  fill = 128 if img.mode == "L" else (128,) * len(img.getbands())
  return img.transform(img.size, Image.AFFINE, matrix,
                       resample=Image.BILINEAR, fillcolor=fill)


def _op_identity(img, m, rng):
  return img


def _op_autocontrast(img, m, rng):
  return ImageOps.autocontrast(img)


def _op_equalize(img, m, rng):
  return ImageOps.equalize(img)


def _op_rotate(img, m, rng):
  fill = 128 if img.mode == "L" else (128,) * len(img.getbands())
  return img.rotate(_signed(30.0 * m, rng), resample=Image.BILINEAR,
                    fillcolor=fill)


def _op_solarize(img, m, rng):
  return ImageOps.solarize(img, int(256 - 256 * m))


def _op_posterize(img, m, rng):
  return ImageOps.posterize(img, max(1, int(round(8 - 4 * m))))


def _enhance(cls):
  def op(img, m, rng):
    return cls(img).enhance(1.0 + _signed(0.9 * m, rng))
  return op


def _op_shear_x(img, m, rng):
  return _affine(img, (1, _signed(0.3 * m, rng), 0, 0, 1, 0))


def _op_shear_y(img, m, rng):
  return _affine(img, (1, 0, 0, _signed(0.3 * m, rng), 1, 0))


def _op_translate_x(img, m, rng):
  return _affine(img, (1, 0, _signed(0.45 * m * img.size[0], rng), 0, 1, 0))


def _op_translate_y(img, m, rng):
  return _affine(img, (1, 0, 0, 0, 1, _signed(0.45 * m * img.size[1], rng)))


RANDAUGMENT_OPS = {
    "Identity": _op_identity,
    "AutoContrast": _op_autocontrast,
    "Equalize": _op_equalize,
    "Rotate": _op_rotate,
    "Solarize": _op_solarize,
    "Posterize": _op_posterize,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _op_shear_x,
    "ShearY": _op_shear_y,
    "TranslateX": _op_translate_x,
    "TranslateY": _op_translate_y,
}


def randaugment(images: np.ndarray, num_layers: int, magnitude: float,
                rng: np.random.Generator) -> np.ndarray:
  """RandAugment (Cubuk et al. 2020): `num_layers` ops drawn uniformly per
  image, each at `magnitude` on the 0..10 scale. Per example (PIL)."""
  if num_layers <= 0:
    return images
  m = float(np.clip(magnitude, 0, _MAX_LEVEL)) / _MAX_LEVEL
  ops = list(RANDAUGMENT_OPS.values())
  out = np.empty_like(images)
  c = images.shape[-1]
  for i, x in enumerate(images):
    img = _to_pil(x)
    for k in rng.integers(0, len(ops), num_layers):
      img = ops[k](img, m, rng)
    out[i] = _from_pil(img, c)
  return out


# ---------------------------------------------------- normalize and mixing ---

def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 -> float32 (x / 255 - mean) / std, per channel."""
  std = np.asarray(std, np.float32)
  scale = (1.0 / (255.0 * std)).astype(np.float32)
  offset = (-np.asarray(mean, np.float32) / std).astype(np.float32)
  out = images.astype(np.float32)
  out *= scale
  out += offset
  return out


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  out = np.zeros((len(labels), num_classes), np.float32)
  out[np.arange(len(labels)), labels] = 1.0
  return out


def mixup_cutmix(images: np.ndarray, label_dist: np.ndarray,
                 rng: np.random.Generator, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0):
  """Mixes each example with a partner from a random permutation of the batch.

  One lambda ~ Beta(alpha, alpha) per batch; with both alphas > 0, mixup or
  cutmix is chosen with probability 1/2 per batch (as in timm). For cutmix
  lambda is corrected to the pasted box's true area. Returns new
  (images, label_dist); label_dist rows still sum to 1.
  """
  use_mixup = mixup_alpha > 0
  use_cutmix = cutmix_alpha > 0
  if not (use_mixup or use_cutmix):
    return images, label_dist
  if use_mixup and use_cutmix:
    use_mixup = rng.random() < 0.5
    use_cutmix = not use_mixup
  perm = rng.permutation(len(images))
  if use_mixup:
    lam = float(rng.beta(mixup_alpha, mixup_alpha))
    images = lam * images + (1.0 - lam) * images[perm]
  else:
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    _, h, w, _ = images.shape
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
    x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
    images = images.copy()
    images[:, y0:y1, x0:x1] = images[perm, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
  label_dist = lam * label_dist + (1.0 - lam) * label_dist[perm]
  return images.astype(np.float32), label_dist.astype(np.float32)
