"""The seed baseline, emulated so that each gain is a ratio of two numbers taken in one run.

The seed's configuration: one sequence at a time, 15% of the card, max_model_len 512
(:func:`kanitts.engine.modes.seed_baseline_args`), vLLM's own full-vocabulary sampling and
no teacher-forced opening, and per-stream 25-frame windows re-decoding 15 lookback frames
(:class:`SeedWindows`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kanitts.bench.codec import load_codec
from kanitts.bench.engine_load import single_stream_rtf
from kanitts.bench.report import bench_line
from kanitts.bench.server_proc import free_port, serve_subprocess

#: Server flags of the HTTP baseline: the seed's engine configuration behind our server and
#: streaming codec. Its vLLM full-vocabulary sampler cannot be served here (random weights
#: emit invalid frames, which the server rejects): the engine-only path measures it.
#: max_model_len 1024, not the seed's 512: an HTTP prompt (~40 tokens with the full-size
#: test tokenizer) + 500 tokens does not fit in 512 (measured: the stream was cut at 473
#: tokens); the length limit changes capacity only, not speed.
SEED_SERVE_FLAGS = ("--max-num-seqs", "1", "--gpu-memory-utilization", "0.15", "--max-model-len", "1024",
                    "--max-num-batched-tokens", "1024", "--stream-interval", "1")


class SeedWindows:
    """The seed's codec schedule for one stream: every ``chunk`` new frames, decode a window
    of those frames plus ``lookback`` earlier ones (one-shot, synchronous) and keep the new
    part. ``codec``: a NanoCodec (``decode([1, 4, T] long) -> [1, T*1764]`` float PCM)."""

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
        """Add frames (each 4 codes); the PCM windows that became due."""
        self.frames += frames
        out = []
        while len(self.frames) - self.done >= self.chunk:
            out.append(self._decode(self.done + self.chunk))
        return out

    def flush(self) -> list[Any]:
        """The last, partial window (if any frames are left)."""
        return [self._decode(len(self.frames))] if len(self.frames) > self.done else []


async def seed_engine_baseline(model: Path, codec_path: Path | None, tokens: int, res: dict[str, Any]) -> None:
    """Engine-level seed figures into ``res`` (``baseline``, ``baseline_single_stream_rtf``,
    ``baseline_with_seed_codec``); the engine is closed and collected afterwards."""
    from kanitts.engine.modes import seed_baseline_args
    from kanitts.engine.vllm_backend import VllmBackend

    b = VllmBackend(str(model), seed_baseline_args(str(model)), restrict="off", force_opening=False)
    t = time.time()
    await b.start()
    bench_line("seed_started", s=round(time.time() - t, 1))
    res["baseline"] = await single_stream_rtf(b, tokens, 3)
    res["baseline_single_stream_rtf"] = res["baseline"].get("rtf")
    codec_seed = load_codec(codec_path, 1)
    if codec_seed is not None:
        sw_res = await single_stream_rtf(b, tokens, 2, seed_windows=lambda: SeedWindows(codec_seed.codec))
        res["baseline_with_seed_codec"] = sw_res
        codec_seed.close()
        del codec_seed
    bench_line("seed", **res["baseline"])
    await b.close()
    del b
    gc.collect()
    await asyncio.sleep(3)


@contextlib.contextmanager
def seed_server(model: Path, codec_path: Path, *, log_path: str | None, env: dict[str, str],
                backend: str) -> Iterator[str]:
    """``kanitts serve`` (low_vram) with :data:`SEED_SERVE_FLAGS`; yields its base URL."""
    with serve_subprocess(model, codec_path, "low_vram", free_port(), list(SEED_SERVE_FLAGS), log_path=log_path,
                          env=env, backend=backend) as base:
        yield base
