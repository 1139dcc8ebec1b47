"""The native engine's admission measured alone: eager prefill vs :class:`GroupPrefill`.

``scripts/native_bench.py prefill`` runs it on the device (full-size random weights, bf16).
One admission is the scheduler's ``_admit`` (slot reset, prefill, state writes, first-token
sampling) from a submit-equivalent (the requests put on its waiting queue) to the first
tokens on the host, the step the engine takes for a request's first token.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from kanitts import tokens as tk

#: Group sizes and prompts (~20 and ~60 text tokens; the opening is added) measured.
GROUPS = (1, 4, 16, 64)
PROMPTS = ([tk.START_OF_HUMAN, 1, *range(300, 318), tk.END_OF_TEXT, tk.END_OF_HUMAN],
           [tk.START_OF_HUMAN, 1, *range(300, 356), tk.END_OF_TEXT, tk.END_OF_HUMAN])


def measure_admission(model_dir: str, max_len: int, *, device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                      groups: Sequence[int] = GROUPS, prompts: Sequence[list[int]] = PROMPTS, reps: int = 20,
                      warmup: int = 3) -> list[dict[str, Any]]:
    """Result rows: one ``prefill_capture`` row (graphs, buckets, capture seconds, memory pool
    growth), then per prompt x group size x path (eager, graphed) the ms from submit to the
    first tokens on the host (p50, min), the host ms spent launching (p50), the graphed
    path's ratio to the eager one and the share of first tokens both paths agree on (the
    same seeds; bf16 kernels of other shapes may round differently). One pool, decode graphs
    captured first so that the prefill graphs share their memory pool as in the engine.
    Graphs exist on CUDA only (elsewhere "graphed" is the same padded computation, eager)."""
    from kanitts.engine.native.graphs import DecodeStep
    from kanitts.engine.native.prefill_graphs import GroupPrefill
    from kanitts.engine.native.sampler import Sampler
    from kanitts.engine.native.scheduler import Request, Scheduler
    from kanitts.engine.native.slots import SlotParams, SlotPool
    from kanitts.engine.native.weights import load_lfm2

    model = load_lfm2(model_dir, device, dtype)
    pool = SlotPool(model, max(groups), max_len)
    sampler = Sampler(model, pool)
    step = DecodeStep(model, pool, sampler, graphs=True)
    step.capture()
    prefill = GroupPrefill(model, pool, sampler, graphs=True)
    prefill.capture(step.mempool)
    rows: list[dict[str, Any]] = [{
        "step": "prefill_capture", "graphs": len(prefill.graphs), "groups": prefill.groups, "widths": prefill.widths,
        "capture_s": prefill.capture_seconds, "pool_growth_mib": prefill.pool_growth_mib,
        "decode_graphs": len(step.graphs), "decode_capture_s": step.capture_seconds, "torch": torch.__version__}]
    sched = Scheduler(model, pool, sampler, step, max_prefill_tokens=16384)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    loop = asyncio.new_event_loop()

    def requests(opened: list[int], n: int) -> list[Request]:
        return [Request(rid=f"p{i}", prompt=opened, max_new=8, stops=frozenset(tk.STOP_TOKEN_IDS),
                        out=asyncio.Queue(), loop=loop,
                        slot_params=SlotParams(prompt=opened, temperature=0.6, top_p=0.95, repetition_penalty=1.1,
                                               seed=i, min_tokens=0, constrained=True, stop_ids=tk.STOP_TOKEN_IDS))
                for i in range(n)]

    try:
        with torch.inference_mode():
            for prompt in prompts:
                opened = tk.with_opening(prompt)
                for n in groups:
                    eager_p50, firsts = 0.0, {}
                    for path in ("eager", "graphed"):
                        sched.prefill = prefill if path == "graphed" else None
                        total, host = [], []
                        first: list[int] = []
                        for rep in range(warmup + reps):
                            reqs = requests(opened, n)
                            sync()
                            t0 = time.perf_counter()
                            sched.waiting.extend(reqs)
                            sched._admit()
                            t1 = time.perf_counter()
                            first = sched._first.tolist()  # waits for the device
                            t2 = time.perf_counter()
                            for r in reqs:
                                sched._release(r)
                            if rep >= warmup:
                                total.append((t2 - t0) * 1e3)
                                host.append((t1 - t0) * 1e3)
                        firsts[path] = first
                        p50 = statistics.median(total)
                        graphed = path == "graphed"
                        eager_p50 = eager_p50 if graphed else p50
                        rows.append({
                            "step": "prefill", "path": path, "group": n, "prompt_rows": len(opened),
                            "first_token_ms_p50": p50, "first_token_ms_min": min(total),
                            "host_ms_p50": statistics.median(host),
                            "vs_eager": p50 / eager_p50 if graphed else None,
                            "same_first_tokens": (sum(a == b for a, b in zip(firsts["eager"], first)) / n
                                                  if graphed else None),
                            "graphed_prefills": sched.stats.graphed_prefills})
    finally:
        loop.close()
    return rows
