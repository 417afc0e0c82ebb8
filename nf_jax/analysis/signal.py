"""Signal propagation statistics of any model in the zoo, or of your own.

    result = signal_propagation("nf_resnet:600", gaussian_batch(8, 224),
                                activation="silu")
    result.avg_sq_mean, result.avg_var, result.res_var, result.expected_var

Every statistic is an average over channels of a statistic over N, H, W,
taken in the model's own forward pass (`return_stats=True`) at
initialization: point 0 is the stem output, point i the output of block i-1.
Models run with is_training=True so that BatchNorm uses batch statistics, as
in Brock, De & Smith (2021); stochastic depth and dropout are switched off.
"""

import dataclasses
import inspect
import resource
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from nf_jax.analysis import block_jit
from nf_jax.analysis.errors import (InputShapeError, ModelOptionError,
                                    NonFiniteStatisticError, SPPError)
from nf_jax.analysis.expected import expected_variance
from nf_jax.analysis.inputs import check_batch
from nf_jax.models import registry
from nf_jax.models.errors import UnknownNameError

STAT_KEYS = ("avg_sq_mean", "avg_var", "res_var")
_STATE_NAME = "spp_stats"
# Families whose convolutions can be switched between Scaled WS and plain.
_WS_SWITCH = {"nf_resnet": ("nf_resnet", "unnorm_resnet"),
              "unnorm_resnet": ("nf_resnet", "unnorm_resnet")}
_FIXED_ALPHA = ("bn_resnet", "skipinit_resnet")  # ResNet sets alpha = 1


@dataclasses.dataclass
class SPPResult:
  """Per-point statistics of one model; point 0 is the stem output."""
  label: str
  model: str
  variant: Optional[str]
  options: Dict[str, Any]
  input_shape: tuple
  stage: np.ndarray            # -1 for the stem
  index_in_stage: np.ndarray   # -1 for the stem
  avg_sq_mean: np.ndarray
  avg_var: np.ndarray
  res_var: np.ndarray
  expected_var: Optional[np.ndarray]
  timing: Dict[str, float] = dataclasses.field(default_factory=dict)
  notes: List[str] = dataclasses.field(default_factory=list)
  verdict: Any = None          # a verdict.Verdict, filled in by `diagnose`

  @property
  def num_blocks(self) -> int:
    return len(self.avg_var) - 1

  @property
  def block(self) -> np.ndarray:
    """Block index of every point (-1 for the stem)."""
    return np.arange(len(self.avg_var)) - 1

  def points(self) -> List[Dict[str, Any]]:
    rows = []
    for i in range(len(self.avg_var)):
      rows.append({
          "point": i, "block": int(self.block[i]),
          "stage": int(self.stage[i]),
          "index_in_stage": int(self.index_in_stage[i]),
          "avg_sq_mean": float(self.avg_sq_mean[i]),
          "avg_var": float(self.avg_var[i]),
          "res_var": float(self.res_var[i]),
          "expected_var": (None if self.expected_var is None
                           else float(self.expected_var[i]))})
    return rows

  def to_dict(self) -> Dict[str, Any]:
    return {"label": self.label, "model": self.model, "variant": self.variant,
            "options": dict(self.options),
            "input_shape": list(self.input_shape),
            "num_blocks": self.num_blocks, "timing": dict(self.timing),
            "notes": list(self.notes),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "points": self.points()}


def parse_model(arg: str):
  """'nf_resnet:600' -> ('nf_resnet', '600'); 'nfnet' -> ('nfnet', None)."""
  name, _, variant = str(arg).strip().partition(":")
  return name, (variant or None)


def model_kwargs(name: str, variant: Optional[str] = None, *,
                 activation: Optional[str] = None,
                 skip_gain_init: Optional[float] = 1.0,
                 alpha: Optional[float] = None, ws: Optional[bool] = None,
                 **extra):
  """Maps SPP options onto a zoo model: (family, variant, kwargs, notes).

  `ws` True/False picks Scaled WS or plain fan-in-initialized convs where the
  family has both (nf_resnet <-> unnorm_resnet). Stochastic depth and dropout
  are switched off so that training mode only changes BatchNorm.
  """
  notes = []
  if name not in registry.MODELS:
    raise UnknownNameError("model", name, sorted(registry.MODELS))
  if ws is not None:
    if name not in _WS_SWITCH:
      raise ModelOptionError(
          f"Weight standardization cannot be switched {'on' if ws else 'off'}"
          f" for {name!r}; only {', '.join(sorted(_WS_SWITCH))} have both "
          f"(WS on: nf_resnet, off: unnorm_resnet).")
    name = _WS_SWITCH[name][0 if ws else 1]
  variant = registry.resolve_variant(name, variant)
  accepted = set(inspect.signature(
      registry.module_class(name).__init__).parameters)
  kwargs = dict(extra)
  if activation is not None:
    kwargs["activation"] = activation
  if skip_gain_init is not None and "skip_gain_init" in accepted:
    if name == "bn_resnet":
      notes.append("bn_resnet has no SkipInit gain; skip_gain_init ignored")
    else:
      kwargs["skip_gain_init"] = float(skip_gain_init)
  if alpha is not None:
    if name in _FIXED_ALPHA:
      notes.append(f"{name} fixes alpha = 1; alpha={alpha} ignored")
    else:
      kwargs["alpha"] = float(alpha)
  for off in ("stochdepth_rate", "drop_rate"):
    if off in accepted:
      kwargs.setdefault(off, 0.0)
  try:
    registry.validate(name, variant, **kwargs)
  except UnknownNameError:
    raise
  except ValueError as e:
    raise ModelOptionError(str(e)) from None
  return name, variant, kwargs, notes


def _zoo_layout(name, variant, kwargs):
  """(specs, total downsampling) of a zoo model, without building parameters."""
  box = {}

  def build():
    box["model"] = registry.create(name, 10, variant, **kwargs)

  hk.transform(build).init(None)
  model = box["model"]
  stem = 1
  if hasattr(model, "stem_type"):   # ResNet
    stem = 4 if model.stem_type == "imagenet" else int(model.stem_stride)
  elif type(model).__name__ == "NFRegNet":
    stem = 2
  elif type(model).__name__ == "NFNet":
    stem = 4
  down = stem * int(np.prod([s.stride for s in model.specs]))
  return list(model.specs), down


def _cpu_s() -> float:
  """User + system CPU seconds of this process (all threads)."""
  use = resource.getrusage(resource.RUSAGE_SELF)
  return use.ru_utime + use.ru_stime


def _blocks_pay_off(specs) -> bool:
  """Whether compiling each distinct block once beats one whole-net jit.

  A separately compiled block program costs about three times a block inside
  the whole-net compile (measured on the 2-core dev machine), and a stage
  needs two programs (transition and ordinary block).
  """
  programs = 2 * len({s.stage for s in specs})
  return len(specs) >= 3 * programs


def _check_stats(stats, label):
  if not isinstance(stats, dict) or any(k not in stats for k in STAT_KEYS):
    raise SPPError(
        f"{label}: the model must return (logits, stats) with stats a dict of "
        f"{', '.join(STAT_KEYS)} (one entry per point: stem, then each block).")
  arrays = {k: np.asarray(stats[k], np.float64).reshape(-1)
            for k in STAT_KEYS}
  lengths = {len(v) for v in arrays.values()}
  if len(lengths) != 1:
    raise SPPError(f"{label}: statistics have different lengths "
                   f"{ {k: len(v) for k, v in arrays.items()} }.")
  return arrays


def _first_nonfinite(arrays, stage, label):
  bad = ~np.isfinite(np.stack([arrays[k] for k in STAT_KEYS]))
  if not bad.any():
    return
  point = int(np.argmax(bad.any(axis=0)))
  values = ", ".join(f"{k}={arrays[k][point]:.4g}" for k in STAT_KEYS)
  where = ("the stem output" if point == 0 else
           f"block {point - 1} (stage {int(stage[point])})")
  raise NonFiniteStatisticError(
      f"{label}: non-finite statistic first at {where}: {values}; the signal "
      f"overflows or is undefined there, so no plot is written.", point)


def signal_propagation(
    model: Union[str, Callable], x, *, variant: Optional[str] = None,
    activation: Optional[str] = None, skip_gain_init: Optional[float] = 1.0,
    alpha: Optional[float] = None, ws: Optional[bool] = None,
    label: Optional[str] = None, seed: int = 0, params=None, state=None,
    specs: Optional[Sequence] = None, expected_var=None,
    channels: Optional[int] = 3, compile: str = "auto",
    block_classes: Sequence[type] = block_jit.DEFAULT_BLOCK_CLASSES,
    progress: Optional[Callable[[str], None]] = None,
    **extra_model_kwargs) -> SPPResult:
  """Signal propagation statistics of one model on the batch `x`.

  Args:
    model: a zoo name ('nf_resnet', or 'nf_resnet:600' with the variant), or
      a Haiku function `fn(x, is_training) -> (logits, stats)` with stats in
      the zoo's format (`stack_stats`).
    x: the input batch [N, H, W, C] (see `inputs.gaussian_batch`).
    variant, activation, alpha, **extra_model_kwargs: zoo model settings.
    skip_gain_init: SkipInit gain at initialization; 1 by default, since
      with 0 every non-transition block is the identity. Zoo models only.
    ws: True/False to switch Scaled WS on/off (nf_resnet / unnorm_resnet).
    label: name in plots and reports.
    seed: parameter initialization seed.
    params, state: analyse these parameters instead of a fresh
      initialization (the whole forward is then jitted).
    specs, expected_var: for your own model, its `BlockSpec`s or the expected
      variance per point, for the analytic curve and the verdict.
    channels: input channels the model expects (None: any).
    compile: 'blocks' (compile each distinct block once; fresh zoo models),
      'full' (jit the whole forward), or 'auto' (blocks for deep fresh zoo
      models, e.g. ResNet-101 and deeper; full otherwise).
    block_classes: block modules that 'blocks' compiles separately.
    progress: called with short progress messages.
  """
  say = progress or (lambda msg: None)
  t0, cpu0 = time.time(), _cpu_s()
  notes, options = [], {}
  if isinstance(model, str):
    name, parsed_variant = parse_model(model)
    family, variant, kwargs, notes = model_kwargs(
        name, variant or parsed_variant, activation=activation,
        skip_gain_init=skip_gain_init, alpha=alpha, ws=ws,
        **extra_model_kwargs)
    specs, min_size = _zoo_layout(family, variant, kwargs)
    options = dict(kwargs)
    label = label or f"{family}-{variant}"
    model_name = family

    def build():
      return registry.create(family, 10, variant, **kwargs)

    gain = None if family == "bn_resnet" else kwargs.get("skip_gain_init")
    expected = expected_variance(specs, gain)
  elif callable(model):
    for opt, value in (("activation", activation), ("alpha", alpha),
                       ("ws", ws)):
      if value is not None:
        raise ModelOptionError(
            f"Option {opt}={value!r} applies to zoo models only; set it in "
            f"your own model function instead.")
    model_name = getattr(model, "__name__", type(model).__name__)
    label = label or model_name
    min_size = 1
    build = None
    variant = None
    if expected_var is not None:
      expected = np.asarray(expected_var, np.float64).reshape(-1)
    elif specs is not None:
      expected = expected_variance(list(specs), None)
    else:
      expected = None
  else:
    raise SPPError(f"model must be a zoo name or a Haiku function; got "
                   f"{type(model).__name__}.")

  check_batch(x, channels, min_size)
  x = jnp.asarray(x, jnp.float32)
  mode = compile
  if mode not in ("auto", "blocks", "full"):
    raise SPPError(f"compile must be 'auto', 'blocks' or 'full'; got "
                   f"{compile!r}.")
  if mode == "auto":
    mode = "blocks" if (params is None and build is not None and
                        _blocks_pay_off(specs)) else "full"
  if mode == "blocks" and params is not None:
    raise SPPError("compile='blocks' analyses fresh initializations only; "
                   "use compile='full' with given params.")
  num_blocks = len(specs) if specs is not None else None
  compiler = block_jit.BlockCompiler(
      block_classes, progress=lambda m: say(f"{label}: {m}"),
      num_blocks=num_blocks) if mode == "blocks" else None

  def forward(x):
    net = build() if build is not None else None
    call = net if net is not None else model
    if compiler is not None:
      with hk.intercept_methods(compiler):
        out = call(x, is_training=True, return_stats=True) if net else call(
            x, is_training=True)
    else:
      out = (call(x, is_training=True, return_stats=True) if net
             else call(x, is_training=True))
    if not (isinstance(out, tuple) and len(out) == 2):
      raise SPPError(f"{label}: the model must return (logits, stats).")
    stats = out[1]
    if isinstance(stats, dict):
      stats = {k: stats[k] for k in STAT_KEYS if k in stats}
    hk.set_state(_STATE_NAME, stats)
    return stats

  transformed = hk.transform_with_state(forward)
  rng = jax.random.PRNGKey(seed)
  say(f"{label}: {'%d blocks, ' % num_blocks if num_blocks else ''}"
      f"input {tuple(x.shape)}, compile={mode}")
  try:
    if params is not None:
      run = jax.jit(lambda p, s, r, x: transformed.apply(p, s, r, x)[0])
      stats = run(params, state if state is not None else {}, rng, x)
    elif mode == "blocks":
      stats = transformed.init(rng, x)[1]["~"][_STATE_NAME]
    else:
      say(f"{label}: compiling the whole forward pass")
      run = jax.jit(lambda r, x: transformed.init(r, x)[1]["~"][_STATE_NAME])
      stats = run(rng, x)
    stats = jax.device_get(stats)
  except SPPError:
    raise
  except (TypeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise InputShapeError(f"{label}: input of shape {tuple(x.shape)} does "
                          f"not fit the model: {first}") from None
  arrays = _check_stats(stats, label)
  n_points = len(arrays["avg_var"])
  if specs is not None and len(specs) + 1 != n_points:
    raise SPPError(f"{label}: {n_points} statistics points but {len(specs)} "
                   f"block specs; expected one point per block plus the stem.")
  if expected is not None and len(expected) != n_points:
    raise SPPError(f"{label}: expected_var has {len(expected)} entries, the "
                   f"model {n_points} points (stem + blocks).")
  if specs is not None:
    stage = np.asarray([-1] + [s.stage for s in specs])
    in_stage = np.asarray([-1] + [s.index_in_stage for s in specs])
  else:
    stage = np.asarray([-1] + [0] * (n_points - 1))
    in_stage = np.arange(n_points) - 1
  _first_nonfinite(arrays, stage, label)
  timing = {"total_s": round(time.time() - t0, 2),
            "cpu_s": round(_cpu_s() - cpu0, 2)}
  if compiler is not None:
    timing["block_programs"] = len(compiler.programs)
    timing["first_call_s"] = round(compiler.compile_s, 2)
  say(f"{label}: done in {timing['total_s']:.1f}s wall, "
      f"{timing['cpu_s']:.1f}s CPU")
  return SPPResult(label=label, model=model_name, variant=variant,
                   options=options, input_shape=tuple(x.shape), stage=stage,
                   index_in_stage=in_stage, avg_sq_mean=arrays["avg_sq_mean"],
                   avg_var=arrays["avg_var"], res_var=arrays["res_var"],
                   expected_var=expected, timing=timing, notes=notes)
