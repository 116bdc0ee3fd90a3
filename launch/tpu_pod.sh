#!/usr/bin/env bash
# Runs the given command on every worker of a Cloud TPU VM pod slice.
# Usage: TPU_NAME=... ZONE=... [PROJECT=...] ./launch/tpu_pod.sh r1jax train --config=...
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
project_flag=()
[ -n "${PROJECT:-}" ] && project_flag=(--project "$PROJECT")
repo_dir="${REPO_DIR:-~/r1jax}"
cmd="cd $repo_dir && R1JAX_DISTRIBUTED=1 $*"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project_flag[@]}" \
  --worker=all --command "$cmd"
