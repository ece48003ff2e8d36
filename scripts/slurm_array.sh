#!/usr/bin/env bash
# Run trial $SLURM_ARRAY_TASK_ID of a muso study; for users who write their own sbatch line:
#
#   sbatch --array=$(muso status studies/NAME --pending) --output=studies/NAME/slurm/%A_%a.out \
#          scripts/slurm_array.sh studies/NAME
#   sbatch --array=0-47%8 --partition=gpu --gres=gpu:1 --time=60 --output=studies/NAME/slurm/%A_%a.out ...
#
# (`muso sweep --no-launch` prints this line with your study's paths and creates its slurm/ folder; without
# --output the logs land as slurm-<job>_<task>.out in the folder you submit from.)
#
# Array task i runs trial i (a finished trial is skipped at once). Slurm sends USR1 90 s before the time limit
# (B: to this script, which `exec` made the muso process): the trial saves a checkpoint at the next step, the
# task requeues itself (at most MUSO_MAX_REQUEUE times) and resumes from the checkpoint.
# `muso` must be on PATH in the job (activate the venv first), or set MUSO=/path/to/.venv/bin/muso.
#SBATCH --job-name=muso
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
study=${1:?usage: sbatch --array=0-N scripts/slurm_array.sh <study folder>}
index=${SLURM_ARRAY_TASK_ID:?submit with sbatch --array}
exec "${MUSO:-muso}" run-trial "$study" "$index" --requeue "${MUSO_MAX_REQUEUE:-3}"
