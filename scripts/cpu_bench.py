"""CPU measurements for BENCHMARKS.md (native engine; tiny and full-size random weights).

    python scripts/cpu_bench.py --assets /tmp/kanitts-cpu-bench --json benchmarks/cpu.json

Fixed token counts (min_tokens == max_tokens), so cost does not depend on the weights.
Measures: engine tokens/s (with and without codebook-constrained sampling), codec decode seconds per audio second (one-shot and streamed
in 2- and 8-frame chunks), end-to-end RTF through the Python API, and time to first audio
byte through HTTP (`kanitts serve` + httpx, streamed PCM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def ensure(assets: Path, full: bool) -> tuple[str, str]:
    from kanitts.tiny import make_tiny

    d = assets / ("full" if full else "tiny")
    if not (d / "model" / "config.json").exists():
        make_tiny(d, full_size=full)
    return str(d / "model"), str(d / "codec.nemo")


async def engine_tps(model: str, tokens: int, constrained: bool = True) -> float:
    from kanitts.engine.base import SamplingParams
    from kanitts.engine.native.backend import NativeBackend

    b = NativeBackend(model, device="cpu", max_num_seqs=1, max_model_len=tokens + 64)
    await b.start()
    prompt = [64403, 1, 40, 41, 42, 43, 2, 64404]
    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, seed=0, constrained=constrained)
    async for _ in b.stream(prompt, params.with_(max_tokens=16, min_tokens=16)):
        pass  # warm
    t = time.perf_counter()
    n = 0
    async for ids in b.stream(prompt, params):
        n += len(ids)
    dt = time.perf_counter() - t
    await b.close()
    return n / dt


def codec_speed(codec_path: str, frames: int) -> dict[str, float]:
    from kanitts.codec import NanoCodec, StreamingDecoder

    codec = NanoCodec.from_pretrained(codec_path, device="cpu")
    codes = torch.randint(0, 4032, (1, 4, frames))
    audio_s = frames * 1764 / 22050
    codec.decode(codes[:, :, :4])
    t = time.perf_counter()
    codec.decode(codes)
    out = {"oneshot_s_per_audio_s": (time.perf_counter() - t) / audio_s}
    for chunk in (2, 8):
        dec = StreamingDecoder(codec, batch_size=1)
        dec.reset(torch.ones(1, dtype=torch.bool))
        t = time.perf_counter()
        for i in range(0, frames, chunk):
            dec.step(codes[:, :, i : i + chunk])
        out[f"stream{chunk}_s_per_audio_s"] = (time.perf_counter() - t) / audio_s
    return out


async def rtf(model: str, codec: str, tokens: int) -> float:
    from kanitts.config import load_settings
    from kanitts.service import TTSService

    s = load_settings(None, {"multi_language": False, "languages": {"en": {"model": model}},
                             "codec": {"model": codec}, "engine": {"backend": "native", "device": "cpu"}}, env=False)
    svc = TTSService(s)
    await svc.start()
    route = svc.route("Hello world.", "andrew", None)
    opts = svc.options(max_tokens=tokens, min_tokens=tokens, seed=0)
    opts.length_bound = False
    t = time.perf_counter()
    synth = svc.synthesize(route, "Hello world.", opts, "bench")
    n = sum([p.size async for p in synth.pcm()])
    dt = time.perf_counter() - t
    await svc.close()
    return dt / (n / 22050)


def ttfa_http(model: str, codec: str, runs: int, tokens: int) -> dict[str, float]:
    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "kanitts.cli", "serve", "--model", model, "--codec", codec,
                             "--port", str(port), "--backend", "native", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).json().get("tts_ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        times = []
        for i in range(runs + 1):
            t = time.perf_counter()
            with httpx.stream("POST", url + "/v1/audio/speech", timeout=300,
                              json={"input": "Hello world.", "response_format": "pcm", "stream_format": "audio",
                                    "max_tokens": tokens, "min_tokens": tokens, "seed": i}) as r:
                for chunk in r.iter_bytes():
                    if chunk:
                        if i:  # run 0 warms up
                            times.append((time.perf_counter() - t) * 1000)
                        break
        return {"ttfa_p50_ms": statistics.median(times), "ttfa_max_ms": max(times), "runs": runs}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default="/tmp/kanitts-cpu-bench")
    ap.add_argument("--json")
    ap.add_argument("--skip-full", action="store_true")
    a = ap.parse_args()
    assets = Path(a.assets)
    torch.set_num_threads(os.cpu_count() or 1)
    result: dict = {
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python scripts/cpu_bench.py " + " ".join(sys.argv[1:]),
    }
    for full in ([False] if a.skip_full else [False, True]):
        name = "full_size" if full else "tiny"
        model, codec = ensure(assets, full)
        tokens = 200 if full else 500
        r = {"tokens": tokens}
        r["engine_tokens_per_s"] = asyncio.run(engine_tps(model, tokens))
        r["engine_tokens_per_s_unconstrained"] = asyncio.run(engine_tps(model, tokens, constrained=False))
        r.update({f"codec_{k}": v for k, v in codec_speed(codec, 50 if full else 125).items()})
        r["rtf_end_to_end"] = asyncio.run(rtf(model, codec, tokens))
        r.update(ttfa_http(model, codec, runs=5 if not full else 3, tokens=100 if not full else 40))
        result[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
        print(name, json.dumps(result[name]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
