"""Defaults shared by every training config; experiments override leaves.

Values that depend on the model variant (resolution, dropout, weight decay,
RandAugment strength) are placeholders here (None / 0) and are resolved by
`nf_jax.train.config_lib.resolve` after command-line overrides, so that
`--config.model.variant=F3` really trains an F3 recipe.
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = ""              # name, recorded in the workdir
  c.seed = 0

  # Data. `eval_sets` is a comma-separated list of dataset:split; an eval set
  # may come from another dataset with the same label space.
  c.dataset = "fashion_mnist"
  c.train_split = "train"
  c.eval_sets = "fashion_mnist:test"
  c.data_dir = config_dict.placeholder(str)
  c.image_size = config_dict.placeholder(int)       # None: variant / native
  c.eval_image_size = config_dict.placeholder(int)  # None: variant / native
  c.augment = ml_collections.ConfigDict(dict(
      kind="pad_crop_flip",   # none | pad_crop_flip | rrc_flip
      mixup_alpha=0.0, cutmix_alpha=0.0,
      randaugment_layers=config_dict.placeholder(int),
      randaugment_magnitude=config_dict.placeholder(int)))
  c.num_data_workers = 0

  # Model: registry name, variant and constructor options (None: variant
  # default). Unknown names fail before anything is built.
  c.model = ml_collections.ConfigDict(dict(
      name="nf_resnet", variant="50",
      kwargs=ml_collections.ConfigDict(dict(
          drop_rate=config_dict.placeholder(float),
          stochdepth_rate=config_dict.placeholder(float),
      ))))

  # Optimization.
  c.batch_size = 256             # global, over all devices and hosts
  c.num_epochs = 10.0
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      base_lr=0.1,               # LR = base_lr * batch_size / 256
      warmup_epochs=1.0, momentum=0.9, nesterov=True,
      weight_decay=config_dict.placeholder(float),  # None: recipe default
      agc_clip=0.0,              # lambda; 0 disables AGC
      agc_exclude="classifier"))
  c.ema_decay = 0.0              # 0 disables the EMA of the weights
  c.precision = "float32"        # float32 | bfloat16 (params stay float32)
  c.sync_batchnorm = False       # BN statistics across devices

  # Execution.
  c.num_devices = 0              # per process; 0: every local device
  c.on_nonfinite = "stop"        # stop | skip
  c.log_every_steps = 50
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = 1000
  c.checkpoint_every_minutes = 10.0
  c.keep_checkpoints = 3
  c.dry_run = False              # fake data, tiny resolution, one step
  return c


def imagenet_config() -> ml_collections.ConfigDict:
  """The recipe shared by the ImageNet configs (Brock et al. 2021a, 2021b):
  SGD + Nesterov 0.9, LR 0.1 x batch / 256 with 5 warmup epochs and cosine
  decay, label smoothing 0.1, an EMA of the weights used for evaluation,
  360 epochs, random-resized-crop + flip. Needs `imagenet2012` prepared for
  TFDS in array_record format (`--config.data_dir`); `--config.dry_run=True`
  builds everything on fake data at 32 px and takes one step instead.
  """
  c = base_config()
  c.dataset = "imagenet2012"
  c.eval_sets = "imagenet2012:validation"
  c.augment.kind = "rrc_flip"
  c.batch_size = 1024
  c.num_epochs = 360.0
  c.optimizer.base_lr = 0.1
  c.optimizer.warmup_epochs = 5.0
  c.label_smoothing = 0.1
  c.ema_decay = 0.99999
  c.log_every_steps = 100
  c.eval_every_epochs = 10.0
  c.num_data_workers = 8
  return c
