"""Loss-to-loss laws, translation and bootstrap of nf_jax.scaling."""

import numpy as np
import pytest

from nf_jax.scaling import bootstrap, fit as fit_lib, laws, loss_to_loss as l2l
from nf_jax.scaling.errors import ScalingDataError
from nf_jax.scaling.readers import Table

RNG = np.random.default_rng(0)
N = np.exp(RNG.uniform(np.log(1e7), np.log(1e10), 200))
D = np.exp(RNG.uniform(np.log(1e8), np.log(1e11), 200))


@pytest.mark.parametrize("kappa,K", [(1.1, 0.63), (0.9, 1.5), (1.0, 2.0)])
def test_translation_identity_kaplan_form_is_exact(kappa, K):
  law = laws.get_law("kaplan")
  p0 = {"E": 1.97, "A": 6.7e7, "B": 8.9e8, "alpha": 0.41, "beta": 0.46}
  e1 = 0.85
  l0 = law.predict(law.raw(p0), {"N": N, "D": D})
  p1 = l2l.translate_law("kaplan", p0, K, kappa, e1)
  assert p1["exact"]
  l1 = law.predict(law.raw(p1), {"N": N, "D": D})
  np.testing.assert_allclose(l1, K * (l0 - p0["E"]) ** kappa + e1, rtol=1e-10)


def test_translation_identity_chinchilla_form():
  law = laws.get_law("chinchilla")
  p0 = {"E": 1.7, "A": 400., "B": 1800., "alpha": 0.34, "beta": 0.36}
  l0 = law.predict(law.raw(p0), {"N": N, "D": D})
  # kappa = 1: exact, A' = K A, B' = K B.
  p1 = l2l.translate_law("chinchilla", p0, 0.7, 1.0, 0.9)
  assert p1["exact"]
  np.testing.assert_allclose(law.predict(law.raw(p1), {"N": N, "D": D}),
                             0.7 * (l0 - 1.7) + 0.9, rtol=1e-12)
  # kappa != 1: not a Chinchilla law; exact only where one term dominates.
  p1 = l2l.translate_law("chinchilla", p0, 0.7, 1.1, 0.9)
  assert not p1["exact"]
  n_only = {"N": np.geomspace(1e6, 1e9, 5), "D": np.full(5, 1e100)}
  l0n = law.predict(law.raw(p0), n_only)
  np.testing.assert_allclose(law.predict(law.raw(p1), n_only),
                             0.7 * (l0n - 1.7) ** 1.1 + 0.9, rtol=1e-9)
  mixed = law.predict(law.raw(p1), {"N": N, "D": D})
  assert np.max(np.abs(mixed / (0.7 * (l0 - 1.7) ** 1.1 + 0.9) - 1)) > 1e-3


def test_loss_to_loss_fit_recovers_kappa_and_K():
  lx = np.linspace(2.1, 3.6, 60)
  ly = 0.63 * (lx - 1.97) ** 1.1 + 0.85
  ly *= np.exp(np.random.default_rng(2).normal(0, 0.002, ly.size))
  res = l2l.fit_loss_to_loss(lx, ly, 1.97, 0.85)
  assert res.converged
  np.testing.assert_allclose(res.params["kappa"], 1.1, atol=0.02)
  np.testing.assert_allclose(res.params["K"], 0.63, rtol=0.02)
  free = l2l.fit_loss_to_loss(lx, ly, 1.97, None)
  np.testing.assert_allclose(free.params["E_y"], 0.85, rtol=0.1)


def test_loss_to_loss_rejects_losses_below_E_x():
  with pytest.raises(ScalingDataError, match="not above E_x"):
    l2l.fit_loss_to_loss(np.array([2.5, 1.9, 3.0]), np.array([1, 1, 1.]), 1.97, 0.85)


def _table(rows, name):
  return Table(rows, [f"{name}:{i + 2}" for i in range(len(rows))], name)


def test_pairing_by_model_size_and_data():
  x = _table([{"N": 1e6, "D": 1e8}, {"N": 2e6, "D": 1e8}, {"N": 4e6, "D": 1e9}], "x.csv")
  y = _table([{"N": 4e6, "D": 1e9}, {"N": 1e6, "D": 1e8}, {"N": 3e6, "D": 1e8}], "y.csv")
  ix, iy = l2l.pair_runs(x, y)
  assert sorted(zip(ix.tolist(), iy.tolist())) == [(0, 1), (2, 0)]
  with pytest.raises(ScalingDataError, match="pairs do not match: only 0"):
    l2l.pair_runs(x, _table([{"N": 5e6, "D": 1e8}], "z.csv"))
  dup = _table([{"N": 1e6, "D": 1e8}, {"N": 1e6, "D": 1e8}], "dup.csv")
  with pytest.raises(ScalingDataError, match="dup.csv:3 and dup.csv:2"):
    l2l.pair_runs(dup, y)


def test_train_to_train_on_synthetic_sweep_recovers_relation():
  kap = laws.get_law("kaplan")
  p0 = {"E": 1.9, "A": 7e7, "B": 9e8, "alpha": 0.42, "beta": 0.46}
  n = np.repeat(np.geomspace(2e7, 2e9, 8), 8)
  d = np.tile(np.geomspace(2e8, 2e11, 8), 8)
  l0 = kap.predict(kap.raw(p0), {"N": n, "D": d})
  l1 = 0.6 * (l0 - 1.9) ** 1.1 + 0.8
  rows = ([{"N": a, "D": b, "dataset": "x", "loss": c} for a, b, c in zip(n, d, l0)]
          + [{"N": a, "D": b, "dataset": "y", "loss": c} for a, b, c in zip(n, d, l1)])
  rel = l2l.train_to_train(_table(rows, "sweep"), "x", "y", "loss")
  np.testing.assert_allclose(rel.e_x, 1.9, rtol=0.01)
  np.testing.assert_allclose(rel.e_y, 0.8, rtol=0.02)
  np.testing.assert_allclose(rel.fit.params["kappa"], 1.1, atol=0.03)


def test_bootstrap_intervals_cover_truth():
  law = laws.get_law("compute")
  c = np.geomspace(1e17, 1e21, 60)
  truth = {"E": 1.5, "A": 3e3, "alpha": 0.2}
  y = law.predict(law.raw(truth), {"C": c}) * np.exp(
      np.random.default_rng(5).normal(0, 0.004, c.size))
  res = fit_lib.fit_law("compute", {"C": c}, y)
  b = bootstrap.bootstrap(res, {"C": c}, y, n_boot=100, at={"C": np.array([1e23])})
  assert b.n_converged >= 95
  lo, hi = b.param_intervals()["alpha"]
  assert lo < 0.2 < hi and hi - lo < 0.1
  (plo, phi), = b.prediction_intervals()
  assert plo < res.predict({"C": np.array([1e23])})[0] < phi


def test_train_to_test_and_test_to_test_on_synthetic_runs():
  kap = laws.get_law("kaplan")
  p0 = {"E": 1.9, "A": 7e7, "B": 9e8, "alpha": 0.42, "beta": 0.46}
  n = np.repeat(np.geomspace(2e7, 2e9, 6), 6)
  d = np.tile(np.geomspace(2e8, 2e11, 6), 6)
  lx = kap.predict(kap.raw(p0), {"N": n, "D": d})
  test_x = 0.9 * (lx - 1.9) ** 1.2 + 2.5          # train-to-test law of x-runs
  ly = 0.6 * (lx - 1.9) ** 1.1 + 0.8               # train-to-train x -> y
  test_y = 1.3 * (ly - 0.8) ** 0.95 + 2.4          # train-to-test law of y-runs
  rows = ([{"N": a, "D": b, "dataset": "x", "train": c, "test": t}
           for a, b, c, t in zip(n, d, lx, test_x)]
          + [{"N": a, "D": b, "dataset": "y", "train": c, "test": t}
             for a, b, c, t in zip(n, d, ly, test_y)])
  table = _table(rows, "runs")
  t2t = l2l.train_to_test(table, "x", "train", "test")
  assert t2t.kind == "train-to-test" and t2t.lx.size == 36
  np.testing.assert_allclose(t2t.fit.params["kappa"], 1.2, atol=0.03)
  np.testing.assert_allclose(t2t.e_y, 2.5, rtol=0.02)
  tt = l2l.test_to_test(table, "x", "y", "test")
  assert tt.kind == "test-to-test"
  # test_y as a function of test_x is again a shifted power law with
  # kappa = 0.95 * 1.1 / 1.2 (composition of the three laws above).
  np.testing.assert_allclose(tt.fit.params["kappa"], 0.95 * 1.1 / 1.2, atol=0.03)
  np.testing.assert_allclose(tt.predict(tt.lx), tt.ly, rtol=2e-3)
