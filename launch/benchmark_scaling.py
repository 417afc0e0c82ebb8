"""Benchmark: Epoch AI's Chinchilla replication fit, batched vs a scipy loop.

    python launch/benchmark_scaling.py [--repeats 3] [--subset 60]

Fits L(N, D) = E + A/N^α + B/D^β (summed Huber, δ = 1e-3, log residuals) to
the 240 points of chinchilla_epoch_extracted.csv (5 highest losses dropped,
D = C / 6N) from Hoffmann et al.'s 4,500-point grid of starts:

* batched: nf_jax.scaling.fit_law, all starts at once (float64 numpy L-BFGS);
* scipy loop: scipy.optimize.minimize(L-BFGS-B) once per start, with the same
  objective and analytic gradient, timed on an evenly spaced subset of the
  grid and extrapolated linearly to 4,500 starts.

Reports medians of --repeats runs (wall clock and process CPU time), the best
objective and parameters of each, and the speed ratio. Data: the directory in
$NF_JAX_SCALING_DATA, else ../shared/data/scaling relative to the repo root.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.optimize

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import laws, readers

DATA = Path(os.environ.get("NF_JAX_SCALING_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared/data/scaling"))


def load():
  t = readers.read_table(DATA / "chinchilla_epoch_extracted.csv",
                         {"N": "Model Size", "C": "Training FLOP"})
  t = readers.drop_highest(t, "loss", 5)
  return {"N": t.numeric("N"), "D": t.numeric("D")}, t.numeric("loss")


def timed(fn, repeats):
  walls, cpus, out = [], [], None
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    walls.append(time.perf_counter() - w)
    cpus.append(time.process_time() - c)
  return float(np.median(walls)), float(np.median(cpus)), out


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--subset", type=int, default=60, help="starts for the scipy loop")
  args = ap.parse_args()
  inputs, y = load()
  law = laws.get_law("chinchilla")
  grid = law.default_grid()
  fun = fit_lib.make_objective(law, law.log_inputs(inputs), np.log(y), grid[0],
                               list(range(5)), 1e-3, 1.0)
  subset = grid[np.linspace(0, len(grid) - 1, args.subset).astype(int)]

  def scipy_loop():
    best = None
    for s in subset:
      r = scipy.optimize.minimize(lambda t: fun(t[None], None)[0][0], s,
                                  jac=lambda t: fun(t[None], None)[1][0],
                                  method="L-BFGS-B", options={"maxiter": 5000})
      if best is None or r.fun < best.fun:
        best = r
    return best

  bw, bc, full = timed(lambda: fit_lib.fit_law(law, inputs, y), args.repeats)
  sw, sc, sres = timed(scipy_loop, args.repeats)
  _, _, sub = timed(lambda: fit_lib.fit_law(law, inputs, y, init_grid=subset), 1)
  scale = len(grid) / len(subset)
  sp = law.natural(sres.x)
  print(f"Epoch Chinchilla fit, {len(y)} points, medians of {args.repeats} runs, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
  hdr = f"{'method':<34} {'starts':>6} {'wall s':>9} {'CPU s':>9} {'objective':>14} " \
        f"{'E':>7} {'A':>7} {'B':>7} {'alpha':>6} {'beta':>6}"
  print(hdr)
  print("-" * len(hdr))
  def row(name, n, w, c, obj, p):
    w = "-" if w is None else f"{w:.2f}"  # not timed
    c = "-" if c is None else f"{c:.2f}"
    print(f"{name:<34} {n:>6} {w:>9} {c:>9} {obj:>14.10f} {p['E']:>7.4f} "
          f"{p['A']:>7.1f} {p['B']:>7.1f} {p['alpha']:>6.4f} {p['beta']:>6.4f}")
  row("batched L-BFGS (nf_jax.scaling)", len(grid), bw, bc, full.objective, full.params)
  row(f"scipy L-BFGS-B loop, {len(subset)} starts", len(subset), sw, sc, sres.fun, sp)
  print(f"{'scipy loop extrapolated':<34} {len(grid):>6} {sw * scale:>9.1f} {sc * scale:>9.1f}")
  row(f"batched on the same {len(subset)} starts", len(subset), None, None,
      sub.objective, sub.params)
  print(f"\nspeed-up, 4,500 starts: {sw * scale / bw:.0f}x wall, {sc * scale / bc:.0f}x CPU")


if __name__ == "__main__":
  main()
