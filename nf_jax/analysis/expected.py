"""The analytic variance of the residual stream: the beta/alpha recursion.

For a normalizer-free network x_{i+1} = x_i + alpha * g * f_i(x_i / beta_i),
with a residual branch f_i that preserves the variance of its (unit-variance)
input, Var(x_{i+1}) = Var(x_i) + (alpha * g)^2, and every stage's transition
block restarts the stream at Var = 1 because its shortcut convolves the
normalized input. So the output of the k-th block of a stage (k = 1 for the
transition block) has the expected variance 1 + k (alpha * g)^2.

`BlockSpec.expected_var` holds this with g = 1. SPPs are usually drawn with the
SkipInit gain g forced to 1; with the models' default g = 0 every
non-transition block is the identity and the expectation stays at 1.
"""

from typing import Optional, Sequence

import numpy as np


def alpha_squared(specs: Sequence) -> float:
  """alpha^2 read back from the specs (the first block's expected_var - 1)."""
  if not specs:
    return 0.0
  return float(specs[0].expected_var) - 1.0


def expected_variance(specs: Sequence, skip_gain: Optional[float] = 1.0
                      ) -> np.ndarray:
  """Expected variance at every SPP point: [stem, block 0, ..., block N-1].

  The stem output is expected at unit variance. `skip_gain` scales the
  residual branch (alpha -> alpha * g); None takes `BlockSpec.expected_var`
  as it is (g = 1).
  """
  if skip_gain is None:
    return np.asarray([1.0] + [float(s.expected_var) for s in specs])
  a2 = alpha_squared(specs)
  g2 = 1.0 if skip_gain is None else float(skip_gain) ** 2
  out, v = [1.0], 1.0
  for spec in specs:
    if spec.index_in_stage == 0:
      v = 1.0
    v += a2 * g2
    out.append(v)
  return np.asarray(out, np.float64)
