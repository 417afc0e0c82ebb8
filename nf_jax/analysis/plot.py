"""Signal propagation plots in the style of Brock, De & Smith (2021), Fig. 1-2.

Three panels against depth (point 0 = stem output, point i = output of block
i): average channel squared mean, average channel variance (with the analytic
expectation dashed), and the variance of the residual branch output. Black
dots mark the end of each stage. A panel switches to a log scale when its
values span more than two decades, so exploding and healthy models can share
a figure.
"""

from typing import Optional, Sequence

import numpy as np

PANELS = (("avg_sq_mean", "Avg. channel squared mean"),
          ("avg_var", "Avg. channel variance"),
          ("res_var", "Residual avg. channel variance"))


def _log_scale(values) -> bool:
  v = np.concatenate([np.asarray(a, np.float64).ravel() for a in values])
  v = v[v > 0]
  return v.size > 0 and v.max() / max(v.min(), 1e-12) > 100.0


def plot_spp(results: Sequence, path: str, title: Optional[str] = None,
             dpi: int = 100) -> str:
  """Writes one PNG with every result overlaid; returns the path.

  Refuses (ValueError) to plot non-finite statistics.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  for r in results:
    for key, _ in PANELS:
      if not np.all(np.isfinite(getattr(r, key))):
        raise ValueError(f"{r.label}: non-finite {key}; refusing to plot.")
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (key, name) in zip(axes, PANELS):
    shown = []
    for j, r in enumerate(results):
      color = colors[j % len(colors)]
      depth = np.arange(len(r.avg_var))
      y = np.asarray(getattr(r, key))
      style = dict(marker="." if len(y) <= 60 else None, markersize=3)
      if key == "res_var":  # the stem has no residual branch
        depth, y = depth[1:], y[1:]
      ax.plot(depth, y, color=color, lw=1.3, label=r.label, **style)
      shown.append(y)
      ends = [i for i in range(1, len(r.stage))
              if i == len(r.stage) - 1 or r.stage[i + 1] != r.stage[i]]
      ends = [i for i in ends if key != "res_var" or i >= 1]
      yy = np.asarray(getattr(r, key))
      ax.plot(ends, yy[ends], "o", color="black", markersize=3.5, zorder=5)
      if key == "avg_var" and r.expected_var is not None:
        ax.plot(np.arange(len(r.expected_var)), r.expected_var, "--",
                color=color, lw=1.0, alpha=0.9)
        shown.append(np.asarray(r.expected_var))
    if _log_scale(shown):
      ax.set_yscale("log")
    ax.set_xlabel("Depth (block)")
    ax.set_title(name, fontsize=11)
    ax.grid(alpha=0.3)
  axes[1].plot([], [], "k--", lw=1.0, label="analytic (β/α recursion)")
  axes[1].plot([], [], "ko", markersize=3.5, label="end of stage")
  handles, labels = axes[1].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center",
             ncol=min(len(labels), 4), fontsize=9, frameon=False)
  if title:
    fig.suptitle(title, fontsize=12)
  rows = -(-len(labels) // 4)
  fig.tight_layout(rect=(0, 0.04 + 0.045 * rows, 1, 1))
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
