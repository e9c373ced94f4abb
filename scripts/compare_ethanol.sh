#!/usr/bin/env bash
# Benchmark: three acquisition strategies (PROBE, committee eps_F, random), 5 replicas each, on
# ethanol at PBE/def2-SVP for 3 generations, all on one LocalCluster (2 workers).
# Prints the comparison summary and the total wall time; writes <out>/bench_compare.json.
# Usage: scripts/compare_ethanol.sh [OUT_DIR]   (default runs/compare_ethanol)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare_ethanol}
PY=${PYTHON:-.venv/bin/python}
start=$(date +%s)
"$PY" -m alprobe.cli compare campaigns/compare_ethanol.yaml --dir "$OUT"
end=$(date +%s)
"$PY" - "$OUT" $((end - start)) <<'PYEOF'
import csv, json, sys
from pathlib import Path

out, wall = Path(sys.argv[1]), float(sys.argv[2])
curves = list(csv.DictReader(open(out / "learning_curves.csv")))
costs = list(csv.DictReader(open(out / "costs.csv")))
# (alprobe compare has printed summary.md above)
for c in costs:
    if c["stage"] == "total":
        print(f"{c['arm']:>16}  wall {float(c['wall_s']):7.0f} s  CPU {float(c['cpu_s']):7.0f} s")
print(f"total wall time of the comparison: {wall:.0f} s ({wall / 60:.1f} min)")
(out / "bench_compare.json").write_text(json.dumps(
    {"wall_s": wall, "learning_curves": curves, "costs": costs,
     "plot": str(out / "learning_curves.png")}, indent=1))
print(f"wrote {out / 'bench_compare.json'}")
PYEOF
