#!/usr/bin/env bash
# Does `launcher.batch` make `make demo`'s sweep faster? (a benchmark, not a test; docs/results.md §9)
#
#   bash scripts/bench_demo_batch.sh [BATCH]      # BATCH: launcher.batch to compare with today's default (5)
#
# Runs the demo's sweep line (from `make -n demo`) one width at a time, into a temporary study root, with and
# without launcher.batch=BATCH, in this one run, and prints the seconds of each `muso sweep` command (process
# start and data loading included) and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-5}
ROOT=$(mktemp -d)
LOG=$(mktemp)
trap 'rm -rf "$ROOT" "$LOG"' EXIT
LINE=$(make -n demo | grep ' sweep ' | sed "s#study.root=outputs/demo#study.root=$ROOT#")
WIDTHS=$(echo "$LINE" | grep -o 'study.widths=\[[0-9,]*\]' | sed 's/study.widths=\[\(.*\)\]/\1/' | tr , ' ')
echo "load before: $(uptime)"
printf '%6s %12s %14s %7s\n' width "pool (s)" "batch=$BATCH (s)" ratio
total1=0; totalb=0
declare -A secs
for w in $WIDTHS; do
  for b in 1 "$BATCH"; do
    rm -rf "${ROOT:?}"/*
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # the sweep line is a list of words
    $(echo "$LINE" | sed "s#study.widths=\[[0-9,]*\]#study.widths=[$w]#") launcher.batch="$b" > "$LOG" 2>&1 \
      || { cat "$LOG" >&2; exit 1; }
    secs[$b]=$(echo "$(date +%s.%N) - $start" | bc)
  done
  printf '%6s %12.1f %14.1f %6.2f×\n' "$w" "${secs[1]}" "${secs[$BATCH]}" "$(echo "${secs[1]} / ${secs[$BATCH]}" | bc -l)"
  total1=$(echo "$total1 + ${secs[1]}" | bc); totalb=$(echo "$totalb + ${secs[$BATCH]}" | bc)
done
printf '%6s %12.1f %14.1f %6.2f×\n' all "$total1" "$totalb" "$(echo "$total1 / $totalb" | bc -l)"
echo "load after: $(uptime)"
