#!/usr/bin/env bash
# Where the HTTP server's time goes under load (H200 via the `run` tool, from a folder holding
# src/ scripts/ wheels/ whl/ as scripts/native_device.sh expects; whl/ also holds py-spy).
# Starts `kanitts serve` (native, high_performance, 1,024 slots) under scripts/stack_sampler.py,
# then for each level runs `kanitts bench --url` while the sampler (all threads, every 5 ms) and
# `py-spy record --gil` (the thread holding the GIL) record; nvidia-smi after each level.
# Results in $OUT: stacks.txt (label;thread;stack count), spy-LEVEL.txt, http-LEVEL.json,
# log-server.txt, steps.log. Then the low_vram step of scripts/native_bench.py if time is left.
# Usage: bash scripts/server_profile_device.sh [LEVEL...]   (default: 256 1000)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/extra-site wheels/*.whl whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD/src:/tmp/extra-site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="/tmp/extra-site/bin:$PATH"
A=/tmp/kanitts-native PORT=8011 WIN=/tmp/prof-window
log() { echo "=== $* $(date +%T) (+$(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.log"; }
log assets
timeout ${T_ASSETS:-150} python3 scripts/native_bench.py assets --assets $A 2>&1 | tail -2 | tee -a "$OUT/steps.log"
log serve
python3 scripts/stack_sampler.py --out "$OUT/stacks.txt" --window-file $WIN -- -m kanitts.cli serve \
  --model $A/model --codec $A/codec.nemo --backend native --mode high_performance --max-num-seqs 1024 \
  --port $PORT > "$OUT/log-server.txt" 2>&1 &
SPID=$!
for i in $(seq 1 ${T_READY:-240}); do
  curl -sf http://127.0.0.1:$PORT/ready >/dev/null && break; sleep 1
  kill -0 $SPID 2>/dev/null || { log "server died"; tail -30 "$OUT/log-server.txt"; break; }
done
log ready; nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/steps.log"
for lvl in ${@:-256 1000}; do
  log "level $lvl"
  echo "c$lvl" > $WIN
  (py-spy record --pid $SPID --gil --threads --nonblocking --format raw -r 200 -d ${SPY_S:-8} -o "$OUT/spy-$lvl.txt" > "$OUT/spy-$lvl.log" 2>&1 &)
  timeout 120 python3 -m kanitts.bench --url http://127.0.0.1:$PORT --backend native --concurrency $lvl \
    --realtime-levels "" --tokens 500 --json "$OUT/http-$lvl.json" 2>&1 | grep -E "BENCH|rror" | tee -a "$OUT/steps.log"
  rm -f $WIN; sleep 1
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/steps.log"
done
kill $SPID; wait $SPID 2>/dev/null
log lowvram
left=$(( ${T_TOTAL:-580} - $(date +%s) + T0 ))
[ $left -gt 60 ] && timeout $left python3 scripts/native_bench.py lowvram --assets $A --tokens 200 --json "$OUT/native.json" 2>&1 \
  | tee -a "$OUT/steps.log" | grep -E "RESULT|rror|took" 
log done
