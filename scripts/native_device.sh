#!/usr/bin/env bash
# Device-side driver for the native engine (H200 via the `run` tool), from a folder holding
# src/ tests/ scripts/ wheels/ (pydantic & co. for Python 3.12: the image lacks them) and
# ../shared/device/lean_step.py copied beside them. Results: $OUT/native.json + logs.
# Usage: bash scripts/native_device.sh [STEP...]   (default: everything, most important first)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/extra-site wheels/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD/src:/tmp/extra-site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
J="$OUT/native.json"
F="RESULT|Error|failed|took|passed|skipped|error"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 120 python3 scripts/native_bench.py assets 2>&1 | tail -2
for step in "${@:-step lean engine gputest memory compile}"; do
 for s in $step; do
  echo "=== $s $(date +%T)"
  case $s in
    step) timeout ${T_STEP:-120} python3 scripts/native_bench.py step --json "$J" 2>&1 | tee "$OUT/log-step.txt" | grep -E "$F" ;;
    lean) timeout ${T_LEAN:-120} python3 lean_step.py --batches 1,64,256,512 --max-len 1024 2>&1 | tee "$OUT/log-lean.txt" ;;
    engine) timeout ${T_ENGINE:-150} python3 scripts/native_bench.py engine --json "$J" 2>&1 | tee "$OUT/log-engine.txt" | grep -E "$F" ;;
    gputest) timeout ${T_GPU:-200} python3 -m pytest -q -s -p no:cacheprovider tests/gpu/test_native_gpu.py 2>&1 | tee "$OUT/log-gputest.txt" | tail -25 ;;
    memory) timeout ${T_MEM:-90} python3 scripts/native_bench.py memory --json "$J" 2>&1 | tee "$OUT/log-memory.txt" | grep -E "$F" ;;
    compile) timeout ${T_COMPILE:-200} python3 scripts/native_bench.py compile --json "$J" 2>&1 | tee "$OUT/log-compile.txt" | grep -E "$F" ;;
  esac
 done
done
echo "=== done $(date +%T)"
