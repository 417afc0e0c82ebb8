"""A short verdict per model: healthy, mean shift, variance explosion/collapse.

Judged on the block outputs (the stem output is excluded: e.g. a max-pool
stem leaves a large positive mean that the first transition block removes).

* mean shift: the average channel squared mean grows with depth to a large
  value: its maximum over the last stage exceeds `mean_tol` (default 0.5, i.e.
  a channel mean of about 0.7 on a unit-variance stream) and is more than
  `growth` (default 2) times its median over the first stage.
* variance explosion / collapse: the measured average channel variance
  leaves [expected / var_tol, expected * var_tol] (default var_tol = 2) at
  some block, with the expectation from the beta/alpha recursion. Without an
  analytic expectation (own models without specs) the reference is 1.
"""

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np


@dataclasses.dataclass
class Verdict:
  label: str
  problems: List[str]
  numbers: Dict[str, Any]

  @property
  def healthy(self) -> bool:
    return not self.problems

  @property
  def summary(self) -> str:
    return "healthy" if self.healthy else ", ".join(self.problems)

  def line(self) -> str:
    n = self.numbers
    parts = [f"sq_mean last stage max {n['sq_mean_last_max']:.3g} "
             f"(first stage {n['sq_mean_first_median']:.3g})",
             f"var/expected {n['var_ratio_min']:.3g}..{n['var_ratio_max']:.3g} "
             f"(worst at block {n['var_ratio_worst_block']})",
             f"final var {n['final_var']:.3g} vs expected "
             f"{n['final_expected_var']:.3g}"]
    return f"{self.label}: {self.summary} -- " + "; ".join(parts)

  def to_dict(self) -> Dict[str, Any]:
    return {"verdict": self.summary, "problems": list(self.problems),
            "numbers": dict(self.numbers)}


def judge(label: str, avg_sq_mean, avg_var, stage, expected_var=None,
          mean_tol: float = 0.5, growth: float = 2.0,
          var_tol: float = 2.0) -> Verdict:
  """Verdict from per-point arrays (point 0 = stem, then one per block)."""
  sq = np.asarray(avg_sq_mean, np.float64)[1:]
  var = np.asarray(avg_var, np.float64)[1:]
  stage = np.asarray(stage)[1:]
  if expected_var is None:
    expected = np.ones_like(var)
  else:
    expected = np.asarray(expected_var, np.float64)[1:]
  if len(var) == 0:
    raise ValueError(f"{label}: no blocks to judge.")
  first = sq[stage == stage.min()]
  last = sq[stage == stage.max()]
  ratio = var / expected
  worst = int(np.argmax(np.abs(np.log(np.maximum(ratio, 1e-30)))))
  numbers = {
      "sq_mean_first_median": float(np.median(first)),
      "sq_mean_last_max": float(last.max()),
      "sq_mean_final": float(sq[-1]),
      "var_ratio_min": float(ratio.min()),
      "var_ratio_max": float(ratio.max()),
      "var_ratio_worst_block": worst,
      "final_var": float(var[-1]),
      "final_expected_var": float(expected[-1]),
      "expected_from": "unit variance" if expected_var is None else "analytic",
  }
  problems = []
  if (numbers["sq_mean_last_max"] > mean_tol and
      numbers["sq_mean_last_max"] > growth * numbers["sq_mean_first_median"]):
    problems.append("mean shift")
  if ratio.max() > var_tol:
    problems.append("variance explosion")
  if ratio.min() < 1.0 / var_tol:
    problems.append("variance collapse")
  return Verdict(label, problems, numbers)


def diagnose(result, **tolerances) -> Verdict:
  """Judges an `SPPResult` and stores the verdict on it."""
  result.verdict = judge(result.label, result.avg_sq_mean, result.avg_var,
                         result.stage, result.expected_var, **tolerances)
  return result.verdict
