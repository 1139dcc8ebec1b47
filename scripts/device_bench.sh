#!/usr/bin/env bash
# Device-side driver for the vLLM benchmarks (H100/H200 via the `device` tool).
# Usage (repo root on the device, after the vLLM bundle is unpacked, see ../shared/device/README.md):
#   bash scripts/device_bench.sh STEP...
# Steps: main (high_performance + seed baseline + restrict comparison), low_vram, fp8, bnb_4bit,
#        balanced, gputest, http. Results: $OUT/h100.json (one entry per mode), $OUT/log-*.txt.
set -uo pipefail
. /tmp/vllm-site/env.sh
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
[ -d /tmp/extra-site ] && export PYTHONPATH="$PYTHONPATH:/tmp/extra-site"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
J="$OUT/h100.json"
B="python3 -m kanitts.bench --engine-only --json $J"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c "import kanitts.bench as b; b.ensure_assets('/tmp/kanitts-bench')" 2>&1 | tail -3
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    main) timeout ${MAIN_TIMEOUT:-480} $B --mode high_performance --baseline seed --compare-restrict \
            --realtime-levels ${RT_LEVELS:-128,256,384,512} 2>&1 | tee "$OUT/log-main.txt" | grep -E "BENCH|RESULT|Error|error" ;;
    low_vram|bnb_4bit) timeout 240 $B --mode $step --concurrency 1,4 --realtime-levels 4 2>&1 \
            | tee "$OUT/log-$step.txt" | grep -E "BENCH|RESULT|Error|error" | tail -30 ;;
    fp8|balanced) timeout 300 $B --mode $step --concurrency 1,16,64 --realtime-levels 64 2>&1 \
            | tee "$OUT/log-$step.txt" | grep -E "BENCH|RESULT|Error|error" | tail -30 ;;
    gputest) timeout 400 python3 -m pytest -x -v -p no:cacheprovider tests/gpu -m gpu 2>&1 | tee "$OUT/log-gputest.txt" | tail -40 ;;
    http) timeout 300 python3 -m kanitts.bench --mode high_performance --json $J --server-log "$OUT/log-server.txt" \
            2>&1 | tee "$OUT/log-http.txt" | grep -E "BENCH|RESULT|Error|error" | tail -30 ;;
    *) echo "unknown step $step" ;;
  esac
done
echo "=== done $(date +%T)"
