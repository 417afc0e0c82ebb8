r"""The SPP comparison of Brock, De & Smith (2021), Figures 1-2.

BN-ReLU pre-activation ResNet, NF-ResNet with Scaled WS, and the same
NF-ResNet with the standardization removed (plain fan-in-initialized convs:
the mean-shift case), each with ReLU and SiLU, on an N(0, 1) batch at
initialization with the SkipInit gain at 1 and alpha = 0.2.

    python -m launch.spp --config=experiments/spp_paper.py:600 --outdir=/tmp/spp600
    python -m launch.spp --config=experiments/spp_paper.py:50 --outdir=/tmp/spp50

Arg: the ResNet depth (26, 50, 101, 152, 200, 288, 600; default 600).
Measured verdicts and runtimes: docs/spp.md.
"""

import ml_collections

FAMILIES = (("bn_resnet", "BN-ReLU"), ("nf_resnet", "NF (Scaled WS)"),
            ("unnorm_resnet", "NF, no WS"))
ACTIVATIONS = ("relu", "silu")


def get_config(arg=None):
  depth = str(arg or "600")
  config = ml_collections.ConfigDict()
  config.models = [
      {"model": f"{family}:{depth}", "activation": act,
       "label": f"{label} {act}"}
      for family, label in FAMILIES for act in ACTIVATIONS]
  config.activation = None     # per model above
  config.skip_gain_init = 1.0  # SkipInit gain 0 would hide every block
  config.alpha = 0.2
  config.ws = None
  config.batch_size = 8
  config.image_size = 224
  config.channels = 3
  config.seed = 0
  config.dataset = ""          # e.g. "fashion_mnist" for real images
  config.split = "test"
  config.data_dir = None
  config.compile = "auto"
  config.title = f"ResNetV2-{depth} at initialization, N(0, 1) input"
  config.plot = f"spp_resnet{depth}.png"
  config.mean_tol = 0.5
  config.growth = 2.0
  config.var_tol = 2.0
  return config
