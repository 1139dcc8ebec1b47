"""How many real-time streams can the server's event loop carry? (CPU, no model, no codec)

    python scripts/loop_overhead.py --streams 64,128,256 --seconds 10

The HTTP server runs with a fake engine that emits valid audio tokens at exactly 50 tokens/s
per stream (real time) and a fake decoder that turns each frame into silence at no cost, so
what is measured is the plumbing alone: HTTP streaming, admission, synthesis, frame parsing,
encoding and the asyncio hops between them. For each level: time to first audio byte,
whether every stream kept up with real time, and the server process's CPU seconds per audio
second (1 core = 1.0: above it the loop cannot keep up). Clients run in a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TOKENS_PER_S = 50


class FakeBackend:
    """Valid frames at 50 tokens/s, in 4-token steps (one frame every 80 ms)."""

    name = "fake"
    ready = True

    def __init__(self) -> None:
        from kanitts.engine.base import BackendStats

        self.stats = BackendStats()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def stream(self, prompt_ids, params, request_id=None) -> AsyncIterator[list[int]]:
        from kanitts.tokens import frame_tokens

        self.stats.active_requests += 1
        try:
            t0 = time.perf_counter()
            sent = 0
            while sent < params.max_tokens:
                for _ in range(4):  # one token per engine step, as vLLM's DELTA outputs arrive
                    sent += 1
                    due = t0 + sent / TOKENS_PER_S
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    yield frame_tokens([sent % 4000, 1, 2, 3])[(sent - 1) % 4 : (sent - 1) % 4 + 1]
        finally:
            self.stats.active_requests -= 1


class FakeDecoder:
    async def decode(self, frames) -> AsyncIterator[np.ndarray]:
        async for batch in frames:
            yield np.full(1764 * len(batch), 0.01, dtype=np.float32)


def serve(port_q: mp.Queue, max_streams: int) -> None:
    import uvicorn

    from kanitts.config import load_settings
    from kanitts.models import VoiceModel
    from kanitts.routing import Router
    from kanitts.server.app import create_app
    from kanitts.service import TTSService
    from kanitts.synthesis import Synthesizer

    settings = load_settings(None, {"multi_language": False, "languages": {"en": {"model": "fake"}},
                                    "server": {"max_concurrent": max_streams, "max_queue": max_streams}},
                             env=False)
    tok = type("Tok", (), {"encode": lambda self, t, add_special_tokens=True: [1, 5, 6]})()
    model = VoiceModel("en", "fake", FakeBackend(), tok, ["andrew"], "andrew")
    svc = TTSService(settings)
    svc.models = {"en": model}
    svc.router = Router(svc.models, "en", settings.voice_aliases, None)
    svc.synthesizer = Synthesizer(FakeDecoder())
    svc.ready = True
    app = create_app(settings, service=svc)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    port_q.put(server.servers[0].sockets[0].getsockname()[1])
    th.join()


async def drive(url: str, n: int, tokens: int) -> dict:
    import httpx

    async def one(i: int, client: httpx.AsyncClient) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first = None
        got = 0
        async with client.stream("POST", url + "/v1/audio/speech", json={
            "input": "Hello there.", "response_format": "pcm", "stream_format": "audio",
            "max_tokens": tokens, "min_tokens": tokens, "seed": i}) as r:
            async for chunk in r.aiter_bytes():
                if first is None and chunk:
                    first = time.perf_counter() - t0
                got += len(chunk)
        return first or 0.0, time.perf_counter() - t0, got

    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        res = await asyncio.gather(*[one(i, client) for i in range(n)])
    ttfa = sorted(r[0] for r in res)
    audio_s = tokens / TOKENS_PER_S
    rtf = sorted(r[1] / audio_s for r in res)
    return {"streams": n, "ttfa_p50_ms": round(statistics.median(ttfa) * 1000, 1),
            "ttfa_p95_ms": round(ttfa[int(0.95 * (n - 1))] * 1000, 1),
            "worst_rtf": round(rtf[-1], 3), "median_rtf": round(statistics.median(rtf), 3),
            "bytes_ok": all(r[2] == (tokens // 4) * 1764 * 2 for r in res)}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="64,128,256")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    ap.add_argument("--json")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    q: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=serve, args=(q, max(levels)), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{q.get(timeout=60)}"
    tokens = int(a.seconds * TOKENS_PER_S) // 4 * 4
    results = []
    for n in levels:
        c0 = cpu_seconds(proc.pid)
        r = asyncio.run(drive(url, n, tokens))
        r["server_cpu_s_per_audio_s"] = round((cpu_seconds(proc.pid) - c0) / (n * a.seconds), 4)
        results.append(r)
        print(json.dumps(r), flush=True)
    proc.terminate()
    out = {"command": "python scripts/loop_overhead.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "cpu_cores": os.cpu_count(), "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
