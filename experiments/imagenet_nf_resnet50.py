r"""NF-ResNet-50 on ImageNet (Brock, De & Smith 2021).

Command (needs imagenet2012 prepared for TFDS; a TPU/GPU host):
  python -m launch.main --config=experiments/imagenet_nf_resnet50.py \
      --workdir=$WORKDIR --config.data_dir=$TFDS_DATA_DIR
Smoke test anywhere (fake data, 32 px, one step, about a minute on a CPU):
  python -m launch.main --config=experiments/imagenet_nf_resnet50.py \
      --workdir=/tmp/dry --config.dry_run=True

Recipe: batch 1024, 360 epochs, weight decay 5e-5 on weights only,
stochastic depth 0.1 and dropout 0.25 (the paper's settings for NF-ResNets),
EMA 0.99999. Expected: the paper reports about 80 % top-1 for NF-ResNet-50
with this regularization; this config has not been run to completion here.
"""

from experiments import common


def get_config(arg=None):
  del arg
  c = common.imagenet_config()
  c.experiment = "imagenet_nf_resnet50"
  c.model.name = "nf_resnet"
  c.model.variant = "50"
  c.model.kwargs.drop_rate = 0.25
  c.model.kwargs.stochdepth_rate = 0.1
  c.image_size = 224
  c.eval_image_size = 224
  c.optimizer.weight_decay = 5e-5
  return c
