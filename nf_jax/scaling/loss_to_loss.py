"""Loss-to-loss relations (Brandfonbrener et al., 2024).

The law is a shifted power law between two losses,

    L_y = K · (L_x − E_x)^κ + E_y,

where E_x and E_y are the irreducible losses of single-dataset fits L(N, D) of
L_x and L_y (E_y may instead be fitted). Three relations use it:

* train-to-train: models trained on dataset x vs models trained on dataset y,
  each on its own training distribution, paired by identical model size and
  data seen (hence identical compute);
* train-to-test: one model's loss on its training distribution vs its loss on
  another distribution (no pairing needed: same runs);
* test-to-test: one test distribution, models trained on x vs on y, paired.

Translation. For the Kaplan form L₀ = E₀ + ((A/N)^(α/β) + B/D)^β,

    K (L₀ − E₀)^κ + E₁ = K X^(κβ) + E₁,   X = (A/N)^(α/β) + B/D
                       = (K^(1/(κβ)) X)^(κβ) + E₁
                       = ((A'/N)^(α'/β') + B'/D)^β' + E₁

with α' = κα, β' = κβ (so α'/β' = α/β), A' = A·K^(1/(κα)), B' = B·K^(1/(κβ)),
E' = E₁: exact. The same formulas hold for a Chinchilla law written per term as
(A/N)^α + (B/D)^β. For Chinchilla's own A/N^α + B/D^β the power of a sum is
not a sum of powers: K(A/N^α + B/D^β)^κ is a Chinchilla law only if κ = 1
(A' = K·A, B' = K·B); otherwise translate_law uses the per-term limits
A' = K·A^κ, B' = K·B^κ (exact where one term dominates) and reports the
translation as approximate.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling.errors import ScalingDataError
from nf_jax.scaling.readers import Table


def pair_key(n, d):
  """Rounded (N, D) so that equal configurations from two files compare equal."""
  return (float(f"{n:.9g}"), float(f"{d:.9g}"))


def pair_runs(x: Table, y: Table, keys=("N", "D")):
  """Indices (ix, iy) of rows of x and y with identical keys (default N, D)."""
  def index(t):
    cols = [t.numeric(k) for k in keys]
    out = {}
    for i, vals in enumerate(zip(*cols)):
      key = tuple(float(f"{v:.9g}") for v in vals)
      if key in out:
        raise ScalingDataError(
            f"pairs do not match: {t.labels[i]} and {t.labels[out[key]]} both have "
            f"{'='.join(keys)} {key}; cannot pair them unambiguously")
      out[key] = i
    return out
  ix, iy = index(x), index(y)
  common = sorted(set(ix) & set(iy))
  if len(common) < 2:
    raise ScalingDataError(
        f"pairs do not match: only {len(common)} configuration(s) with equal "
        f"{', '.join(keys)} between {x.source} ({len(x)} rows) and {y.source} "
        f"({len(y)} rows)")
  return np.array([ix[k] for k in common]), np.array([iy[k] for k in common])


def fit_loss_to_loss(lx, ly, e_x: float, e_y: float | None = None, *,
                     objective: str = "sum", delta: float = 1e-3,
                     labels=None, warn: bool = True) -> fit_lib.FitResult:
  """Fits L_y = K (L_x − E_x)^κ + E_y with E_x fixed and E_y fixed or fitted."""
  lx = np.asarray(lx, np.float64)
  bad = np.flatnonzero(~(lx > e_x))
  if bad.size:
    where = labels[bad[0]] if labels is not None else f"point {bad[0]}"
    raise ScalingDataError(f"{where}: L_x = {lx[bad[0]]:.6g} is not above E_x = "
                           f"{e_x:.6g}; the loss-to-loss law is undefined there")
  fixed = {"e_x": np.log(e_x)}
  if e_y is not None:
    fixed["e_y"] = np.log(e_y)
    grid = None
  else:
    grid = fit_lib.laws_lib.grid(k=[-1., 0., 1.], kappa=[0.5, 1., 1.5, 2.],
                                 e_y=np.arange(-2., 1.01, 0.5), e_x=[0.0])
  return fit_lib.fit_law("loss_to_loss", {"L_x": lx}, ly, fixed=fixed,
                         init_grid=grid, objective=objective, delta=delta,
                         labels=labels, warn=warn)


@dataclasses.dataclass
class Relation:
  """Paired losses for one loss-to-loss relation and the fitted law."""
  kind: str            # "train-to-train", "train-to-test", "test-to-test"
  x_name: str
  y_name: str
  lx: np.ndarray
  ly: np.ndarray
  labels: list
  e_x: float
  e_y: float | None
  fit: fit_lib.FitResult | None = None

  def predict(self, lx):
    return self.fit.predict({"L_x": np.asarray(lx, np.float64)})

  def summary(self) -> dict:
    p = self.fit.params
    return {"relation": self.kind, "x": self.x_name, "y": self.y_name,
            "n_pairs": int(self.lx.size), "K": p["K"], "kappa": p["kappa"],
            "E_x": p["E_x"], "E_y": p["E_y"], "r2": self.fit.r2,
            "converged": self.fit.converged}


def single_dataset_E(table: Table, loss: str, law: str = "kaplan",
                     objective: str = "sum") -> float:
  """Irreducible loss E of a single-dataset L(N, D) fit of column `loss`."""
  res = fit_lib.fit_law(law, {"N": table.numeric("N"), "D": table.numeric("D")},
                        table.numeric(loss), objective=objective, labels=table.labels)
  return res.params["E"]


def train_to_train(table: Table, x: str, y: str, loss: str, *, law: str = "kaplan",
                   e: dict | None = None, fit_e_y: bool = False,
                   objective: str = "sum", pair_on=("N", "D")) -> Relation:
  """Train losses of models trained on x vs on y, paired by (N, D).

  `loss` is the column holding each run's loss on its own training
  distribution; `e` optionally maps dataset -> E (else fitted with `law`).
  """
  tx, ty = table.where("dataset", x), table.where("dataset", y)
  for name, t in ((x, tx), (y, ty)):
    if len(t) == 0:
      raise ScalingDataError(f"{table.source}: no runs trained on dataset {name!r}")
  ix, iy = pair_runs(tx, ty, pair_on)
  e = dict(e or {})
  e_x = e[x] if x in e else single_dataset_E(tx, loss, law, objective)
  e_y = None if fit_e_y else (e[y] if y in e else single_dataset_E(ty, loss, law, objective))
  rel = Relation("train-to-train", x, y, tx.numeric(loss)[ix], ty.numeric(loss)[iy],
                 [f"{tx.labels[i]} & {ty.labels[j]}" for i, j in zip(ix, iy)], e_x, e_y)
  rel.fit = fit_loss_to_loss(rel.lx, rel.ly, e_x, e_y, objective=objective,
                             labels=rel.labels)
  return rel


def train_to_test(table: Table, dataset: str, train_loss: str, test_loss: str, *,
                  law: str = "kaplan", fit_e_y: bool = False,
                  objective: str = "sum") -> Relation:
  """One set of models (trained on `dataset`): train loss vs a test loss."""
  t = table.where("dataset", dataset) if dataset else table
  if len(t) == 0:
    raise ScalingDataError(f"{table.source}: no runs trained on dataset {dataset!r}")
  e_x = single_dataset_E(t, train_loss, law, objective)
  e_y = None if fit_e_y else single_dataset_E(t, test_loss, law, objective)
  rel = Relation("train-to-test", train_loss, test_loss, t.numeric(train_loss),
                 t.numeric(test_loss), list(t.labels), e_x, e_y)
  rel.fit = fit_loss_to_loss(rel.lx, rel.ly, e_x, e_y, objective=objective,
                             labels=rel.labels)
  return rel


def test_to_test(table: Table, x: str, y: str, test_loss: str, *,
                 law: str = "kaplan", fit_e_y: bool = False,
                 objective: str = "sum", pair_on=("N", "D")) -> Relation:
  """One test loss, models trained on x vs on y, paired by (N, D)."""
  tx, ty = table.where("dataset", x), table.where("dataset", y)
  ix, iy = pair_runs(tx, ty, pair_on)
  e_x = single_dataset_E(tx, test_loss, law, objective)
  e_y = None if fit_e_y else single_dataset_E(ty, test_loss, law, objective)
  rel = Relation("test-to-test", x, y, tx.numeric(test_loss)[ix],
                 ty.numeric(test_loss)[iy],
                 [f"{tx.labels[i]} & {ty.labels[j]}" for i, j in zip(ix, iy)], e_x, e_y)
  rel.fit = fit_loss_to_loss(rel.lx, rel.ly, e_x, e_y, objective=objective,
                             labels=rel.labels)
  return rel


def translate_law(law: str, params: dict, K: float, kappa: float, e_y: float) -> dict:
  """Carries a fitted L(N, D) of dataset 0 to dataset 1 through train-to-train.

  Returns the translated natural parameters plus "exact": whether the result
  equals K (L₀ − E₀)^κ + E₁ identically (see the module docstring).
  """
  a, b = params["alpha"], params["beta"]
  out = {"E": float(e_y), "alpha": kappa * a, "beta": kappa * b}
  if law == "kaplan":
    out["A"] = params["A"] * K ** (1.0 / (kappa * a))
    out["B"] = params["B"] * K ** (1.0 / (kappa * b))
    out["exact"] = True
  elif law == "chinchilla":
    out["A"] = K * params["A"] ** kappa
    out["B"] = K * params["B"] ** kappa
    out["exact"] = bool(abs(kappa - 1.0) < 1e-12)
  else:
    raise ValueError(f"translation is defined for 'kaplan' and 'chinchilla', not {law!r}")
  return out


def all_train_to_train(table: Table, loss: str, datasets=None, **kw) -> list[Relation]:
  """Train-to-train relations for every ordered pair of datasets."""
  datasets = datasets or sorted(set(table.strings("dataset")))
  law = kw.pop("law", "kaplan")
  objective = kw.get("objective", "sum")
  e = {d: single_dataset_E(table.where("dataset", d), loss, law, objective)
       for d in datasets}
  return [train_to_train(table, x, y, loss, law=law, e=e, **kw)
          for x, y in itertools.permutations(datasets, 2)]
