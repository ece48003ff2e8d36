#!/usr/bin/env bash
# The prepared GPU check: one command that anyone with a CUDA GPU runs as is (under 8 minutes on one H100, by
# estimate: no GPU was ever lent to measure it). From the repository root:
#
#   bash scripts/gpu_check.sh [OUT_DIR] [gpu_check.py options]    # OUT_DIR default: outputs/gpu_check/<date-time>
#   MUSO_GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh /tmp/smoke  # smoke mode: every part on the CPU, tiny sizes
#   bash scripts/gpu_check.sh outputs/gpu_check/again --parts equality  # one part again (equality | bench | pool)
#
# It runs `make setup` first when .venv is missing, then scripts/gpu_check.py, which prints what it does as it goes:
#   1. step equality: SGD, Adam, K-FAC, Shampoo, Muon and SOAP (muso_cli.optim.REGISTRY), each built as the training
#      loop builds it, on the MLP with synthetic data (param=somup, width 256, base width 64), take 5 steps from the
#      same init on the same batches on the CPU and on cuda in float32, TF32 off. Figure: the largest relative
#      difference of a parameter tensor after the steps; PASS/FAIL against a tolerance per optimizer. Muon runs
#      with optimizer.ns_dtype=float32 (auto is bfloat16 on CUDA), SOAP with optimizer.inverse_interval=1
#      optimizer.damping=0.1 (its float32 step is otherwise rounding-limited; why: TOLERANCES in gpu_check.py).
#   2. step time: scripts/bench_step.py --device cuda --widths 1024 4096 --intervals 10 (SGD, K-FAC, Shampoo, Muon,
#      SOAP): ms per step and the ratios to SGD, peak memory.
#   3. pool: `muso sweep optimizer=kfac data=fashion_mnist data.n_train=10000 train.steps=200 study.params=[sp,somup]
#      study.lr=log2:-6:-2 study.seeds=[0,1] device=cuda` (10 runs) with launcher=pool launcher.per_gpu=2, then
#      launcher.per_gpu=1, then launcher=local: the wall time of each command, its trial counts (muso status), and
#      the ratios of the wall times. Without Fashion-MNIST (make data installs it) it runs on data=synthetic and
#      says so.
# The benchmark and the sweeps stop (killed, recorded as timed out) 7.5 minutes after the start of gpu_check.py.
#
# It writes into OUT_DIR:
#   gpu_check.json   every figure, machine-readable (rewritten after each part: a killed run keeps what it measured)
#   gpu_check.md     the same as tables, and the verdict
#   gpu_check.log    everything printed
#   nvidia-smi.txt   nvidia-smi's output and a query of name, driver, memory, clocks and power limit
#   bench_step.txt, pool-per-gpu-2.txt, pool-per-gpu-1.txt, local.txt: the commands' own output; studies/: the sweeps
# torch's and CUDA's versions, the GPU's name and the commit are in gpu_check.json ("environment").
#
# Environment:
#   MUSO_GPU_CHECK_DEVICE  cuda (default) | cpu (smoke mode: tests this script's plumbing without a GPU)
#   MUSO_PYTHON            an interpreter to use instead of .venv/bin/python (one with a CUDA build of torch and
#                          muso's requirements, e.g. a machine's own environment; run from this checkout)
#   CUDA_VISIBLE_DEVICES   default 0: the figures are per GPU (the pool packs launcher.per_gpu runs on each GPU it
#                          sees). Another GPU: CUDA_VISIBLE_DEVICES=N (the pool's workers map their slot through it:
#                          slot 0 under N is GPU N).
# Exit status: 0 every part ran and every optimizer passed, 1 otherwise (gpu_check.md says why), 2 CUDA asked for
# and not available (a CPU-only torch: its message says how to install a CUDA build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEVICE=${MUSO_GPU_CHECK_DEVICE:-cuda}
OUT=${1:-outputs/gpu_check/$(date +%Y%m%d-%H%M%S)}
shift || true
PYTHON=${MUSO_PYTHON:-.venv/bin/python}

if [ -z "${MUSO_PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  echo "gpu_check.sh: no .venv here: make setup"
  make setup
fi
if [ "$DEVICE" != cpu ]; then
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
fi
export WANDB_MODE=disabled WANDB_SILENT=true

mkdir -p "$OUT"
echo "gpu_check.sh: device $DEVICE, python $PYTHON, output $OUT${CUDA_VISIBLE_DEVICES:+, GPU $CUDA_VISIBLE_DEVICES}"
start=$(date +%s)
set +e
"$PYTHON" scripts/gpu_check.py --out "$OUT" --device "$DEVICE" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
set -e
echo "gpu_check.sh: exit $rc after $(( $(date +%s) - start )) s; figures in $OUT/gpu_check.json and $OUT/gpu_check.md"
exit "$rc"
