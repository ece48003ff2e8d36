#!/usr/bin/env bash
# The character-level GPT of chargpt.py, trained by its own loop, driven by muso through the trainer contract:
# tune Muon's lr at d_model 64 (sp and second-order µP), refine it (one step past an optimum at the grid's edge),
# transfer the best to 128 and 256 with 3 verification
# points each, report. Usage: bash examples/chargpt/run.sh [output folder] [extra muso overrides]
#   MUSO=<command> picks the muso to run (default: muso), PYTHON the interpreter of the trials (default: the one
#   beside muso); DDP=2 runs every trial as a 2-process DDP job on CPU (gloo, through torchrun); TRANSFER the
#   transfer's overrides (default: transfer.widths=[128,256]); REFINE the refinement's (default:
#   study.refine_to=0.5, which on the half-octave grid only extends an edge); STEPS the training steps (default 60).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT=${1:-$HERE/outputs}
shift || true
MUSO=${MUSO:-muso}
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"       # model._target_=chargpt.CharGPT for muso's checks
PYTHON=${PYTHON:-$(dirname "$(command -v "$MUSO")")/python}
LAUNCH=$PYTHON
if [ -n "${DDP:-}" ]; then LAUNCH="$PYTHON -m torch.distributed.run --standalone --nproc_per_node=$DDP"; fi
STEPS=${STEPS:-60}
# the trial's width and lr come in by interpolation; its seed, optimizer and parameterization from
# $MUSO_TRIAL_CONFIG (muso_cli.api.trial_config)
COMMAND="$LAUNCH $HERE/chargpt.py --width \${model.width} --lr \${optimizer.lr} --seed \${seed} --steps $STEPS --eval-every 30"
RUN=(--config-dir "$HERE/conf" model=chargpt data=pystdlib data.context=64 optimizer=muon trainer=command
     "trainer.command='$COMMAND'" "trainer.env={OMP_NUM_THREADS:1}" study.root="$OUT" study.name=chargpt-muon)

$MUSO params "${RUN[@]:0:6}" param=somup model.width=256
$MUSO sweep "${RUN[@]}" study.params=[sp,somup] study.lr=log2:-9:-3:0.5 study.seeds=[0,1] launcher=pool "$@"
$MUSO refine "$OUT/chargpt-muon" ${REFINE:-study.refine_to=0.5}
$MUSO transfer "$OUT/chargpt-muon" ${TRANSFER:-transfer.widths=[128,256]}
$MUSO report "$OUT/chargpt-muon"
