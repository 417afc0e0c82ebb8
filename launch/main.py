r"""Trains and evaluates a model from a config file.

  python -m launch.main --config=experiments/fashion_mnist_nf_resnet.py \
      --workdir=/tmp/nf_fmnist [--config.key=value ...]

On a CPU host the batch is split over one XLA host device per core; on GPUs
and TPUs over every local accelerator. A bad config, dataset or workdir
fails with one line on stderr (exit status 2) before anything is compiled or
written.
"""

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/<name>.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for metrics, config and checkpoints.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0, for multi-process runs outside TPU pods and "
    "SLURM (where it is auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index, 0-based.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 60,
    "In multi-process runs, abort this long after another process vanished.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's flag parsing, with a bad `--config.x=y` as one line, exit 2.

  ml_collections reports an override of a key the config does not have as a
  bare AttributeError/KeyError from inside its config path lookup, which
  absl would show as a traceback.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --helpshort or --helpfull to see the flags.",
          file=sys.stderr)
  except (AttributeError, KeyError) as e:
    key = str(e).strip("\"'")
    bad = [a for a in argv[1:] if a.startswith("--config.") and
           key in a.split("=", 1)[0].split(".")]
    if not bad:
      raise  # not an override problem: a bug, which needs its traceback
    print(f"error: {' '.join(bad)}: the config has no key '{key}'. "
          "Overrides must name the config file's fields, e.g. "
          "--config.batch_size=128.", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  # Host devices and processes must be set up before JAX initializes its
  # backends.
  from nf_jax.train import distributed, parallel  # pylint: disable=g-import-not-at-top
  parallel.configure_host_devices(config.num_devices or None)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, _HEARTBEAT.value)
  from nf_jax.train import config_lib, train_lib  # pylint: disable=g-import-not-at-top
  from nf_jax.data.errors import DatasetError  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  # Libraries that log through absl (orbax, TFDS, grain): warnings only.
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    final = train_lib.train_and_evaluate(config, _WORKDIR.value)
  except (config_lib.ConfigError, DatasetError, train_lib.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except train_lib.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM, what schedulers expect
  if final.get("already_finished"):
    print(f"Run in {_WORKDIR.value} already finished at step "
          f"{final['step']}; nothing to do.")
    return
  summary = ", ".join(f"{k}={v:.4f}" for k, v in final.items()
                      if k.startswith("eval/"))
  print(f"Finished: {summary}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
