#!/bin/bash
# Runs launch.main on every worker of a TPU VM pod slice. JAX detects the pod
# topology itself. The workdir must be shared (e.g. a gs:// bucket) so every
# worker joins each checkpoint save; rerunning resumes.
#
#   launch/tpu_pod.sh my-tpu us-central2-b experiments/imagenet_nfnet_f0.py \
#       gs://bucket/runs/f0 --config.data_dir=gs://bucket/tfds
set -euo pipefail
TPU=${1:?TPU name}
ZONE=${2:?zone}
CONFIG=${3:?config file}
WORKDIR=${4:?workdir}
shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command \
  "cd ~/nf_jax && python3 -m launch.main --config=$CONFIG --workdir=$WORKDIR $*"
