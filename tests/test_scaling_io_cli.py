"""Readers, bad-input errors, import hygiene and the CLI of nf_jax.scaling."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nf_jax.scaling import cli, laws, readers
from nf_jax.scaling.errors import ScalingDataError

REPO = Path(__file__).resolve().parents[1]
KAPLAN = {"E": 1.9, "A": 7e7, "B": 9e8, "alpha": 0.42, "beta": 0.46}


def _write_run(d: Path, dataset, n, examples, loss_fn, eval_loss=None, steps=4,
               info_in_config=True):
  d.mkdir(parents=True)
  info = {"params": int(n), "flops_per_example": 6.0 * n}
  config = {"dataset": dataset, "model": {"name": "nf_resnet"}}
  if info_in_config:
    config["model_info"] = info
  else:
    (d / "model_info.json").write_text(json.dumps(info))
  (d / "config.json").write_text(json.dumps(config))
  with (d / "metrics.jsonl").open("w") as fh:
    for s in range(1, steps + 1):
      seen = examples * s / steps
      rec = {"step": s * 100, "examples_seen": seen, "flops": 6.0 * n * seen,
             "train/loss": loss_fn(seen), "lr": 0.1, "grad_norm": 1.0}
      if eval_loss is not None and s % 2 == 0:
        rec[f"eval/{dataset}/test/loss"] = eval_loss(seen)
        rec[f"eval/{dataset}/test/top1"] = 0.5
      fh.write(json.dumps(rec) + "\n")


def make_sweep(root: Path):
  """Runs on datasets a and b; b's loss is 0.6 (L_a − 1.9)^1.1 + 0.8."""
  law = laws.get_law("kaplan")
  raw = law.raw(KAPLAN)
  for n in np.geomspace(1e7, 1e9, 5):
    for dd in np.geomspace(1e8, 1e11, 5):
      def la(seen, n=n):
        return float(law.predict(raw, {"N": [n], "D": [seen]})[0])
      def lb(seen, n=n):
        return 0.6 * (la(seen, n) - 1.9) ** 1.1 + 0.8
      _write_run(root / "a" / f"n{n:.0e}_d{dd:.0e}", "a", n, dd, la,
                 eval_loss=lambda s, n=n: 1.02 * la(s, n))
      _write_run(root / "b" / f"n{n:.0e}_d{dd:.0e}", "b", n, dd, lb,
                 info_in_config=False)
  return root


def test_read_run_derives_N_D_C_and_losses(tmp_path):
  _write_run(tmp_path / "r", "imagenet", 1e6, 1e9, lambda s: 10.0 / np.log(s),
             eval_loss=lambda s: 3.0, steps=4)
  row = readers.read_run(tmp_path / "r")
  assert row["N"] == 1e6 and row["D"] == 1e9 and row["C"] == pytest.approx(6e15)
  assert row["train/loss"] == pytest.approx(10.0 / np.log(1e9))
  assert row["eval/imagenet/test/loss"] == 3.0
  assert row["dataset"] == "imagenet" and row["model"] == "nf_resnet"
  smoothed = readers.read_run(tmp_path / "r", smooth=2)["train/loss"]
  assert smoothed == pytest.approx(np.mean([10 / np.log(7.5e8), 10 / np.log(1e9)]))
  early = readers.read_run(tmp_path / "r", step=200)
  assert early["D"] == 5e8 and early["step"] == 200


def test_read_sweep_and_model_info_json(tmp_path):
  t = readers.read_runs(make_sweep(tmp_path))
  assert len(t) == 50
  assert sorted(set(t.strings("dataset"))) == ["a", "b"]
  assert np.all(t.where("dataset", "b").numeric("N") > 0)


def test_malformed_metrics_line_names_file_and_line(tmp_path):
  _write_run(tmp_path / "r", "x", 1e6, 1e9, lambda s: 2.0)
  with (tmp_path / "r" / "metrics.jsonl").open("a") as fh:
    fh.write('{"step": 500, "train/loss": \n')
  with pytest.raises(ScalingDataError, match=r"metrics.jsonl:5: malformed JSON line"):
    readers.read_run(tmp_path / "r")


def test_csv_errors(tmp_path):
  p = tmp_path / "t.csv"
  p.write_text("params,tokens,loss\n1e6,1e9,2.5\n2e6,1e9\n")
  with pytest.raises(ScalingDataError, match=r"t.csv:3: malformed line: 2 fields"):
    readers.read_table(p)
  p.write_text("params,tokens,loss\n1e6,1e9,2.5\n2e6,1e9,abc\n")
  t = readers.read_table(p, {"N": "params", "D": "tokens"})
  with pytest.raises(ScalingDataError, match=r"t.csv:3: column 'loss' = 'abc' is not a number"):
    t.numeric("loss")
  with pytest.raises(ScalingDataError, match=r"missing column 'flops' \(mapped from 'C'\)"):
    readers.read_table(p, {"C": "flops"})
  j = tmp_path / "t.jsonl"
  j.write_text('{"params": 1}\n[1, 2]\n')
  with pytest.raises(ScalingDataError, match=r"t.jsonl:2: expected a JSON object"):
    readers.read_table(j)


def test_D_derived_from_C_and_N(tmp_path):
  p = tmp_path / "t.csv"
  p.write_text("n,c,loss\n10,600,1\n")
  t = readers.read_table(p, {"N": "n", "C": "c"})
  assert t.numeric("D")[0] == pytest.approx(10.0)


def test_package_import_is_light():
  code = ("import sys, nf_jax.scaling, nf_jax.scaling.cli; "
          "bad = [m for m in ('haiku', 'jax', 'nf_jax.models', 'nf_jax.train', "
          "'matplotlib', 'tensorflow') if m in sys.modules]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "nf_jax.scaling", *map(str, args)],
                        capture_output=True, text=True, cwd=REPO)


def test_cli_end_to_end_on_fake_sweep(tmp_path):
  sweep = make_sweep(tmp_path / "sweep")
  out = tmp_path / "out"
  r = _cli("fit", sweep, "--law", "kaplan", "--out", out)
  assert r.returncode == 0, r.stderr
  assert "1.9000" in r.stdout  # E of dataset a, noise-free
  fits = json.loads((out / "fit.json").read_text())["rows"]
  assert {f["dataset"] for f in fits} == {"a", "b"}
  assert (out / "fit.png").stat().st_size > 1000

  r = _cli("l2l", sweep, "--x", "a", "--y", "b", "--out", out)
  assert r.returncode == 0, r.stderr
  row = json.loads((out / "l2l.json").read_text())["rows"][0]
  assert row["kappa"] == pytest.approx(1.1, abs=0.02)
  assert row["K"] == pytest.approx(0.6, rel=0.03)
  assert (out / "l2l.png").is_file()

  r = _cli("predict", sweep, "--cutoff", "1e19", "--out", out, "--bootstrap", 20)
  assert r.returncode == 0, r.stderr
  preds = json.loads((out / "predictions.json").read_text())
  by = {s["method"]: s for s in preds["summary"]}
  assert by["train-to-train"]["mean_abs_rel_error"] < 0.01
  single = [p for p in preds["rows"] if p["method"].startswith("single")]
  assert single and all(p["lo"] <= p["predicted"] <= p["hi"] for p in single)
  assert (out / "predicted_vs_actual.png").is_file()

  r = _cli("report", sweep, "--cutoff", "1e19", "--out", tmp_path / "report")
  assert r.returncode == 0, r.stderr
  assert "## train-to-train" in r.stdout and "## held-out predictions" in r.stdout

  r = _cli("l2l", sweep, "--relation", "train-to-test", "--dataset", "a",
           "--test-loss", "eval/a/test/loss")
  assert r.returncode == 0, r.stderr
  assert "train-to-test" in r.stdout


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
  p = tmp_path / "t.csv"
  p.write_text("params,tokens,loss\n" + "".join(f"{10**i},{10**(i+2)},2.{i}\n"
                                                 for i in range(1, 9))
               + "1e9,1e11,-1\n")
  r = _cli("fit", p, "--col", "N=params", "--col", "D=tokens", "--loss", "loss")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in r.stderr
  assert "t.csv:10" in lines[0] and "not a positive finite number" in lines[0]
  r = _cli("fit", p, "--col", "N=nparams")
  assert r.returncode == 2 and "missing column 'nparams'" in r.stderr
  r = _cli("fit", tmp_path / "nope")
  assert r.returncode == 2 and "no such file" in r.stderr


def test_cli_help():
  r = _cli("--help")
  assert r.returncode == 0 and "{fit,l2l,predict,report}" in r.stdout
