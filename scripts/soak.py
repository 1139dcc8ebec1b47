#!/usr/bin/env python
"""Bounded soak test on loopback: open and abandon speech streams at random, then check
that nothing leaked.

By default the server runs in this process (uvicorn on its own thread and event loop, a
tiny random-weight checkpoint from ``kanitts make-tiny``) so the script can count the
server loop's asyncio tasks and threads; ``--url`` soaks an external server instead
(RSS from ``--pid`` when given). It stops by itself after ``--minutes`` or
``--max-requests``, whichever comes first, and prints one JSON summary:

* every completed response is valid audio (format magic, WAV sizes, SSE events);
* ``/health`` shows ``active_streams == 0`` and ``queued == 0`` once idle;
* the server loop holds no more asyncio tasks than before the load (no leaks);
* RSS after warm-up vs at the end (memory flat).

    python scripts/soak.py --minutes 3 --concurrency 8
    python scripts/soak.py --url http://127.0.0.1:32855 --pid $(pgrep -f 'kanitts serve') --minutes 10

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

TEXTS = [
    "Hello there.", "How are you doing today?", "The quick brown fox jumps over the lazy dog.",
    "It costs $3.50, not 4 dollars.", "Streaming speech, chunk by chunk.",
    "First paragraph here.\n\nAnd a second one after a pause.", "Hi!", "Numbers: 1, 22, 333, 4444.",
]  # fmt: skip
FORMATS = ["pcm", "wav", "mp3", "opus", "flac", "aac"]
#: (behaviour, weight): read everything / drop after the first chunk / drop before any body /
#: drop after a random delay / SSE to the end / non-streaming.
BEHAVIOURS = [("full", 4), ("abandon_first_chunk", 3), ("abandon_headers", 2), ("abandon_later", 2),
              ("sse", 2), ("oneshot", 2)]


def _own_threads() -> int:
    """Threads that could leak per request: bounded executor pools (asyncio's default
    executor, encoder/codec workers) grow lazily up to their size and are not counted."""
    pools = ("asyncio_", "ThreadPoolExecutor", "kanitts-codec")
    return sum(1 for t in threading.enumerate() if not t.name.startswith(pools))


def rss_bytes(pid: int | None = None) -> int | None:
    try:
        text = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def valid_audio(fmt: str, data: bytes) -> str | None:
    """None when ``data`` is a plausible complete ``fmt`` file, else why not."""
    if not data:
        return "empty body"
    if fmt == "pcm":
        return None if len(data) % 2 == 0 else "odd pcm length"
    if fmt == "wav":
        if data[:4] != b"RIFF" or data[8:12] != b"WAVE" or len(data) < 44:
            return "bad wav header"
        size = struct.unpack("<I", data[40:44])[0]
        if size not in (len(data) - 44, 0xFFFFFFFF, 0):  # streamed WAV may use an open size
            return f"wav data size {size} != {len(data) - 44}"
        return None
    magic = {"mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3"), "opus": (b"OggS",),
             "flac": (b"fLaC",), "aac": (b"\xff\xf1", b"\xff\xf9")}[fmt]
    if not any(data.startswith(m) for m in magic) and not (fmt == "mp3" and data[0] == 0xFF):
        return f"bad {fmt} magic {data[:4]!r}"
    return None


def valid_sse(data: bytes, fmt: str) -> str | None:
    events = []
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    if not events or events[-1].get("type") != "speech.audio.done":
        return f"sse did not end with speech.audio.done: {events[-1:]}"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e.get("type") == "speech.audio.delta")
    return valid_audio(fmt, audio)


class InProcessServer:
    """uvicorn on a thread with its own loop, so the soak can inspect that loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "InProcessServer":
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, lifespan="on"))

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self.server.serve())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="soak-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # minus this one

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def task_names(self) -> list[str]:
        async def names() -> list[str]:
            me = asyncio.current_task()
            return sorted(repr(t.get_coro()) for t in asyncio.all_tasks() if t is not me)

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(10)

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


async def one_request(client: httpx.AsyncClient, rng: random.Random, stats: Counter, problems: list[str],
                      max_tokens: tuple[int, int]) -> None:
    behaviour = rng.choices([b for b, _ in BEHAVIOURS], [w for _, w in BEHAVIOURS])[0]
    fmt = rng.choice(FORMATS)
    body: dict[str, Any] = {
        "model": "tts-1", "input": rng.choice(TEXTS), "voice": rng.choice(["andrew", "katie", "alloy", None]),
        "response_format": fmt, "max_tokens": rng.randint(*max_tokens), "speed": rng.choice([1.0, 1.0, 0.8, 1.5]),
    }
    if behaviour == "sse":
        body["stream_format"] = "sse"
    elif behaviour != "oneshot":
        body["stream_format"] = "audio"
    stats["sent"] += 1
    try:
        if behaviour == "oneshot":
            r = await client.post("/v1/audio/speech", json=body)
            stats[f"http_{r.status_code}"] += 1
            if r.status_code == 200:
                why = valid_audio(fmt, r.content)
                stats["completed"] += 1
                if why:
                    problems.append(f"oneshot {fmt}: {why}")
            return
        async with client.stream("POST", "/v1/audio/speech", json=body) as r:
            stats[f"http_{r.status_code}"] += 1
            if r.status_code != 200:
                await r.aread()
                return
            if behaviour == "abandon_headers":
                stats["abandoned"] += 1
                return
            data = bytearray()
            cut_after = rng.uniform(0.05, 1.0) if behaviour == "abandon_later" else None
            t0 = time.monotonic()
            async for chunk in r.aiter_raw():
                data += chunk
                if behaviour == "abandon_first_chunk" or (cut_after and time.monotonic() - t0 > cut_after):
                    stats["abandoned"] += 1
                    return
            stats["completed"] += 1
            why = valid_sse(bytes(data), fmt) if behaviour == "sse" else valid_audio(fmt, bytes(data))
            if why:
                problems.append(f"{behaviour} {fmt}: {why}")
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        stats["transport_error"] += 1
        problems.append(f"{behaviour}: {type(exc).__name__}: {exc}")


async def drive(url: str, seconds: float, max_requests: int, concurrency: int, seed: int,
                max_tokens: tuple[int, int]) -> tuple[Counter, list[str]]:
    rng = random.Random(seed)
    stats: Counter = Counter()
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0), limits=limits) as client:
        async def worker(i: int) -> None:
            wrng = random.Random(rng.random() + i)
            while time.monotonic() < deadline and stats["sent"] < max_requests:
                await one_request(client, wrng, stats, problems, max_tokens)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return stats, problems


def wait_idle(url: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health", timeout=10).json()
        if health.get("active_streams") == 0 and health.get("queued") == 0:
            break
        time.sleep(0.1)
    return health


def run_soak(*, seconds: float, concurrency: int = 8, max_requests: int = 100_000, seed: int = 0,
             url: str | None = None, pid: int | None = None, model: str | None = None, codec: str | None = None,
             max_tokens: tuple[int, int] = (16, 96), warmup_requests: int = 30) -> dict[str, Any]:
    """Run the soak; returns the summary (``summary["ok"]`` says whether every check held)."""
    server: InProcessServer | None = None
    tmp: tempfile.TemporaryDirectory | None = None
    if url is None:
        if model is None or codec is None:
            from kanitts.tiny import make_tiny

            tmp = tempfile.TemporaryDirectory(prefix="kanitts-soak-")
            make_tiny(Path(tmp.name), language="en")
            model, codec = str(Path(tmp.name) / "model"), str(Path(tmp.name) / "codec.nemo")
        from kanitts.config import load_settings
        from kanitts.server.app import create_app

        settings = load_settings(cli={
            "languages": {"en": {"model": model}}, "default_language": "en", "multi_language": False,
            "codec": {"model": codec}, "engine": {"backend": "native", "device": "cpu", "warmup": False},
            "server": {"max_concurrent": max(4, concurrency), "max_queue": 4 * concurrency},
        }, env=False)
        server = InProcessServer(create_app(settings)).__enter__()
        url = server.url
    try:
        deadline = time.monotonic() + 120
        while httpx.get(url + "/ready", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("server never became ready")
            time.sleep(0.2)
        rss_start = rss_bytes(pid)
        # Warm-up: allocator pools, encoder/codec caches, lazily built objects.
        warm, warm_problems = asyncio.run(drive(url, 120, warmup_requests, min(4, concurrency), seed + 1, max_tokens))
        wait_idle(url)
        gc.collect()
        tasks_before = server.task_count() if server else None
        threads_before = _own_threads()
        rss_warm = rss_bytes(pid)
        t0 = time.monotonic()
        stats, problems = asyncio.run(drive(url, seconds, max_requests, concurrency, seed, max_tokens))
        elapsed = time.monotonic() - t0
        health = wait_idle(url)
        gc.collect()
        time.sleep(0.5)
        tasks_after = server.task_count() if server else None
        leaked = server.task_names() if server and tasks_after and tasks_after > (tasks_before or 0) else []
        rss_end = rss_bytes(pid)
        problems = warm_problems + problems
        mib = (lambda b: None if b is None else round(b / 2**20, 1))
        summary: dict[str, Any] = {
            "seconds": round(elapsed, 1), "concurrency": concurrency, "requests": stats["sent"],
            "requests_per_s": round(stats["sent"] / elapsed, 2) if elapsed else None,
            "completed": stats["completed"], "abandoned": stats["abandoned"],
            "statuses": {k[5:]: v for k, v in sorted(stats.items()) if k.startswith("http_")},
            "transport_errors": stats["transport_error"], "invalid_or_failed": len(problems),
            "problems": problems[:20], "active_streams_after": health.get("active_streams"),
            "queued_after": health.get("queued"), "asyncio_tasks_before": tasks_before,
            "asyncio_tasks_after": tasks_after, "leaked_tasks": leaked[:20],
            "threads_before": threads_before, "threads_after": _own_threads(),
            "rss_mib_start": mib(rss_start), "rss_mib_after_warmup": mib(rss_warm), "rss_mib_end": mib(rss_end),
            "rss_growth_mib": (mib(rss_end - rss_warm) if rss_end is not None and rss_warm is not None else None),
            "warmup_requests": warm["sent"],
        }
        summary["ok"] = bool(
            not problems and stats["completed"] > 0 and health.get("active_streams") == 0
            and health.get("queued") == 0 and not leaked
            and not any(k.startswith("5") and k != "503" for k in summary["statuses"])
        )
        return summary
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        if tmp is not None:
            with contextlib.suppress(Exception):
                tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seconds", type=float, help="overrides --minutes")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="soak this server instead of an in-process tiny one")
    p.add_argument("--pid", type=int, help="server pid for RSS (with --url)")
    p.add_argument("--model", help="model folder for the in-process server (default: make-tiny)")
    p.add_argument("--codec", help="codec .nemo for the in-process server")
    p.add_argument("--max-tokens", type=int, nargs=2, default=(16, 96), metavar=("MIN", "MAX"))
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = run_soak(
        seconds=args.seconds if args.seconds is not None else args.minutes * 60, concurrency=args.concurrency,
        max_requests=args.max_requests, seed=args.seed, url=args.url, pid=args.pid, model=args.model,
        codec=args.codec, max_tokens=tuple(args.max_tokens),
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
