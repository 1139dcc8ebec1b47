"""``kanitts bench --engine-only``: the vLLM engine in-process (plus the batched codec when
importable); TTFA is the first PCM chunk out of the codec, TTFT the first token."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from kanitts.bench.codec import codec_throughput, load_codec
from kanitts.bench.engine_load import engine_stream, single_stream_rtf
from kanitts.bench.gpu import GpuMemPeak, gpu_memory_used_mib, torch_mem_mib
from kanitts.bench.report import bench_line
from kanitts.bench.seed import seed_engine_baseline
from kanitts.bench.stats import rounded, run_load


async def engine_bench(args: argparse.Namespace, model: Path, codec_path: Path | None,
                       res: dict[str, Any] | None = None) -> dict[str, Any]:
    """Engine-level figures; ``res`` is filled as phases finish (kept if a later one fails)."""
    from kanitts.bench.sampling_paths import ROUND1_MODE, SamplingPathBackend
    from kanitts.engine.modes import engine_args_for

    tokens = args.tokens
    res = res if res is not None else {}
    res.update({"path": "engine", "tokens": tokens})
    mem = GpuMemPeak()
    res["gpu_mb_before"] = mem.baseline
    overrides = json.loads(args.engine_args) if args.engine_args else {}

    if args.baseline == "seed":
        await seed_engine_baseline(model, codec_path, tokens, res)

    # the round-1 processor rides along when every sampling path is compared
    round1 = bool(args.compare_restrict and args.restrict != "off")
    b = SamplingPathBackend(str(model), engine_args_for(args.mode, str(model), overrides), restrict=args.restrict,
                            round1=round1)
    res["engine_args"] = {k: v for k, v in b.engine_args.items() if k != "model"}
    max_seqs = int(b.engine_args.get("max_num_seqs") or 256)
    t = time.time()
    try:
        await b.start()
    except Exception as e:  # noqa: BLE001
        res["error"] = f"engine start failed: {e!r}"[:2000]
        res["peak_gpu_mb"] = mem.stop()
        return res
    res["engine_start_s"] = round(time.time() - t, 1)
    res["warmup_s"] = rounded(b.warmup_seconds)
    bench_line("started", mode=args.mode, start_s=res["engine_start_s"], warmup_s=res["warmup_s"])

    res["single_stream"] = await single_stream_rtf(b, tokens, 3)
    res["single_stream_rtf"] = res["single_stream"].get("rtf")
    bench_line("single", **res["single_stream"])
    if args.restrict != "off":
        res["single_stream_unrestricted"] = await single_stream_rtf(b, tokens, 3, restrict="off")
        bench_line("single_unrestricted", **res["single_stream_unrestricted"])
    if args.compare_restrict and args.restrict != "off":
        # every sampling path, one stream, same engine, back to back
        singles: dict[str, Any] = {args.restrict: res["single_stream"], "off": res["single_stream_unrestricted"]}
        for m in ("mask", *([ROUND1_MODE] if round1 else [])):
            singles[m] = await single_stream_rtf(b, tokens, 3, restrict=m)
            bench_line("single_mode", mode=m, **singles[m])
        singles[args.restrict + "_again"] = await single_stream_rtf(b, tokens, 3)
        bench_line("single_mode", mode=args.restrict + "_again", **singles[args.restrict + "_again"])
        res["single_stream_by_mode"] = singles
    if args.baseline == "seed" and res.get("baseline_single_stream_rtf") and res["single_stream_rtf"]:
        res["speedup_vs_seed"] = round(res["baseline_single_stream_rtf"] / res["single_stream_rtf"], 2)

    concs = [c for c in args.concurrency if c <= max_seqs] or [max_seqs]
    loads: dict[str, Any] = {}
    for c in concs:
        lr = await run_load(lambda i: engine_stream(b, tokens, i), c)
        loads[str(c)] = lr.summary()
        bench_line("load_lm", **loads[str(c)])
    res["lm_load"] = loads

    if args.compare_restrict and max_seqs >= 2:
        res.update(await _compare_restrict_batch(b, args, tokens, min(256, max_seqs), round1))

    # codec included
    worker = (load_codec(codec_path, max_streams=max(max_seqs, 1), first_chunk_frames=args.first_chunk_frames)
              if not args.no_codec else None)
    res["first_chunk_frames"] = args.first_chunk_frames
    res["codec"] = worker is not None
    if worker is not None:
        res["codec_dtype"] = str(worker.codec.dtype)
        with_codec: dict[str, Any] = {}
        r1 = await single_stream_rtf(b, tokens, 3, codec=worker)
        with_codec["single"] = r1
        bench_line("single_codec", **r1)
        best = 0
        for c in sorted(set(concs + [c for c in args.realtime_levels if c <= max_seqs])):
            lr = await run_load(lambda i: engine_stream(b, tokens, i, codec=worker), c)
            s = lr.summary()
            with_codec[str(c)] = s
            bench_line("load_codec", **s)
            if s["all_realtime"]:
                best = max(best, c)
        res["with_codec"] = with_codec
        res["max_realtime_streams"] = best
        try:
            res["codec_audio_s_per_s"] = rounded(await codec_throughput(worker, min(256, max_seqs)), 1)
        except Exception as e:  # noqa: BLE001
            res["codec_alone_error"] = repr(e)[:300]
        bench_line("codec_alone", audio_s_per_s=res["codec_audio_s_per_s"])
        worker.close()
    else:
        best = 0
        for c in concs:
            if loads[str(c)]["all_realtime"]:
                best = max(best, c)
        res["max_realtime_streams_lm_only"] = best

    # headline keys (codec included where measured; else LM-only TTFT, flagged)
    src = res.get("with_codec") or {}
    key1 = src.get("1") or {}
    res["ttfa_p50_ms"] = key1.get("ttfa_p50_ms")
    res["ttfa_p95_ms"] = key1.get("ttfa_p95_ms")
    res["ttfa_p50_ms_16"] = (src.get("16") or {}).get("ttfa_p50_ms")
    res["ttfa_p50_ms_256"] = (src.get("256") or {}).get("ttfa_p50_ms")
    res["ttft_p50_ms"] = (loads.get("1") or {}).get("ttft_p50_ms")
    res["ttft_p50_ms_16"] = (loads.get("16") or {}).get("ttft_p50_ms")
    res["ttft_p50_ms_256"] = (loads.get("256") or {}).get("ttft_p50_ms")
    top = (src or loads).get(str(max(concs))) or {}
    res["aggregate_audio_s_per_s"] = top.get("aggregate_audio_s_per_s")
    res["kv_cache_usage_last"] = b.stats.kv_cache_usage
    res["front_torch_mem_mib"] = torch_mem_mib()
    res["gpu_mb_engine_running"] = gpu_memory_used_mib()
    await b.close()
    res["peak_gpu_mb"] = mem.stop()
    res["gpu_per_process_mib"] = mem.per_process
    return res


async def _compare_restrict_batch(b: Any, args: argparse.Namespace, tokens: int, c: int,
                                  round1: bool) -> dict[str, Any]:
    """Batch-``c`` throughput of each sampling path on engine ``b``: ``restrict_compare``
    and ``restrict_speedup_batch`` (restricted ``sample`` over vLLM's sampler)."""
    from kanitts.bench.sampling_paths import ROUND1_MODE

    out: dict[str, Any] = {}
    cmp: dict[str, Any] = {}
    for mode in ("sample", *([ROUND1_MODE] if round1 else []), "off", *(["mask"] if args.compare_mask else [])):
        lr = await run_load(lambda i, m=mode: engine_stream(b, tokens, i, restrict=m), c)
        s = lr.summary()
        cmp[mode] = {"aggregate_tok_s": s["aggregate_tok_s"], "wall_s": s["wall_s"], "errors": s["errors"],
                     "invalid_streams": s["invalid_streams"],
                     "per_stream_tok_s": rounded(s["aggregate_tok_s"] / c if s["aggregate_tok_s"] else None)}
        bench_line("restrict", batch=c, mode=mode, **cmp[mode])
    out["restrict_compare"] = {"batch": c, **cmp}
    if cmp["off"]["aggregate_tok_s"]:
        out["restrict_speedup_batch"] = round(cmp["sample"]["aggregate_tok_s"] / cmp["off"]["aggregate_tok_s"], 2)
    return out
