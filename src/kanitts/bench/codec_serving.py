"""The serving codec at scale: throughput, memory and warm-up of :class:`~kanitts.codec.CodecWorker`
against the bare pool step, per number of streams, in one run.

    PYTHONPATH=src python -m kanitts.bench.codec_serving --levels 4,64,256,512,1024

On CUDA: the real NanoCodec's sizes (864 channels, random weights) in bf16, built in memory;
``--tiny`` (and any run without CUDA): the tiny codec in float32 on the CPU, which is how
the tests keep this runnable. Each level builds a fresh worker as the server does
(``max_streams`` = the level, chunking and ``max_batch_frames`` from
:class:`~kanitts.config_sections.CodecSettings`), times its warm-up (graph capture; the
first level also pays the compiles, so run one level alone for a cold start), then:

* ``audio_s_per_s``: the level's streams, ``--frames`` each, all frames ready and handed
  over one frame per item (the engine's granularity), through ``worker.decode``: the
  serving path, host work included;
* ``pool_audio_s_per_s``: the same worker's decoder stepped directly for all the level's
  slots, ``chunk_frames`` frames per step (the calls :meth:`plan_calls` makes), synchronised
  per step: the device ceiling the worker is measured against;
* memory: ``torch.cuda.max_memory_reserved`` / ``max_memory_allocated`` since the level
  began (warm-up included) and nvidia-smi's whole-GPU figure after it, next to the
  analytic activation bytes of the largest call (:mod:`kanitts.codec.memory`).

Prints one ``RESULT {json}`` line per level (the keys above plus ``level``, ``warmup_s``,
``first_capture_s`` (compiles included), ``other_captures_s``, ``graphs``, the worker's
``steps`` and ``batched_calls``); a level that fails prints its error in the line and the
run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from kanitts.bench.report import result_line

logger = logging.getLogger(__name__)


def smi_used_mib() -> int | None:
    """GPU memory used on the card (all processes), MiB, from nvidia-smi; None without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             check=False, capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]) if out else None


def _sig(x: float) -> float:
    """``x`` to 4 significant digits (a slow CPU dry run's rates stay above 0)."""
    return float(f"{x:.4g}")


def build_codec(tiny: bool, seed: int = 0) -> Any:
    """A random-weight NanoCodec: real sizes in bf16 on CUDA, or the tiny one in float32 on
    the CPU (``tiny`` or no CUDA)."""
    import torch

    from kanitts.codec.nanocodec import NanoCodec
    from kanitts.codec.tiny_nemo import randomize_codec, tiny_codec_config

    cuda = torch.cuda.is_available() and not tiny
    codec = NanoCodec(tiny_codec_config(full_size=cuda))
    randomize_codec(codec, seed)
    return codec.to("cuda", torch.bfloat16).eval() if cuda else codec.eval()


async def _serve(worker: Any, streams: int, frames: int) -> float:
    """``streams`` concurrent streams of ``frames`` frames through the worker; audio s/s."""
    import random

    async def one(i: int) -> int:
        rnd = random.Random(i)
        codes = [[rnd.randrange(worker.codec.codebook_size) for _ in range(worker.codec.num_codebooks)]
                 for _ in range(frames)]

        async def produce() -> AsyncIterator[list[list[int]]]:
            for frame in codes:
                yield [frame]

        n = 0
        async for pcm in worker.decode(produce()):
            n += len(pcm)
        return n

    t0 = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in range(streams)))
    wall = time.perf_counter() - t0
    if sum(samples) != streams * frames * worker.codec.samples_per_frame:
        raise RuntimeError(f"decoded {sum(samples)} samples, expected {streams * frames * worker.codec.samples_per_frame}")
    return sum(samples) / worker.sample_rate / wall


def _pool_rate(pool: Any, streams: int, frames: int, min_s: float = 1.0) -> float:
    """The bare decoder step over ``streams`` slots x ``frames`` frames; audio s/s (median step)."""
    import statistics

    import torch

    dev = pool.device
    gen = torch.Generator().manual_seed(streams)
    sets = [torch.randint(0, pool.codec.codebook_size, (streams, frames, pool.num_codebooks), generator=gen).to(dev)
            for _ in range(3)]
    slots = list(range(streams))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()  # the codes are on the device before the pool's stream reads them
    pool.reset(slots)
    for s in sets[:2]:
        pool.step_slots(slots, s)
    sync()
    times: list[float] = []
    t_all = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - t_all < min_s and len(times) < 50):
        t = time.perf_counter()
        pool.step_slots(slots, sets[len(times) % 3])
        sync()
        times.append(time.perf_counter() - t)
    audio = streams * frames * pool.samples_per_frame / pool.codec.sample_rate
    return audio / statistics.median(times)


def run_level(codec: Any, streams: int, frames: int, max_batch_frames: int | None = None,
              pool_min_s: float = 1.0) -> dict[str, Any]:
    """One level: a fresh worker of ``streams`` slots (settings' chunking and cap unless
    ``max_batch_frames`` is given), warmed, served, its pool stepped; the figures."""
    import torch

    from kanitts.codec import CodecWorker
    from kanitts.codec.memory import step_bytes
    from kanitts.config_sections import CodecSettings

    s = CodecSettings()
    cap = s.max_batch_frames if max_batch_frames is None else max_batch_frames
    cuda = codec.device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    row: dict[str, Any] = {"level": streams, "frames_per_stream": frames, "max_batch_frames": cap,
                           "dtype": str(codec.dtype).replace("torch.", ""), "device": str(codec.device)}
    worker = CodecWorker(codec, max_streams=streams, first_chunk_frames=s.first_chunk_frames,
                         chunk_frames=s.chunk_frames, fast=s.fast, max_batch_frames=cap)
    try:
        t0 = time.perf_counter()
        row["graphs"] = worker.warmup()
        row["warmup_s"] = round(time.perf_counter() - t0, 2)
        pool = worker._pool
        captures = list(getattr(pool, "capture_seconds", {}).values())  # capture order: largest first
        # The first capture also pays the compiles (dynamo, Triton) and cuDNN's autotuning of its shapes.
        row["first_capture_s"] = captures[0] if captures else None
        row["other_captures_s"] = round(sum(captures[1:]), 2)
        if cuda:
            row["reserved_after_warmup_gib"] = round(torch.cuda.memory_reserved() / 2**30, 3)
        audio = asyncio.run(_serve(worker, streams, frames))
        row["audio_s_per_s"] = _sig(audio)
        stats = worker.stats
        row["steps"], row["batched_calls"] = stats.steps, stats.batched_calls
        with torch.inference_mode():
            row["pool_audio_s_per_s"] = _sig(_pool_rate(pool, streams, s.chunk_frames, pool_min_s))
        largest = max((b * f for b, f in pool.graph_shapes()), default=streams * s.chunk_frames) \
            if hasattr(pool, "graph_shapes") else streams * s.chunk_frames
        model = step_bytes(codec.decoder.cfg, largest, 1, itemsize=codec.dtype.itemsize)
        row["model_call_working_set_gib"] = round(model.working_set / 2**30, 3)
        if cuda:
            torch.cuda.synchronize()
            row["max_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
            row["max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            row["smi_used_mib"] = smi_used_mib()
    finally:
        worker.close()
        del worker
    return row


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m kanitts.bench.codec_serving",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="4,64,256,512,1024", help="comma-separated stream counts")
    ap.add_argument("--frames", type=int, default=200, help="frames per stream (80 ms each)")
    ap.add_argument("--max-batch-frames", type=int, default=None,
                    help="the cap per decoder call (default: codec.max_batch_frames)")
    ap.add_argument("--tiny", action="store_true", help="the tiny codec on the CPU (a dry run)")
    ap.add_argument("--pool-seconds", type=float, default=1.0, help="time spent on the bare pool step per level")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for the run (Python's default 0.005 s: how long the codec "
                         "thread may wait for the GIL while the event loop runs)")
    args = ap.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    codec = build_codec(args.tiny)
    rows = []
    for level in [int(x) for x in args.levels.split(",") if x]:
        try:
            row = run_level(codec, level, args.frames, args.max_batch_frames, args.pool_seconds)
            row["switch_interval_s"] = sys.getswitchinterval()
        except Exception as exc:
            logger.exception("level %d failed", level)
            row = {"level": level, "error": f"{type(exc).__name__}: {exc}"[:300]}
        result_line(row)
        rows.append(row)
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
