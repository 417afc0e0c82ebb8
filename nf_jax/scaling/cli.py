"""Command line: python -m nf_jax.scaling {fit,l2l,predict,report} SOURCE ...

SOURCE is a run directory, a sweep directory of run directories, or a CSV /
JSONL table (then map its columns with --col N=params --col D=tokens ...).
Tables go to stdout and, with --out DIR, to CSV/JSON files plus PNG plots.
Bad input prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from nf_jax.scaling import fit as fit_lib
from nf_jax.scaling import loss_to_loss as l2l
from nf_jax.scaling import predict as predict_lib
from nf_jax.scaling import readers
from nf_jax.scaling.errors import ScalingDataError, ScalingFitWarning

NATURAL_TO_RAW = {"E": "e", "A": "a", "B": "b", "K": "k", "E_y": "e_y", "E_x": "e_x"}


def _kv(text: str) -> tuple[str, str]:
  if "=" not in text:
    raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
  k, v = text.split("=", 1)
  return k.strip(), v.strip()


def _fixed(pairs) -> dict:
  out = {}
  for k, v in pairs or []:
    try:
      value = float(v)
    except ValueError:
      raise ScalingDataError(f"--fix {k}={v}: value is not a number") from None
    if k in NATURAL_TO_RAW:
      if value <= 0:
        raise ScalingDataError(f"--fix {k}={v}: must be positive")
      out[NATURAL_TO_RAW[k]] = math.log(value)
    else:
      out[k] = value
  return out


def _load(args) -> readers.Table:
  return readers.load(args.source, dict(args.col or []), step=args.step,
                      smooth=args.smooth)


def _datasets(table, wanted):
  if wanted:
    return [wanted]
  if table.has("dataset"):
    return sorted(set(table.strings("dataset")))
  return [""]


def _subset(table, dataset):
  return table.where("dataset", dataset) if dataset else table


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) >= 1e4 or (0 < abs(v) < 1e-3) else f"{v:.4f}"
  return str(v)


def print_table(rows: list[dict], file=sys.stdout):
  if not rows:
    return
  cols = list(rows[0])
  cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
  width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
  print("  ".join(c.ljust(w) for c, w in zip(cols, width)), file=file)
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, width)), file=file)


def write_outputs(out: str | None, name: str, rows: list[dict], extra: dict | None = None):
  if not out:
    return
  d = Path(out)
  d.mkdir(parents=True, exist_ok=True)
  with (d / f"{name}.csv").open("w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  (d / f"{name}.json").write_text(json.dumps({"rows": rows, **(extra or {})}, indent=2,
                                             default=float))


def _check_converged(res, what):
  if not res.converged:
    print(f"warning: {what}: fit did not converge: {res.message}", file=sys.stderr)


def cmd_fit(args):
  table = _load(args)
  fixed = _fixed(args.fix)
  rows, plotted, residuals = [], {}, {}
  for ds in _datasets(table, args.dataset):
    t = readers.drop_highest(_subset(table, ds), args.loss, args.drop_highest)
    inputs = predict_lib.law_inputs(t, args.law)
    y = t.numeric(args.loss)
    res = fit_lib.fit_law(args.law, inputs, y, fixed=fixed, objective=args.objective,
                          delta=args.delta, labels=t.labels, warn=False)
    _check_converged(res, ds or args.source)
    row = {"dataset": ds or "-", "n": res.n_points, **res.params, "r2": res.r2,
           "rms_log_resid": float(np.sqrt(np.mean(res.residuals ** 2))),
           "converged": res.converged}
    if args.bootstrap:
      from nf_jax.scaling import bootstrap
      b = bootstrap.bootstrap(res, inputs, y, n_boot=args.bootstrap, seed=args.seed)
      for k, (lo, hi) in b.param_intervals().items():
        row[f"{k}_lo"], row[f"{k}_hi"] = lo, hi
    rows.append(row)
    plotted[ds or "all"] = (res, inputs, y)
    residuals[ds or "all"] = dict(zip(t.labels, res.residuals.tolist()))
  print_table(rows)
  write_outputs(args.out, "fit", rows, {"law": args.law, "loss": args.loss,
                                        "log_residuals": residuals})
  if args.out:
    from nf_jax.scaling import plots
    plots.fit_curves(Path(args.out) / "fit.png", plotted)


def _relations(args, table):
  kw = dict(law=args.law, objective=args.objective)
  pair_on = tuple(args.pair_on.split(","))
  if args.relation == "train-to-train":
    if args.x and args.y:
      return [l2l.train_to_train(table, args.x, args.y, args.loss, fit_e_y=args.fit_ey,
                                 pair_on=pair_on, **kw)]
    return l2l.all_train_to_train(table, args.loss, fit_e_y=args.fit_ey,
                                  pair_on=pair_on, **kw)
  if not args.test_loss:
    raise ScalingDataError(f"--relation {args.relation} needs --test-loss COLUMN")
  if args.relation == "train-to-test":
    datasets = _datasets(table, args.dataset)
    return [l2l.train_to_test(table, ds, args.loss, args.test_loss,
                              fit_e_y=args.fit_ey, **kw) for ds in datasets]
  if not (args.x and args.y):
    raise ScalingDataError("--relation test-to-test needs --x and --y datasets")
  return [l2l.test_to_test(table, args.x, args.y, args.test_loss, fit_e_y=args.fit_ey,
                           pair_on=pair_on, **kw)]


def cmd_l2l(args):
  table = _load(args)
  rels = _relations(args, table)
  for r in rels:
    _check_converged(r.fit, f"{r.x_name} -> {r.y_name}")
  rows = [r.summary() for r in rels]
  print_table(rows)
  write_outputs(args.out, "l2l", rows)
  if args.out:
    from nf_jax.scaling import plots
    plots.loss_to_loss_lines(Path(args.out) / "l2l.png", rels[:6])


def _predictions(args, table):
  if args.holdout:
    fit_t, held = table, readers.load(args.holdout, dict(args.col or []),
                                      step=args.step, smooth=args.smooth)
  elif args.cutoff:
    fit_t, held = predict_lib.split_by_compute(table, args.cutoff)
  else:
    raise ScalingDataError("predict needs --cutoff FLOPS or --holdout PATH")
  datasets = _datasets(fit_t, args.dataset)
  preds, fits = [], []
  for ds in datasets:
    h = _subset(held, ds)
    if len(h):
      res, p = predict_lib.single_dataset(_subset(fit_t, ds), h, args.loss,
                                          args.law, args.objective, ds,
                                          n_boot=args.bootstrap, seed=args.seed)
      _check_converged(res, ds or args.source)
      preds += p
      fits.append((ds, res))
  if len(datasets) > 1:
    e = {ds: r.params["E"] for ds, r in fits}
    for x in datasets:
      for y in datasets:
        if x != y and x in e and y in e:
          rel, p = predict_lib.train_to_train(fit_t, held, x, y, args.loss, e=e,
                                              objective=args.objective,
                                              pair_on=tuple(args.pair_on.split(",")))
          preds += p
  return preds, fits


def _summary_rows(preds):
  rows = []
  for m in sorted({p.method for p in preds}):
    rows.append({"method": m, **predict_lib.summarize([p for p in preds if p.method == m])})
  return rows


def cmd_predict(args):
  table = _load(args)
  preds, _ = _predictions(args, table)
  rows = [{k: v for k, v in p.to_dict().items() if k != "label"} for p in preds]
  print_table(rows)
  print()
  summary = _summary_rows(preds)
  print_table(summary)
  write_outputs(args.out, "predictions", [p.to_dict() for p in preds], {"summary": summary})
  if args.out:
    from nf_jax.scaling import plots
    plots.predicted_vs_actual(Path(args.out) / "predicted_vs_actual.png", preds)


def cmd_report(args):
  """Single-dataset fits, all train-to-train pairs, and (with --holdout or
  --cutoff) held-out predictions of both methods side by side."""
  print("## single-dataset fits")
  cmd_fit(args)
  table = _load(args)
  if table.has("dataset") and len(set(table.strings("dataset"))) > 1:
    print("\n## train-to-train")
    args.relation, args.x, args.y = "train-to-train", None, None
    cmd_l2l(args)
  if args.holdout or args.cutoff:
    print("\n## held-out predictions")
    cmd_predict(args)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m nf_jax.scaling", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  def common(sp, loss_default="train/loss"):
    sp.add_argument("source", help="run dir, sweep dir, or CSV/JSONL table")
    sp.add_argument("--col", action="append", type=_kv, metavar="NAME=COLUMN",
                    help="map canonical N, D, C, dataset to a table column "
                         "(repeatable), e.g. --col N=params --col D=tokens")
    sp.add_argument("--loss", default=loss_default,
                    help=f"loss column (default {loss_default!r}; for run dirs: "
                         "'train/loss' or 'eval/<dataset>/<split>/loss')")
    sp.add_argument("--dataset", help="only this training dataset (default: each)")
    sp.add_argument("--law", default="kaplan", choices=["compute", "chinchilla", "kaplan"],
                    help="single-dataset law (default kaplan)")
    sp.add_argument("--objective", default="sum", choices=["sum", "mean"])
    sp.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log loss")
    sp.add_argument("--step", type=int, help="read runs at this step (default: final)")
    sp.add_argument("--smooth", type=int, default=1,
                    help="train loss = mean of the last SMOOTH logged values")
    sp.add_argument("--pair-on", default="N,D",
                    help="columns that pair runs across datasets (default N,D)")
    sp.add_argument("--out", help="directory for CSV/JSON tables and PNG plots")

  f = sub.add_parser("fit", help="fit a single-dataset scaling law")
  common(f)
  f.add_argument("--fix", action="append", type=_kv, metavar="NAME=VALUE",
                 help="hold a parameter fixed: E, A, B (natural) or alpha, beta")
  f.add_argument("--drop-highest", type=int, default=0,
                 help="drop the K highest-loss points before fitting")
  f.add_argument("--bootstrap", type=int, default=0, metavar="B",
                 help="B bootstrap replicates for 95%% parameter intervals")
  f.add_argument("--seed", type=int, default=0)
  f.set_defaults(func=cmd_fit)

  l = sub.add_parser("l2l", help="fit loss-to-loss relations")
  common(l)
  l.add_argument("--relation", default="train-to-train",
                 choices=["train-to-train", "train-to-test", "test-to-test"])
  l.add_argument("--x", help="source training dataset (default: all ordered pairs)")
  l.add_argument("--y", help="target training dataset")
  l.add_argument("--test-loss", help="test loss column (train-to-test, test-to-test)")
  l.add_argument("--fit-ey", action="store_true", help="fit E_y instead of fixing it")
  l.set_defaults(func=cmd_l2l)

  pr = sub.add_parser("predict", help="fit small runs, predict held-out large ones")
  common(pr)
  pr.add_argument("--cutoff", type=float, help="fit runs with C below this, predict the rest")
  pr.add_argument("--holdout", help="predict the runs of this dir/table instead")
  pr.add_argument("--bootstrap", type=int, default=0, metavar="B",
                  help="B bootstrap replicates for 95%% intervals (lo, hi) of the "
                       "single-dataset predictions")
  pr.add_argument("--seed", type=int, default=0)
  pr.set_defaults(func=cmd_predict)

  r = sub.add_parser("report", help="fits + train-to-train + held-out predictions")
  common(r)
  r.add_argument("--cutoff", type=float)
  r.add_argument("--holdout")
  r.set_defaults(func=cmd_report, fix=None, drop_highest=0, bootstrap=0, seed=0,
                 test_loss=None, fit_ey=False)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ScalingFitWarning)
      args.func(args)
  except ScalingDataError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except BrokenPipeError:
    return 0
  return 0
