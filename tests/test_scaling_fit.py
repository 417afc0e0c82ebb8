"""Single-dataset laws and the batched L-BFGS fitter of nf_jax.scaling."""

import numpy as np
import pytest
import scipy.optimize

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import laws
from nf_jax.scaling.errors import ScalingDataError, ScalingFitWarning

RNG = np.random.default_rng(0)
N = np.exp(RNG.uniform(np.log(1e7), np.log(1e10), 120))
D = np.exp(RNG.uniform(np.log(1e8), np.log(1e11), 120))
SMALL_GRID = laws.grid(a=[0., 5., 10.], b=[0., 5., 10.], e=[-1., 0., 1.],
                       alpha=[0.2, 0.5], beta=[0.2, 0.5])


def _noisy(law, params, inputs, sigma=0.003, seed=1):
  rng = np.random.default_rng(seed)
  clean = law.predict(law.raw(params), inputs)
  return clean * np.exp(rng.normal(0, sigma, clean.shape))


@pytest.mark.parametrize("name,truth", [
    ("chinchilla", {"E": 1.7, "A": 400., "B": 1800., "alpha": 0.34, "beta": 0.36}),
    ("kaplan", {"E": 1.9, "A": 7e7, "B": 9e8, "alpha": 0.42, "beta": 0.46}),
])
def test_recovers_known_parameters_from_noisy_synthetic_data(name, truth):
  law = laws.get_law(name)
  y = _noisy(law, truth, {"N": N, "D": D})
  grid = SMALL_GRID if name == "chinchilla" else None
  res = fit_lib.fit_law(name, {"N": N, "D": D}, y, init_grid=grid)
  assert res.converged, res.message
  for k in ("E", "alpha", "beta"):
    np.testing.assert_allclose(res.params[k], truth[k], rtol=0.05, err_msg=k)
  assert res.r2 > 0.99
  assert res.residuals.shape == y.shape and np.all(np.isfinite(res.residuals))


def test_compute_law_recovery_and_mean_objective():
  c = np.geomspace(1e17, 1e21, 40)
  truth = {"E": 1.5, "A": 3e3, "alpha": 0.2}
  law = laws.get_law("compute")
  y = _noisy(law, truth, {"C": c}, sigma=0.002)
  grid = laws.grid(a=[5., 10.], alpha=[0.1, 0.3], e=[0., 1.])
  fits = {o: fit_lib.fit_law("compute", {"C": c}, y, objective=o, init_grid=grid)
          for o in ("sum", "mean")}
  for res in fits.values():
    assert res.converged
    np.testing.assert_allclose(res.params["alpha"], 0.2, rtol=0.05)
    np.testing.assert_allclose(res.params["E"], 1.5, rtol=0.02)
  # The mean objective is the sum objective divided by the number of points.
  np.testing.assert_allclose(fits["mean"].objective * c.size, fits["sum"].objective,
                             rtol=1e-6)


def test_fixed_parameter_stays_fixed():
  truth = {"E": 1.7, "A": 400., "B": 1800., "alpha": 0.34, "beta": 0.36}
  law = laws.get_law("chinchilla")
  y = _noisy(law, truth, {"N": N, "D": D})
  res = fit_lib.fit_law(law, {"N": N, "D": D}, y, fixed={"e": np.log(1.7), "alpha": 0.34},
                        init_grid=SMALL_GRID)
  assert res.params["E"] == pytest.approx(1.7, rel=1e-12)
  assert res.params["alpha"] == pytest.approx(0.34, rel=1e-12)
  np.testing.assert_allclose(res.params["beta"], 0.36, rtol=0.03)


def test_analytic_gradients_match_finite_differences():
  logx = {"N": np.log(N[:20]), "D": np.log(D[:20])}
  for name, theta in [("chinchilla", [6., 7., 0.5, 0.3, 0.35]),
                      ("kaplan", [18., 20., 0.6, 0.4, 0.45])]:
    law = laws.get_law(name)
    th = np.array([theta])
    _, vjp = law.log_predict(th, logx)
    c = np.random.default_rng(3).normal(size=(1, 20))
    g = vjp(c)[0]
    num = []
    for j in range(5):
      e = np.zeros(5); e[j] = 1e-6
      num.append(((law.log_predict(th + e, logx)[0] - law.log_predict(th - e, logx)[0])
                  * c).sum() / 2e-6)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7, err_msg=name)
  law = laws.get_law("loss_to_loss")
  lx = {"L_x": np.linspace(2.2, 3.5, 10)}
  th = np.array([[0.1, 1.1, 0.2, 0.5]])
  c = np.ones((1, 10))
  g = law.log_predict(th, lx)[1](c)[0]
  for j in range(4):
    e = np.zeros(4); e[j] = 1e-6
    d = ((law.log_predict(th + e, lx)[0] - law.log_predict(th - e, lx)[0]).sum()) / 2e-6
    np.testing.assert_allclose(g[j], d, rtol=1e-5)


def test_batched_lbfgs_matches_scipy_on_each_start():
  truth = {"E": 1.7, "A": 400., "B": 1800., "alpha": 0.34, "beta": 0.36}
  law = laws.get_law("chinchilla")
  y = _noisy(law, truth, {"N": N, "D": D})
  logx, logy = law.log_inputs({"N": N, "D": D}), np.log(y)
  fun = fit_lib.make_objective(law, logx, logy, np.zeros(5), list(range(5)), 1e-3, 1.0)
  starts = SMALL_GRID[::54]
  x, f, status, _ = fit_lib.batched_lbfgs(fun, starts, gtol=1e-10, ftol=1e-15)
  best_scipy = min(
      scipy.optimize.minimize(lambda t: fun(t[None], None)[0][0], s,
                              jac=lambda t: fun(t[None], None)[1][0],
                              method="L-BFGS-B", options={"maxiter": 5000}).fun
      for s in starts)
  assert f.min() <= best_scipy * (1 + 1e-6)


def test_huber_is_quadratic_inside_and_linear_outside():
  r = np.array([-0.01, -5e-4, 0.0, 5e-4, 0.01])
  loss, d = fit_lib.huber(r, 1e-3)
  np.testing.assert_allclose(loss, [1e-3 * (0.01 - 5e-4), 0.5 * 25e-8, 0, 0.5 * 25e-8,
                                    1e-3 * (0.01 - 5e-4)])
  np.testing.assert_allclose(d, [-1e-3, -5e-4, 0, 5e-4, 1e-3])


def test_non_convergence_is_reported():
  y = _noisy(laws.get_law("chinchilla"),
             {"E": 1.7, "A": 400., "B": 1800., "alpha": 0.34, "beta": 0.36}, {"N": N, "D": D})
  with pytest.warns(ScalingFitWarning, match="did not converge"):
    res = fit_lib.fit_law("chinchilla", {"N": N, "D": D}, y, init_grid=SMALL_GRID,
                          max_iter=2)
  assert not res.converged
  assert "max_iter" in res.message


@pytest.mark.parametrize("bad,match", [
    (-1.0, "not a positive finite number"),
    (np.nan, "not a positive finite number"),
    (np.inf, "not a positive finite number"),
])
def test_bad_losses_raise_with_point_label(bad, match):
  y = np.full(10, 2.0)
  y[3] = bad
  labels = [f"runs/r{i}" for i in range(10)]
  with pytest.raises(ScalingDataError, match=match) as err:
    fit_lib.fit_law("chinchilla", {"N": N[:10], "D": D[:10]}, y, labels=labels)
  assert "runs/r3" in str(err.value)


def test_fewer_points_than_parameters():
  with pytest.raises(ScalingDataError, match="need at least as many points"):
    fit_lib.fit_law("chinchilla", {"N": N[:4], "D": D[:4]}, np.full(4, 2.0))
