#!/bin/bash
# compare --jobs 2 --threads 1 against --jobs 1 --threads 1, alternating, twice each (issue 26; docs/cluster.md).
# Run it on a quiet machine: bash bench/compare_jobs.sh [OUT]  (default bench/out/jobs); wall times go to OUT/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/jobs}
mkdir -p "$out"
for k in a b; do
  for j in 1 2; do
    start=$(date +%s.%N)
    OMP_NUM_THREADS=1 .venv/bin/rerelrp compare --data demo --methods finetune,replay,ewc --seeds 0,1 --jobs $j \
      --threads 1 --quiet --out "$out/j$j$k" > "$out/j$j$k.log" 2>&1
    end=$(date +%s.%N)
    echo "jobs $j run $k wall $(echo "$end - $start" | bc) load $(cut -d' ' -f1 /proc/loadavg)" >> "$out/times.txt"
  done
done
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p.parent.name: [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(p.read_text())["runs"]]
        for p in out.glob("j*/compare.json")}
print(open(out / "times.txt").read(), "same figures in every run:", all(r == runs["j1a"] for r in runs.values()))
PY
