#!/usr/bin/env bash
# The whole book at the `gpu` profile on one GPU: every chapter from training to figures, executed
# into book/ (the notebooks and book/results/*.json the site renders), then the benchmarks on the
# GPU, then the site. Per-chapter minutes land in book/results/runtimes-gpu.json.
#   scripts/gpu_book.sh            # OUT=book by default; OUT=.scratch/gpu-book keeps book/ as it is
#   SKIP_BENCH=1 scripts/gpu_book.sh
# Budget: at most 12 minutes for the chapters on one H200 (copkit/configs/gpu.yaml says how it is sized).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-book}
PY=.venv/bin/python

make --no-print-directory setup data
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "scripts/gpu_book.sh: torch sees no CUDA GPU; run the cpu profile instead: make book" >&2
  exit 1
fi
$PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB')"

start=$(date +%s)
$PY tools/run_chapters.py --profile gpu --device cuda --out "$OUT"
chapters=$(( $(date +%s) - start ))
echo "== chapters at the gpu profile: $(( chapters / 60 )) min $(( chapters % 60 )) s (budget 12 min)"

if [ -z "${SKIP_BENCH:-}" ]; then
  $PY tools/bench.py --profile gpu --device cuda --out "$OUT/results/bench.json"
fi
if [ "$OUT" = book ]; then
  make --no-print-directory site
fi
$PY - "$OUT/results/runtimes-gpu.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for name, c in r["chapters"].items():
    print(f"{name:16s} {c['seconds'] / 60:6.2f} min")
print(f"{'total':16s} {sum(c['seconds'] for c in r['chapters'].values()) / 60:6.2f} min")
PY
