#!/usr/bin/env bash
# Runs the given command on every worker of a Cloud TPU VM pod slice.
# Usage: TPU_NAME=... ZONE=... [PROJECT=...] [REPO_DIR=...] ./launch/tpu_pod.sh r1jax train --config=...
# Every worker needs the checkout at REPO_DIR (default r1jax in the ssh login directory; '~/x'
# and absolute paths work too) with r1jax on the PATH of a non-interactive ssh shell
# (pip install -e . into the system or user site, or give the command as .venv/bin/r1jax).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
project_flag=()
[ -n "${PROJECT:-}" ] && project_flag=(--project "$PROJECT")
repo_dir="${REPO_DIR:-r1jax}"
# each argument quoted for the remote shell: --config.mesh.shape="(1,-1,1)" and JSON survive
printf -v args ' %q' "$@"
if [[ "$repo_dir" == "~/"* ]]; then  # the worker's home: ~ stays unquoted
  printf -v repo ' ~/%q' "${repo_dir#\~/}"
else
  printf -v repo ' %q' "$repo_dir"
fi
cmd="cd$repo && R1JAX_DISTRIBUTED=1$args"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project_flag[@]}" \
  --worker=all --command "$cmd"
