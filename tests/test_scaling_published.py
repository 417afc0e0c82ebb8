"""Reproductions of published results from released data (skipped without it).

Data: ../shared/data/scaling/ relative to the repository root (never copied
into the project), or the directory in $NF_JAX_SCALING_DATA.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import loss_to_loss as l2l
from nf_jax.scaling import predict, readers

DATA = Path(os.environ.get("NF_JAX_SCALING_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared/data/scaling"))
pytestmark = pytest.mark.skipif(
    not (DATA / "loss_to_loss_sweep.csv").is_file(),
    reason=f"published scaling data not found in {DATA} (set NF_JAX_SCALING_DATA)")
SWEEP_MAP = {"N": "params", "D": "tokens", "C": "iso_flop", "dataset": "data"}


def test_epoch_chinchilla_replication():
  t = readers.read_table(DATA / "chinchilla_epoch_extracted.csv",
                         {"N": "Model Size", "C": "Training FLOP"})
  t = readers.drop_highest(t, "loss", 5)
  assert len(t) == 240
  res = fit_lib.fit_law("chinchilla", {"N": t.numeric("N"), "D": t.numeric("D")},
                        t.numeric("loss"), objective="sum")  # Hoffmann's 4,500 starts
  assert res.converged and res.n_starts == 4500
  p = res.params
  np.testing.assert_allclose(p["E"], 1.817, rtol=0.01)
  np.testing.assert_allclose(p["alpha"], 0.347, rtol=0.01)
  np.testing.assert_allclose(p["beta"], 0.367, rtol=0.01)
  np.testing.assert_allclose(p["A"], 478, rtol=0.03)
  np.testing.assert_allclose(p["B"], 2143, rtol=0.03)


@pytest.fixture(scope="module")
def sweep():
  return readers.read_table(DATA / "loss_to_loss_sweep.csv", SWEEP_MAP)


@pytest.fixture(scope="module")
def fits(sweep):
  out = {}
  for d in sorted(set(sweep.strings("dataset"))):
    t = sweep.where("dataset", d)
    out[d] = fit_lib.fit_law("kaplan", {"N": t.numeric("N"), "D": t.numeric("D")},
                             t.numeric("val_loss"), objective="sum")
  return out


def test_loss_to_loss_single_dataset_E(fits):
  assert len(fits) == 6 and all(f.converged for f in fits.values())
  np.testing.assert_allclose(fits["fineweb-edu-100b"].params["E"], 1.97, rtol=0.01)
  np.testing.assert_allclose(fits["starcoder"].params["E"], 0.85, rtol=0.02)


def test_loss_to_loss_extrapolation_to_1e21(sweep, fits):
  held = readers.read_table(DATA / "loss_to_loss_extrapolation.csv", SWEEP_MAP)
  e = {d: f.params["E"] for d, f in fits.items()}
  t2t, kappas = [], {}
  for x in e:
    for y in e:
      if x != y:
        rel, preds = predict.train_to_train(sweep, held, x, y, "val_loss", e=e)
        kappas[x, y] = (rel.fit.params["kappa"], rel.fit.params["K"])
        t2t += preds
  kappa, K = kappas["fineweb-edu-100b", "starcoder"]
  assert kappa == pytest.approx(1.10, abs=0.03)
  assert K == pytest.approx(0.63, abs=0.03)
  t2t_err = predict.summarize(t2t)
  assert t2t_err["n"] == 30
  assert t2t_err["mean_abs_rel_error"] == pytest.approx(0.009, abs=0.002)

  single = []
  for d, f in fits.items():
    h = held.where("dataset", d)
    single.append(f.predict({"N": h.numeric("N"), "D": h.numeric("D")})[0]
                  / h.numeric("val_loss")[0] - 1)
  # Single-dataset extrapolation over-predicts every 1e21 model, by ~4 %.
  assert min(single) > 0
  assert np.mean(single) == pytest.approx(0.04, abs=0.005)
  assert t2t_err["mean_abs_rel_error"] < np.mean(single) / 3
