"""Bootstrap confidence intervals for fitted parameters and predictions.

Each replicate resamples the points with replacement, which is the same as
refitting with integer point weights; all replicates are refitted at once with
the batched L-BFGS of fit.py, each started from the full-data optimum.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import laws as laws_lib


@dataclasses.dataclass
class BootstrapResult:
  params: dict          # name -> (n_ok,) replicate values
  predictions: np.ndarray | None  # (n_ok, m) replicate predictions at `at`
  n_replicates: int
  n_converged: int
  level: float

  def interval(self, values) -> tuple[float, float]:
    lo = 50 * (1 - self.level)
    return tuple(float(v) for v in np.percentile(values, [lo, 100 - lo]))

  def param_intervals(self) -> dict:
    return {k: self.interval(v) for k, v in self.params.items()}

  def prediction_intervals(self) -> np.ndarray:
    lo = 50 * (1 - self.level)
    return np.percentile(self.predictions, [lo, 100 - lo], axis=0).T


def bootstrap(result: fit_lib.FitResult, inputs: Mapping[str, np.ndarray], y, *,
              n_boot: int = 200, seed: int = 0, level: float = 0.95,
              at: Mapping[str, np.ndarray] | None = None,
              max_iter: int = 5000) -> BootstrapResult:
  """Refits `result`'s law on n_boot resamples of (inputs, y).

  Args:
    result: the full-data fit (its fixed parameters stay fixed).
    inputs, y: the data it was fitted on.
    at: optional inputs at which to collect predictions per replicate.
  Returns:
    Replicate parameter values (natural parameters) and predictions; only
    replicates whose optimizer converged are kept.
  """
  law = laws_lib.get_law(result.law)
  y = np.asarray(y, np.float64)
  n = y.size
  rng = np.random.default_rng(seed)
  weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                      for _ in range(n_boot)]).astype(np.float64)
  free = [i for i, name in enumerate(law.param_names) if name not in result.fixed]
  scale = 1.0 / n if result.objective_kind == "mean" else 1.0
  fun = fit_lib.make_objective(law, law.log_inputs(inputs), np.log(y), result.raw,
                               free, result.delta, scale, weights)
  x0 = np.repeat(result.raw[free][None], n_boot, axis=0)
  gscale = scale * n * result.delta
  x, f, status, _ = fit_lib.batched_lbfgs(fun, x0, max_iter=max_iter,
                                          gtol=1e-9 * gscale, ftol=1e-13)
  ok = np.isin(status, (fit_lib.CONVERGED_F, fit_lib.CONVERGED_G,
                        fit_lib.LINE_SEARCH_FAILED)) & np.isfinite(f)
  thetas = np.repeat(result.raw[None], n_boot, axis=0)
  thetas[:, free] = x
  thetas = thetas[ok]
  naturals = [law.natural(t) for t in thetas]
  params = {k: np.array([p[k] for p in naturals]) for k in naturals[0]} if naturals else {}
  preds = None
  if at is not None and len(thetas):
    preds = np.exp(law.log_predict(thetas, law.log_inputs(at))[0])
  return BootstrapResult(params, preds, n_boot, int(ok.sum()), level)
