#!/usr/bin/env bash
# The GPU benchmark suite: the vLLM benchmarks step by step (run on the GPU machine).
# Usage (repo root on the device, after the vLLM bundle is unpacked, see ../shared/device/README.md):
#   bash scripts/gpu_bench_suite.sh STEP...
# Steps:
#   lp          logits-processor micro-benchmark (old / new eager / new CUDA-graphed), no vLLM
#   main        engine-level high_performance + seed baseline + every sampling path compared
#   floor       low_vram memory floor: bare CUDA context, then + codec (bf16) decoding 4 streams
#   lowmem      floor, then engine-level low_vram as preset and with the memory options
#   http_low    HTTP path, low_vram, with --baseline seed
#   http_low_mem  HTTP path, low_vram + enforce_eager, 256 batched tokens, expandable segments
#   http_hp     HTTP path, high_performance (1/16/256 + 384 streams), --baseline seed, codec alone afterwards
#   http_hp_si1 the same with one engine output per token (stream_interval 1), no baseline
#   http_low_cpu  HTTP path, low_vram with codec.device=cpu (one CUDA context: the engine's)
#   profile     where a single stream's decode step goes inside vLLM (scripts/vllm_step_profile.py)
#   low_vram|bnb_4bit|fp8|balanced   engine-level runs of those presets;  gputest   GPU suite
# KANITTS_SRC: run another copy of src/ (e.g. a snapshot of HEAD while the tree is being edited).
# Results: $OUT/h100.json (one entry per run), $OUT/log-*.txt. Env: KB_T (per-step timeout, s).
set -uo pipefail
. /tmp/vllm-site/env.sh
export PYTHONPATH="${KANITTS_SRC:-$PWD/src}:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
[ -d /tmp/extra-site ] && export PYTHONPATH="$PYTHONPATH:/tmp/extra-site"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
J="$OUT/h100.json"
B="python3 -m kanitts.bench --json $J"
F="BENCH|RESULT|Error|error|LPBENCH"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c "import kanitts.bench as b; b.ensure_assets('/tmp/kanitts-bench')" 2>&1 | tail -2
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    lp) timeout ${KB_T:-120} python3 scripts/logits_processor_bench.py 1,16,256 2>&1 | tee "$OUT/log-lp.txt" | grep -v "^LPBENCH"
        if grep -q '"graph_error": "' "$OUT/log-lp.txt"; then echo "graph capture failed: KANITTS_LP_GRAPHS=0"; export KANITTS_LP_GRAPHS=0; fi ;;
    main) timeout ${KB_T:-420} $B --engine-only --mode high_performance --baseline seed --compare-restrict \
            --concurrency 1,16,256 --realtime-levels ${RT_LEVELS:-256,384} --label engine-high_performance 2>&1 \
            | tee "$OUT/log-main.txt" | grep -E "$F" | cut -c1-600 ;;
    floor|lowmem)
      timeout 60 python3 - <<'EOF' 2>&1 | tee "$OUT/log-lowmem-floor.txt"
import subprocess, torch
def smi():
    q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True).stdout.strip()
    return q
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
print("FLOOR cuda context only (torch):", smi())
from kanitts.bench import load_codec
w = load_codec("/tmp/kanitts-bench/codec.nemo", 4)
import asyncio
from kanitts.bench import codec_throughput
print("codec dtype", w.codec.dtype, "params MiB", round(sum(p.numel() * p.element_size() for p in w.codec.parameters()) / 2**20, 1))
asyncio.run(codec_throughput(w, 4, frames=40))
torch.cuda.synchronize()
m = 1 << 20
print("FLOOR context + codec (4 streams decoded):", smi(), "torch allocated/reserved/max_reserved MiB",
      round(torch.cuda.memory_allocated() / m), round(torch.cuda.memory_reserved() / m), round(torch.cuda.max_memory_reserved() / m))
EOF
      [ $step = floor ] && continue
      timeout ${KB_T:-150} $B --engine-only --mode low_vram --concurrency 1,4 --realtime-levels 4 --label lowmem-preset 2>&1 \
        | tee "$OUT/log-lowmem-preset.txt" | grep -E "$F|took|KV cache|memory" | cut -c1-400 | tail -25
      PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True CUDNN_CONV_WSCAP_DBG=32 timeout ${KB_T:-150} $B --engine-only \
        --mode low_vram --concurrency 1,4 --realtime-levels 4 --label lowmem-eager-expandable \
        --engine-args '{"enforce_eager": true, "max_num_batched_tokens": 256}' 2>&1 \
        | tee "$OUT/log-lowmem-eager.txt" | grep -E "$F|took|KV cache|memory" | cut -c1-400 | tail -25 ;;
    http_low) timeout ${KB_T:-300} $B --mode low_vram --baseline seed --concurrency 1,4 --realtime-levels 4 \
            --label http-low_vram ${HTTP_LOW_ARGS:-} --server-log "$OUT/log-server-low.txt" 2>&1 \
            | tee "$OUT/log-http-low.txt" | grep -E "$F" | cut -c1-600 ;;
    http_low_mem) PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True CUDNN_CONV_WSCAP_DBG=32 timeout ${KB_T:-200} \
            $B --mode low_vram --concurrency 1,4 --realtime-levels 4 --label http-low_vram-eager-expandable \
            --engine-args '{"enforce_eager": true, "max_num_batched_tokens": 256}' --server-log "$OUT/log-server-lowmem.txt" 2>&1 \
            | tee "$OUT/log-http-lowmem.txt" | grep -E "$F" | cut -c1-600 ;;
    http_low_cpu) KANITTS_CODEC__DEVICE=cpu timeout ${KB_T:-300} $B --mode low_vram --concurrency 1,4 --realtime-levels 4 \
            --label http-low_vram-codec-cpu --server-log "$OUT/log-server-low-cpu.txt" 2>&1 \
            | tee "$OUT/log-http-low-cpu.txt" | grep -E "$F" | cut -c1-600 ;;
    profile) timeout ${KB_T:-300} python3 scripts/vllm_step_profile.py --json "$OUT/profile.json" ${PROFILE_ARGS:-} 2>&1 \
            | tee "$OUT/log-profile.txt" | grep -E "^==|^   |Error|error" | cut -c1-300 ;;
    http_hp_si1) timeout ${KB_T:-300} $B --mode high_performance --concurrency 1,16,256 --realtime-levels 384 \
            --engine-args '{"stream_interval": 1}' --label http-high_performance-stream_interval1 \
            --server-log "$OUT/log-server-hp-si1.txt" 2>&1 | tee "$OUT/log-http-hp-si1.txt" | grep -E "$F" | cut -c1-600 ;;
    http_hp) timeout ${KB_T:-300} $B --mode high_performance --baseline seed --concurrency 1,16,256 --realtime-levels 384 --codec-alone \
            --label http-high_performance --server-log "$OUT/log-server-hp.txt" 2>&1 \
            | tee "$OUT/log-http-hp.txt" | grep -E "$F" | cut -c1-600 ;;
    low_vram|bnb_4bit) timeout 240 $B --engine-only --mode $step --concurrency 1,4 --realtime-levels 4 2>&1 \
            | tee "$OUT/log-$step.txt" | grep -E "$F" | tail -30 ;;
    fp8|balanced) timeout 300 $B --engine-only --mode $step --concurrency 1,16,64 --realtime-levels 64 2>&1 \
            | tee "$OUT/log-$step.txt" | grep -E "$F" | tail -30 ;;
    gputest) timeout 400 python3 -m pytest -x -v -p no:cacheprovider tests/gpu -m gpu 2>&1 | tee "$OUT/log-gputest.txt" | tail -40 ;;
    *) echo "unknown step $step" ;;
  esac
done
echo "=== done $(date +%T)"
