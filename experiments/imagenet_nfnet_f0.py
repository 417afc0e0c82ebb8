r"""NFNet-F0 on ImageNet (Brock, Smith, De & Simonyan 2021).

Command (needs imagenet2012 prepared for TFDS; a TPU pod or GPU cluster):
  python -m launch.main --config=experiments/imagenet_nfnet_f0.py \
      --workdir=$WORKDIR --config.data_dir=$TFDS_DATA_DIR
Other variants: --config.model.variant=F3 — resolution (320/416), dropout
(0.4) and RandAugment strength (4 layers, magnitude 15) follow the variant
after the override.
Smoke test anywhere: add --config.dry_run=True.

Recipe: batch 4096, 360 epochs, SGD + Nesterov, LR 0.1 x 4096 / 256, weight
decay 2e-5 on weights only, AGC lambda 0.01 on every parameter but the
classifier weight, stochastic depth 0.25, the variant's dropout, mixup 0.2 +
cutmix 1.0 + RandAugment (405 for F0), EMA 0.99999, bfloat16 compute.
Expected: about 83.6 % top-1 for F0 in the paper; not run to completion here.
"""

from experiments import common


def get_config(arg=None):
  del arg
  c = common.imagenet_config()
  c.experiment = "imagenet_nfnet_f0"
  c.model.name = "nfnet"
  c.model.variant = "F0"
  c.model.kwargs.stochdepth_rate = 0.25
  c.batch_size = 4096
  c.optimizer.agc_clip = 0.01
  c.augment.mixup_alpha = 0.2
  c.augment.cutmix_alpha = 1.0
  c.precision = "bfloat16"
  return c
