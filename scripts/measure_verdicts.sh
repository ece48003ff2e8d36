#!/usr/bin/env bash
# What the verdicts say on two real studies (CPU-sized, ~15 min on 2 cores):
#   1. every trial diverged: K-FAC on a 6-layer tanh MLP at damping 1e-6 (each run diverges within a few steps);
#      the report says "no optimum" in words and `muso transfer` refuses with exit status 2;
#   2. refinement: K-FAC on Fashion-MNIST (MLP, 300 steps, 3 seeds, widths 64 and 256, lr 2^-6 … 2^-1 in
#      octaves), then `muso refine` to a quarter octave near each optimum; prints the trials it added and its
#      wall time.
# Usage: scripts/measure_verdicts.sh [all-diverged|refine|both]   (MUSO=<command> to use another muso, OUT=<folder>)
set -euo pipefail
MUSO=${MUSO:-.venv/bin/muso}
OUT=${OUT:-outputs/verdicts}
WHAT=${1:-both}
COMMON="data.n_train=10000 train.eval_every=100 train.eval_train_samples=5000 study.root=$OUT"

if [[ $WHAT == all-diverged || $WHAT == both ]]; then
  $MUSO sweep optimizer=kfac model.depth=6 model.activation=tanh optimizer.damping=1e-6 train.steps=100 $COMMON \
    study.params=[sp,somup] study.lr=log2:-7:1 study.widths=[64,256] study.name=all-diverged
  $MUSO report $OUT/all-diverged
  status=0; $MUSO transfer $OUT/all-diverged transfer.widths=[1024] || status=$?
  echo "muso transfer exit status: $status"
fi

if [[ $WHAT == refine || $WHAT == both ]]; then
  # one torch thread per run: on a shared 2-core machine more threads only contend
  $MUSO sweep optimizer=kfac optimizer.damping=0.1 train.steps=300 data.n_test=2000 train.threads=1 $COMMON \
    study.params=[sp,somup] study.lr=log2:-6:-1 study.seeds=[0,1,2] study.widths=[64,256] study.name=refine-small
  before=$($MUSO status $OUT/refine-small | sed -n 1p)
  start=$(date +%s)
  $MUSO refine $OUT/refine-small study.refine_to=0.25
  after=$($MUSO status $OUT/refine-small | sed -n 1p)
  echo "refine wall time: $(( $(date +%s) - start )) s; before: $before; after: $after"
  $MUSO report $OUT/refine-small
fi
