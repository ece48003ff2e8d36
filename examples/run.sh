#!/usr/bin/env bash
# The example project end to end: muso on a model, data and configs of the project's own (docs/own-code.md, "A
# project of your own"). Usage: bash examples/run.sh [output folder, default examples/outputs]; MUSO=<command>
# picks the muso to run (default: muso).
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-outputs}
MUSO=${MUSO:-muso}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project's package, tinyproj, is importable
CONF="--config-dir conf"                                # its configs: conf/model/tinyresmlp.yaml, conf/data/digits_vec.yaml
RUN="$CONF model=tinyresmlp data=digits_vec optimizer=kfac optimizer.damping=0.1 device=cpu"

# what second-order µP does to each parameter of the project's model at width 256 (base width 32)
$MUSO params $RUN param=somup model.width=256
# Δh per layer against width: flat under somup
$MUSO coord-check $RUN param=somup optimizer.lr=0.1 coord.widths=[32,64,128,256,512] coord.steps=2 \
  coord.out="$OUT/coord"
# tune lr at the base width (32), carry the best setting of sp and somup to widths 128 and 512, report
$MUSO sweep $RUN train.steps=100 train.batch_size=64 train.eval_every=50 study.params=[sp,somup] \
  study.lr=log2:-8:0:2 study.root="$OUT" study.name=resmlp
$MUSO transfer "$OUT/resmlp" transfer.widths=[128,512]
$MUSO report "$OUT/resmlp"
