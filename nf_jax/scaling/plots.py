"""PNG plots (matplotlib, Agg backend): fits over data, loss-to-loss lines,
predicted vs actual. matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def fit_curves(path, fits: dict, dpi: int = 90):
  """fits: label -> (FitResult, inputs dict, losses). One panel; x axis is
  compute C = 6ND (or C), curves are iso-N lines through the data."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, (label, (res, inputs, y)) in enumerate(fits.items()):
    col = colors[k % len(colors)]
    if "C" in inputs and "N" not in inputs:
      c = np.asarray(inputs["C"])
      ax.scatter(c, y, s=8, color=col, alpha=0.6, label=f"{label}")
      grid = np.geomspace(c.min(), c.max() * 3, 100)
      ax.plot(grid, res.predict({"C": grid}), color=col, lw=1)
    else:
      n, d = np.asarray(inputs["N"]), np.asarray(inputs["D"])
      ax.scatter(6 * n * d, y, s=8, color=col, alpha=0.6, label=label)
      for nv in np.unique(n)[:: max(1, len(np.unique(n)) // 6)]:
        dd = np.geomspace(d[n == nv].min() / 2, d[n == nv].max() * 2, 50)
        ax.plot(6 * nv * dd, res.predict({"N": np.full_like(dd, nv), "D": dd}),
                color=col, lw=0.7, alpha=0.7)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("compute C (= 6ND)")
  ax.set_ylabel("loss")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def loss_to_loss_lines(path, relations: list, dpi: int = 90):
  """Scatter of paired (L_x, L_y) and the fitted shifted power law."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, rel in enumerate(relations):
    col = colors[k % len(colors)]
    p = rel.fit.params
    ax.scatter(rel.lx, rel.ly, s=8, color=col, alpha=0.6,
               label=f"{rel.x_name} → {rel.y_name}: κ={p['kappa']:.2f}, K={p['K']:.2f}")
    grid = np.linspace(rel.lx.min() * 0.97, rel.lx.max(), 100)
    grid = grid[grid > rel.e_x]
    ax.plot(grid, rel.predict(grid), color=col, lw=1)
  ax.set_xlabel("loss x")
  ax.set_ylabel("loss y")
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def predicted_vs_actual(path, predictions: list, dpi: int = 90):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(4.5, 4))
  methods = sorted({p.method for p in predictions})
  lo = min(min(p.actual, p.predicted) for p in predictions)
  hi = max(max(p.actual, p.predicted) for p in predictions)
  for m, marker in zip(methods, "ox^sv"):
    ps = [p for p in predictions if p.method == m]
    ax.scatter([p.actual for p in ps], [p.predicted for p in ps], s=14, marker=marker,
               alpha=0.7, label=m)
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
  ax.set_xlabel("actual loss")
  ax.set_ylabel("predicted loss")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
