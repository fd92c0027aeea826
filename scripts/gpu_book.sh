#!/usr/bin/env bash
# The whole book at the `gpu` profile on one GPU: every chapter from training to figures, executed
# into book/ (the notebooks and book/results/*.json the site renders), the benchmarks on the GPU
# before the performance chapter that renders them, then the site. Per-chapter minutes land in
# book/results/runtimes-gpu.json.
#   scripts/gpu_book.sh            # OUT=book by default; OUT=.scratch/gpu-book keeps book/ as it is
#   SKIP_BENCH=1 scripts/gpu_book.sh
#   PY=python3 scripts/gpu_book.sh # an interpreter that already has copkit's needs: no .venv is made
#   BOOK_CHAPTERS="05_cvit 06_report" scripts/gpu_book.sh   # those chapters only
#   PACK=made.tar.gz LOG=run.log ...  # after every chapter, pack what this run made so far; LOG: a copy
#                                     # of the output (scripts/device_book.sh: a machine that may time out)
# Budget: at most 12 minutes for the chapters on one H200 (copkit/configs/gpu.yaml says how it is sized).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-book}
# BOOK_PROFILE=smoke BOOK_DEVICE=cpu try the plumbing on a machine without a GPU (tests/test_scripts.py).
PROFILE=${BOOK_PROFILE:-gpu}
DEVICE=${BOOK_DEVICE:-cuda}
if [ -n "${LOG:-}" ]; then
  exec > >(tee -a "$LOG") 2>&1
fi
# BOOK_CHAPTERS="05_cvit 06_report" runs those only (a second call of a machine that timed out).
names=${BOOK_CHAPTERS:-$(ls chapters/[0-9][0-9]_*.py | xargs -n1 basename | sed 's/\.py$//')}
for name in $names; do
  [ -f "chapters/$name.py" ] || { echo "scripts/gpu_book.sh: no chapter chapters/$name.py" >&2; exit 2; }
done
if [ -z "${PY:-}" ]; then
  make --no-print-directory setup
  PY=.venv/bin/python
fi

# What this run has made so far, in one archive: executed chapters, results files, failed notebooks
# (only files newer than the run's start, so unpacking it never overwrites a chapter it did not run).
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
pack() {
  [ -n "${PACK:-}" ] || return 0
  local files
  files=$(find "$OUT" -maxdepth 1 -name '*.ipynb' -newer "$stamp"; find "$OUT/results" .scratch/failed -type f -newer "$stamp" 2>/dev/null || true)
  [ -n "$files" ] || return 0
  # shellcheck disable=SC2086  # names are chapter and results files: no spaces
  tar -czf "$PACK.tmp" $files && mv "$PACK.tmp" "$PACK"
}

$PY -m copkit data
if [ "$DEVICE" = cuda ]; then
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "scripts/gpu_book.sh: torch sees no CUDA GPU; run the cpu profile instead: make book" >&2
    exit 1
  fi
  $PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}')"
fi

failed=0
if [ "$DEVICE" = cuda ]; then
  # No host-device syncs in the inner loops: checked under CUDA's sync debug mode (seconds).
  $PY tools/sync_check.py --profile "$PROFILE" --out "$OUT/results/sync-check-$PROFILE.json" || failed=1
  pack
fi
chapters=0
for name in $names; do
  if [ "$name" = 07_performance ] && [ -z "${SKIP_BENCH:-}" ]; then
    # The performance chapter renders the bench: measure it on this device first.
    $PY tools/bench.py --profile "$PROFILE" --device "$DEVICE" --out "$OUT/results/bench.json" || failed=1
    pack
  fi
  # One chapter at a time, so that each one's notebook is packed as soon as it is done.
  start=$(date +%s)
  $PY tools/run_chapters.py --profile "$PROFILE" --device "$DEVICE" --out "$OUT" "$name" || failed=1
  chapters=$(( chapters + $(date +%s) - start ))
  pack
done
echo "== chapters at the $PROFILE profile: $(( chapters / 60 )) min $(( chapters % 60 )) s (budget at gpu: 12 min)"
if [ "$OUT" = book ] && [ "$PY" = .venv/bin/python ]; then
  make --no-print-directory site
fi
[ -f "$OUT/results/runtimes-$PROFILE.json" ] && $PY - "$OUT/results/runtimes-$PROFILE.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for name, c in r["chapters"].items():
    print(f"{name:16s} {c['seconds'] / 60:6.2f} min")
print(f"{'total':16s} {sum(c['seconds'] for c in r['chapters'].values()) / 60:6.2f} min")
PY
pack
exit $failed
