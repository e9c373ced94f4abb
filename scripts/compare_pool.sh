#!/usr/bin/env bash
# Benchmark: a retrospective pool comparison (3 strategies x 5 replicas x 6 generations by
# default), timed. Prints the summary (paired intervals, noise floor, verdict) and writes
# bench_compare_pool.json next to the outputs.
#   scripts/compare_pool.sh [COMPARISON_FILE] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${1:-campaigns/compare_pool_ethanol.yaml}
DIR=${2:-runs/$(basename "$FILE" .yaml)}
PY=${PYTHON:-.venv/bin/python}
t0=$(date +%s)
"$PY" -m alprobe.cli compare "$FILE" --dir "$DIR"
t1=$(date +%s)
cat "$DIR/summary.md"
echo "total wall time: $((t1 - t0)) s ($(( (t1 - t0) / 60 )) min) on $(nproc) cores"
printf '{"file": "%s", "dir": "%s", "wall_s": %d, "cores": %d}\n' "$FILE" "$DIR" \
  "$((t1 - t0))" "$(nproc)" > "$DIR/bench_compare_pool.json"
