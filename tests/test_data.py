"""Tests of nf_jax.data: IDX files, the Fashion-MNIST builder, the pipeline."""
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nf_jax.data import augment
from nf_jax.data import fashion_mnist as fm
from nf_jax.data import idx
from nf_jax.data import input_pipeline as ip
from nf_jax.data.errors import DatasetError

N_TRAIN, N_TEST = 300, 130


def _images(n, offset):
  """Images whose first two pixels encode their index (offset + i)."""
  rng = np.random.default_rng(offset)
  x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  ids = np.arange(n) + offset
  x[:, 0, 0] = ids % 256
  x[:, 0, 1] = ids // 256
  return x


def write_fake_idx(directory, n_train=N_TRAIN, n_test=N_TEST, compress=True):
  os.makedirs(directory, exist_ok=True)
  sfx = ".gz" if compress else ""
  for split, n, off in (("train", n_train, 0), ("t10k", n_test, 10000)):
    idx.write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{sfx}"),
                  _images(n, off), compress=compress)
    idx.write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{sfx}"),
                  (np.arange(n) % 10).astype(np.uint8), compress=compress)
  return directory


@pytest.fixture(autouse=True)
def _no_real_sources(monkeypatch, tmp_path):
  """No test sees the Debian files, the network or the user's env vars."""
  monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "no_debian"))
  monkeypatch.setattr(fm, "BASE_URL", (tmp_path / "no_url").as_uri() + "/")
  monkeypatch.delenv(fm.ENV_SOURCE_DIR, raising=False)
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A tiny nf_fashion_mnist prepared once for the module."""
  root = tmp_path_factory.mktemp("fm")
  src = write_fake_idx(str(root / "idx"))
  out = str(root / "tfds")
  fm.prepare(out, source_dir=src)
  return out


def _ids(batch, info):
  """Recovers example ids from un-augmented, normalized images."""
  raw = np.round((batch["image"][..., 0] * info.std[0] + info.mean[0]) * 255)
  return (raw[:, 0, 0] + 256 * raw[:, 0, 1]).astype(int)


# ------------------------------------------------------------------ IDX ---

def test_idx_roundtrip_and_shapes(tmp_path):
  x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  for compress in (True, False):
    path = str(tmp_path / f"a{compress}")
    idx.write_idx(path, x, compress=compress)
    np.testing.assert_array_equal(idx.read_idx(path), x)


def test_idx_rejects_corrupt_files(tmp_path):
  good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"abc"
  assert idx.parse_idx(good).tolist() == [97, 98, 99]
  with pytest.raises(idx.IdxError, match="magic"):
    idx.parse_idx(b"\x12\x34" + good[2:])
  with pytest.raises(idx.IdxError, match="truncated"):
    idx.parse_idx(good[:-1])
  with pytest.raises(idx.IdxError, match="type code"):
    idx.parse_idx(bytes([0, 0, 0x42, 1]) + good[4:])
  bad_gz = tmp_path / "x.gz"
  bad_gz.write_bytes(b"\x1f\x8b\x08garbage")
  with pytest.raises(idx.IdxError, match="Cannot read"):
    idx.read_idx(str(bad_gz))
  d = write_fake_idx(str(tmp_path / "d"))
  idx.write_idx(os.path.join(d, "l.gz"), np.zeros(5, np.uint8))
  with pytest.raises(idx.IdxError, match="labels"):
    idx.read_images_and_labels(os.path.join(d, "train-images-idx3-ubyte.gz"),
                               os.path.join(d, "l.gz"))


def test_real_debian_files_if_installed():
  real = "/usr/share/datasets/fashion-mnist"
  if not os.path.isdir(real):
    pytest.skip("dataset-fashion-mnist not installed")
  images, labels = idx.read_images_and_labels(
      os.path.join(real, "t10k-images-idx3-ubyte.gz"),
      os.path.join(real, "t10k-labels-idx1-ubyte.gz"))
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert sorted(np.unique(labels)) == list(range(10))
  assert abs(images.mean() / 255 - fm.MEAN[0]) < 0.01


# --------------------------------------------------------------- builder ---

def test_source_order(tmp_path, monkeypatch):
  arg = write_fake_idx(str(tmp_path / "arg"))
  env = write_fake_idx(str(tmp_path / "env"))
  deb = write_fake_idx(str(tmp_path / "deb"))
  url = write_fake_idx(str(tmp_path / "url"))
  monkeypatch.setattr(fm, "DEBIAN_DIR", deb)
  monkeypatch.setattr(fm, "BASE_URL", (tmp_path / "url").as_uri() + "/")
  dl = str(tmp_path / "dl")
  monkeypatch.setenv(fm.ENV_SOURCE_DIR, env)
  assert fm.find_source_dir(arg, download_dir=dl) == arg
  assert fm.find_source_dir(None, download_dir=dl) == env
  monkeypatch.delenv(fm.ENV_SOURCE_DIR)
  assert fm.find_source_dir(None, download_dir=dl) == deb
  monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "nothing"))
  assert fm.find_source_dir(str(tmp_path / "empty"), download_dir=dl) == dl
  assert sorted(os.listdir(dl)) == sorted(os.listdir(url))
  del url


def test_error_names_all_three_ways(tmp_path):
  with pytest.raises(DatasetError) as e:
    fm.find_source_dir(str(tmp_path / "nope"), download_dir=str(tmp_path))
  msg = str(e.value)
  for needle in ("(1)", fm.ENV_SOURCE_DIR, "(2)", "dataset-fashion-mnist",
                 "(3)", "download"):
    assert needle in msg, msg
  with pytest.raises(DatasetError, match="NF_JAX_FASHION_MNIST_DIR"):
    fm.prepare(str(tmp_path / "tfds"))
  assert not fm.NfFashionMnist(data_dir=str(tmp_path / "tfds")).is_prepared()


def test_build_reuse_and_failed_build(tmp_path):
  src = write_fake_idx(str(tmp_path / "src"), n_train=40, n_test=20,
                       compress=False)
  out = str(tmp_path / "tfds")
  # A corrupt file fails the build and leaves nothing that looks prepared.
  path = os.path.join(src, "t10k-labels-idx1-ubyte")
  good = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(good[:-3])
  with pytest.raises(idx.IdxError, match="truncated"):
    fm.prepare(out, source_dir=src)
  assert not fm.NfFashionMnist(data_dir=out).is_prepared()
  with open(path, "wb") as f:
    f.write(good)
  b = fm.prepare(out, source_dir=src)
  assert b.is_prepared()
  assert b.info.splits["train"].num_examples == 40
  mtime = os.path.getmtime(b.data_dir)
  fm.prepare(out, source_dir=str(tmp_path / "gone"))  # reused, not rebuilt
  assert os.path.getmtime(b.data_dir) == mtime
  ds = b.as_data_source("test")
  got = sorted(int(r["image"][0, 0, 0]) + 256 * int(r["image"][0, 1, 0])
               for r in ds)
  assert got == list(range(10000, 10020))


def test_dataset_info(data_dir):
  info = ip.dataset_info("fashion_mnist", data_dir=data_dir)
  assert info.num_classes == 10 and info.image_shape == (28, 28, 1)
  assert info.num_examples == {"train": N_TRAIN, "test": N_TEST}
  assert info.mean == (0.286,) and info.std == (0.353,)
  fake = ip.dataset_info("fake:12x10x3:7")
  assert fake.image_shape == (12, 10, 3) and fake.num_classes == 7
  with pytest.raises(DatasetError, match="fashion_mnist"):
    ip.dataset_info("fake:oops")
  with pytest.raises(DatasetError, match="Known names"):
    ip.dataset_info("no_such_dataset_xyz", data_dir=data_dir)


def test_unprepared_tfds_dataset_says_how(tmp_path):
  with pytest.raises(DatasetError, match="tfds build mnist"):
    ip.dataset_info("mnist", data_dir=str(tmp_path))


# -------------------------------------------------------------- pipeline ---

def _train(data_dir, **kw):
  args = dict(batch_size=32, seed=3, augment="pad_crop_flip",
              data_dir=data_dir, process_index=0, process_count=1)
  args.update(kw)
  return ip.train_iterator("fashion_mnist", "train", **args)


def test_train_batch_format_and_determinism(data_dir):
  a, b = _train(data_dir), _train(data_dir)
  for _ in range(12):  # more than one epoch (9 steps per epoch)
    x, y = next(a), next(b)
    assert x["image"].shape == (32, 28, 28, 1)
    assert x["image"].dtype == np.float32
    assert x["label"].dtype == np.int32 and x["label"].shape == (32,)
    assert x["label_dist"].shape == (32, 10)
    np.testing.assert_array_equal(x["label_dist"].argmax(1), x["label"])
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  c = next(_train(data_dir, seed=4))
  assert not np.array_equal(c["label"], next(_train(data_dir))["label"])


def test_epochs_cover_shard_and_reshuffle(data_dir):
  info = ip.dataset_info("fashion_mnist", data_dir=data_dir)
  it = _train(data_dir, augment="none", batch_size=30)
  assert it.steps_per_epoch == 10
  e1 = np.concatenate([_ids(next(it), info) for _ in range(10)])
  e2 = np.concatenate([_ids(next(it), info) for _ in range(10)])
  assert sorted(e1) == list(range(N_TRAIN)) == sorted(e2)
  assert not np.array_equal(e1, e2)


@pytest.mark.parametrize("stop", [4, 9, 13])  # mid-epoch, boundary, epoch 2
def test_exact_resume(data_dir, stop):
  kw = dict(mixup_alpha=0.4, cutmix_alpha=0.4, randaugment_layers=1,
            randaugment_magnitude=5)
  ref = _train(data_dir, **kw)
  ref_batches = [next(ref) for _ in range(stop + 3)]
  it = _train(data_dir, **kw)
  for _ in range(stop):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  assert state["step"] == stop
  fresh = _train(data_dir, **kw)
  fresh.set_state(state)
  for want in ref_batches[stop:]:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  with pytest.raises(DatasetError, match="different settings"):
    _train(data_dir, seed=99).set_state(state)


def test_train_shards_disjoint_and_covering(data_dir):
  info = ip.dataset_info("fashion_mnist", data_dir=data_dir)
  shards = []
  for p in range(3):  # 300 / 3 = 100 each; batch 20 -> 5 steps per epoch
    it = _train(data_dir, augment="none", batch_size=20, process_index=p,
                process_count=3)
    assert it.steps_per_epoch == 5
    shards.append(set(np.concatenate([_ids(next(it), info)
                                      for _ in range(5)])))
  assert all(len(s) == 100 for s in shards)
  assert not (shards[0] & shards[1] or shards[0] & shards[2]
              or shards[1] & shards[2])
  assert set.union(*shards) == set(range(N_TRAIN))


def test_global_batch_independent_of_process_count(data_dir):
  single = _train(data_dir, augment="none", batch_size=60)
  split = [_train(data_dir, augment="none", batch_size=20, process_index=p,
                  process_count=3) for p in range(3)]
  for _ in range(7):  # crosses an epoch boundary (5 steps per epoch)
    want = next(single)
    got = [next(it) for it in split]
    np.testing.assert_array_equal(
        np.concatenate([g["image"] for g in got]), want["image"])
    np.testing.assert_array_equal(
        np.concatenate([g["label"] for g in got]), want["label"])


def test_eval_covers_every_example_once(data_dir):
  info = ip.dataset_info("fashion_mnist", data_dir=data_dir)
  seen, counts = [], []
  for p in range(4):  # 130 = 33 + 33 + 32 + 32; batch 16 -> 3 batches each
    n = 0
    for batch in ip.eval_batches("fashion_mnist", "test", batch_size=16,
                                 data_dir=data_dir, process_index=p,
                                 process_count=4):
      assert batch["image"].shape == (16, 28, 28, 1)
      assert batch["mask"].dtype == np.float32
      valid = batch["mask"] == 1
      seen.extend(_ids(batch, info)[valid])
      assert np.all(batch["mask"][~valid] == 0)
      n += 1
    counts.append(n)
  assert counts == [3, 3, 3, 3]
  assert sorted(seen) == list(range(10000, 10000 + N_TEST))


def test_fake_source():
  it = ip.train_iterator("fake:20x16x3:5", "train", batch_size=8, seed=0,
                         augment="pad_crop_flip", mixup_alpha=0.2,
                         process_index=0, process_count=1)
  b = next(it)
  assert b["image"].shape == (8, 20, 16, 3) and b["label_dist"].shape == (8, 5)
  it = ip.train_iterator("fake:40x40x3:5", "train", batch_size=4, seed=0,
                         augment="rrc_flip", image_size=24, process_index=0,
                         process_count=1)
  assert next(it)["image"].shape == (4, 24, 24, 3)
  ev = list(ip.eval_batches("fake", "test", batch_size=100, image_size=16,
                            process_index=0, process_count=1))
  assert sum(b["mask"].sum() for b in ev) == 512
  assert ev[0]["image"].shape == (100, 16, 16, 3)


# ---------------------------------------------------------- augmentation ---

def test_pad_crop_flip_does_what_it_says():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
  flipped = augment.pad_crop_flip(x, np.random.default_rng(1), pad=0)
  is_same = [np.array_equal(a, b) for a, b in zip(flipped, x)]
  is_flip = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, x)]
  assert all(s or f for s, f in zip(is_same, is_flip))
  assert 10 < sum(is_flip) < 54
  out = augment.pad_crop_flip(x, np.random.default_rng(2), pad=2)
  assert out.shape == x.shape and out.dtype == np.uint8
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for a, p in zip(out, padded):  # each output is a window of the padded image
    windows = [p[i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
    assert any(np.array_equal(a, w) or np.array_equal(a[:, ::-1], w)
               for w in windows)


def test_other_augmentations_shapes():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (6, 30, 40, 3), dtype=np.uint8)
  y = augment.rrc_flip(list(x), 16, rng)
  assert y.shape == (6, 16, 16, 3) and y.dtype == np.uint8
  for c in (1, 3):
    z = augment.randaugment(x[..., :c], 2, 9, rng)
    assert z.shape == x[..., :c].shape and z.dtype == np.uint8
  assert augment.eval_preprocess(list(x), 24).shape == (6, 24, 24, 3)


def test_normalize_and_mixing():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  f = augment.normalize(x, (0.5,), (0.25,))
  np.testing.assert_allclose(f, (x / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
  labels = rng.integers(0, 5, 16)
  onehot = augment.one_hot(labels, 5)
  for mix, cut in ((0.4, 0.0), (0.0, 1.0), (0.2, 0.2)):
    img, dist = augment.mixup_cutmix(f, onehot, np.random.default_rng(3),
                                     mix, cut)
    assert img.shape == f.shape and img.dtype == np.float32
    np.testing.assert_allclose(dist.sum(1), 1.0, rtol=1e-6)
    assert dist.min() >= 0
  img, dist = augment.mixup_cutmix(f, onehot, rng, 0.0, 0.0)
  assert img is f and dist is onehot


# ------------------------------------------------------------ global batch ---

def test_to_global_batch():
  devices = jax.devices()
  assert len(devices) >= 2, "tests/conftest.py should force 8 CPU devices"
  mesh = Mesh(np.array(devices), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  n = 2 * len(devices)
  it = ip.train_iterator("fake:8x8x1:3", "train", batch_size=n, seed=0,
                         process_index=0, process_count=1)
  local = next(it)
  glob = ip.to_global_batch(local, sharding)
  for k, v in glob.items():
    assert isinstance(v, jax.Array) and v.shape == local[k].shape
    assert v.sharding == sharding
    assert len(v.addressable_shards) == len(devices)
    assert v.addressable_shards[1].data.shape[0] == 2
    np.testing.assert_array_equal(np.asarray(v), local[k])
