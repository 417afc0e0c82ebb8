"""Reading losses from trainer run directories and from CSV/JSONL tables.

Contract with the trainer (nf_jax.train); this module relies on nothing else:

* A run directory holds ``metrics.jsonl``: one JSON object per logged step,
  with keys ``step``, ``examples_seen``, ``flops`` (cumulative training FLOPs),
  ``train/loss``, ``lr``, ``grad_norm`` and ``eval/<dataset>/<split>/loss``
  (plus ``.../top1``, ``.../top5``, ignored here). A record may omit keys
  (e.g. eval losses are logged less often than train losses).
* ``config.json`` holds the run's config, with ``dataset`` (train dataset
  name) and ``model.name`` (or a flat ``model`` string). The model record
  ``model_info = {"params": int, "flops_per_example": float}`` is either a key
  of ``config.json`` or a separate ``model_info.json`` in the same directory.
* From a run, at its final logged step (or the last one at or before a chosen
  step): N = model_info.params, D = examples_seen, C = flops (if a run logs
  no ``flops``, C = flops_per_example × examples_seen, i.e.
  flops_per_example is read as training FLOPs per example); train loss = the
  last ``train/loss`` or the mean of the last ``smooth`` logged values; each
  eval loss = its last logged value at or before that step.
* A sweep directory is any directory containing run directories (found
  recursively by their ``metrics.jsonl``).

Tables (CSV with a header row, or JSONL with one object per line) come with a
column mapping from the canonical names N, D, C, dataset to the table's own
column names; loss columns are used under their own names. If D is not mapped
but N and C are, D = C / (6 N); if C is not mapped, C = 6 N D.

All problems raise ScalingDataError naming the file and line or the run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from nf_jax.scaling.errors import ScalingDataError

CANONICAL = ("N", "D", "C", "dataset")
TRAIN_LOSS = "train/loss"


@dataclasses.dataclass
class Table:
  """Rows of named values; `labels[i]` says where row i came from."""
  rows: list[dict]
  labels: list[str]
  source: str
  mapping: dict = dataclasses.field(default_factory=dict)

  def __len__(self):
    return len(self.rows)

  def column_name(self, name: str) -> str:
    return self.mapping.get(name, name)

  def has(self, name: str) -> bool:
    col = self.column_name(name)
    if any(col in r for r in self.rows):
      return True
    if name == "D":
      return self.has("N") and self.has("C")
    if name == "C":
      return self.has("N") and self.has("D")
    return False

  def numeric(self, name: str) -> np.ndarray:
    """Column `name` (canonical or actual) as float64; errors name the row."""
    col = self.column_name(name)
    if not any(col in r for r in self.rows):
      if name == "D" and "D" not in self.mapping and self.has("N") and self.has("C"):
        return self.numeric("C") / (6.0 * self.numeric("N"))
      if name == "C" and "C" not in self.mapping and self.has("N") and self.has("D"):
        return 6.0 * self.numeric("N") * self.numeric("D")
      raise ScalingDataError(
          f"{self.source}: missing column {col!r}"
          + (f" (mapped from {name!r})" if col != name else "")
          + f"; available: {', '.join(sorted(self.columns())[:20])}")
    out = np.empty(len(self.rows))
    for i, r in enumerate(self.rows):
      if col not in r or r[col] in ("", None):
        raise ScalingDataError(f"{self.labels[i]}: no value for column {col!r}")
      try:
        out[i] = float(r[col])
      except (TypeError, ValueError):
        raise ScalingDataError(f"{self.labels[i]}: column {col!r} = {r[col]!r} "
                               f"is not a number") from None
    return out

  def strings(self, name: str) -> list[str]:
    col = self.column_name(name)
    if not any(col in r for r in self.rows):
      raise ScalingDataError(f"{self.source}: missing column {col!r}")
    return [str(r.get(col, "")) for r in self.rows]

  def columns(self) -> set[str]:
    return set().union(*(r.keys() for r in self.rows)) if self.rows else set()

  def select(self, mask) -> "Table":
    idx = np.flatnonzero(np.asarray(mask))
    return Table([self.rows[i] for i in idx], [self.labels[i] for i in idx],
                 self.source, self.mapping)

  def where(self, name: str, value: str) -> "Table":
    return self.select([v == value for v in self.strings(name)])


def _parse_mapping(mapping: Mapping[str, str] | None) -> dict:
  return {k: v for k, v in (mapping or {}).items() if v}


def read_table(path: str | os.PathLike, mapping: Mapping[str, str] | None = None) -> Table:
  """Reads a CSV (header row) or JSONL table; the format follows the suffix."""
  path = Path(path)
  if not path.is_file():
    raise ScalingDataError(f"{path}: no such file")
  rows, labels = [], []
  if path.suffix in (".jsonl", ".json", ".ndjson"):
    with path.open() as fh:
      for lineno, line in enumerate(fh, 1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
        except json.JSONDecodeError as err:
          raise ScalingDataError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
        if not isinstance(rec, dict):
          raise ScalingDataError(f"{path}:{lineno}: expected a JSON object per line")
        rows.append(rec)
        labels.append(f"{path}:{lineno}")
  else:
    with path.open(newline="") as fh:
      reader = csv.reader(fh)
      try:
        header = next(reader)
      except StopIteration:
        raise ScalingDataError(f"{path}: empty file") from None
      for row in reader:
        lineno = reader.line_num
        if not row:
          continue
        if len(row) != len(header):
          raise ScalingDataError(f"{path}:{lineno}: malformed line: {len(row)} "
                                 f"fields, header has {len(header)}")
        rows.append(dict(zip(header, row)))
        labels.append(f"{path}:{lineno}")
  if not rows:
    raise ScalingDataError(f"{path}: no data rows")
  table = Table(rows, labels, str(path), _parse_mapping(mapping))
  for canon, col in table.mapping.items():
    if not any(col in r for r in rows):
      raise ScalingDataError(f"{path}: missing column {col!r} (mapped from {canon!r})")
  return table


def _read_json(path: Path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as err:
    raise ScalingDataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def _finite(value, what, where):
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ScalingDataError(f"{where}: {what} = {value!r} is not a number") from None
  return v


def read_run(run_dir: str | os.PathLike, step: int | None = None,
             smooth: int = 1) -> dict:
  """Summarizes one run directory as a table row (see module docstring)."""
  run_dir = Path(run_dir)
  metrics_path = run_dir / "metrics.jsonl"
  if not metrics_path.is_file():
    raise ScalingDataError(f"{run_dir}: not a run directory (no metrics.jsonl)")
  config_path = run_dir / "config.json"
  if not config_path.is_file():
    raise ScalingDataError(f"{run_dir}: missing config.json")
  config = _read_json(config_path)
  info = config.get("model_info")
  if info is None and (run_dir / "model_info.json").is_file():
    info = _read_json(run_dir / "model_info.json")
  if not isinstance(info, dict) or "params" not in info:
    raise ScalingDataError(f"{run_dir}: no model_info.params in config.json or "
                           f"model_info.json")
  model = config.get("model")
  model_name = model.get("name") if isinstance(model, dict) else model

  records = []
  with metrics_path.open() as fh:
    for lineno, line in enumerate(fh, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as err:
        raise ScalingDataError(f"{metrics_path}:{lineno}: malformed JSON line "
                               f"({err.msg})") from None
      if not isinstance(rec, dict) or "step" not in rec:
        raise ScalingDataError(f"{metrics_path}:{lineno}: record has no 'step'")
      records.append((lineno, rec))
  if step is not None:
    records = [(n, r) for n, r in records if r["step"] <= step]
  if not records:
    raise ScalingDataError(f"{metrics_path}: no records"
                           + (f" at or before step {step}" if step is not None else ""))
  records.sort(key=lambda nr: nr[1]["step"])
  last = {}
  for lineno, rec in records:
    for k, v in rec.items():
      last[k] = (lineno, v)
  where = f"{run_dir} (step {records[-1][1]['step']})"
  for key in ("examples_seen", TRAIN_LOSS):
    if key not in last:
      raise ScalingDataError(f"{metrics_path}: no record has {key!r}")
  row = {
      "run": str(run_dir), "step": records[-1][1]["step"],
      "dataset": config.get("dataset", ""), "model": model_name or "",
      "N": _finite(info["params"], "model_info.params", where),
      "D": _finite(last["examples_seen"][1], "examples_seen", where),
  }
  if "flops" in last:
    row["C"] = _finite(last["flops"][1], "flops", where)
  elif "flops_per_example" in info:
    row["C"] = float(info["flops_per_example"]) * row["D"]
  train = [(n, r[TRAIN_LOSS]) for n, r in records if TRAIN_LOSS in r][-max(1, smooth):]
  vals = [_finite(v, TRAIN_LOSS, f"{metrics_path}:{n}") for n, v in train]
  row[TRAIN_LOSS] = float(np.mean(vals))
  for k, (lineno, v) in last.items():
    if k.startswith("eval/") and k.endswith("/loss"):
      row[k] = _finite(v, k, f"{metrics_path}:{lineno}")
  return row


def find_runs(path: str | os.PathLike) -> list[Path]:
  path = Path(path)
  if (path / "metrics.jsonl").is_file():
    return [path]
  if not path.is_dir():
    raise ScalingDataError(f"{path}: no such directory")
  runs = sorted(p.parent for p in path.rglob("metrics.jsonl"))
  if not runs:
    raise ScalingDataError(f"{path}: no run directories (no metrics.jsonl found)")
  return runs


def read_runs(path: str | os.PathLike, step: int | None = None,
              smooth: int = 1) -> Table:
  """One run directory or a sweep directory -> Table with one row per run."""
  runs = find_runs(path)
  rows = [read_run(r, step=step, smooth=smooth) for r in runs]
  return Table(rows, [str(r) for r in runs], str(path))


def load(path: str | os.PathLike, mapping: Mapping[str, str] | None = None,
         step: int | None = None, smooth: int = 1) -> Table:
  """Run/sweep directory or table file, whichever `path` is."""
  if Path(path).is_dir():
    return read_runs(path, step=step, smooth=smooth)
  return read_table(path, mapping)


def drop_highest(table: Table, loss: str, k: int) -> Table:
  """Drops the k highest-loss rows (Epoch AI's replication drops 5)."""
  if k <= 0:
    return table
  y = table.numeric(loss)
  keep = np.ones(len(y), bool)
  keep[np.argsort(y)[len(y) - k:]] = False
  return table.select(keep)
