"""Micro-benchmark of the codebook-restricted logits processor (no vLLM needed).

Per step, what the processor costs inside vLLM's sampler: host time of ``apply()`` (the
engine is CPU-bound at batch 1, so this lands on the critical path), device time (CUDA
events), and kernels launched per step (torch.profiler). Variants:

* ``old``: the round-1 processor (kanitts/bench/round1_logits.py): Python row loop, host->device
  copies every step, ~70 eager kernels; needs the real generated ids (vLLM syncs for them).
* ``new_eager``: GPU-resident state, same math, eager (KANITTS_LP_GRAPHS=0).
* ``new_graph``: the same captured in two CUDA graphs per batch bucket (the default).

Also checks that all three pick exactly the same tokens for the same logits and seeds
(the new ones only ever see -1 placeholders, as under vLLM's async scheduling) and that
every stream parses as valid frames. Usage: python scripts/logits_processor_bench.py [B,...]
Prints ``LPBENCH {json}`` lines and a table.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kanitts.bench import round1_logits  # noqa: E402
from kanitts.engine.vllm_logits import EXTRA_ARGS_KEY, KaniCodebookLogitsProcessor  # noqa: E402
from kanitts.tokens import END_OF_HUMAN, END_OF_TEXT, MODEL_VOCAB_SIZE, FrameParser  # noqa: E402

V = MODEL_VOCAB_SIZE


def make(variant: str, max_seqs: int, dev: torch.device):
    cfg = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=max_seqs))
    if variant == "old":
        return round1_logits.KaniCodebookLogitsProcessor(cfg, dev, True)
    p = KaniCodebookLogitsProcessor(cfg, dev, True)
    p.use_graphs = variant == "new_graph"
    return p


def add_rows(proc, variant: str, b: int):
    key = round1_logits.EXTRA_ARGS_KEY if variant == "old" else EXTRA_ARGS_KEY
    outs = [[] for _ in range(b)]
    prompt = [1, 5, END_OF_TEXT, END_OF_HUMAN]
    added = [(i, SimpleNamespace(extra_args={key: {"mode": "sample", "temperature": 0.6, "top_p": 0.95,
                                                   "repetition_penalty": 1.1, "seed": i}}), prompt, outs[i])
             for i in range(b)]
    proc.update_state(SimpleNamespace(batch_size=b, removed=[], added=added, moved=[]))
    return outs


def run(variant: str, b: int, steps: int, logits_seq: list[torch.Tensor], max_seqs: int, profile: bool = True):
    dev = logits_seq[0].device
    proc = make(variant, max_seqs, dev)
    outs = add_rows(proc, variant, b)
    real = [[] for _ in range(b)]
    cpu_us, gpu_us, picks_all = [], [], []
    cuda = dev.type == "cuda"
    if cuda:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for s in range(steps):
        lg = logits_seq[s % len(logits_seq)].clone()
        if cuda:
            torch.cuda.synchronize()
            e0.record()
        t0 = time.perf_counter()
        res = proc.apply(lg)
        t1 = time.perf_counter()
        if cuda:
            e1.record()
        picks = res.argmax(1).tolist()  # syncs (what vLLM's output copy would see)
        cpu_us.append((t1 - t0) * 1e6)
        gpu_us.append(e0.elapsed_time(e1) * 1e3 if cuda else 0.0)
        picks_all.append(picks)
        for i in range(b):
            outs[i].append(picks[i] if variant == "old" else -1)
            real[i].append(picks[i])
    n_kernels = None
    if profile and cuda:
        from torch.profiler import ProfilerActivity, profile as tprof

        with tprof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for s in range(5):
                lg = logits_seq[s % len(logits_seq)].clone()
                torch.cuda.synchronize()
                proc.apply(lg)
                torch.cuda.synchronize()
                for i in range(b):
                    outs[i].append(-1 if variant != "old" else 0)
        evs = [e for e in prof.events() if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
        # each step also clones the logits once (1 copy kernel, excluded)
        n_kernels = round(len(evs) / 5 - 1, 1)
    warm = 10
    valid = 0
    for r in real:
        try:
            FrameParser().feed(r)
            valid += 1
        except Exception:  # noqa: BLE001
            pass
    out = {"variant": variant, "batch": b, "steps": steps - warm,
           "cpu_us_p50": round(statistics.median(cpu_us[warm:]), 1),
           "gpu_us_p50": round(statistics.median(gpu_us[warm:]), 1),
           "kernels_per_step": n_kernels, "valid_streams": f"{valid}/{b}",
           "graph_error": getattr(proc, "graph_error", None)}
    return out, picks_all


def main() -> int:
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "1,16,256").split(",")]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    all_same = True
    for b in sizes:
        logits_seq = [torch.randn(b, V, device=dev, generator=g) * 3 for _ in range(8)]
        steps = 60 if b >= 256 else 110
        max_seqs = 512  # the high_performance preset: 512 slots, bucket = batch size
        res = {}
        for variant in ("old", "new_eager", "new_graph"):
            r, picks = run(variant, b, steps, logits_seq, max_seqs)
            res[variant] = picks
            rows.append(r)
            print("LPBENCH " + json.dumps(r), flush=True)
        same = res["old"] == res["new_eager"] == res["new_graph"]
        all_same &= same
        print("LPBENCH " + json.dumps({"batch": b, "identical_picks_old_eager_graph": same}), flush=True)
    print(f"\n{'variant':10} {'batch':>5} {'cpu_us':>8} {'gpu_us':>8} {'kernels':>8} valid")
    for r in rows:
        print(f"{r['variant']:10} {r['batch']:>5} {r['cpu_us_p50']:>8} {r['gpu_us_p50']:>8} "
              f"{str(r['kernels_per_step']):>8} {r['valid_streams']}")
    print("identical picks (old / new eager / new graph):", all_same)
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
