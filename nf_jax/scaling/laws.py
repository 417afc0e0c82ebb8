"""Scaling-law functional forms, written in log space for fitting.

Every law predicts log L from log inputs with a log-sum-exp (LSE)
parameterization, and returns the Jacobian of log L with respect to its raw
parameters so that many starting points can be optimized at once (see fit.py).

Forms (raw parameters in brackets; a = log A, b = log B, e = log E, k = log K):

* ``compute``    L(C)   = E + A·C^-α                      [a, alpha, e]
                 log L  = LSE(a − α log C, e)
* ``chinchilla`` L(N,D) = E + A/N^α + B/D^β               [a, b, e, alpha, beta]
                 log L  = LSE(a − α log N, b − β log D, e)
* ``kaplan``     L(N,D) = E + ((A/N)^(α/β) + B/D)^β       [a, b, e, alpha, beta]
                 log L  = LSE(β·LSE((α/β)(a − log N), b − log D), e)
* ``loss_to_loss`` L_y  = K·(L_x − E_x)^κ + E_y           [k, kappa, e_y, e_x]
                 log L_y = LSE(k + κ log(L_x − E_x), e_y)

Thetas are arrays of shape (S, P) (S starting points); inputs are a dict of
1-D arrays of length n; predictions have shape (S, n) and Jacobians (S, n, P).
"""

from __future__ import annotations

import itertools
from typing import Mapping

import numpy as np


def _lse2(u, v):
  """log(exp u + exp v) and the softmax weight of u (numerically stable)."""
  m = np.maximum(u, v)
  eu, ev = np.exp(u - m), np.exp(v - m)
  s = eu + ev
  return m + np.log(s), eu / s


def _row_sum(x):
  return x.sum(axis=1)


def grid(**axes) -> np.ndarray:
  """Cartesian product of per-parameter value lists, in the order given."""
  return np.array(list(itertools.product(*axes.values())), dtype=np.float64)


class Law:
  """Base class. Subclasses define names, log_predict and natural params.

  log_predict(theta, logx) returns (log L̂ of shape (S, n), vjp) where
  vjp(c) = Σ_i c[:, i] ∂ log L̂_i / ∂θ, of shape (S, P): the gradient of any
  objective whose derivative with respect to log L̂ is c.
  """
  name: str = ""
  formula: str = ""
  param_names: tuple[str, ...] = ()
  input_names: tuple[str, ...] = ()

  @property
  def num_params(self) -> int:
    return len(self.param_names)

  def log_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict:
    """Pre-computes the log-transformed inputs used by log_predict."""
    return {k: np.log(np.asarray(inputs[k], np.float64)) for k in self.input_names}

  def log_predict(self, theta, logx):
    raise NotImplementedError

  def predict(self, theta, inputs) -> np.ndarray:
    """Loss predicted by one raw parameter vector theta (shape (P,))."""
    theta = np.asarray(theta, np.float64)[None]
    return np.exp(self.log_predict(theta, self.log_inputs(inputs))[0][0])

  def natural(self, theta) -> dict:
    """Raw parameters -> human-readable parameters (E, A, alpha, ...)."""
    raise NotImplementedError

  def raw(self, natural: Mapping[str, float]) -> np.ndarray:
    """Human-readable parameters -> raw parameter vector."""
    raise NotImplementedError

  def default_grid(self) -> np.ndarray:
    raise NotImplementedError


def _sum_of_exps(terms, const_log):
  """log(Σ_j exp(terms[j]) + exp(const_log)) and normalized weights.

  Fast path without max-subtraction (one exp per term and one log); rows that
  over- or under-flow are recomputed with the stable max-shifted form.
  """
  with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
    exps = [np.exp(t) for t in terms]
    const = np.exp(const_log)
    total = const + exps[0]
    for ex in exps[1:]:
      total = total + ex
    out = np.log(total)
  # A non-finite row sum flags overflow (inf) and underflow (log 0 = -inf).
  bad = ~np.isfinite(out.sum(axis=1)) | ~np.isfinite(const[:, 0])
  if np.any(bad):
    sub = [t[bad] for t in terms]
    cl = np.broadcast_to(const_log[bad], sub[0].shape)
    m = cl
    for t in sub:
      m = np.maximum(m, t)
    sub_exps = [np.exp(t - m) for t in sub]
    sub_const = np.exp(cl - m)
    sub_total = sub_const + sum(sub_exps)
    out[bad] = m + np.log(sub_total)
    # Store weights relative to the recomputed totals: exps / total is all the
    # callers use, so scale both consistently.
    total = np.broadcast_to(total, out.shape).copy()
    const = np.broadcast_to(const, out.shape).copy()
    for ex, se in zip(exps, sub_exps):
      ex[bad] = se
    total[bad] = sub_total
    const[bad] = sub_const
  return out, exps, const, total


class ComputeLaw(Law):
  name = "compute"
  formula = "L(C) = E + A*C^-alpha"
  param_names = ("a", "alpha", "e")
  input_names = ("C",)

  def log_predict(self, theta, logx):
    a, alpha, e = (theta[:, i:i + 1] for i in range(3))
    lc = logx["C"][None]
    out, (eu,), ee, total = _sum_of_exps([a - alpha * lc], e)

    def vjp(c):
      cs = c / total
      cu = cs * eu
      return np.stack([_row_sum(cu), -cu @ logx["C"], _row_sum(cs * ee)], axis=1)
    return out, vjp

  def natural(self, theta):
    a, alpha, e = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha)}

  def raw(self, p):
    return np.array([np.log(p["A"]), p["alpha"], np.log(p["E"])])

  def default_grid(self):
    return grid(a=np.arange(0., 30.1, 5.), alpha=np.arange(0.05, 0.61, 0.1),
                e=np.arange(-1., 1.01, 0.5))


class ChinchillaLaw(Law):
  name = "chinchilla"
  formula = "L(N,D) = E + A/N^alpha + B/D^beta"
  param_names = ("a", "b", "e", "alpha", "beta")
  input_names = ("N", "D")

  def log_predict(self, theta, logx):
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    ln, ld = logx["N"], logx["D"]
    out, (eu, ev), ee, total = _sum_of_exps([a - alpha * ln, b - beta * ld], e)

    def vjp(c):
      cs = c / total
      cu, cv = cs * eu, cs * ev
      return np.stack([_row_sum(cu), _row_sum(cv), _row_sum(cs * ee),
                       -(cu * ln).sum(axis=1), -(cv * ld).sum(axis=1)], axis=1)
    return out, vjp

  def natural(self, theta):
    a, b, e, alpha, beta = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
            "alpha": float(alpha), "beta": float(beta)}

  def raw(self, p):
    return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]),
                     p["alpha"], p["beta"]])

  def default_grid(self):
    """Hoffmann et al.'s grid of 4,500 initial points."""
    return grid(a=np.arange(0., 25.1, 5.), b=np.arange(0., 25.1, 5.),
                e=np.arange(-1., 1.01, 0.5), alpha=np.arange(0., 2.01, 0.5),
                beta=np.arange(0., 2.01, 0.5))


class KaplanLaw(Law):
  """Kaplan et al. (2020) joint form, as used by Brandfonbrener et al. (2024)."""
  name = "kaplan"
  formula = "L(N,D) = E + ((A/N)^(alpha/beta) + B/D)^beta"
  param_names = ("a", "b", "e", "alpha", "beta")
  input_names = ("N", "D")

  def log_predict(self, theta, logx):
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    ln, ld = logx["N"][None], logx["D"][None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      u1 = (alpha / beta) * (a - ln)
    inner, w1 = _lse2(u1, b - ld)
    t = beta * inner
    out, st = _lse2(t, np.broadcast_to(e, t.shape))

    def vjp(c):
      ct = c * st
      ctw = ct * w1
      return np.stack([alpha[:, 0] * _row_sum(ctw),
                       beta[:, 0] * _row_sum(ct - ctw),
                       _row_sum(c - ct),
                       _row_sum(ctw * (a - ln)),
                       _row_sum(ct * inner - ctw * u1)], axis=1)
    return out, vjp

  def natural(self, theta):
    a, b, e, alpha, beta = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
            "alpha": float(alpha), "beta": float(beta)}

  def raw(self, p):
    return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]),
                     p["alpha"], p["beta"]])

  def default_grid(self):
    # beta = 0 is singular for this form (alpha / beta), so the grid avoids it.
    return grid(a=np.array([0., 10., 20., 30.]), b=np.array([0., 10., 20., 30.]),
                e=np.array([-1., 0., 1.]), alpha=np.array([0.2, 0.5]),
                beta=np.array([0.2, 0.5]))


class LossToLossLaw(Law):
  """Shifted power law between two losses: L_y = K (L_x - E_x)^kappa + E_y.

  E_x is normally fixed (it comes from a single-dataset fit of the x losses);
  E_y is fixed the same way or, optionally, fitted.
  """
  name = "loss_to_loss"
  formula = "L_y = K*(L_x - E_x)^kappa + E_y"
  param_names = ("k", "kappa", "e_y", "e_x")
  input_names = ("L_x",)

  def log_inputs(self, inputs):
    return {"L_x": np.asarray(inputs["L_x"], np.float64)}

  def log_predict(self, theta, logx):
    k, kappa, e_y, e_x = (theta[:, i:i + 1] for i in range(4))
    ex = np.exp(e_x)
    gap = logx["L_x"][None] - ex
    # Points with L_x <= E_x are outside the law's domain: NaN, which the
    # optimizer rejects and fit.py reports.
    with np.errstate(invalid="ignore", divide="ignore"):
      lg = np.log(np.where(gap > 0, gap, np.nan))
    u = k + kappa * lg
    out, wu = _lse2(u, np.broadcast_to(e_y, u.shape))

    def vjp(c):
      cu = c * wu
      return np.stack([_row_sum(cu), _row_sum(cu * lg), _row_sum(c - cu),
                       -_row_sum(cu * kappa * ex / gap)], axis=1)
    return out, vjp

  def natural(self, theta):
    k, kappa, e_y, e_x = theta
    return {"K": float(np.exp(k)), "kappa": float(kappa),
            "E_y": float(np.exp(e_y)), "E_x": float(np.exp(e_x))}

  def raw(self, p):
    return np.array([np.log(p["K"]), p["kappa"], np.log(p["E_y"]), np.log(p["E_x"])])

  def default_grid(self):
    return grid(k=np.array([-1., 0., 1.]), kappa=np.array([0.5, 1., 1.5, 2.]),
                e_y=np.array([0.0]), e_x=np.array([0.0]))


LAWS = {law.name: law for law in (ComputeLaw(), ChinchillaLaw(), KaplanLaw(),
                                  LossToLossLaw())}


def get_law(name: str) -> Law:
  if name not in LAWS:
    raise ValueError(f"unknown law {name!r}; choose one of {sorted(LAWS)}")
  return LAWS[name]
