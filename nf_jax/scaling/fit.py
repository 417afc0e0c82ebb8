"""Robust fitting of scaling laws: Huber loss on log residuals, batched L-BFGS.

The objective for raw parameters θ (see laws.py) over points i is

    Σ_i  huber_δ(log L̂_θ(x_i) − log L_i)      (or the mean over i),

with huber_δ(r) = r²/2 if |r| ≤ δ else δ(|r| − δ/2), δ = 1e-3 by default.

Hoffmann et al. (2022) minimize it with L-BFGS from a grid of thousands of
starting points and keep the best. A loop of scipy minimizations over 4,500
starts takes minutes, so :func:`batched_lbfgs` runs every start at once in
float64 numpy: one vectorized two-loop recursion, one vectorized Armijo
backtracking line search, and starts leave the batch as soon as they converge.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from nf_jax.scaling import laws as laws_lib
from nf_jax.scaling.errors import ScalingDataError, ScalingFitWarning

# Per-start termination codes of batched_lbfgs.
RUNNING, CONVERGED_F, CONVERGED_G, LINE_SEARCH_FAILED, MAX_ITER, NON_FINITE = range(6)
STATUS_TEXT = {
    RUNNING: "running",
    CONVERGED_F: "converged (relative objective change below ftol)",
    CONVERGED_G: "converged (gradient below gtol)",
    LINE_SEARCH_FAILED: "stopped: line search found no decrease",
    MAX_ITER: "not converged: reached max_iter",
    NON_FINITE: "failed: objective not finite at the starting point",
}


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
  """Huber loss of residuals r and its derivative."""
  d = np.clip(r, -delta, delta)
  # d (r − d/2) equals r²/2 inside [−δ, δ] and δ(|r| − δ/2) outside.
  return d * (r - 0.5 * d), d


def batched_lbfgs(fun: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                  x0: np.ndarray, *, max_iter: int = 5000, memory: int = 10,
                  ftol: float = 1e-13, gtol: float = 1e-12, max_ls: int = 50):
  """Minimizes many independent problems x0[s] -> fun at once.

  Args:
    fun: maps (x of shape (A, P), rows of shape (A,)) to (f of shape (A,),
      grad of shape (A, P)); rows[i] is the index in x0 of the problem x[i]
      belongs to. Rows are independent problems (the same objective from
      different starting points, or bootstrap replicates). Non-finite values
      reject a trial step.
    x0: starting points, (S, P) float64.
    max_iter, memory: iteration cap and L-BFGS history length.
    ftol: stop when (f_k − f_{k+1}) ≤ ftol · max(|f_k|, |f_{k+1}|).
    gtol: stop when max|grad| ≤ gtol.
    max_ls: halvings allowed in the backtracking (Armijo) line search.

  Returns:
    x (S, P), f (S,), status (S,) codes from STATUS_TEXT, iterations (S,).
  """
  x = np.array(x0, dtype=np.float64)
  num, dim = x.shape
  f, g = fun(x, np.arange(num))
  status = np.full(num, RUNNING)
  n_iter = np.zeros(num, dtype=np.int64)
  finite = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
  status[~finite] = NON_FINITE
  f = np.where(finite, f, np.inf)

  act = np.flatnonzero(finite)
  xa, fa, ga = x[act], f[act], g[act]
  # History as a circular buffer shared by all starts: slot `it % memory` is
  # written at every iteration, with zeros (rho = 0, a no-op in the two-loop
  # recursion) for starts whose step failed the curvature condition.
  s_hist = np.zeros((memory, act.size, dim))
  y_hist = np.zeros((memory, act.size, dim))
  rho = np.zeros((memory, act.size))
  gamma = 1.0 / np.maximum(1.0, np.max(np.abs(ga), axis=1, initial=0.0))

  def dot(u, v):
    return (u * v).sum(axis=-1)

  for it in range(1, max_iter + 1):
    if act.size == 0:
      break
    newest_first = [(it - 1 - j) % memory for j in range(1, memory + 1)]
    q = ga.copy()
    alpha = np.empty((memory, act.size))
    for j in newest_first:
      alpha[j] = rho[j] * dot(s_hist[j], q)
      q -= alpha[j, :, None] * y_hist[j]
    r = gamma[:, None] * q
    for j in reversed(newest_first):
      r += s_hist[j] * (alpha[j] - rho[j] * dot(y_hist[j], r))[:, None]
    p = -r
    slope = dot(ga, p)
    reset = ~(slope < 0)
    if np.any(reset):  # not a descent direction: restart from steepest descent
      scale = 1.0 / np.maximum(1.0, np.max(np.abs(ga[reset]), axis=1))
      p[reset] = -ga[reset] * scale[:, None]
      slope[reset] = dot(ga[reset], p[reset])
      rho[:, reset] = 0.0
      s_hist[:, reset] = 0.0
      y_hist[:, reset] = 0.0

    # Vectorized backtracking line search (Armijo, c1 = 1e-4).
    step = np.ones(act.size)
    pending = np.ones(act.size, dtype=bool)
    xn, fn, gn = xa.copy(), fa.copy(), ga.copy()
    for _ in range(max_ls):
      idx = np.flatnonzero(pending)
      if idx.size == 0:
        break
      if idx.size == act.size:
        xt = xa + step[:, None] * p
      else:
        xt = xa[idx] + step[idx, None] * p[idx]
      ft, gt = fun(xt, act[idx])
      ok = (np.isfinite(ft) & np.all(np.isfinite(gt), axis=1)
            & (ft <= fa[idx] + 1e-4 * step[idx] * slope[idx]))
      good = idx[ok]
      xn[good], fn[good], gn[good] = xt[ok], ft[ok], gt[ok]
      pending[good] = False
      step[idx[~ok]] *= 0.5
    ls_failed = pending

    # L-BFGS memory update where the curvature condition holds.
    sv, yv = xn - xa, gn - ga
    sy, yy = dot(sv, yv), dot(yv, yv)
    keep = (sy > 1e-16 * yy) & (yy > 0) & ~ls_failed
    slot = it % memory
    rho[slot] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
    s_hist[slot] = np.where(keep[:, None], sv, 0.0)
    y_hist[slot] = np.where(keep[:, None], yv, 0.0)
    gamma = np.where(keep, sy / np.where(keep, yy, 1.0), gamma)

    decrease = fa - fn
    f_small = decrease <= ftol * np.maximum(np.maximum(np.abs(fa), np.abs(fn)), 1e-300)
    g_small = np.max(np.abs(gn), axis=1) <= gtol
    xa, fa, ga = xn, fn, gn

    new_status = np.full(act.size, RUNNING)
    new_status[~ls_failed & f_small] = CONVERGED_F
    new_status[~ls_failed & g_small] = CONVERGED_G
    new_status[ls_failed] = LINE_SEARCH_FAILED
    if it == max_iter:
      new_status[new_status == RUNNING] = MAX_ITER
    done = new_status != RUNNING
    if np.any(done):
      d = act[done]
      x[d], f[d], g[d] = xa[done], fa[done], ga[done]
      status[d], n_iter[d] = new_status[done], it
      live = ~done
      act, xa, fa, ga = act[live], xa[live], fa[live], ga[live]
      s_hist, y_hist = s_hist[:, live], y_hist[:, live]
      rho, gamma = rho[:, live], gamma[live]
  return x, f, status, n_iter


def make_objective(law, logx, logy, template, free, delta, scale, weights=None):
  """Batched Huber objective over the free raw parameters.

  weights: optional (R, n) per-problem point weights (bootstrap replicates);
  row r of the batch uses weights[r].
  """
  def fun(xfree, rows):
    theta = np.broadcast_to(template, (xfree.shape[0], law.num_params)).copy()
    theta[:, free] = xfree
    with np.errstate(all="ignore"):
      pred, vjp = law.log_predict(theta, logx)
      loss, dloss = huber(pred - logy, delta)
      if weights is not None:
        w = weights[rows]
        loss, dloss = loss * w, dloss * w
      f = scale * loss.sum(axis=1)
      grad = scale * vjp(dloss)[:, free]
    return f, grad
  return fun


@dataclasses.dataclass
class FitResult:
  """A fitted law, its quality and how the optimizer ended."""
  law: str
  params: dict            # natural parameters, e.g. {"E":..., "A":..., ...}
  raw: np.ndarray         # raw (log-space) parameter vector, see laws.py
  fixed: dict             # raw parameters held fixed during the fit
  objective: float
  objective_kind: str     # "sum" or "mean"
  delta: float
  r2: float               # R² of the losses (linear scale)
  r2_log: float           # R² of log losses
  residuals: np.ndarray   # log L̂ − log L per point
  converged: bool
  message: str
  n_iter: int
  n_starts: int
  n_points: int

  def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return laws_lib.get_law(self.law).predict(self.raw, inputs)

  def to_dict(self) -> dict:
    return {
        "law": self.law, "formula": laws_lib.get_law(self.law).formula,
        "params": self.params,
        "raw": dict(zip(laws_lib.get_law(self.law).param_names,
                        map(float, self.raw))),
        "fixed": self.fixed, "objective": self.objective,
        "objective_kind": self.objective_kind, "delta": self.delta,
        "r2": self.r2, "r2_log": self.r2_log,
        "rms_log_residual": float(np.sqrt(np.mean(self.residuals ** 2))),
        "converged": self.converged, "message": self.message,
        "n_iter": self.n_iter, "n_starts": self.n_starts,
        "n_points": self.n_points,
    }


def _check_points(law, inputs, y, labels, n_free):
  y = np.asarray(y, np.float64)
  if y.ndim != 1:
    raise ScalingDataError(f"{law.name} fit: losses must be 1-D, got shape {y.shape}")
  names = list(law.input_names)
  arrays = {}
  for k in names:
    if k not in inputs:
      raise ScalingDataError(f"{law.name} fit: missing input {k!r}")
    arrays[k] = np.asarray(inputs[k], np.float64)
    if arrays[k].shape != y.shape:
      raise ScalingDataError(f"{law.name} fit: input {k!r} has {arrays[k].size} "
                             f"values but there are {y.size} losses")
  def where(i):
    return labels[i] if labels is not None else f"point {i}"
  for k, v in list(arrays.items()) + [("loss", y)]:
    bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
    if bad.size:
      raise ScalingDataError(f"{where(bad[0])}: {k} = {v[bad[0]]!r} is not a "
                             f"positive finite number ({bad.size} such point(s))")
  if y.size < n_free:
    raise ScalingDataError(f"{law.name} fit: {y.size} point(s) but {n_free} free "
                           f"parameters; need at least as many points as parameters")
  return arrays, y


def fit_law(law: laws_lib.Law | str, inputs: Mapping[str, np.ndarray], y,
            *, fixed: Mapping[str, float] | None = None,
            init_grid: np.ndarray | None = None, objective: str = "sum",
            delta: float = 1e-3, labels: Sequence[str] | None = None,
            max_iter: int = 5000, gtol: float = 1e-2, polish: int = 8,
            warn: bool = True) -> FitResult:
  """Fits a law to losses y with Huber loss on log residuals.

  Args:
    law: a Law or its name ("compute", "chinchilla", "kaplan", "loss_to_loss").
    inputs: dict of input arrays (e.g. {"N": ..., "D": ...}).
    y: observed losses.
    fixed: raw parameters to hold fixed, e.g. {"e": np.log(1.7)} or
      {"alpha": 0.34}; the remaining ones are fitted.
    init_grid: (G, P) starting raw parameters (all P law parameters; columns
      of fixed parameters are overwritten). Defaults to law.default_grid().
    objective: "sum" or "mean" of the per-point Huber losses.
    delta: Huber threshold on log residuals.
    labels: per-point names (file:line, run dir) used in error messages.
    max_iter: per-start iteration cap.
    gtol: phase-1 gradient tolerance, relative to δ times the number of
      points (sum objective) or to δ (mean objective).
    polish: number of best phase-1 optima re-optimized with tight tolerances.
    warn: emit ScalingFitWarning if the best start did not converge.
  """
  law = laws_lib.get_law(law) if isinstance(law, str) else law
  fixed = dict(fixed or {})
  unknown = set(fixed) - set(law.param_names)
  if unknown:
    raise ScalingDataError(f"unknown parameter(s) {sorted(unknown)} for law {law.name}; "
                     f"parameters are {law.param_names}")
  if objective not in ("sum", "mean"):
    raise ValueError(f"objective must be 'sum' or 'mean', got {objective!r}")
  free = [i for i, n in enumerate(law.param_names) if n not in fixed]
  arrays, y = _check_points(law, inputs, y, labels, len(free))
  logx = law.log_inputs(arrays)
  logy = np.log(y)

  starts = np.array(law.default_grid() if init_grid is None else init_grid,
                    dtype=np.float64)
  if starts.ndim != 2 or starts.shape[1] != law.num_params:
    raise ValueError(f"init_grid must have shape (G, {law.num_params})")
  for name, value in fixed.items():
    starts[:, law.param_names.index(name)] = value
  starts = np.unique(starts, axis=0)
  template = starts[0].copy()
  scale = 1.0 / y.size if objective == "mean" else 1.0
  fun = make_objective(law, logx, logy, template, free, delta, scale)

  # Phase 1: every start with a gradient tolerance relative to the largest
  # possible per-point gradient (δ per point). Phase 2: polish the best few
  # distinct optima with tight tolerances, so that loose phase-1 stopping
  # never costs accuracy.
  gscale = scale * y.size * delta
  x, f, status, n_iter = batched_lbfgs(fun, starts[:, free], max_iter=max_iter,
                                       gtol=gtol * gscale, ftol=1e-10)
  order = np.argsort(np.where(np.isfinite(f), f, np.inf))[:polish]
  order = order[np.isfinite(f[order])]
  xp, fp, sp, ip = batched_lbfgs(fun, x[order], max_iter=min(max_iter, 1000),
                                 gtol=1e-8 * gscale, ftol=1e-12)
  better = fp <= f[order]
  x[order[better]], f[order[better]] = xp[better], fp[better]
  status[order[better]] = sp[better]
  n_iter[order[better]] += ip[better]
  if not np.any(np.isfinite(f)):
    raise ScalingDataError(f"{law.name} fit: the objective is not finite at any "
                           f"of the {len(starts)} starting points")
  best = int(np.argmin(f))
  theta = template.copy()
  theta[free] = x[best]
  pred = law.log_predict(theta[None], logx)[0][0]
  resid = pred - logy
  if not np.all(np.isfinite(resid)):
    raise ScalingDataError(f"{law.name} fit: prediction is not finite at the optimum")
  lhat = np.exp(pred)
  r2 = 1.0 - np.sum((lhat - y) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300)
  r2_log = 1.0 - np.sum(resid ** 2) / max(np.sum((logy - logy.mean()) ** 2), 1e-300)
  is_conv = np.isin(status, (CONVERGED_F, CONVERGED_G))
  converged = bool(is_conv[best])
  message = STATUS_TEXT[int(status[best])]
  if not converged and np.any(is_conv & (f <= f[best] + 1e-9 * abs(f[best]))):
    # Another start converged to the same objective value (to 1e-9).
    converged = True
    message += "; a converged start reached the same objective"
  message += f"; {int(is_conv.sum())}/{len(starts)} starts converged"
  if not converged and warn:
    warnings.warn(f"{law.name} fit did not converge: {message}", ScalingFitWarning,
                  stacklevel=2)
  return FitResult(
      law=law.name, params=law.natural(theta), raw=theta,
      fixed={k: float(v) for k, v in fixed.items()}, objective=float(f[best]),
      objective_kind=objective, delta=delta, r2=float(r2), r2_log=float(r2_log),
      residuals=resid, converged=converged, message=message,
      n_iter=int(n_iter[best]), n_starts=len(starts), n_points=int(y.size))
