r"""BN-ResNet (small) on Fashion-MNIST: the BatchNorm baseline, same budget.

Identical to `fashion_mnist_nf_resnet.py` except for the normalization: the
same blocks with BatchNorm (per-device statistics) and plain He-init convs.

Command:
  python -m launch.main --config=experiments/fashion_mnist_bn_resnet.py \
      --workdir=/tmp/bn_fmnist

Expected: the NF run's wall time, and a test top-1 within a few tenths of a
percent of it (see the README's table for the measured gap).
"""

from experiments import fashion_mnist_nf_resnet


def get_config(arg=None):
  c = fashion_mnist_nf_resnet.get_config(arg)
  c.experiment = "fashion_mnist_bn_resnet"
  c.model.name = "bn_resnet"
  del c.model.kwargs["skip_gain_init"]   # BN blocks have no SkipInit gain
  return c
