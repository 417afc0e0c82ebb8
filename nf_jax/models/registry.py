"""Model lookup by name, for configs: a plain table of constructors."""

import inspect
from typing import Any, Dict, Optional

import haiku as hk

from nf_jax.models import layers
from nf_jax.models.errors import UnknownNameError
from nf_jax.models.nf_regnet import NF_REGNET_VARIANTS, NFRegNet
from nf_jax.models.nfnet import NFNET_VARIANTS, NFNet
from nf_jax.models.resnet import RESNET_VARIANTS, ResNet

# name -> (module class, fixed keyword arguments, variants, default variant)
MODELS = {
    "nf_resnet": (ResNet, {"normalization": "nf"}, RESNET_VARIANTS, "50"),
    "bn_resnet": (ResNet, {"normalization": "batchnorm"}, RESNET_VARIANTS,
                  "50"),
    "unnorm_resnet": (ResNet, {"normalization": "unnorm"}, RESNET_VARIANTS,
                      "50"),
    "skipinit_resnet": (ResNet, {"normalization": "skipinit"},
                        RESNET_VARIANTS, "50"),
    "nf_regnet": (NFRegNet, {}, NF_REGNET_VARIANTS, "B0"),
    "nfnet": (NFNet, {}, NFNET_VARIANTS, "F0"),
}

# Resolution used when a variant publishes none (ResNets train and test at 224).
_DEFAULT_IMSIZE = 224


def _entry(name: str):
  if name not in MODELS:
    raise UnknownNameError("model", name, sorted(MODELS))
  return MODELS[name]


def resolve_variant(name: str, variant: Optional[str] = None) -> str:
  """The variant key, with the family's default for None; checks it exists."""
  _, _, variants, default = _entry(name)
  variant = default if variant in (None, "") else str(variant)
  if variant not in variants:
    raise UnknownNameError(f"{name} variant", variant, list(variants))
  return variant


def variant_info(name: str, variant: Optional[str] = None) -> Dict[str, Any]:
  """Published per-variant settings: train/test resolution, dropout, RA."""
  _, _, variants, _ = _entry(name)
  params = variants[resolve_variant(name, variant)]
  if isinstance(params, dict):
    return {"train_imsize": params["train_imsize"],
            "test_imsize": params["test_imsize"],
            "drop_rate": params["drop_rate"],
            "ra_level": params.get("ra_level")}
  return {"train_imsize": _DEFAULT_IMSIZE, "test_imsize": _DEFAULT_IMSIZE,
          "drop_rate": 0.0, "ra_level": None}


def validate(name: str, variant: Optional[str] = None, **kwargs) -> None:
  """Checks a model config without building it; one clear error if bad."""
  cls, fixed, _, _ = _entry(name)
  resolve_variant(name, variant)
  accepted = set(inspect.signature(cls.__init__).parameters) - {
      "self", "num_classes", "variant", "name"} - set(fixed)
  unknown = sorted(set(kwargs) - accepted)
  if unknown:
    raise ValueError(f"Model {name!r} got unknown option(s) {unknown}; "
                     f"valid options: {', '.join(sorted(accepted))}.")
  if "activation" in kwargs:
    layers.canonical_activation(kwargs["activation"])


def create(name: str, num_classes: int, variant: Optional[str] = None,
           **kwargs) -> hk.Module:
  """Instantiates a model; call inside `hk.transform_with_state`."""
  validate(name, variant, **kwargs)
  cls, fixed, _, _ = _entry(name)
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  return cls(num_classes, variant=resolve_variant(name, variant), **fixed,
             **kwargs)


def module_class(name: str):
  """The top-level Haiku class of a model, e.g. for mixed-precision policies."""
  return _entry(name)[0]


def transform(name: str, num_classes: int, variant: Optional[str] = None,
              **kwargs) -> hk.TransformedWithState:
  """Pure functions init(rng, x, is_training) / apply(p, s, rng, x, is_training,
  return_stats=False) for a named model."""
  validate(name, variant, **kwargs)

  def forward(x, is_training: bool, return_stats: bool = False):
    model = create(name, num_classes, variant, **kwargs)
    return model(x, is_training=is_training, return_stats=return_stats)

  return hk.transform_with_state(forward)
