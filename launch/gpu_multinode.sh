#!/usr/bin/env bash
# One process per node under SLURM: srun ./launch/gpu_multinode.sh r1jax train --config=...
# JAX reads SLURM_* variables in jax.distributed.initialize(); elsewhere set
# R1JAX_COORDINATOR=host:port R1JAX_NUM_PROCESSES=N R1JAX_PROCESS_ID=i.
set -euo pipefail
export R1JAX_DISTRIBUTED=1
exec "$@"
