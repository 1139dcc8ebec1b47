"""KaniTTS-2 over HTTP with every stream in its own cloned voice: TTFA and per-stream RTF.

    python scripts/clone_http_bench.py --full-size --device cuda --levels 1,16,256 --json out.json

Builds a random-weight KaniTTS-2 checkpoint (``make_tiny_kanitts2``; ``--full-size`` for the real
sizes), pre-loads ``max(levels)`` voices (random unit 128-d speaker embeddings written as ``.npy``,
the official server's voice format), serves it with the native engine in this process, and for each
level sends that many streamed pcm requests at once, request ``i`` in voice ``v{i}`` (all
different), each a fixed ``--tokens`` long (``min_tokens == max_tokens``). Reports, per level,
TTFA p50/p90 (request sent -> first body byte), per-stream RTF (wall time / audio seconds) worst and
p50, and audio seconds per second. The client shares the process with the server (one Python
process): at high levels its own work is part of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_ttfa_bench import _serve  # noqa: E402  (the same in-process uvicorn helper)

RATE = 22050  # pcm at the model's rate: bytes / 2 / RATE = audio seconds
TEXT = "Hello there, this is a cloned voice reading one sentence for the benchmark."


async def _one(client: Any, base: str, voice: str, tokens: int) -> tuple[float, float, float]:
    body = {"input": TEXT, "voice": voice, "response_format": "pcm", "stream_format": "audio",
            "sample_rate": RATE, "seed": 1, "max_tokens": tokens, "min_tokens": tokens}
    t0 = time.perf_counter()
    ttfa, n = None, 0
    async with client.stream("POST", f"http://{base}/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        async for chunk in r.aiter_bytes():
            if chunk and ttfa is None:
                ttfa = time.perf_counter() - t0
            n += len(chunk)
    wall = time.perf_counter() - t0
    audio = n / 2 / RATE
    return ttfa or wall, wall / max(audio, 1e-9), audio


async def _level(base: str, n: int, tokens: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await _one(client, base, "v0", 16)  # warm-up
        t0 = time.perf_counter()
        res = await asyncio.gather(*(_one(client, base, f"v{i}", tokens) for i in range(n)))
        wall = time.perf_counter() - t0
    ttfa = sorted(r[0] * 1000 for r in res)
    rtf = sorted(r[1] for r in res)
    return {"streams": n, "distinct_voices": n, "ttfa_p50_ms": round(statistics.median(ttfa), 1),
            "ttfa_p90_ms": round(ttfa[max(0, math.ceil(0.9 * n) - 1)], 1), "rtf_p50": round(statistics.median(rtf), 3),
            "rtf_worst": round(rtf[-1], 3), "all_real_time": rtf[-1] < 1.0,
            "audio_s_per_s": round(sum(r[2] for r in res) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=Path("/tmp/kanitts-clone-bench"))
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mode", default="high_performance")
    ap.add_argument("--levels", default="1,4")
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import httpx
    import torch

    from kanitts.config import load_settings
    from kanitts.tiny_kanitts2 import make_tiny_kanitts2

    levels = [int(x) for x in args.levels.split(",")]
    d = args.assets / ("full" if args.full_size else "tiny")
    model, codec, speaker = d / "model", d / "codec.nemo", d / "speaker"
    if not (model / "config.json").exists():
        model, codec, speaker = make_tiny_kanitts2(d, full_size=args.full_size)
    rng = np.random.default_rng(0)
    preload = {}
    for i in range(max(levels)):
        e = rng.standard_normal(128).astype(np.float32)
        path = d / "voices" / f"v{i}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, e / np.linalg.norm(e))
        preload[f"v{i}"] = str(path)
    settings = load_settings(cli={
        "languages": {"en": {"model": str(model)}}, "default_language": "en", "multi_language": False,
        "codec": {"model": str(codec)},
        "engine": {"backend": "native", "device": args.device, "mode": args.mode, "warmup": args.device != "cpu"},
        "voices": {"speaker_encoder": str(speaker), "directory": str(d / "store"), "preload": preload},
        "server": {"max_input_chars": 4096},
    }, env=False)
    t = time.perf_counter()
    server, thread, base = _serve(settings)
    while httpx.get(f"http://{base}/ready", timeout=5).status_code != 200:
        time.sleep(0.2)
    ready_s = time.perf_counter() - t
    try:
        rows = [asyncio.run(_level(base, n, args.tokens)) for n in levels]
    finally:
        server.should_exit = True
        thread.join(60)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "model": "KaniTTS-2 " + ("full-size" if args.full_size else "tiny")
              + " random weights", "backend": "native", "mode": args.mode, "tokens": args.tokens,
              "server_ready_s": round(ready_s, 1), "levels": rows}
    for r in rows:
        print("RESULT", json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
