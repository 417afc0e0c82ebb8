"""Parameter and multiply-add counting for any Haiku model.

MACs are counted from the jaxpr of one forward pass at batch 1: every
convolution contributes out_elements * (in_ch / groups) * kh * kw and every
dot product out_elements * contracted_size. Elementwise work (activations,
weight standardization, pooling) is not counted, which is the convention of
the original NF-RegNet / NFNet FLOP counters.
"""

import math

import haiku as hk
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np


def _init_shapes(model, x):
  return jax.eval_shape(lambda rng, x: model.init(rng, x, True),
                        jax.random.PRNGKey(0), x)


def count_params(model: hk.TransformedWithState, input_shape) -> int:
  """Number of trainable parameters, without running any computation."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  params, _ = _init_shapes(model, x)
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def _eqn_macs(eqn) -> int:
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    lhs, rhs = (v.aval for v in eqn.invars)
    dn = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    kernel_spatial = [rhs.shape[i] for i in dn.rhs_spec[2:]]
    in_per_group = rhs.shape[dn.rhs_spec[1]]
    return int(np.prod(out.shape) * in_per_group * math.prod(kernel_spatial))
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contracted = math.prod(lhs.shape[i] for i in lhs_contract)
    return int(np.prod(eqn.outvars[0].aval.shape) * contracted)
  return 0


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_macs(eqn)
    for sub in jex.core.jaxprs_in_params(eqn.params):
      total += _jaxpr_macs(sub)
  return total


def count_macs(model: hk.TransformedWithState, input_shape) -> int:
  """Multiply-adds of one inference forward pass for a single example."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  params, state = _init_shapes(model, x)
  closed = jax.make_jaxpr(
      lambda p, s, x: model.apply(p, s, None, x, False))(params, state, x)
  return _jaxpr_macs(closed.jaxpr)
