"""How many real-time streams can the server's process carry, and where does a burst's time
to first audio go? (CPU, no model, no codec arithmetic)

    python scripts/loop_overhead.py --streams 64,128,256 --seconds 10        # steady streams
    python scripts/loop_overhead.py --streams 256,1000 --seconds 2 --instant  # bursts

The HTTP server runs in its own process with everything real but the arithmetic:

* a fake engine shaped like the native one: one engine thread steps every 20 ms (50 tokens/s
  per stream, real time), one token per active request per step, and hands each request
  its tokens 4 at a time (one frame; ``--deliver-frames K``: the first frame, then K at a
  time) with one ``call_soon_threadsafe`` per step, as the native scheduler does. The first frame comes 4 steps (80 ms) after submission, about the
  H200's engine-level first frame at 256 streams, or with ``--instant`` on the next step;
* the serving :class:`~kanitts.codec.CodecWorker` (planning, its one worker thread, the
  per-stream pumps and queues) around a decoder pool whose step returns silence at no cost;
* the real app: middleware, admission, text planning, synthesis, resampling to the
  default pcm rate (24 kHz), encoding, streaming HTTP.

Every level starts its N streams at once (a burst) from ``--client-procs`` client
processes and reports: TTFA at the clients and at the server (the access log's
``ttfa_ms``, from arrival at the app), the per-stage p50/p95 of the server's timeline
(:data:`kanitts.server.timeline.STAGES`, read back with :mod:`kanitts.bench.stages`),
whether every stream kept up with real time, and the server process's CPU seconds per
audio second (all threads; ``loop_cpu_s_per_audio_s`` is the event-loop thread alone:
1 / that is the most audio seconds per second one loop can serve).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKENS_PER_S = 50
STEP_S = 1.0 / TOKENS_PER_S
SAMPLES_PER_FRAME = 1764
PCM_RATE = 24_000  # the server's default pcm_sample_rate: what the clients get


@dataclass(eq=False)
class _Req:
    out: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    max_new: int
    sent: int = 0
    cancelled: bool = False
    pending: list[int] = field(default_factory=list)


def _deliver(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for q, item in items:
        q.put_nowait(item)


class FakeEngine:
    """A ``GenerationBackend`` whose engine thread steps every 20 ms (see the module
    docstring); ``instant``: a request's first frame on its first step."""

    name = "fake"
    ready = True

    def __init__(self, instant: bool, deliver_frames: int = 1) -> None:
        from kanitts.engine.base import BackendStats
        from kanitts.tokens import frame_tokens

        self.stats = BackendStats()
        self.instant = instant
        self.deliver_tokens = 4 * deliver_frames
        self._incoming: queue.SimpleQueue[_Req] = queue.SimpleQueue()
        self._frame = [frame_tokens([k % 4000, 1, 2, 3]) for k in range(4000)]
        self._thread = threading.Thread(target=self._run, name="fake-engine", daemon=True)
        self._thread.start()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def stream(self, prompt_ids: list[int], params: Any, request_id: str | None = None
                     ) -> AsyncIterator[list[int]]:
        req = _Req(asyncio.Queue(), asyncio.get_running_loop(), params.max_tokens)
        self.stats.active_requests += 1
        self._incoming.put(req)
        try:
            while True:
                item = await req.out.get()
                if item is None:
                    return
                yield item
        finally:
            req.cancelled = True
            self.stats.active_requests -= 1

    def _run(self) -> None:
        active: list[_Req] = []
        due = time.perf_counter()
        while True:
            if not active:  # idle: block for the next request
                active.append(self._incoming.get())
                due = time.perf_counter()
            while True:
                try:
                    req = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if self.instant:
                    req.sent = 3  # this step completes the first frame
                active.append(req)
            out: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
            keep = []
            for req in active:
                if req.cancelled:
                    continue
                req.sent += 1
                items = out.setdefault(req.loop, [])
                if req.sent % 4 == 0:
                    req.pending.extend(self._frame[(req.sent // 4) % 4000])
                done = req.sent >= req.max_new
                # the first frame at once, then deliver_frames frames per hand-over
                if req.pending and (req.sent == 4 or req.sent % self.deliver_tokens == 0 or done):
                    items.append((req.out, req.pending))
                    req.pending = []
                if done:
                    items.append((req.out, None))
                else:
                    keep.append(req)
            active = keep
            for loop, items in out.items():
                if items:
                    loop.call_soon_threadsafe(_deliver, items)
            due += STEP_S  # late wake-ups (a loaded machine) are caught up: real time on average
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)


class FreePool:
    """A decoder pool whose steps cost nothing: silence of the right shape."""

    device = "cpu"

    def reset(self, slots: Any) -> None: ...

    def step_slots(self, slots: Any, frames: Any) -> Any:
        import torch

        return torch.full((len(slots), frames.shape[1] * SAMPLES_PER_FRAME), 0.01)


def serve(port_q: Any, max_streams: int, log_path: str, instant: bool, deliver_frames: int) -> None:
    import uvicorn

    from kanitts.codec import CodecWorker, NanoCodec
    from kanitts.codec.tiny_nemo import tiny_codec_config
    from kanitts.config import load_settings
    from kanitts.models import VoiceModel
    from kanitts.routing import Router
    from kanitts.server.app import create_app
    from kanitts.service import TTSService
    from kanitts.synthesis import Synthesizer

    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    requests_log = logging.getLogger("kanitts.requests")
    requests_log.addHandler(handler)
    requests_log.setLevel(logging.INFO)
    requests_log.propagate = False
    settings = load_settings(None, {"multi_language": False, "languages": {"en": {"model": "fake"}},
                                    "server": {"max_concurrent": max_streams, "max_queue": max_streams}},
                             env=False)
    tok = type("Tok", (), {"encode": lambda self, t, add_special_tokens=True: [1, 5, 6]})()
    model = VoiceModel("en", "fake", FakeEngine(instant, deliver_frames), tok, ["andrew"], "andrew")
    svc = TTSService(settings)
    svc.models = {"en": model}
    svc.router = Router(svc.models, "en", settings.voice_aliases, None)
    worker = CodecWorker(NanoCodec(tiny_codec_config()), max_streams=max_streams,
                         first_chunk_frames=settings.codec.first_chunk_frames,
                         chunk_frames=settings.codec.chunk_frames, fast=False)
    worker._pool = FreePool()  # type: ignore[assignment]
    svc.synthesizer = Synthesizer(worker)
    svc.ready = True
    app = create_app(settings, service=svc)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False,
                                           backlog=4096))

    def announce() -> None:
        while not server.started:
            time.sleep(0.05)
        port_q.put(server.servers[0].sockets[0].getsockname()[1])

    threading.Thread(target=announce, daemon=True).start()
    try:  # as `kanitts serve` does once its models have loaded (absent from older checkouts)
        from kanitts.server.gc_freeze import freeze_startup_objects
    except ImportError:
        freeze_startup_objects = None
    if freeze_startup_objects is not None:
        freeze_startup_objects()
    server.run()  # the event loop on the main thread (its CPU: loop_cpu_s_per_audio_s)


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all threads), or of its thread ``tid``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def raw_stream(port: int, tokens: int, i: int) -> tuple[float | None, float, int, str | None]:
    """One streaming POST over a bare asyncio socket (an HTTP client costs more CPU than
    the server path it measures): (TTFA s, wall s, PCM bytes, error)."""
    body = json.dumps({"model": "tts-1", "input": f"Hello, this is a ten second benchmark. ({i})",
                       "voice": "andrew", "response_format": "pcm", "stream_format": "audio",
                       "max_tokens": tokens, "min_tokens": tokens}).encode()
    t0 = time.perf_counter()
    first = None
    got = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None, time.perf_counter() - t0, 0, head.split(b"\r\n", 1)[0].decode()
        while True:  # chunked transfer encoding
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                break
            await reader.readexactly(size + 2)
            if first is None:
                first = time.perf_counter() - t0
            got += size
        writer.close()
    except Exception as exc:  # noqa: BLE001
        return first, time.perf_counter() - t0, got, repr(exc)[:200]
    return first, time.perf_counter() - t0, got, None


def _client(port: int, first: int, n: int, tokens: int, start_at: float) -> list[tuple]:
    async def run() -> list[tuple]:
        return list(await asyncio.gather(*[raw_stream(port, tokens, first + k) for k in range(n)]))

    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(run())


def level(url: str, n: int, tokens: int, procs: int, pid: int, tail: Any) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    from kanitts.bench.netstat import counters_delta, listen_counters
    from kanitts.bench.stages import stage_summary
    from kanitts.bench.stats import percentile, rounded

    audio_s = tokens / TOKENS_PER_S
    port = int(url.rsplit(":", 1)[1])
    shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    drops = listen_counters()
    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.01] * procs))  # started
        start_at = time.time() + 0.2
        c0, l0 = cpu_seconds(pid), cpu_seconds(pid, pid)
        futs = [pool.submit(_client, port, sum(shares[:k]), m, tokens, start_at) for k, m in enumerate(shares)]
        res = [r for f in futs for r in f.result()]
    cpu, loop_cpu = cpu_seconds(pid) - c0, cpu_seconds(pid, pid) - l0
    ok = [r for r in res if r[3] is None]
    ttfa = [r[0] * 1000 for r in ok if r[0] is not None]
    rtf = [r[1] / audio_s for r in ok]
    stages = stage_summary(tail.records())
    return {
        "streams": n, "errors": n - len(ok), "first_error": next((r[3] for r in res if r[3]), None),
        "client_ttfa_p50_ms": rounded(percentile(ttfa, 50)), "client_ttfa_p95_ms": rounded(percentile(ttfa, 95)),
        "server_ttfa_p50_ms": stages["ttfa_ms"]["p50"], "server_ttfa_p95_ms": stages["ttfa_ms"]["p95"],
        "worst_rtf": rounded(max(rtf), 3) if rtf else None,
        "median_rtf": rounded(statistics.median(rtf), 3) if rtf else None,
        "bytes_ok": all(r[2] == round(tokens / TOKENS_PER_S * PCM_RATE) * 2 for r in ok),
        "server_cpu_s_per_audio_s": round(cpu / (n * audio_s), 4),
        "loop_cpu_s_per_audio_s": round(loop_cpu / (n * audio_s), 4),
        "listen_drops": counters_delta(drops, listen_counters()),
        "ttfa_stages_ms": stages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="64,128,256", help="levels: streams started at once")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    ap.add_argument("--instant", action="store_true", help="first frame on the first engine step (else 80 ms)")
    ap.add_argument("--deliver-frames", type=int, default=1,
                    help="frames per token hand-over after the first frame (the native engine: stream_interval / 4)")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes")
    ap.add_argument("--py-spy", metavar="OUT", help="sample the server with py-spy over the levels (collapsed "
                                                     "stacks to OUT; py-spy must be installed)")
    ap.add_argument("--label", help="stored in the JSON")
    ap.add_argument("--json")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    from kanitts.bench.stages import LogTail

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "requests.log")
        proc = ctx.Process(target=serve, args=(q, max(levels), log_path, a.instant, a.deliver_frames), daemon=True)
        proc.start()
        try:
            url = f"http://127.0.0.1:{q.get(timeout=120)}"
            tokens = int(a.seconds * TOKENS_PER_S) // 4 * 4
            level(url, 4, 8, 1, proc.pid, LogTail(log_path))  # warm: imports, first requests
            spy = None
            if a.py_spy:
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "250",
                                        "--threads", "-o", a.py_spy], stdout=subprocess.DEVNULL)
                time.sleep(2)  # attached
            results = []
            for n in levels:
                r = level(url, n, tokens, a.client_procs, proc.pid, LogTail(log_path))
                results.append(r)
                print(json.dumps(r), flush=True)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
        finally:
            proc.terminate()
            proc.join(30)
    out = {"command": "python scripts/loop_overhead.py " + " ".join(sys.argv[1:]), "label": a.label,
           "date": time.strftime("%Y-%m-%d"), "device": "CPU", "cpu_cores": os.cpu_count(), "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
