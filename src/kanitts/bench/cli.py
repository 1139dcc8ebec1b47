"""``kanitts bench``: speed and memory on full-size random weights, fixed token counts.

Every run generates exactly ``--tokens`` tokens per stream (min_tokens = max_tokens,
ignore_eos); 50 tokens = 1 s of audio. ``--baseline seed`` also measures the seed's
configuration (:mod:`kanitts.bench.seed`) in the same run, so each gain is a ratio of two
numbers taken together. Prints ``BENCH`` progress lines and one ``RESULT {json}`` line;
``--json FILE`` appends the entry to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from kanitts.bench.assets import ensure_assets
from kanitts.bench.gpu import device_name
from kanitts.bench.http_load import STREAMS_PER_CLIENT_PROCESS
from kanitts.bench.levels import BATCHING, LEVELS, default_levels
from kanitts.bench.report import append_json, bench_line, result_line


#: The one-line description ``kanitts bench --help`` shows.
DESCRIPTION = ("Speed and memory of a KaniTTS server (or engine) on full-size random weights, with a "
               "fixed number of tokens per stream.")


def _int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def backend_choices() -> list[str]:
    """The server's ``engine.backend`` values (one definition: :data:`kanitts.engine.BACKEND_NAMES`;
    the retired aliases are left out: a benchmark names what it measures)."""
    from kanitts.engine import BACKEND_NAMES

    return list(BACKEND_NAMES)


def build_parser() -> argparse.ArgumentParser:
    """The ``kanitts bench`` argument parser."""
    from kanitts.engine.modes import MODE_NAMES
    from kanitts.engine.vllm_logits import RESTRICT_MODES  # imports torch: not at package import

    levels = "; ".join(f"{b}{'' if cuda else ' on CPU'}: {','.join(map(str, c))}"
                       for (b, cuda), (c, _) in LEVELS.items())
    rt_levels = "; ".join(f"{b}{'' if cuda else ' on CPU'}: {','.join(map(str, r)) or 'none'}"
                          for (b, cuda), (_, r) in LEVELS.items())
    p = argparse.ArgumentParser(prog="kanitts bench", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="model folder; None: full-size random weights under --assets")
    p.add_argument("--codec", help="NanoCodec .nemo; None: full-size random weights under --assets")
    p.add_argument("--assets", default=os.environ.get("KANITTS_BENCH_ASSETS", "/tmp/kanitts-bench"),
                   help="where full-size random-weight assets are built if missing ($KANITTS_BENCH_ASSETS)")
    p.add_argument("--mode", choices=list(MODE_NAMES), default="high_performance",
                   help="the server's performance mode (engine.mode) to measure")
    p.add_argument("--baseline", choices=["none", "seed"], default="none",
                   help="seed: also measure the seed's configuration in the same run")
    p.add_argument("--engine-only", action="store_true", help="vLLM only: drive VllmBackend in-process, no HTTP")
    p.add_argument("--url", help="measure an already running server (HTTP path); builds no assets")
    p.add_argument("--tokens", type=int, default=500, help="tokens per stream (50 = 1 s of audio)")
    p.add_argument("--concurrency", type=_int_list, default=None,
                   help=f"comma-separated streams per load level (None: by backend and device; {levels})")
    p.add_argument("--realtime-levels", type=_int_list, default=None,
                   help=f"more levels to find the most real-time streams (None: {rt_levels})")
    p.add_argument("--restrict", choices=list(RESTRICT_MODES), default="sample",
                   help="engine-only: how sampling is restricted to the next codebook")
    p.add_argument("--compare-restrict", action="store_true",
                   help="engine-only: batch-256 throughput with restricted sampling, without, and mask-only")
    p.add_argument("--compare-mask", action="store_true", help="with --compare-restrict: mask-only at batch 256 too")
    p.add_argument("--first-chunk-frames", type=int, default=1, help="codec frames in the first audio chunk")
    p.add_argument("--label", help="free-form label stored in the JSON entry")
    p.add_argument("--backend", choices=backend_choices(), default="native",
                   help="HTTP path: the server's engine backend (native: the built-in engine; vllm: for what only "
                        "it offers, fp8, bnb_4bit, tensor parallel); stored in the entry as 'backend'")
    p.add_argument("--codec-alone", action="store_true", help="HTTP path: also time the codec alone afterwards")
    p.add_argument("--no-codec", action="store_true", help="engine-only: no codec (tokens only)")
    p.add_argument("--engine-args", help="JSON dict of engine-argument overrides")
    p.add_argument("--client-procs", type=int,
                   help=f"HTTP path: client processes (None: one per {STREAMS_PER_CLIENT_PROCESS} streams, "
                        "at most half the cores)")
    p.add_argument("--server-log", help="HTTP path: file for the server's output (None: a temporary file); each "
                                         "level's ttfa_stages_ms is read from it (with --url: the running "
                                         "server's log file, if on this machine)")
    p.add_argument("--json", help="append the result entry to this JSON file (a list)")
    return p


def _needs_assets(args: argparse.Namespace) -> bool:
    """Whether this run needs the full-size random-weight assets: not with ``--url`` (the
    server has its models) unless the codec is timed alone without ``--codec``."""
    if args.url:
        return args.codec is None and args.codec_alone and not args.no_codec
    return args.model is None or (args.codec is None and not args.no_codec)


def _check_reachable(parser: argparse.ArgumentParser, url: str) -> None:
    """Exit with a usage error (2) unless ``url``'s ``GET /health`` answers."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10.0)
    except httpx.HTTPError as exc:
        parser.error(f"--url {url}: no server answers there ({exc.__class__.__name__}: {exc})")


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; 0, or 1 when the entry carries an error."""
    from kanitts.bench.engine_run import engine_bench
    from kanitts.bench.http_run import http_bench

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.engine_only and args.backend != "vllm":
        parser.error("--engine-only drives vLLM in-process; the native engine's engine-level figures "
                     "come from scripts/native_bench.py (or measure it over HTTP with --backend native)")
    if args.url:
        _check_reachable(parser, args.url)
    model = Path(args.model) if args.model else None
    codec = Path(args.codec) if args.codec else None
    if _needs_assets(args):
        bench_line("assets", root=args.assets, note="full-size random weights, built once if missing")
        m, c = ensure_assets(args.assets)
        model = model or m
        codec = codec or c
    entry: dict[str, Any] = {"device": device_name(), "date": time.strftime("%Y-%m-%d %H:%M"),
                             "baseline": args.baseline}
    if args.label:
        entry["label"] = args.label
    partial: dict[str, Any] = {}
    try:
        if args.engine_only:
            conc, rt = default_levels("vllm", True)
            args.concurrency = conc if args.concurrency is None else args.concurrency
            args.realtime_levels = rt if args.realtime_levels is None else args.realtime_levels
            asyncio.run(engine_bench(args, model, None if args.no_codec else codec, partial))
        else:
            partial.update(asyncio.run(http_bench(args, model, codec)))
    except Exception as e:  # noqa: BLE001
        entry["error"] = repr(e)[:4000]
        print(f"kanitts bench: error: {e}", file=sys.stderr, flush=True)
    entry.update(partial)
    # what ran: the engine-only path is vLLM in --mode; the HTTP path fills backend and mode
    if args.engine_only:
        entry.setdefault("backend", "vllm")
        entry.setdefault("mode", args.mode)
    entry.setdefault("backend", "unknown" if args.url else args.backend)
    entry.setdefault("mode", args.mode if entry["backend"] in BATCHING and not args.url else "unknown")
    entry.setdefault("baseline_single_stream_rtf", None)
    for k in ("single_stream_rtf", "ttfa_p50_ms", "ttfa_p95_ms", "ttfa_p50_ms_256", "max_realtime_streams",
              "peak_gpu_mb", "codec_audio_s_per_s"):
        entry.setdefault(k, None)
    result_line(entry)
    if args.json:
        append_json(args.json, entry)
    return 1 if "error" in entry else 0
