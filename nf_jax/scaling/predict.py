"""Prediction and backtests: fit below a compute cutoff, predict above it.

Two predictors of a held-out run's loss are compared:

* single-dataset: a law L(N, D) (or L(C)) fitted to the small runs of the
  target dataset, evaluated at the held-out run's (N, D);
* loss-to-loss (train-to-train): the law L_y = K (L_x − E_x)^κ + E_y fitted on
  small paired runs, applied to the *actual* loss of the held-out run of the
  source dataset with the same (N, D).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import loss_to_loss as l2l
from nf_jax.scaling.errors import ScalingDataError
from nf_jax.scaling.readers import Table


@dataclasses.dataclass
class Prediction:
  label: str
  method: str
  target: str
  source: str
  N: float
  D: float
  C: float
  actual: float
  predicted: float
  lo: float = float("nan")   # bootstrap interval, when requested
  hi: float = float("nan")

  @property
  def rel_error(self) -> float:
    return (self.predicted - self.actual) / self.actual

  def to_dict(self):
    d = dataclasses.asdict(self)
    d["rel_error"] = self.rel_error
    return d


def law_inputs(table: Table, law: str) -> dict:
  if law == "compute":
    return {"C": table.numeric("C")}
  return {"N": table.numeric("N"), "D": table.numeric("D")}


def split_by_compute(table: Table, cutoff: float) -> tuple[Table, Table]:
  c = table.numeric("C")
  small, large = table.select(c < cutoff), table.select(c >= cutoff)
  if len(small) == 0 or len(large) == 0:
    raise ScalingDataError(f"{table.source}: compute cutoff {cutoff:g} leaves "
                           f"{len(small)} run(s) to fit and {len(large)} to predict")
  return small, large


def single_dataset(fit_table: Table, heldout: Table, loss: str, law: str = "kaplan",
                   objective: str = "sum", dataset: str = "", n_boot: int = 0,
                   seed: int = 0) -> tuple[fit_lib.FitResult, list]:
  """Fits `law` on fit_table and predicts every row of heldout (with a 95 %
  bootstrap interval per prediction if n_boot > 0)."""
  inputs, y = law_inputs(fit_table, law), fit_table.numeric(loss)
  res = fit_lib.fit_law(law, inputs, y, objective=objective, labels=fit_table.labels)
  pred = res.predict(law_inputs(heldout, law))
  lo = hi = np.full(len(heldout), np.nan)
  if n_boot:
    from nf_jax.scaling import bootstrap
    b = bootstrap.bootstrap(res, inputs, y, n_boot=n_boot, seed=seed,
                            at=law_inputs(heldout, law))
    lo, hi = b.prediction_intervals().T
  actual = heldout.numeric(loss)
  n, d, c = (heldout.numeric(k) if heldout.has(k) else np.full(len(heldout), np.nan)
             for k in ("N", "D", "C"))
  out = [Prediction(heldout.labels[i], f"single-dataset {law}", dataset, dataset,
                    n[i], d[i], c[i], actual[i], pred[i], lo[i], hi[i])
         for i in range(len(heldout))]
  return res, out


def train_to_train(fit_table: Table, heldout: Table, x: str, y: str, loss: str, *,
                   e: dict, objective: str = "sum",
                   pair_on=("N", "D")) -> tuple[l2l.Relation, list]:
  """Fits x -> y on fit_table, predicts y's held-out losses from x's actual ones."""
  rel = l2l.train_to_train(fit_table, x, y, loss, e=e, objective=objective,
                           pair_on=pair_on)
  hx, hy = heldout.where("dataset", x), heldout.where("dataset", y)
  ix, iy = l2l.pair_runs(hx, hy, pair_on) if min(len(hx), len(hy)) >= 2 else \
      _pair_few(hx, hy, pair_on)
  pred = rel.predict(hx.numeric(loss)[ix])
  actual = hy.numeric(loss)[iy]
  n, d = hy.numeric("N")[iy], hy.numeric("D")[iy]
  c = hy.numeric("C")[iy] if hy.has("C") else 6 * n * d
  out = [Prediction(hy.labels[j], "train-to-train", y, x, n[k], d[k], c[k],
                    actual[k], pred[k]) for k, j in enumerate(iy)]
  return rel, out


def _pair_few(hx: Table, hy: Table, keys):
  kx = [tuple(float(f"{v:.9g}") for v in vals) for vals in zip(*[hx.numeric(k) for k in keys])]
  ky = [tuple(float(f"{v:.9g}") for v in vals) for vals in zip(*[hy.numeric(k) for k in keys])]
  pairs = [(i, ky.index(k)) for i, k in enumerate(kx) if k in ky]
  if not pairs:
    raise ScalingDataError(f"pairs do not match: no held-out run of {hx.source} "
                           f"has the same {', '.join(keys)} as one of {hy.source}")
  return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def summarize(preds: list) -> dict:
  """Mean/max absolute relative error and mean signed relative error."""
  err = np.array([p.rel_error for p in preds])
  return {"n": int(err.size), "mean_abs_rel_error": float(np.mean(np.abs(err))),
          "max_abs_rel_error": float(np.max(np.abs(err))),
          "mean_rel_error": float(np.mean(err))}
