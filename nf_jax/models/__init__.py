"""The model zoo: NF-ResNets, NF-RegNets, NFNets and their baselines."""

from nf_jax.models.counting import count_macs, count_params
from nf_jax.models.errors import UnknownNameError
from nf_jax.models.layers import (ACTIVATION_GAMMAS, ScaledWSConv2D,
                                  SqueezeExcite, canonical_activation,
                                  scaled_activation, stochastic_depth)
from nf_jax.models.nf_regnet import NFRegNet
from nf_jax.models.nfnet import NFNet
from nf_jax.models.registry import (MODELS, create, module_class,
                                    resolve_variant, transform, validate,
                                    variant_info)
from nf_jax.models.resnet import BlockSpec, ResNet, plan_blocks
