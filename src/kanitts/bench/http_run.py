"""``kanitts bench`` over HTTP (the default): starts ``kanitts serve --backend vllm --mode
MODE`` as a subprocess (or uses ``--url``) and drives POST /v1/audio/speech with streaming
clients; TTFA is the first PCM byte a client receives."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kanitts.bench.codec import codec_throughput, load_codec
from kanitts.bench.gpu import GpuMemPeak, gpu_memory_used_mib
from kanitts.bench.http_load import client_processes, http_load, http_stream_once
from kanitts.bench.report import bench_line
from kanitts.bench.seed import seed_server
from kanitts.bench.server_proc import free_port, serve_subprocess
from kanitts.bench.stats import rounded


async def measure_server(base: str, concs: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    """One server's figures: an untimed warm pass per level (the server captures the codec's
    CUDA graph of each batch bucket on first use), the median single-stream RTF of three,
    then each load level of ``concs``."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for c in sorted({1, *concs}):
        await http_load(base, c, 48)
    bench_line("http_warm", s=round(time.perf_counter() - t0, 1))
    single = [await http_stream_once(base, args.tokens, i) for i in range(3)]
    rtfs = [s.rtf for s in single if s.rtf]
    out["single_stream_rtf"] = round(statistics.median(rtfs), 4) if rtfs else None
    for c in concs:
        lr = await http_load(base, c, args.tokens, processes=args.client_procs)
        out[str(c)] = {**lr.summary(), "client_processes": client_processes(c, args.client_procs)}
        bench_line("http_load", **out[str(c)])
    return out


def serve_flags(engine_args_json: str | None) -> list[str]:
    """``--engine-args`` JSON as ``kanitts serve`` flags (``{"enforce_eager": true}`` ->
    ``--enforce-eager``; other values ``--key-name VALUE``)."""
    extra: list[str] = []
    for k, v in (json.loads(engine_args_json) if engine_args_json else {}).items():
        flag = f"--{k.replace('_', '-')}"
        if isinstance(v, bool):  # store_true switches (e.g. --enforce-eager)
            extra += [flag] if v else []
        else:
            extra += [flag, str(v)]
    return extra


async def http_bench(args: argparse.Namespace, model: Path, codec_path: Path) -> dict[str, Any]:
    """HTTP figures (and, with ``--baseline seed``, the seed configuration's first)."""
    res: dict[str, Any] = {"path": "http", "tokens": args.tokens}
    mem = GpuMemPeak()

    levels = sorted(set(args.concurrency + args.realtime_levels))
    # codec slots = the most concurrent streams measured (the server's default, 64, cost the
    # low_vram server ~4 GiB of codec memory on the H100)
    env = {"KANITTS_CODEC__FIRST_CHUNK_FRAMES": str(args.first_chunk_frames),
           "KANITTS_CODEC__MAX_STREAMS": str(min(1024, max(levels)))}
    if args.baseline == "seed":
        with seed_server(model, codec_path, log_path=args.server_log, env=env, backend=args.backend) as base:
            res["baseline"] = await measure_server(base, [], args)
            res["baseline_single_stream_rtf"] = res["baseline"]["single_stream_rtf"]
        await asyncio.sleep(3)
        res["baseline_peak_gpu_mb"] = mem.peak
        mem.stop()
        mem = GpuMemPeak()
    extra = serve_flags(args.engine_args)
    res["first_chunk_frames"] = args.first_chunk_frames
    if args.url:
        m = await measure_server(args.url, args.concurrency, args)
    else:
        with serve_subprocess(model, codec_path, args.mode, free_port(), extra, log_path=args.server_log,
                              env=env, backend=args.backend) as base:
            m = await measure_server(base, levels, args)
            res["gpu_mb_server_idle"] = gpu_memory_used_mib()
    res["single_stream_rtf"] = m.pop("single_stream_rtf")
    res["loads"] = m
    res["ttfa_p50_ms"] = (m.get("1") or {}).get("ttfa_p50_ms")
    res["ttfa_p95_ms"] = (m.get("1") or {}).get("ttfa_p95_ms")
    res["ttfa_p50_ms_16"] = (m.get("16") or {}).get("ttfa_p50_ms")
    res["ttfa_p95_ms_16"] = (m.get("16") or {}).get("ttfa_p95_ms")
    res["ttfa_p50_ms_256"] = (m.get("256") or {}).get("ttfa_p50_ms")
    res["ttfa_p95_ms_256"] = (m.get("256") or {}).get("ttfa_p95_ms")
    res["max_realtime_streams"] = max([int(c) for c, s in m.items() if s.get("all_realtime")], default=0)
    top = m.get(str(max(int(c) for c in m))) if m else {}
    res["aggregate_audio_s_per_s"] = (top or {}).get("aggregate_audio_s_per_s")
    res["peak_gpu_mb"] = mem.stop()
    res["gpu_per_process_mib"] = mem.per_process
    if not args.no_codec and codec_path is not None and args.codec_alone:
        # the codec alone, in this process, after the server has gone
        worker = load_codec(codec_path, max_streams=max(levels), first_chunk_frames=args.first_chunk_frames)
        if worker is not None:
            try:
                res["codec_audio_s_per_s"] = rounded(await codec_throughput(worker, min(256, max(levels))), 1)
                res["codec_alone_streams"] = min(256, max(levels))
            finally:
                worker.close()
    return res
