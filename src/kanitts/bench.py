"""``kanitts bench``: speed and memory on full-size random weights, fixed token counts.

Two paths, same figures:

* HTTP (default): starts ``kanitts serve --backend vllm --mode MODE`` as a subprocess (or
  uses ``--url``) and drives POST /v1/audio/speech with streaming httpx clients; time to
  first audio byte (TTFA) is the first PCM byte a client receives.
* ``--engine-only``: drives :class:`~kanitts.engine.vllm_backend.VllmBackend` in-process,
  plus the batched codec (:class:`~kanitts.codec.CodecWorker`) when importable; TTFA is the
  first PCM chunk out of the codec (TTFT, first token, is reported too).

Every run generates exactly ``--tokens`` tokens per stream (min_tokens = max_tokens,
ignore_eos); 50 tokens = 1 s of audio. ``--baseline seed`` also measures the seed's
configuration (one sequence, util 0.15, max_model_len 512, vLLM's own full-vocabulary
sampling, per-stream 25-frame windows re-decoding 15 lookback frames) in the same run, so
each gain is a ratio of two numbers taken together. ``--json FILE`` appends one entry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOKENS_PER_SECOND = 50.0
PCM_BYTES_PER_SECOND = 22050 * 2  # s16le mono
#: Short: the seed baseline's max_model_len is 512 = prompt + 500 generated tokens.
BENCH_TEXT = "Hello, this is a ten second benchmark."
OLD_LP_FQCN = "device_lp_old:KaniCodebookLogitsProcessor"  # scripts/device_lp_old.py (round 1)


# ----------------------------------------------------------------------------- helpers
def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class StreamResult:
    ttfa_s: float | None = None  # first audio (PCM) byte / chunk
    ttft_s: float | None = None  # first token (engine-only)
    wall_s: float = 0.0
    audio_s: float = 0.0
    tokens: int = 0
    error: str | None = None
    invalid: str | None = None  # restricted stream that did not parse as frames

    @property
    def rtf(self) -> float | None:
        return self.wall_s / self.audio_s if self.audio_s > 0 else None


@dataclass
class LoadResult:
    concurrency: int
    streams: list[StreamResult] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = [s for s in self.streams if s.error is None]
        ttfa = [s.ttfa_s * 1000 for s in ok if s.ttfa_s is not None]
        ttft = [s.ttft_s * 1000 for s in ok if s.ttft_s is not None]
        rtfs = [s.rtf for s in ok if s.rtf is not None]
        audio = sum(s.audio_s for s in ok)
        toks = sum(s.tokens for s in ok)
        return {
            "concurrency": self.concurrency,
            "streams": len(self.streams),
            "errors": len(self.streams) - len(ok),
            "first_error": next((s.error for s in self.streams if s.error), None),
            "invalid_streams": sum(1 for s in self.streams if s.invalid),
            "ttfa_p50_ms": _r(percentile(ttfa, 50)), "ttfa_p95_ms": _r(percentile(ttfa, 95)),
            "ttft_p50_ms": _r(percentile(ttft, 50)), "ttft_p95_ms": _r(percentile(ttft, 95)),
            "worst_rtf": _r(max(rtfs), 4) if rtfs else None,
            "median_rtf": _r(statistics.median(rtfs), 4) if rtfs else None,
            "all_realtime": bool(rtfs) and len(ok) == len(self.streams) and max(rtfs) < 1.0,
            "aggregate_audio_s_per_s": _r(audio / self.wall_s, 2) if self.wall_s else None,
            "aggregate_tok_s": _r(toks / self.wall_s, 1) if self.wall_s else None,
            "wall_s": _r(self.wall_s, 3),
        }


async def run_load(one: Callable[[int], Awaitable[StreamResult]], concurrency: int) -> LoadResult:
    """Start ``concurrency`` streams at once; each ``one(i)`` returns its StreamResult."""
    t0 = time.perf_counter()
    res = await asyncio.gather(*[one(i) for i in range(concurrency)], return_exceptions=True)
    out = LoadResult(concurrency, wall_s=time.perf_counter() - t0)
    for r in res:
        out.streams.append(r if isinstance(r, StreamResult) else StreamResult(error=repr(r)[:300]))
    return out


class GpuMemPeak:
    """Samples nvidia-smi (whole GPU, every process) every 0.1 s; ``peak`` in MiB, and
    ``per_process``: each compute process's peak (pid -> {name, mib})."""

    def __init__(self, interval: float = 0.1) -> None:
        self.peak: int | None = None
        self.baseline: int | None = None
        self.per_process: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._interval = interval
        self.baseline = self._query()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def _query() -> int | None:
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
            return int(q.stdout.split()[0])
        except Exception:  # noqa: BLE001 - no nvidia-smi: no figure
            return None

    def _query_apps(self) -> None:
        try:
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
        except Exception:  # noqa: BLE001
            return
        for line in q.stdout.splitlines():
            try:
                pid, mib = (x.strip() for x in line.split(","))
                mib_i = int(mib)
            except ValueError:
                continue
            e = self.per_process.get(pid)
            if e is None:
                e = self.per_process[pid] = {"name": _proc_name(pid), "mib": 0}
            e["mib"] = max(e["mib"], mib_i)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            v = self._query()
            if v is not None:
                self.peak = v if self.peak is None else max(self.peak, v)
            if n % 5 == 0:
                self._query_apps()
            n += 1
            self._stop.wait(self._interval)

    def stop(self) -> int | None:
        self._stop.set()
        self._t.join()
        return self.peak


def _proc_name(pid: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        return f"{name}: {cmd[:120]}"
    except OSError:
        return "?"


def torch_mem_mib() -> dict[str, float] | None:
    """This process's torch CUDA allocator figures (MiB), or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        m = 1 << 20
        return {"allocated": round(torch.cuda.memory_allocated() / m, 1),
                "reserved": round(torch.cuda.memory_reserved() / m, 1),
                "max_allocated": round(torch.cuda.max_memory_allocated() / m, 1),
                "max_reserved": round(torch.cuda.max_memory_reserved() / m, 1)}
    except Exception:  # noqa: BLE001
        return None


def device_name() -> str:
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=5)
        if q.returncode == 0 and q.stdout.strip():
            return q.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        pass
    return "cpu"


# ----------------------------------------------------------------------------- assets
def ensure_assets(root: str | Path) -> tuple[Path, Path]:
    """Full-size random-weight model folder + codec .nemo under ``root`` (built if missing,
    in a subprocess so that no torch threads exist in the process that later starts vLLM)."""
    root = Path(root)
    model, codec = root / "model", root / "codec.nemo"
    if not (model / "config.json").exists() or not codec.exists():
        code = "import sys; from kanitts.bench import build_full_size; build_full_size(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(root)], check=True)
    return model, codec


def build_full_size(root: str | Path) -> None:
    try:
        from kanitts.tiny import make_tiny
    except ImportError:  # pragma: no cover - older trees
        make_tiny = None
    if make_tiny is not None:
        make_tiny(root, full_size=True)
        return
    _build_full_size_fallback(Path(root))  # pragma: no cover


def _build_full_size_fallback(root: Path) -> None:  # pragma: no cover - used before make-tiny existed
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Lfm2Config, Lfm2ForCausalLM, PreTrainedTokenizerFast

    from kanitts.codec import write_tiny_nemo
    from kanitts.tokens import MODEL_VOCAB_SIZE

    out = root / "model"
    lt = ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]
    cfg = Lfm2Config(vocab_size=MODEL_VOCAB_SIZE, hidden_size=1024, intermediate_size=6656, num_hidden_layers=16,
                     num_attention_heads=16, num_key_value_heads=8, layer_types=lt, max_position_embeddings=128000,
                     norm_eps=1e-5, conv_L_cache=3, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
                     block_auto_adjust_ff_dim=True, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                     pad_token_id=0)
    torch.manual_seed(0)
    Lfm2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    vocab = {"<unk>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|startoftext|>",
                            eos_token="<|endoftext|>").save_pretrained(out)
    write_tiny_nemo(root / "codec.nemo", full_size=True)


def bench_prompt(i: int = 0) -> list[int]:
    from kanitts.engine.vllm_backend import warmup_prompt

    return warmup_prompt(1000 + i)


# ----------------------------------------------------------------------------- HTTP path
async def http_stream(client: Any, base_url: str, tokens: int, i: int = 0, voice: str = "andrew",
                      text: str = BENCH_TEXT) -> StreamResult:
    """One streaming POST /v1/audio/speech (raw PCM); TTFA = first non-empty body chunk."""
    body = {"model": "tts-1", "input": f"{text} ({i})", "voice": voice, "response_format": "pcm",
            "stream_format": "audio", "max_tokens": tokens, "min_tokens": tokens}
    r = StreamResult()
    t0 = time.perf_counter()
    nbytes = 0
    try:
        async with client.stream("POST", base_url.rstrip("/") + "/v1/audio/speech", json=body) as resp:
            if resp.status_code != 200:
                r.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return r
            async for chunk in resp.aiter_bytes():
                if chunk:
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
                    nbytes += len(chunk)
    except Exception as e:  # noqa: BLE001
        r.error = repr(e)[:300]
    r.wall_s = time.perf_counter() - t0
    r.audio_s = nbytes / PCM_BYTES_PER_SECOND
    return r


#: Streams per client process: one Python (httpx) event loop opening 256 streams at once
#: adds ~250 ms to its own measured TTFA (H100 run 5: client 608 ms vs the server's 354 ms
#: log), which is the client's cost, not the server's; real listeners are separate clients.
STREAMS_PER_CLIENT_PROCESS = 32


def client_processes(concurrency: int, requested: int | None = None) -> int:
    """How many client processes drive ``concurrency`` streams (``requested`` wins)."""
    if requested is not None:
        return max(1, min(requested, concurrency))
    cap = max(1, min(16, (os.cpu_count() or 2) // 2))
    return max(1, min(cap, -(-concurrency // STREAMS_PER_CLIENT_PROCESS)))


def _http_load_part(base_url: str, first: int, n: int, tokens: int, start_at: float) -> tuple[list[StreamResult], float]:
    """One client process's share: ``n`` streams starting at wall-clock ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    lr = asyncio.run(http_load(base_url, n, tokens, processes=1, first=first))
    return lr.streams, time.time()


def _warm_client_process() -> bool:
    import httpx  # noqa: F401 - import cost paid before the timed start

    return True


async def http_load_processes(base_url: str, concurrency: int, tokens: int, processes: int) -> LoadResult:
    """``concurrency`` streams from ``processes`` client processes started together."""
    import concurrent.futures
    import multiprocessing as mp

    shares = [concurrency // processes + (1 if k < concurrency % processes else 0) for k in range(processes)]
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        await asyncio.gather(*[loop.run_in_executor(pool, _warm_client_process) for _ in range(processes)])
        start_at = time.time() + 0.3
        firsts = [sum(shares[:k]) for k in range(processes)]
        parts = await asyncio.gather(*[
            loop.run_in_executor(pool, _http_load_part, base_url, f, n, tokens, start_at)
            for f, n in zip(firsts, shares) if n
        ])
    out = LoadResult(concurrency, wall_s=max(end for _, end in parts) - start_at)
    for streams, _ in parts:
        out.streams.extend(streams)
    return out


async def http_load(base_url: str, concurrency: int, tokens: int, *, client: Any = None,
                    processes: int | None = None, first: int = 0) -> LoadResult:
    """``concurrency`` simultaneous streams (request texts numbered from ``first``); above 32
    they come from several client processes (:func:`client_processes`) unless a ``client``
    is given."""
    import httpx

    if client is None:
        procs = client_processes(concurrency, processes)
        if procs > 1:
            return await http_load_processes(base_url, concurrency, tokens, procs)
    own = client is None
    if own:
        limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=30.0), limits=limits)
    try:
        return await run_load(lambda i: http_stream(client, base_url, tokens, first + i), concurrency)
    finally:
        if own:
            await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_subprocess(model: Path, codec: Path, mode: str, port: int, extra: Sequence[str] = (),
                     timeout: float = 400.0, log_path: str | None = None, env: dict[str, str] | None = None,
                     backend: str = "vllm"):
    cmd = [sys.executable, "-m", "kanitts.cli", "serve", "--model", str(model), "--codec", str(codec),
           "--backend", backend, "--mode", mode, "--port", str(port), *extra]
    log = open(log_path or os.devnull, "a")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_ready(base_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    t_end = time.time() + timeout
    while time.time() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(base_url + "/ready", timeout=2.0)  # 200 once every engine is warm
            if r.status_code == 200 and r.json().get("ready") is True:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f}s")


# ----------------------------------------------------------------------------- engine path
def load_codec(codec_path: str | Path | None, max_streams: int, first_chunk_frames: int = 1,
               chunk_frames: int = 8) -> Any:
    """A CodecWorker on CUDA (bf16, falling back to fp32), or None when unavailable."""
    if codec_path is None:
        return None
    try:
        import torch

        from kanitts.codec import CodecWorker, NanoCodec
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    codec = None
    for dtype in (torch.bfloat16, torch.float32):
        try:
            codec = NanoCodec.from_pretrained(codec_path, device=dev, dtype=dtype)
            codec.decode(torch.zeros(1, 4, 2, dtype=torch.long, device=dev))
            break
        except Exception:  # noqa: BLE001
            codec = None
    if codec is None:
        return None
    worker = CodecWorker(codec, max_streams=max_streams, first_chunk_frames=first_chunk_frames,
                         chunk_frames=chunk_frames)
    warm = getattr(worker, "warmup", None)
    if warm is not None:  # capture the batched codec's CUDA graphs before timing anything
        t0 = time.perf_counter()
        try:
            n = warm()
            _log("codec_warmup", graphs=n, s=round(time.perf_counter() - t0, 1))
        except Exception as e:  # noqa: BLE001
            _log("codec_warmup_failed", error=repr(e)[:300])
    return worker


async def engine_stream(backend: Any, tokens: int, i: int, codec: Any = None, *, restrict: str | None = None,
                        seed_windows: Any = None) -> StreamResult:
    """One stream through the engine (and the codec when given)."""
    from kanitts.engine.base import SamplingParams
    from kanitts.tokens import FrameParser

    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, seed=i)
    r = StreamResult()
    t0 = time.perf_counter()
    parser = FrameParser()
    try:
        kw: dict[str, Any] = {"restrict": restrict} if restrict else {}
        if restrict == "sample_old":  # the round-1 processor (benchmarks only)
            from kanitts.engine.vllm_backend import sampling_kwargs

            ea = sampling_kwargs(params, "sample")["extra_args"]
            kw = {"restrict": "sample", "vllm_overrides": {"extra_args": {"kanitts_old": ea["kanitts"]}}}
        toks = backend.stream(bench_prompt(i), params, **kw)
        if codec is None and seed_windows is None:
            check = FrameParser() if (restrict or getattr(backend, "restrict", "off")) != "off" else None
            async for ids in toks:
                if r.ttft_s is None:
                    r.ttft_s = time.perf_counter() - t0
                r.tokens += len(ids)
                if check is not None:
                    try:
                        check.feed(ids)
                    except Exception as e:  # noqa: BLE001 - a restricted stream must parse
                        r.invalid = repr(e)[:200]
                        check = None
            r.audio_s = r.tokens / TOKENS_PER_SECOND
        elif seed_windows is not None:
            if callable(seed_windows):
                seed_windows = seed_windows()
            async for ids in toks:
                if r.ttft_s is None:
                    r.ttft_s = time.perf_counter() - t0
                r.tokens += len(ids)
                for _ in seed_windows.feed(_frames_lenient(parser, ids)):
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
            for _ in seed_windows.flush():
                if r.ttfa_s is None:
                    r.ttfa_s = time.perf_counter() - t0
            r.audio_s = seed_windows.audio_s
        else:
            async def frames() -> AsyncIterator[list[list[int]]]:
                async for ids in toks:
                    if r.ttft_s is None:
                        r.ttft_s = time.perf_counter() - t0
                    r.tokens += len(ids)
                    f = _frames_lenient(parser, ids)
                    if f:
                        yield f

            samples = 0
            async for pcm in codec.decode(frames()):
                if len(pcm):
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
                    samples += len(pcm)
            r.audio_s = samples / 22050.0
    except Exception as e:  # noqa: BLE001
        r.error = repr(e)[:300]
    r.wall_s = time.perf_counter() - t0
    return r


def _frames_lenient(parser: Any, ids: list[int]) -> list[list[int]]:
    """Frames for the codec. Unconstrained sampling (the seed) can emit invalid tokens on
    random weights; like the seed, such streams are decoded code by code modulo 4032."""
    from kanitts.tokens import AUDIO_TOKEN_END, AUDIO_TOKEN_START, CODEBOOK_SIZE, MalformedStreamError

    try:
        return parser.feed(ids)
    except MalformedStreamError:
        buf = getattr(parser, "_lenient", [])
        buf += [(t - AUDIO_TOKEN_START) % CODEBOOK_SIZE for t in ids if AUDIO_TOKEN_START <= t < AUDIO_TOKEN_END]
        out = [buf[i:i + 4] for i in range(0, len(buf) - len(buf) % 4, 4)]
        parser._lenient = buf[len(out) * 4:]
        return out


class SeedWindows:
    """The seed's codec schedule for one stream: every 25 new frames, decode a window of
    those frames plus 15 lookback frames (one-shot, synchronous) and keep the new part."""

    def __init__(self, codec: Any, chunk: int = 25, lookback: int = 15) -> None:
        self.codec, self.chunk, self.lookback = codec, chunk, lookback
        self.frames: list[list[int]] = []
        self.done = 0
        self.audio_s = 0.0

    def _decode(self, end: int) -> Any:
        import torch

        start = max(0, self.done - self.lookback)
        codes = torch.tensor(self.frames[start:end], dtype=torch.long).T.unsqueeze(0)
        pcm = self.codec.decode(codes.to(self.codec.device))
        if pcm.is_cuda:
            torch.cuda.synchronize()
        keep = (end - self.done) * 1764
        self.audio_s += keep / 22050.0
        self.done = end
        return pcm[0, -keep:]

    def feed(self, frames: list[list[int]]) -> list[Any]:
        self.frames += frames
        out = []
        while len(self.frames) - self.done >= self.chunk:
            out.append(self._decode(self.done + self.chunk))
        return out

    def flush(self) -> list[Any]:
        return [self._decode(len(self.frames))] if len(self.frames) > self.done else []


async def codec_throughput(worker: Any, streams: int, frames: int = 125) -> float | None:
    """Codec alone: ``streams`` concurrent random-code streams through the CodecWorker;
    audio seconds decoded per wall second."""
    import random

    if worker is None:
        return None

    async def one(i: int) -> float:
        rnd = random.Random(i)

        async def fr() -> AsyncIterator[list[list[int]]]:
            for _ in range(0, frames, 4):
                yield [[rnd.randrange(4032) for _ in range(4)] for _ in range(4)]
                await asyncio.sleep(0)

        n = 0
        async for pcm in worker.decode(fr()):
            n += len(pcm)
        return n / 22050.0

    await asyncio.gather(*[one(i) for i in range(min(streams, 8))])  # warm
    t0 = time.perf_counter()
    audio = await asyncio.gather(*[one(i) for i in range(streams)])
    return sum(audio) / (time.perf_counter() - t0)


async def _single_stream_rtf(backend: Any, tokens: int, reps: int, **kw: Any) -> dict[str, Any]:
    runs = []
    for i in range(reps):
        r = await engine_stream(backend, tokens, i, **kw)
        if r.error:
            return {"error": r.error}
        runs.append(r)
    rtfs = [r.wall_s / (r.tokens / TOKENS_PER_SECOND) for r in runs]
    out = {"rtf": round(statistics.median(rtfs), 4), "rtf_runs": [round(x, 4) for x in rtfs],
           "tok_s": round(tokens / statistics.median([r.wall_s for r in runs]), 1),
           "ms_per_token": round(1000 * statistics.median([r.wall_s for r in runs]) / tokens, 3)}
    if any(r.invalid for r in runs):
        out["invalid"] = next(r.invalid for r in runs if r.invalid)
    if any(r.ttfa_s for r in runs):
        out["ttfa_ms"] = round(statistics.median([r.ttfa_s * 1000 for r in runs if r.ttfa_s]), 1)
        out["rtf_with_codec"] = round(statistics.median([r.rtf for r in runs if r.rtf]), 4)
    out["ttft_ms"] = round(statistics.median([r.ttft_s * 1000 for r in runs if r.ttft_s]), 1)
    return out


def _log(msg: str, **kw: Any) -> None:
    line = json.dumps({"t": time.strftime("%H:%M:%S"), "msg": msg, **kw})
    print("BENCH " + line, flush=True)


async def engine_bench(args: argparse.Namespace, model: Path, codec_path: Path | None,
                       res: dict[str, Any] | None = None) -> dict[str, Any]:
    """Engine-level figures; ``res`` is filled as phases finish (kept if a later one fails)."""
    from kanitts.engine.modes import engine_args_for, seed_baseline_args
    from kanitts.engine.vllm_backend import VllmBackend

    tokens = args.tokens
    res = res if res is not None else {}
    res.update({"path": "engine", "tokens": tokens})
    mem = GpuMemPeak()
    res["gpu_mb_before"] = mem.baseline
    overrides = json.loads(args.engine_args) if args.engine_args else {}

    if args.baseline == "seed":
        b = VllmBackend(str(model), seed_baseline_args(str(model)), restrict="off", force_opening=False)
        t = time.time()
        await b.start()
        _log("seed_started", s=round(time.time() - t, 1))
        res["baseline"] = await _single_stream_rtf(b, tokens, 3, restrict="off")
        res["baseline_single_stream_rtf"] = res["baseline"].get("rtf")
        codec_seed = load_codec(codec_path, 1)
        if codec_seed is not None:
            sw_res = await _single_stream_rtf(b, tokens, 2, restrict="off",
                                              seed_windows=lambda: SeedWindows(codec_seed.codec))
            res["baseline_with_seed_codec"] = sw_res
            codec_seed.close()
            del codec_seed
        _log("seed", **res["baseline"])
        await b.close()
        del b
        import gc

        gc.collect()
        await asyncio.sleep(3)

    eargs = engine_args_for(args.mode, str(model), overrides)
    old_lp = bool(args.compare_restrict and args.restrict != "off" and _old_lp_available())
    if old_lp:
        eargs["logits_processors"] = [*(eargs.get("logits_processors") or []), OLD_LP_FQCN]
    res["engine_args"] = {k: v for k, v in eargs.items() if k != "model"}
    max_seqs = int(eargs.get("max_num_seqs") or 256)
    b = VllmBackend(str(model), eargs, restrict=args.restrict)
    t = time.time()
    try:
        await b.start()
    except Exception as e:  # noqa: BLE001
        res["error"] = f"engine start failed: {e!r}"[:2000]
        res["peak_gpu_mb"] = mem.stop()
        return res
    res["engine_start_s"] = round(time.time() - t, 1)
    res["warmup_s"] = _r(b.warmup_seconds)
    _log("started", mode=args.mode, start_s=res["engine_start_s"], warmup_s=res["warmup_s"])

    res["single_stream"] = await _single_stream_rtf(b, tokens, 3)
    res["single_stream_rtf"] = res["single_stream"].get("rtf")
    _log("single", **res["single_stream"])
    if args.restrict != "off":
        res["single_stream_unrestricted"] = await _single_stream_rtf(b, tokens, 3, restrict="off")
        _log("single_unrestricted", **res["single_stream_unrestricted"])
    if args.compare_restrict and args.restrict != "off":
        # every sampling path, one stream, same engine, back to back
        singles: dict[str, Any] = {args.restrict: res["single_stream"], "off": res["single_stream_unrestricted"]}
        for m in ("mask", *(["sample_old"] if old_lp else [])):
            singles[m] = await _single_stream_rtf(b, tokens, 3, restrict=m)
            _log("single_mode", mode=m, **singles[m])
        singles[args.restrict + "_again"] = await _single_stream_rtf(b, tokens, 3)
        _log("single_mode", mode=args.restrict + "_again", **singles[args.restrict + "_again"])
        res["single_stream_by_mode"] = singles
    if args.baseline == "seed" and res.get("baseline_single_stream_rtf") and res["single_stream_rtf"]:
        res["speedup_vs_seed"] = round(res["baseline_single_stream_rtf"] / res["single_stream_rtf"], 2)

    concs = [c for c in args.concurrency if c <= max_seqs] or [max_seqs]
    loads: dict[str, Any] = {}
    for c in concs:
        lr = await run_load(lambda i: engine_stream(b, tokens, i), c)
        loads[str(c)] = lr.summary()
        _log("load_lm", **loads[str(c)])
    res["lm_load"] = loads

    if args.compare_restrict and max_seqs >= 2:
        c = min(256, max_seqs)
        cmp: dict[str, Any] = {}
        for mode in ("sample", *(["sample_old"] if old_lp else []), "off", *(["mask"] if args.compare_mask else [])):
            lr = await run_load(lambda i, m=mode: engine_stream(b, tokens, i, restrict=m), c)
            s = lr.summary()
            cmp[mode] = {"aggregate_tok_s": s["aggregate_tok_s"], "wall_s": s["wall_s"], "errors": s["errors"],
                         "invalid_streams": s["invalid_streams"],
                         "per_stream_tok_s": _r(s["aggregate_tok_s"] / c if s["aggregate_tok_s"] else None)}
            _log("restrict", batch=c, mode=mode, **cmp[mode])
        res["restrict_compare"] = {"batch": c, **cmp}
        if cmp["off"]["aggregate_tok_s"]:
            res["restrict_speedup_batch"] = round(cmp["sample"]["aggregate_tok_s"] / cmp["off"]["aggregate_tok_s"], 2)

    # codec included
    worker = (load_codec(codec_path, max_streams=max(max_seqs, 1), first_chunk_frames=args.first_chunk_frames)
              if not args.no_codec else None)
    res["first_chunk_frames"] = args.first_chunk_frames
    res["codec"] = worker is not None
    if worker is not None:
        res["codec_dtype"] = str(worker.codec.dtype)
        with_codec: dict[str, Any] = {}
        r1 = await _single_stream_rtf(b, tokens, 3, codec=worker)
        with_codec["single"] = r1
        _log("single_codec", **r1)
        best = 0
        for c in sorted(set(concs + [c for c in args.realtime_levels if c <= max_seqs])):
            lr = await run_load(lambda i: engine_stream(b, tokens, i, codec=worker), c)
            s = lr.summary()
            with_codec[str(c)] = s
            _log("load_codec", **s)
            if s["all_realtime"]:
                best = max(best, c)
        res["with_codec"] = with_codec
        res["max_realtime_streams"] = best
        try:
            res["codec_audio_s_per_s"] = _r(await codec_throughput(worker, min(256, max_seqs)), 1)
        except Exception as e:  # noqa: BLE001
            res["codec_alone_error"] = repr(e)[:300]
        _log("codec_alone", audio_s_per_s=res["codec_audio_s_per_s"])
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
    res["gpu_mb_engine_running"] = GpuMemPeak._query()
    await b.close()
    res["peak_gpu_mb"] = mem.stop()
    res["gpu_per_process_mib"] = mem.per_process
    return res


def _old_lp_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(OLD_LP_FQCN.split(":")[0]) is not None
    except (ImportError, ValueError):
        return False


async def http_bench(args: argparse.Namespace, model: Path, codec_path: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"path": "http", "tokens": args.tokens}
    mem = GpuMemPeak()

    async def measure(base: str, concs: Sequence[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # untimed warm pass per level: the server captures the codec's CUDA graph of each
        # batch bucket on first use
        t0 = time.perf_counter()
        for c in sorted({1, *concs}):
            await http_load(base, c, 48)
        _log("http_warm", s=round(time.perf_counter() - t0, 1))
        single = [await http_stream_once(base, args.tokens, i) for i in range(3)]
        rtfs = [s.rtf for s in single if s.rtf]
        out["single_stream_rtf"] = round(statistics.median(rtfs), 4) if rtfs else None
        for c in concs:
            lr = await http_load(base, c, args.tokens, processes=args.client_procs)
            out[str(c)] = {**lr.summary(), "client_processes": client_processes(c, args.client_procs)}
            _log("http_load", **out[str(c)])
        return out

    levels = sorted(set(args.concurrency + args.realtime_levels))
    # codec slots = the most concurrent streams measured (the server's default, 64, cost the
    # low_vram server ~4 GiB of codec memory on the H100)
    env = {"KANITTS_CODEC__FIRST_CHUNK_FRAMES": str(args.first_chunk_frames),
           "KANITTS_CODEC__MAX_STREAMS": str(min(1024, max(levels)))}
    if args.baseline == "seed":
        # the seed's engine configuration (one sequence, 15% of the card, len 512) behind our
        # server and streaming codec; its vLLM full-vocabulary sampler cannot be served here
        # (random weights emit invalid frames, which the server rejects): engine-only measures it
        # max_model_len 1024, not the seed's 512: an HTTP prompt (~40 tokens with the
        # full-size test tokenizer) + 500 tokens does not fit in 512 (measured: the stream was
        # cut at 473 tokens); the length limit changes capacity only, not speed
        with serve_subprocess(model, codec_path, "low_vram", free_port(),
                              ["--max-num-seqs", "1", "--gpu-memory-utilization", "0.15", "--max-model-len", "1024",
                               "--max-num-batched-tokens", "1024", "--stream-interval", "1"], log_path=args.server_log, env=env,
                              backend=args.backend) as base:
            res["baseline"] = await measure(base, [])
            res["baseline_single_stream_rtf"] = res["baseline"]["single_stream_rtf"]
        await asyncio.sleep(3)
        mem_base = mem.peak
        res["baseline_peak_gpu_mb"] = mem_base
        mem.stop()
        mem = GpuMemPeak()
    extra = []
    for k, v in (json.loads(args.engine_args) if args.engine_args else {}).items():
        flag = f"--{k.replace('_', '-')}"
        if isinstance(v, bool):  # store_true switches (e.g. --enforce-eager)
            extra += [flag] if v else []
        else:
            extra += [flag, str(v)]
    res["first_chunk_frames"] = args.first_chunk_frames
    if args.url:
        m = await measure(args.url, args.concurrency)
    else:
        with serve_subprocess(model, codec_path, args.mode, free_port(), extra, log_path=args.server_log,
                              env=env, backend=args.backend) as base:
            m = await measure(base, levels)
            res["gpu_mb_server_idle"] = GpuMemPeak._query()
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
                res["codec_audio_s_per_s"] = _r(await codec_throughput(worker, min(256, max(levels))), 1)
                res["codec_alone_streams"] = min(256, max(levels))
            finally:
                worker.close()
    return res


async def http_stream_once(base: str, tokens: int, i: int) -> StreamResult:
    import httpx

    async with httpx.AsyncClient(timeout=600.0) as c:
        return await http_stream(c, base, tokens, i)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kanitts bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: build full-size random weights under --assets)")
    p.add_argument("--codec", help="NanoCodec .nemo (default: full-size random under --assets)")
    p.add_argument("--assets", default=os.environ.get("KANITTS_BENCH_ASSETS", "/tmp/kanitts-bench"),
                   help="where full-size random-weight assets are built if missing")
    p.add_argument("--mode", default="high_performance", help="performance mode to measure")
    p.add_argument("--baseline", choices=["none", "seed"], default="none")
    p.add_argument("--engine-only", action="store_true", help="drive VllmBackend in-process, no HTTP")
    p.add_argument("--url", help="measure an already running server (HTTP path)")
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 256])
    p.add_argument("--realtime-levels", type=lambda s: [int(x) for x in s.split(",") if x], default=[128, 256, 384, 512])
    p.add_argument("--restrict", choices=["sample", "mask", "off"], default="sample")
    p.add_argument("--compare-restrict", action="store_true",
                   help="engine-only: batch-256 throughput with restricted sampling, without, and mask-only")
    p.add_argument("--compare-mask", action="store_true", help="with --compare-restrict: mask-only at batch 256 too")
    p.add_argument("--first-chunk-frames", type=int, default=1, help="codec frames in the first audio chunk")
    p.add_argument("--label", help="free-form label stored in the JSON entry")
    p.add_argument("--backend", default="vllm", help="HTTP path: server backend (torch: CPU smoke tests)")
    p.add_argument("--codec-alone", action="store_true", help="HTTP path: also time the codec alone afterwards")
    p.add_argument("--no-codec", action="store_true")
    p.add_argument("--engine-args", help="JSON dict of engine-argument overrides")
    p.add_argument("--client-procs", type=int,
                   help=f"HTTP path: client processes (default: one per {STREAMS_PER_CLIENT_PROCESS} streams, "
                        "at most half the cores)")
    p.add_argument("--server-log", help="HTTP path: file for the server's output")
    p.add_argument("--json", help="append the result entry to this JSON file (a list)")
    return p


def append_json(path: str | Path, entry: dict[str, Any]) -> None:
    path = Path(path)
    data: list[Any] = []
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
            data = loaded if isinstance(loaded, list) else [loaded]
        except ValueError:
            data = []
    data.append(entry)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = Path(args.model) if args.model else None
    codec = Path(args.codec) if args.codec else None
    if model is None or (codec is None and not args.no_codec):
        m, c = ensure_assets(args.assets)
        model = model or m
        codec = codec or c
    entry: dict[str, Any] = {"device": device_name(), "mode": args.mode, "date": time.strftime("%Y-%m-%d %H:%M"),
                             "baseline": args.baseline}
    if args.label:
        entry["label"] = args.label
    partial: dict[str, Any] = {}
    try:
        if args.engine_only:
            asyncio.run(engine_bench(args, model, None if args.no_codec else codec, partial))
        else:
            partial.update(asyncio.run(http_bench(args, model, codec)))
    except Exception as e:  # noqa: BLE001
        entry["error"] = repr(e)[:2000]
    entry.update(partial)
    entry.setdefault("baseline_single_stream_rtf", None)
    for k in ("single_stream_rtf", "ttfa_p50_ms", "ttfa_p95_ms", "ttfa_p50_ms_256", "max_realtime_streams",
              "peak_gpu_mb", "codec_audio_s_per_s"):
        entry.setdefault(k, None)
    print("RESULT " + json.dumps(entry), flush=True)
    if args.json:
        append_json(args.json, entry)
    return 1 if "error" in entry else 0


if __name__ == "__main__":
    sys.exit(main())
