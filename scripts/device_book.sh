#!/usr/bin/env bash
# The book at the `gpu` profile on a GPU machine that reaches no network, such as the one this
# workplace's device tool lends (Python 3.12 and PyTorch in its image; scripts/gpu_book.sh does the work).
#   here:  make device-kit                         # wheels the image lacks + Fashion-MNIST -> .device/
#   there: scripts/device_book.sh                  # device run: carry=[".device"], timeout_s=600
#   here:  tar -xzf <files_at>/gpu-book.tar.gz && make site-check   # then commit book/
# It installs the carried wheels into /tmp/site for the image's python3, then runs gpu_book.sh with
# that interpreter. After every chapter (and the bench) what this run made is packed into
# $OUT/gpu-book.tar.gz (executed notebooks, book/results/ files, failed notebooks), the output is
# copied to $OUT/gpu-book.log, so what finished comes back even when the call runs out of time.
# The chapters are sized to about 7 minutes at gpu; the bench (compile warm-ups included) may not
# fit after them in one 10-minute call. Then two calls, the second at once while the machine is warm:
#   SKIP_BENCH=1 BOOK_CHAPTERS="01_entropy 02_comae 03_rank 04_cmar 05_cvit 06_report" scripts/device_book.sh
#   BOOK_CHAPTERS=07_performance scripts/device_book.sh        # the bench, then the chapter rendering it
# KIT=<folder> names another kit; BOOK_PROFILE=smoke BOOK_DEVICE=cpu try the path without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-.device}
if [ ! -f "$KIT/MANIFEST.json" ]; then
  echo "scripts/device_book.sh: no kit in $KIT/; make it with 'make device-kit' where pip reaches PyPI, and carry .device" >&2
  exit 2
fi
OUT=${OUT:-.scratch/device-out}
mkdir -p "$OUT"
export LOG="$OUT/gpu-book.log" PACK="$OUT/gpu-book.tar.gz"
SITE=${SITE:-/tmp/site}
python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" "$KIT"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" COPKIT_DATA="$(cd "$KIT" && pwd)/fashion-mnist" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
PY=python3 OUT=book exec scripts/gpu_book.sh
