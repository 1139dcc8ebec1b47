"""``kanitts bench`` over HTTP (the default): starts ``kanitts serve --backend BACKEND``
(``--mode MODE`` for vLLM) as a subprocess (or uses ``--url``) and drives POST /v1/audio/speech with streaming
clients; TTFA is the first PCM byte a client receives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kanitts.bench.codec import codec_throughput, load_codec
from kanitts.bench.gpu import GpuMemPeak, cuda_available, gpu_memory_used_mib
from kanitts.bench.http_load import client_processes, http_load, http_stream_once
from kanitts.bench.levels import BATCHING, default_levels, eta_seconds
from kanitts.bench.netstat import counters_delta, listen_counters
from kanitts.bench.report import bench_line
from kanitts.bench.seed import seed_server
from kanitts.bench.server_proc import free_port, serve_subprocess
from kanitts.bench.stages import LogTail, stage_summary
from kanitts.bench.stats import rounded


async def measure_server(base: str, concs: Sequence[int], args: argparse.Namespace,
                         log_path: str | None = None) -> dict[str, Any]:
    """One server's figures: an untimed warm pass per level (the server captures the codec's
    CUDA graph of each batch bucket on first use), the median single-stream RTF of three,
    then each load level of ``concs``. With ``log_path`` (the server's output), each level
    also gets ``ttfa_stages_ms``: p50/p95 of every stage of its requests' timelines
    (:mod:`kanitts.bench.stages`); ``listen_drops`` counts connections the kernel dropped
    meanwhile (:mod:`kanitts.bench.netstat`: each costs its client a 1 s SYN retry)."""
    out: dict[str, Any] = {}
    backend = args.backend
    t0 = time.perf_counter()
    warm = sorted({1, *concs})
    bench_line("http_warm_start", levels=warm, tokens=48)
    for c in warm:
        await http_load(base, c, 48)
    bench_line("http_warm", s=round(time.perf_counter() - t0, 1))
    single = []
    for i in range(3):
        single.append(await http_stream_once(base, args.tokens, i))
        bench_line("http_single", stream=i + 1, of=3, wall_s=rounded(single[-1].wall_s, 2),
                   rtf=rounded(single[-1].rtf, 4) if single[-1].rtf else None, error=single[-1].error)
    rtfs = [s.rtf for s in single if s.rtf]
    out["single_stream_rtf"] = round(statistics.median(rtfs), 4) if rtfs else None
    walls = [s.wall_s for s in single if s.error is None and s.wall_s]
    stream_s = statistics.median(walls) if walls else None
    if stream_s is not None and concs:
        bench_line("http_plan", backend=backend, levels=list(concs),
                   eta_s=round(sum(eta_seconds(backend, c, stream_s) for c in concs), 1),
                   note="rough: from the single-stream time")
    for c in concs:
        if stream_s is not None:
            bench_line("http_load_start", level=c, eta_s=round(eta_seconds(backend, c, stream_s), 1))
        tail = LogTail(log_path) if log_path else None
        drops = listen_counters()
        lr = await http_load(base, c, args.tokens, processes=args.client_procs)
        out[str(c)] = {**lr.summary(), "client_processes": client_processes(c, args.client_procs),
                       "listen_drops": counters_delta(drops, listen_counters())}
        if tail is not None:  # each record is logged before its response ends: all are there
            out[str(c)]["ttfa_stages_ms"] = stage_summary(tail.records())
        bench_line("http_load", **out[str(c)])
    return out


def server_backend(base: str) -> tuple[str, str]:
    """``(backend, mode)`` a running server reports on ``/health`` (its models' ``backend``
    and ``mode`` fields); ``"unknown"`` for what it does not report."""
    import httpx

    try:
        models = httpx.get(base.rstrip("/") + "/health", timeout=10.0).json().get("models") or {}
    except Exception:  # noqa: BLE001
        return "unknown", "unknown"

    def one(field: str) -> str:
        values = sorted({str(m[field]) for m in models.values() if isinstance(m, dict) and m.get(field)})
        return ",".join(values) or "unknown"

    return one("backend"), one("mode")


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


async def http_bench(args: argparse.Namespace, model: Path | None, codec_path: Path | None) -> dict[str, Any]:
    """HTTP figures (and, with ``--baseline seed``, the seed configuration's first).

    ``res["backend"]`` and ``res["mode"]`` are what ran: for a server started here its
    backend (and, for vLLM and native, ``--mode``); for ``--url`` what the server reports, else
    ``"unknown"``. Levels not given on the command line come from
    :func:`kanitts.bench.levels.default_levels` for that backend and this machine."""
    with contextlib.ExitStack() as stack:
        server_log = args.server_log
        if server_log is None and not args.url:  # the stages need the server's request log
            server_log = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "server.log")
        return await _http_bench(args, model, codec_path, server_log)


async def _http_bench(args: argparse.Namespace, model: Path | None, codec_path: Path | None,
                      server_log: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {"path": "http", "tokens": args.tokens}
    mem = GpuMemPeak()

    if args.url:
        res["backend"], res["mode"] = server_backend(args.url)
        args.backend = res["backend"]
    else:
        res["backend"] = args.backend
        res["mode"] = args.mode if args.backend in BATCHING else "unknown"
    conc_default, rt_default = default_levels(args.backend, cuda_available())
    concurrency = args.concurrency if args.concurrency is not None else conc_default
    realtime = args.realtime_levels if args.realtime_levels is not None else rt_default
    levels = sorted(set(concurrency + realtime))
    bench_line("http_levels", backend=args.backend, levels=levels)
    # codec slots = the most concurrent streams measured (the server's default, 64, cost the
    # low_vram server ~4 GiB of codec memory on the H100)
    env = {"KANITTS_CODEC__FIRST_CHUNK_FRAMES": str(args.first_chunk_frames),
           "KANITTS_CODEC__MAX_STREAMS": str(min(1024, max(levels)))}
    if args.baseline == "seed":
        with seed_server(model, codec_path, log_path=server_log, env=env, backend=args.backend) as base:
            res["baseline"] = await measure_server(base, [], args)
            res["baseline_single_stream_rtf"] = res["baseline"]["single_stream_rtf"]
        await asyncio.sleep(3)
        res["baseline_peak_gpu_mb"] = mem.peak
        mem.stop()
        mem = GpuMemPeak()
    extra = serve_flags(args.engine_args)
    res["first_chunk_frames"] = args.first_chunk_frames
    if args.url:
        m = await measure_server(args.url, levels, args, args.server_log)
    else:
        assert model is not None and codec_path is not None
        bench_line("server_starting", backend=args.backend, timeout_s=400)
        with serve_subprocess(model, codec_path, args.mode, free_port(), extra, log_path=server_log,
                              env=env, backend=args.backend) as base:
            res["backend"], reported_mode = server_backend(base)
            if res["backend"] not in BATCHING:
                res["mode"] = reported_mode
            bench_line("server_ready", backend=res["backend"])
            m = await measure_server(base, levels, args, server_log)
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
