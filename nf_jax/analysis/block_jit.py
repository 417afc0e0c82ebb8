"""Compile each distinct residual block once, not every block of the network.

A ResNet-600 unrolls 200 blocks; XLA compiles them one by one, which takes
minutes on a CPU. But the blocks of a stage differ only in beta (and their
names), so at initialization the SPP runs the network eagerly and hands every
block call to a jitted program that creates the block's parameters from an rng
and applies it, keyed by everything static about the block. A ResNet then
needs two programs per stage (transition and ordinary block).

The programs create their parameters inside; the outer `init` therefore does
not return them. This is for SPPs of freshly initialized networks only; with
given parameters the analysis jits the whole forward instead.

A block class may be registered if its computation depends on its
`BlockSpec` only through in_ch, out_ch, stride, beta and stochdepth_rate
(true of `ResidualBlock` and `GroupedNFBlock`), and its __call__ is
`(x, is_training) -> (out, res_var)`.
"""

import copy
import dataclasses
import time
from typing import Callable, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from nf_jax.models.grouped_block import GroupedNFBlock
from nf_jax.models.resnet import ResidualBlock

DEFAULT_BLOCK_CLASSES = (ResidualBlock, GroupedNFBlock)

_PLAIN = (int, float, str, bool, type(None))


def _static(value):
  """A hashable stand-in: plain values as is, anything else by identity."""
  if isinstance(value, _PLAIN):
    return value
  if isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN)
                                              for v in value):
    return tuple(value)
  return ("id", id(value))


def _block_key(module):
  attrs = tuple(sorted((k, _static(v)) for k, v in vars(module).items()
                       if not k.startswith("_") and k != "spec"
                       and k != "module_name" and k != "name"))
  spec = dataclasses.replace(module.spec, index=0, index_in_stage=1, beta=0.0,
                             expected_var=0.0)
  return (type(module), spec, attrs)


class BlockCompiler:
  """An `hk.intercept_methods` interceptor with a cache of block programs."""

  def __init__(self, block_classes: Sequence[type] = DEFAULT_BLOCK_CLASSES,
               progress: Optional[Callable[[str], None]] = None,
               num_blocks: Optional[int] = None):
    self.block_classes = tuple(block_classes)
    self.progress = progress or (lambda msg: None)
    self.num_blocks = num_blocks
    self.programs = {}
    self.calls = 0
    self.compile_s = 0.0
    self._inside = False
    self._start = time.time()

  def _program(self, module):
    proto = module

    def block(x, beta, is_training):
      self._inside = True  # a block's own submodules run as usual
      try:
        m = copy.copy(proto)
        m.spec = dataclasses.replace(proto.spec, beta=beta)
        return m(x, is_training)
      finally:
        self._inside = False

    transformed = hk.transform_with_state(block)

    def init_and_apply(rng, x, beta, is_training):
      params, state = transformed.init(rng, x, beta, is_training)
      return transformed.apply(params, state, None, x, beta, is_training)[0]

    return jax.jit(init_and_apply, static_argnums=3)

  def __call__(self, next_fun, args, kwargs, context):
    module = context.module
    if (self._inside or context.method_name != "__call__"
        or not isinstance(module, self.block_classes)):
      return next_fun(*args, **kwargs)
    x = args[0]
    is_training = args[1] if len(args) > 1 else kwargs["is_training"]
    key = _block_key(module)
    fresh = key not in self.programs
    if fresh:
      self.programs[key] = self._program(module)
      spec = module.spec
      self.progress(f"compiling block program {len(self.programs)} "
                    f"(stage {spec.stage}, {spec.in_ch}->{spec.out_ch} ch, "
                    f"stride {spec.stride}, input {tuple(x.shape)})")
    t = time.time()
    out, res_var = self.programs[key](hk.next_rng_key(), x,
                                      jnp.float32(module.spec.beta),
                                      bool(is_training))
    if fresh:
      jax.block_until_ready(out)
      self.compile_s += time.time() - t
    self.calls += 1
    n = self.num_blocks
    if n and (self.calls % max(1, n // 10) == 0 or self.calls == n):
      self.progress(f"block {self.calls}/{n} dispatched "
                    f"({time.time() - self._start:.0f}s)")
    return out, res_var
