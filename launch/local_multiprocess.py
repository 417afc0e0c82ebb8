r"""Runs one training job as several local processes (multi-host rehearsal).

  python -m launch.local_multiprocess --num_processes=2 \
      --devices_per_process=2 -- \
      --config=experiments/fashion_mnist_nf_resnet.py --workdir=/tmp/mp

Each process gets `devices_per_process` CPU host devices and joins the run
through a coordinator on 127.0.0.1 (gloo collectives). If one process fails,
the others are stopped within `--grace_seconds` and the launcher exits with
the failing process's status, so nothing hangs; rerunning the same command
resumes from the last checkpoint.
"""

import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes to start.")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1,
                                "CPU host devices per process.")
_GRACE = flags.DEFINE_integer("grace_seconds", 30,
                              "Wait this long for the others after a failure.")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv):
  main_args = argv[1:]
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.main", *main_args,
       f"--config.num_devices={_DEVICES.value}",
       f"--coordinator_address={address}",
       f"--num_processes={_NUM.value}", f"--process_id={i}"])
           for i in range(_NUM.value)]
  status = 0
  while any(p.poll() is None for p in procs):
    failed = [p for p in procs if p.poll() not in (None, 0)]
    if failed:
      status = failed[0].returncode
      print(f"local_multiprocess: a process exited with status {status}; "
            f"stopping the others.", file=sys.stderr)
      deadline = time.time() + _GRACE.value
      for p in procs:
        if p.poll() is None:
          p.terminate()
      for p in procs:
        try:
          p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
          p.kill()
      break
    time.sleep(0.5)
  status = status or max((p.returncode or 0) for p in procs)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
