#!/usr/bin/env bash
# Device-side driver for the native engine (H200 via the `run` tool), from a folder holding
# src/ tests/ scripts/, wheels/ and whl/ (pydantic, pydantic-settings, fastapi, starlette,
# uvicorn, av, num2words, python-dotenv, opentelemetry-api for Python 3.12: the image lacks
# them) and ../shared/device/lean_step.py copied beside them. Results: $OUT/native.json,
# $OUT/http.json, every step's output in $OUT/steps.log and the HTTP server's in
# $OUT/log-server.txt (few files: the device tool returns a limited number). Each step has
# its own time box (T_* seconds) so a slow one cannot eat the others.
# Usage: bash scripts/native_device.sh [STEP...]   (default: gputest lean engine http lowvram k2)
# (run 3: the codec worker's warm-up alone took > 45 s in lowvram, hence its 150 s box)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/extra-site wheels/*.whl whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD/src:/tmp/extra-site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export KANITTS_NATIVE_ASSETS=/tmp/kanitts-native
A=$KANITTS_NATIVE_ASSETS J="$OUT/native.json"
F="RESULT|Error|failed|took|passed|skipped|error"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout ${T_ASSETS:-120} python3 scripts/native_bench.py assets --assets $A 2>&1 | tail -2
for s in ${@:-gputest lean engine http lowvram k2}; do
  echo "=== $s $(date +%T)"
  case $s in
    gputest) timeout ${T_GPU:-110} python3 -m pytest -q -s -p no:cacheprovider tests/gpu/test_native_gpu.py 2>&1 | tee -a "$OUT/steps.log" | tail -25 ;;
    lean) timeout ${T_LEAN:-45} python3 lean_step.py --batches ${BATCHES:-1,64,256,512,1024} --max-len 1024 2>&1 | tee -a "$OUT/steps.log" ;;
    engine) timeout ${T_ENGINE:-70} python3 scripts/native_bench.py engine --assets $A --batches ${BATCHES:-1,64,256,512,1024} --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    step) timeout ${T_STEP:-120} python3 scripts/native_bench.py step --assets $A --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    memory) timeout ${T_MEM:-90} python3 scripts/native_bench.py memory --assets $A --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    lowvram) timeout ${T_LOWVRAM:-150} python3 scripts/native_bench.py lowvram --assets $A --tokens 200 --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    compile) timeout ${T_COMPILE:-450} python3 scripts/native_bench.py compile --assets $A --batches ${BATCHES:-1,64,256,1024} ${COMPILE_ARGS:-} --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    enginec) timeout ${T_ENGINEC:-300} python3 scripts/native_bench.py engine --compile --assets $A --batches ${ENGINEC_BATCHES:-1} --json "$J" 2>&1 | tee -a "$OUT/steps.log" | grep -E "$F" ;;
    http) timeout ${T_HTTP:-180} python3 -m kanitts.bench --backend native --mode high_performance \
            --model $A/model --codec $A/codec.nemo --engine-args '{"max_num_seqs": 1024}' \
            --concurrency ${HTTP_LEVELS:-1,16,256,1000} --realtime-levels "" --tokens 500 \
            --server-log "$OUT/log-server.txt" --json "$OUT/http.json" 2>&1 | tee -a "$OUT/steps.log" | grep -E "BENCH|RESULT|rror" ;;
    k2) timeout ${T_K2:-60} env PYTHONPATH="$PYTHONPATH:$PWD/tests" python3 scripts/kanitts2_gpu_check.py --streams 256 2>&1 | tee -a "$OUT/steps.log" | tail -15 ;;
  esac
  nvidia-smi --query-gpu=memory.used --format=csv,noheader
done
echo "=== done $(date +%T)"
