#!/usr/bin/env bash
# The measurements of issue 13 (docs/results.md, "Robustness of K-FAC and Shampoo"), each resumable; sized for a
# shared 2-core CPU (the K-FAC grid ~1 h at --jobs 2, the rest minutes). Outputs under outputs/ (git-ignored).
#   scripts/repro_robust.sh [kfac-grid|kfac-edge|shampoo-lr|coord|bench|tables]...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SWEEP="nice -n 10 $PY scripts/stability_sweep.py"
S=outputs/stability
BASE_KFAC="optimizer=kfac data.n_train=10000 data.n_test=2000 train.steps=200 train.eval_every=100 \
train.eval_train_samples=5000 model.width=64 device=cpu"
BASE_SHAMPOO="data.n_train=20000 data.n_test=2000 train.steps=300 train.eval_every=100 train.eval_train_samples=5000 \
model.width=64 device=cpu"

for what in ${@:-kfac-grid shampoo-lr coord bench tables}; do
  case $what in
    kfac-grid)  # the divergence table: depth 3-6, relu/tanh, two data sets, lr × damping, K-FAC's defaults
      $SWEEP run --out $S/kfac_grid_new.jsonl --jobs 2 --base $BASE_KFAC --grid data=digits,fashion_mnist \
        model.depth=3,4,5,6 model.activation=relu,tanh optimizer.damping=0.001,0.01,0.1,1 optimizer.lr=log2:-10:0 ;;
    kfac-edge)  # the cells that diverge at damping 0.01: warm start length × trust region, two seeds
      $SWEEP run --out $S/kfac_digits_edge.jsonl --jobs 2 --base optimizer=kfac data=digits data.n_train=10000 \
        data.n_test=2000 train.steps=200 train.eval_every=100 train.eval_train_samples=5000 model.width=64 \
        model.activation=relu optimizer.damping=0.01 device=cpu --grid model.depth=5,6 \
        optimizer.warmup_steps=20,50,100 optimizer.kl_clip=0.1,0.01 seed=0,1 optimizer.lr=log2:-7:-4 ;;
    shampoo-lr)  # Shampoo's loss against lr at the base width (its defaults, statistics every step) and Adam's
      $SWEEP run --out $S/shampoo_lr.jsonl --jobs 2 --base optimizer=adam $BASE_SHAMPOO \
        --grid seed=0,1 optimizer.lr=log2:-12:-5
      $SWEEP run --out $S/shampoo_lr.jsonl --jobs 2 --base optimizer=shampoo $BASE_SHAMPOO \
        --grid optimizer.statistics_interval=1,10 seed=0,1 optimizer.lr=log2:-10:0 ;;
    coord)  # K-FAC and Shampoo × sp / mup / somup with the trust region and grafting
      OMP_NUM_THREADS=1 nice -n 10 $PY scripts/coord_robust.py --widths 64 128 256 512 1024 --seeds 2 \
        --cases kfac kfac-clip-tight shampoo shampoo-adam shampoo-adam-ownrule --out outputs/coord-robust ;;
    bench)  # step time against SGD at width 1024, intervals 10 and 100, one run (all optimizers interleaved)
      nice -n 10 $PY scripts/bench_step.py --widths 1024 --intervals 10 100 ${ASDL_PYTHON:+--asdl-python $ASDL_PYTHON} ;;
    tables)
      $PY scripts/stability_sweep.py table $S/kfac_grid_new.jsonl --rows data model.activation model.depth \
        optimizer.damping --cols optimizer.lr
      $PY scripts/stability_sweep.py table $S/shampoo_lr.jsonl --rows optimizer optimizer.statistics_interval seed \
        --cols optimizer.lr --value train_loss
      $PY scripts/stability_sweep.py plot $S/shampoo_lr.jsonl --x optimizer.lr \
        --lines optimizer optimizer.statistics_interval --png docs/img/robust_shampoo_lr.png ;;
    *) echo "unknown measurement $what" >&2; exit 2 ;;
  esac
done
