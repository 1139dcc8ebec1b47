"""Host cost of the serving codec worker per frame (CPU, no real decoding).

    PYTHONPATH=src python scripts/codec_host_overhead.py --streams 256,1024 --frames 64

A :class:`~kanitts.codec.CodecWorker` whose batched decoder is replaced by one that returns
silence at no cost, so what is timed is the worker alone: frame checks, the per-stream pump
and consumer tasks, planning, building the ``[k, T, G]`` code tensor, splitting the PCM and
the asyncio hops (the codec has 2 samples per frame, so handling PCM costs next to nothing). Every stream has all its frames ready (the producer yields one frame per
item, as the engine does with ``stream_interval = 4``), so the worker runs flat out. Prints
one ``RESULT {json}`` line per level: wall and process-CPU microseconds per decoded frame.
On the GPU this cost is serial with the decode step (the scheduler plans the next step after
the previous one's results), so it adds to every step's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence

import torch
from torch import Tensor

from kanitts.codec import CodecConfig, CodecWorker, DecoderConfig, NanoCodec

#: A codec of 2 samples per frame: the worker's per-frame Python work is what is timed, not
#: clamping and copying 1,764 float32 samples per frame on the CPU (on a GPU that is device work).
SILENT_CODEC = CodecConfig(samples_per_frame=2, decoder=DecoderConfig(base_channels=8, up_sample_rates=(2,)))


class SilentPool:
    """The decoder interface the worker drives (``reset``, ``step_slots``, ``device``),
    returning zeros: ``frames[k, T, G]`` -> ``float32[k, T * samples_per_frame]``. With
    ``ops`` > 0 each call first runs that many tiny torch ops (each releases and retakes the
    GIL, like the ~6 per graph replay plus the copies of a real step) and records its wall
    time in :attr:`call_s`: how long the worker thread waits for the GIL while the event
    loop's pumps and consumers hold it."""

    def __init__(self, samples_per_frame: int, ops: int = 0) -> None:
        self.samples_per_frame = samples_per_frame
        self.device = torch.device("cpu")
        self.frames = 0
        self.ops = ops
        self.call_s: list[float] = []
        self._zeros = torch.zeros(0)
        self._scratch = torch.zeros(4)

    def reset(self, mask: Sequence[int] | Tensor | None = None) -> None:
        return None

    def step_slots(self, slots: Sequence[int] | Tensor, frames: Tensor) -> Tensor:
        k, t = frames.shape[0], frames.shape[1]
        self.frames += k * t
        if self.ops:
            t0 = time.perf_counter()
            for _ in range(self.ops):
                self._scratch.add_(1)
            self.call_s.append(time.perf_counter() - t0)
        if self._zeros.numel() < k * t * self.samples_per_frame:  # allocated once, not timed per step
            self._zeros = torch.zeros(k * t * self.samples_per_frame)
        return self._zeros[: k * t * self.samples_per_frame].view(k, t * self.samples_per_frame)


async def run_level(streams: int, frames: int, first_chunk_frames: int = 1, chunk_frames: int = 8,
                    ops: int = 0) -> dict[str, object]:
    """``streams`` concurrent streams of ``frames`` frames through a worker with a silent
    decoder; returns the level's figures (``us_per_frame_wall``, ``us_per_frame_cpu``; with
    ``ops``, the median and max wall ms of a decoder call, ``call_ms_p50``/``call_ms_max``)."""
    codec = NanoCodec(SILENT_CODEC)
    worker = CodecWorker(codec, max_streams=streams, first_chunk_frames=first_chunk_frames,
                         chunk_frames=chunk_frames, fast=False)
    pool = SilentPool(codec.samples_per_frame, ops)
    worker._pool = pool  # type: ignore[assignment]  # the one substitution: no decoding
    frame = [1, 2, 3, 4]

    async def producer() -> AsyncIterator[list[list[int]]]:
        for _ in range(frames):
            yield [frame]

    async def consume() -> int:
        n = 0
        async for pcm in worker.decode(producer()):
            n += len(pcm)
        return n

    await asyncio.gather(*[consume() for _ in range(min(streams, 4))])  # warm the paths
    pool.frames, pool.call_s = 0, []
    steps0 = worker.stats.steps
    w0, c0 = time.perf_counter(), time.process_time()
    samples = await asyncio.gather(*[consume() for _ in range(streams)])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    await worker.aclose()
    total = streams * frames
    if sum(samples) != total * codec.samples_per_frame or pool.frames != total:
        raise RuntimeError(f"decoded {pool.frames} frames, {sum(samples)} samples; expected {total} frames")
    calls = sorted(pool.call_s)
    extra = {"ops_per_call": ops, "call_ms_p50": round(calls[len(calls) // 2] * 1e3, 2),
             "call_ms_max": round(calls[-1] * 1e3, 2)} if calls else {}
    return {
        **extra,
        "streams": streams,
        "frames_per_stream": frames,
        "steps": worker.stats.steps - steps0,
        "us_per_frame_wall": round(wall / total * 1e6, 2),
        "us_per_frame_cpu": round(cpu / total * 1e6, 2),
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="256,1024", help="comma-separated stream counts")
    ap.add_argument("--frames", type=int, default=64, help="frames per stream")
    ap.add_argument("--ops", type=int, default=0,
                    help="tiny torch ops per decoder call (shows the worker thread's GIL waits)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for the run (Python's default: 0.005 s)")
    args = ap.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    out = []
    for n in [int(s) for s in args.streams.split(",") if s]:
        res = asyncio.run(run_level(n, args.frames, ops=args.ops))
        res["switch_interval_s"] = sys.getswitchinterval()
        print("RESULT " + json.dumps(res), flush=True)
        out.append(res)
    return out


if __name__ == "__main__":
    main()
