#!/usr/bin/env bash
# Native engine vs vLLM over HTTP in one device session, plus the native engine's own figures.
# Runs from the repository root on the device (H200 via the `run` tool) after the vLLM bundle's
# three install calls (../shared/device/README.md: /tmp/vllm-site ready) with .native/ carried
# once (its wheels/ and whl/ hold the server's packages for Python 3.12; installed into
# /tmp/extra-site, which later calls reuse). Every step is time-boxed (T_* seconds) and the whole
# call stays under T_TOTAL. Results in $OUT (the device tool returns 8 files at most):
#   steps.log, http.json (`kanitts bench --json`, one entry per backend), native.json
#   (scripts/native_bench.py RESULT rows), codec.txt, log-BACKEND-LABEL.txt (server logs).
# EARGS (engine JSON, default {"max_num_seqs": 1024}) and LABEL change the HTTP steps' engine and label.
# Usage: bash scripts/same_run_device.sh STEP...
#   steps: assets vllm native native_switch native_proc native_compile gil prefill compile codec lowvram
#          lowvram_probe gputest
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
if [ -d .native/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/extra-site .native/wheels/*.whl .native/whl/*.whl 2>&1 | tail -2
fi
[ -f /tmp/vllm-site/env.sh ] && . /tmp/vllm-site/env.sh
export PYTHONPATH="$PWD/src:/tmp/extra-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="/tmp/extra-site/bin:$PATH"
A=/tmp/kanitts-native J="$OUT/native.json"
LEVELS=${HTTP_LEVELS:-1,16,256,1000}
left() { echo $(( ${T_TOTAL:-585} - $(date +%s) + T0 )); }
box() { local want=$1 l; l=$(left); [ "$want" -lt "$l" ] && echo "$want" || echo $(( l > 5 ? l - 5 : 1 )); }
log() { echo "=== $* $(date +%T) (+$(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.log"; }
http() {  # backend [label [engine-args JSON]]
  timeout $(box ${T_HTTP:-420}) python3 -m kanitts.bench --backend "$1" --mode high_performance \
    --model $A/model --codec $A/codec.nemo --engine-args "${3:-${EARGS:-{\"max_num_seqs\": 1024\}}}" \
    --concurrency "$LEVELS" --realtime-levels "" --tokens 500 --label "${2:-${LABEL:-same-run}}" \
    --server-log "$OUT/log-$1-${2:-main}.txt" --json "$OUT/http.json" 2>&1 | tee -a "$OUT/steps.log" | grep -E "BENCH|RESULT|rror" | cut -c1-400
}
MAXSEQS=$(python3 -c "import json,os; print(json.loads(os.environ.get('EARGS') or '{\"max_num_seqs\": 1024}')['max_num_seqs'])")
for s in "$@"; do
  log "$s"
  case $s in
    assets) timeout $(box 150) python3 scripts/native_bench.py assets --assets $A 2>&1 | tail -2 ;;
    vllm) http vllm ;;
    native) http native ;;
    # the same server with a 0.5 ms GIL switch interval (lab hook scripts/lab_site/sitecustomize.py)
    native_switch) PYTHONPATH="$PWD/scripts/lab_site:$PYTHONPATH" KANITTS_LAB_SWITCH_INTERVAL_S=0.0005 \
                     http native switch-0.5ms ;;
    # the engine in its own process (a one-replica ReplicaPool: --gpus 0), codec in the server
    native_proc) http native engine-process "{\"max_num_seqs\": $MAXSEQS, \"gpus\": \"0\"}" ;;
    native_compile) http native compiled "{\"max_num_seqs\": $MAXSEQS, \"compile\": true}" ;;
    prefill) timeout $(box ${T_PREFILL:-120}) python3 scripts/native_bench.py prefill --assets $A --json "$J" 2>&1 \
               | tee -a "$OUT/steps.log" | grep -E "RESULT|rror|took" | cut -c1-500 ;;
    lowvram_probe) timeout $(box ${T_PROBE:-200}) python3 scripts/lowvram_probe.py --assets $A --json "$OUT/lowvram.json" \
                     --variants "${PROBE_VARIANTS:-baseline,combo,no_cudnn,engine_eager}" --budget-s $(( $(box ${T_PROBE:-200}) - 10 )) 2>&1 \
                     | tee -a "$OUT/steps.log" | grep -E "RESULT|rror|summary|skipped" | cut -c1-600 ;;
    gil) timeout $(box 120) python3 scripts/native_bench.py gil --assets $A --batches 256 --json "$J" 2>&1 \
           | tee -a "$OUT/steps.log" | grep -E "RESULT|rror" | cut -c1-400 ;;
    compile) timeout $(box ${T_COMPILE:-200}) python3 scripts/native_bench.py compile --assets $A --json "$J" 2>&1 \
               | tee -a "$OUT/steps.log" | grep -E "RESULT|rror|took" | cut -c1-600 ;;
    codec) timeout $(box ${T_CODEC:-200}) python3 -m kanitts.bench.codec_serving --levels ${CODEC_LEVELS:-64,256,1024} \
             --frames 200 2>&1 | tee -a "$OUT/codec.txt" | grep -E "RESULT|rror" | cut -c1-700 ;;
    lowvram) timeout $(box ${T_LOWVRAM:-150}) python3 scripts/native_bench.py lowvram --assets $A --tokens 200 --json "$J" 2>&1 \
               | tee -a "$OUT/steps.log" | grep -E "RESULT|rror|took" ;;
    gputest) timeout $(box ${T_GPU:-200}) python3 -m pytest -q -p no:cacheprovider tests/gpu/test_native_gpu.py \
               tests/gpu/test_codec_gpu.py 2>&1 | tee -a "$OUT/steps.log" | tail -15 ;;
  esac
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/steps.log"
done
log done
