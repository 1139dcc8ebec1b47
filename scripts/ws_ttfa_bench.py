"""Time to first audio: the WebSocket's first flush vs a one-sentence streamed HTTP request.

    python scripts/ws_ttfa_bench.py --assets /tmp/kanitts-ws-bench --runs 10 --json benchmarks/cpu-ws-ttfa.json

Serves the tiny random-weight checkpoint (``kanitts make-tiny``) on CPU (native engine)
with uvicorn in this process, then alternates, ``--runs`` times each after one warm-up:

* HTTP: ``POST /v1/audio/speech`` (pcm, ``stream_format: audio``) with one sentence; time
  from sending the request to the first body byte; the stream is then closed.
* WebSocket: a session already open (``session.created`` received); time from sending
  ``text.delta`` + ``flush`` with the same sentence to the first binary audio frame; then
  ``cancel`` and ``close``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

SENTENCE = "Hello there, how are you doing today?"


def _serve(settings: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    from kanitts.server.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"127.0.0.1:{port}"


async def _http_ttfa(client: Any, base: str) -> float:
    body = {"input": SENTENCE, "response_format": "pcm", "stream_format": "audio", "seed": 1}
    t = time.perf_counter()
    async with client.stream("POST", f"http://{base}/v1/audio/speech", json=body) as r:
        async for chunk in r.aiter_bytes():
            if chunk:
                return time.perf_counter() - t
    raise RuntimeError("no audio")


async def _ws_ttfa(ws: Any) -> float:
    t = time.perf_counter()
    await ws.send(json.dumps({"type": "text.delta", "text": SENTENCE}))
    await ws.send(json.dumps({"type": "flush"}))
    while True:
        msg = await ws.recv()
        if isinstance(msg, bytes):
            dt = time.perf_counter() - t
            break
    await ws.send(json.dumps({"type": "cancel"}))
    while True:  # drain to the cancel acknowledgement
        msg = await ws.recv()
        if isinstance(msg, str) and json.loads(msg)["type"] == "cancelled":
            return dt


async def _measure(base: str, runs: int) -> dict[str, list[float]]:
    import httpx
    import websockets

    out: dict[str, list[float]] = {"http": [], "ws": []}
    async with httpx.AsyncClient(timeout=120) as client, \
            websockets.connect(f"ws://{base}/v1/audio/speech/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "version": 1, "seed": 1}))
        assert json.loads(await ws.recv())["type"] == "session.created"
        await _http_ttfa(client, base)  # warm-up
        await _ws_ttfa(ws)
        for _ in range(runs):
            out["http"].append(await _http_ttfa(client, base))
            out["ws"].append(await _ws_ttfa(ws))
        await ws.send(json.dumps({"type": "close"}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=Path("/tmp/kanitts-ws-bench"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--full-size", action="store_true", help="full-size random weights (GPU runs)")
    ap.add_argument("--backend", default="native", help="engine backend (default native)")
    ap.add_argument("--device", default="cpu", help="engine and codec device (default cpu)")
    ap.add_argument("--mode", default="low_vram", help="performance mode (default low_vram)")
    args = ap.parse_args()
    import torch

    from kanitts.config import load_settings
    from kanitts.tiny import make_tiny

    d = args.assets / ("full" if args.full_size else "tiny")
    if not (d / "model" / "config.json").exists():
        make_tiny(d, full_size=args.full_size)
    settings = load_settings(cli={
        "languages": {"en": {"model": str(d / "model")}}, "default_language": "en", "multi_language": False,
        "codec": {"model": str(d / "codec.nemo")},
        "engine": {"backend": args.backend, "device": args.device, "mode": args.mode,
                   "warmup": args.device != "cpu"},
    }, env=False)
    server, thread, base = _serve(settings)
    import httpx

    while httpx.get(f"http://{base}/ready", timeout=5).status_code != 200:
        time.sleep(0.1)
    try:
        res = asyncio.run(_measure(base, args.runs))
    finally:
        server.should_exit = True
        thread.join(30)
    report: dict[str, Any] = {
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "device": (torch.cuda.get_device_name() if args.device.startswith("cuda") else
                   f"CPU {platform.machine()}, {torch.get_num_threads()} threads") + f", torch {torch.__version__}",
        "model": ("full-size" if args.full_size else "tiny") + " (kanitts make-tiny, random weights)",
        "backend": args.backend, "mode": args.mode, "sentence": SENTENCE, "runs": args.runs,
    }
    for name, xs in res.items():
        ms = sorted(x * 1000 for x in xs)
        report[name] = {"p50_ms": round(statistics.median(ms), 1), "min_ms": round(ms[0], 1),
                        "max_ms": round(ms[-1], 1), "all_ms": [round(x, 1) for x in ms]}
        print(f"{name:5s} TTFA p50 {report[name]['p50_ms']} ms  min {report[name]['min_ms']}  max {report[name]['max_ms']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
