r"""The SPP comparison of Brock, De & Smith (2021), Figures 1-2.

BN-ReLU pre-activation ResNet, NF-ResNet with Scaled WS, and the same
NF-ResNet with plain He-initialized convolutions (no WS: the mean-shift
case), each with ReLU and SiLU, on an N(0, 1) batch at initialization with
the SkipInit gain at 1 and alpha = 0.2.

    python -m launch.spp --config=experiments/spp_paper.py:600 --outdir=/tmp/spp600
    python -m launch.spp --config=experiments/spp_paper.py:50 --outdir=/tmp/spp50

Arg: the ResNet depth (26, 50, 101, 152, 200, 288, 600; default 600).
Verdicts measured (docs/spp.md): at depth 50, see the table there; at depth
600: BN-ReLU healthy (variance linear within stages), NF-ResNet with WS
healthy with ReLU but "variance explosion" with SiLU (3.7x the analytic
value at the last block), and the no-WS NF-ResNet overflows float32 (ReLU:
first non-finite statistic at block 188), so the depth-600 run stops there
with that one-line error and writes nothing.
Runtime on the 2-core dev machine: depth 600 about 50 s per model when the
machine is quiet (about 80 s of CPU time, per-block compilation), and 4-6 min
when about ten other jobs share it; depth 50 at 224 px about 1 min per model
on the busy machine (whole-net jit).
"""

import ml_collections

FAMILIES = (("bn_resnet", "BN-ReLU"), ("nf_resnet", "NF (Scaled WS)"),
            ("unnorm_resnet", "NF, He-init, no WS"))
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
