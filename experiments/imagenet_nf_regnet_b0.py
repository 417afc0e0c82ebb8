r"""NF-RegNet-B0 on ImageNet (Brock, De & Smith 2021, section 6).

Command (needs imagenet2012 prepared for TFDS; a TPU/GPU host):
  python -m launch.main --config=experiments/imagenet_nf_regnet_b0.py \
      --workdir=$WORKDIR --config.data_dir=$TFDS_DATA_DIR
Other variants: --config.model.variant=B3 (resolution, dropout and weight
decay follow the variant after the override).
Smoke test anywhere: add --config.dry_run=True.

Recipe: batch 1024, 360 epochs, weight decay 5e-5 (not on gains, biases or
skip gains), stochastic depth 0.1, the variant's dropout (0.2 for B0),
train/test resolution 192/224 for B0, EMA 0.99999. Expected: about 76.8 %
top-1 for B0 in the paper; not run to completion here.
"""

from experiments import common


def get_config(arg=None):
  del arg
  c = common.imagenet_config()
  c.experiment = "imagenet_nf_regnet_b0"
  c.model.name = "nf_regnet"
  c.model.variant = "B0"
  c.model.kwargs.stochdepth_rate = 0.1
  c.optimizer.weight_decay = 5e-5
  return c
