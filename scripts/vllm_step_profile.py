"""Where a single stream's decode step goes inside vLLM (run on a GPU machine; measured on an H100).

Single-stream RTF is ``ms per token / 20``: the target RTF 0.09 needs 1.8 ms per token. This
script runs vLLM in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so one Python process
holds the scheduler, model runner and output processing and both profilers see all of it)
on the full-size random-weight model, one request of ``--tokens`` tokens, and reports per
generated token:

* wall time (median of 3 runs, no profiler);
* GPU busy time: the union of all kernel intervals (torch.profiler / CUPTI) -- what the GPU
  would need if the host were free;
* kernels launched;
* host time by vLLM function (cProfile, tottime and cumtime per token), so the gap between
  wall and GPU busy is attributed to named code.

Variants (each its own engine): ``restricted`` = our preset + the kanitts logits processor
(the serving path), ``plain`` = same engine with no logits processor, greedy (vLLM's floor),
``sampled`` = no processor, vLLM's own sampler (temperature 0.6, top-p 0.95, repetition 1.1).
``--batch N`` also times N concurrent requests (aggregate tokens/s). ``VLLM_USE_V2_MODEL_RUNNER=1``
in the environment measures vLLM's experimental model runner V2 (it refuses custom logits
processors, so only ``plain``/``sampled`` run there).
Usage on the device (after the vLLM bundle): ``python3 scripts/vllm_step_profile.py
[--mode low_vram] [--tokens 300] [--variants restricted,plain]``. Prints ``PROFILE {json}``
lines; ``--json FILE`` appends them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("KANITTS_SRC") or str(ROOT / "src"))

from kanitts.bench import ensure_assets
from kanitts.engine.base import SamplingParams
from kanitts.engine.modes import engine_args_for
from kanitts.engine.vllm_backend import VllmBackend, sampling_kwargs, warmup_prompt
from kanitts.tokens import with_opening


def gpu_busy_us(prof: Any) -> tuple[float, int, list[tuple[str, float, int]]]:
    """Union of kernel intervals (us), kernel count, top kernels by total time."""
    spans, per_name = [], {}
    for evt in prof.events():
        if str(getattr(evt, "device_type", "")).endswith("CUDA") and evt.time_range.elapsed_us() > 0:
            spans.append((evt.time_range.start, evt.time_range.end))
            tot, n = per_name.get(evt.name, (0.0, 0))
            per_name[evt.name] = (tot + evt.time_range.elapsed_us(), n + 1)
    spans.sort()
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    top = sorted(((k[:90], v[0], v[1]) for k, v in per_name.items()), key=lambda t: -t[1])[:12]
    return busy, len(spans), top


def host_breakdown(stats: pstats.Stats, tokens: int, n: int = 28) -> list[dict[str, Any]]:
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(Path(fname).parts[-3:])
        rows.append({"fn": f"{short}:{line}:{func}", "calls_per_tok": round(nc / tokens, 2),
                     "tottime_us_per_tok": round(tt / tokens * 1e6, 1), "cumtime_us_per_tok": round(ct / tokens * 1e6, 1)})
    by_cum = sorted(rows, key=lambda r: -r["cumtime_us_per_tok"])
    keep = [r for r in by_cum if any(k in r["fn"] for k in ("vllm/", "kanitts/"))][:n]
    by_tot = sorted(rows, key=lambda r: -r["tottime_us_per_tok"])[:n]
    return [{"by": "cumtime", "rows": keep}, {"by": "tottime", "rows": by_tot}]


def run_variant(name: str, mode: str, model: str, tokens: int, out: list[dict[str, Any]], batch: int = 0,
                overrides: dict[str, Any] | None = None) -> None:
    import torch
    from vllm import LLM
    from vllm import SamplingParams as VSP

    restrict = {"restricted": "sample", "masked": "mask"}.get(name, "off")
    backend = VllmBackend(model, engine_args_for(mode, model, overrides), warmup=False, restrict=restrict)
    args = backend.full_engine_args()
    args.pop("enable_log_requests", None)
    t0 = time.perf_counter()
    llm = LLM(**args)
    start_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=tokens, min_tokens=tokens)
    if name in ("plain", "sampled"):
        params = params.with_(constrained=False)
    kw = sampling_kwargs(params, restrict)
    if name == "plain":
        kw.update(temperature=0.0, top_p=1.0, repetition_penalty=1.0)
    sp = VSP(**kw)
    prompt = {"prompt_token_ids": with_opening(warmup_prompt(0))}

    def gen(llm: Any = llm) -> int:
        res = llm.generate([prompt], sp, use_tqdm=False)
        return len(res[0].outputs[0].token_ids)

    for _ in range(2):  # warm (Triton JIT of sampling kernels, graph capture already done)
        gen()
    walls = []
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        n = gen()
        walls.append((time.perf_counter() - t) / n * 1e3)
    rec: dict[str, Any] = {"variant": name, "mode": mode, "tokens": tokens, "engine_start_s": round(start_s, 1),
                           "model_runner": "v2" if os.environ.get("VLLM_USE_V2_MODEL_RUNNER") == "1" else "v1",
                           "ms_per_token_runs": [round(w, 3) for w in walls],
                           "ms_per_token": round(statistics.median(walls), 3),
                           "rtf": round(statistics.median(walls) / 20.0, 4)}
    if batch > 1:
        prompts = [{"prompt_token_ids": with_opening(warmup_prompt(i))} for i in range(batch)]
        llm.generate(prompts, sp, use_tqdm=False)
        t = time.perf_counter()
        res = llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t
        ntok = sum(len(r.outputs[0].token_ids) for r in res)
        rec[f"batch{batch}_tok_s"] = round(ntok / dt, 1)
        print(f"== {name}/{mode}: batch {batch}: {rec[f'batch{batch}_tok_s']} tok/s aggregate", flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        n = gen()
        torch.cuda.synchronize()
        prof_wall = time.perf_counter() - t
    busy, kernels, top = gpu_busy_us(prof)
    rec.update(profiled_ms_per_token=round(prof_wall / n * 1e3, 3), gpu_busy_ms_per_token=round(busy / n / 1e3, 3),
               gpu_busy_fraction=round(busy / 1e6 / prof_wall, 3), kernels_per_token=round(kernels / n, 1),
               top_kernels=[{"name": k, "us_per_tok": round(v / n, 1), "calls_per_tok": round(c / n, 2)} for k, v, c in top])
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    n = gen()
    pr.disable()
    rec["cprofile_ms_per_token"] = round((time.perf_counter() - t) / n * 1e3, 3)
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    rec["host"] = host_breakdown(st, n)
    print("PROFILE " + json.dumps(rec), flush=True)
    print(f"== {name}/{mode}: wall {rec['ms_per_token']} ms/token (RTF {rec['rtf']}), GPU busy "
          f"{rec['gpu_busy_ms_per_token']} ms/token ({rec['gpu_busy_fraction']:.0%} of the profiled wall), "
          f"{rec['kernels_per_token']} kernels/token", flush=True)
    for k in rec["top_kernels"][:8]:
        print(f"   gpu {k['us_per_tok']:8.1f} us/tok x{k['calls_per_tok']:5.2f}  {k['name']}", flush=True)
    for r in rec["host"][0]["rows"][:22]:
        print(f"   host cum {r['cumtime_us_per_tok']:8.1f} self {r['tottime_us_per_tok']:7.1f} us/tok "
              f"x{r['calls_per_tok']:5.2f}  {r['fn']}", flush=True)
    out.append(rec)
    del llm
    import gc

    gc.collect()
    torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="low_vram")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--variants", default="restricted,plain")
    ap.add_argument("--assets", default="/tmp/kanitts-bench")
    ap.add_argument("--batch", type=int, default=0, help="also time this many concurrent requests")
    ap.add_argument("--engine-args", help="JSON dict of engine-argument overrides")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    model, _codec = ensure_assets(a.assets)
    out: list[dict[str, Any]] = []
    for v in a.variants.split(","):
        try:
            run_variant(v, a.mode, str(model), a.tokens, out, a.batch, json.loads(a.engine_args or "{}"))
        except Exception as e:  # noqa: BLE001 - keep the other variant's figures
            import traceback

            traceback.print_exc()
            out.append({"variant": v, "error": repr(e)[:500]})
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
