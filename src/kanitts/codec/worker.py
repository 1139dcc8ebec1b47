"""Asyncio front of the streaming codec: many concurrent streams, one worker thread.

Each :meth:`CodecWorker.decode` call owns one slot of a shared
:class:`~kanitts.codec.streaming.StreamingDecoder` pool. A per-stream *pump* task reads
the producer's frames into a small pending buffer; a single *scheduler* task on the event
loop repeatedly plans a step and runs it on one worker thread, so torch work never
blocks the loop and the pool's state is only ever touched by that one thread.

Planning (latency over batching): every stream with pending frames contributes
``min(pending, cap)`` frames to the next step, where ``cap`` is ``first_chunk_frames``
for a stream's first chunk (audio starts quickly) and ``chunk_frames`` afterwards.
Streams that contribute the same number of frames are decoded in one batched call (a
step has as many calls as distinct counts). Whatever arrives while a step runs is picked
up by the next one, so batching grows by itself under load and a lone stream is never
held back waiting for a full chunk. A stream decoded with ``fixed_chunks=True`` (seeded
requests) is the exception: its chunks are always ``first_chunk_frames``, then
``chunk_frames`` (the last one shorter), whatever the arrival timing, so the same frames
give the same samples bit for bit (chunk boundaries change the float rounding of the
streaming convolutions by up to 1 LSB); its first chunk is as early as otherwise.

Back-pressure: a pump stops reading its producer while ``max_pending_frames`` frames are
waiting, and a stream whose consumer has ``max_ready_chunks`` undelivered chunks is left
out of planning - so a slow client slows its own producer instead of growing memory.
When all slots are taken, new streams wait (FIFO) for one to free up.

On CUDA every step runs on the worker's own :attr:`CodecWorker.stream`, so a codec in the
engine's process (one CUDA context) overlaps the engine's decode steps instead of queueing
behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import torch

from kanitts.codec.fast import DEFAULT_FRAME_SIZES, FastStreamingDecoder
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.shapes import frame_sizes_up_to
from kanitts.codec.streaming import StreamingDecoder
from kanitts.offload import WorkerThreads

logger = logging.getLogger(__name__)


class CodecWorkerClosed(RuntimeError):
    """The worker was closed while a stream was still decoding."""


@dataclass
class CodecWorkerStats:
    """Counters for metrics and tests (a snapshot; mutate nothing)."""

    active_streams: int = 0
    waiting_streams: int = 0
    steps: int = 0
    batched_calls: int = 0
    frames_decoded: int = 0
    streams_started: int = 0
    streams_finished: int = 0


@dataclass(eq=False)
class _Stream:
    slot: int
    pending: deque[list[int]] = field(default_factory=deque)
    out: asyncio.Queue[np.ndarray | BaseException | None] = field(default_factory=asyncio.Queue)
    space: asyncio.Event = field(default_factory=asyncio.Event)
    needs_reset: bool = True
    started: bool = False  # first chunk planned
    eos: bool = False  # producer exhausted (or failed, see error)
    error: BaseException | None = None
    closed: bool = False  # consumer went away
    fixed: bool = False  # chunk boundaries independent of arrival timing
    finished: bool = False  # final sentinel delivered, slot released


class CodecWorker:
    """Decode many frame streams concurrently in batched steps on one worker thread.

    ``decode(frames)`` consumes an async iterator of frame lists (each frame is
    ``num_codebooks`` codes) and yields float32 mono PCM chunks clipped to [-1, 1], with
    ``samples_per_frame`` samples per frame. Closing or cancelling the generator frees its
    slot and closes the producer. ``max_batch_frames`` (fast path; None: no cap) bounds the
    stream-frames of one decoder call and so the codec's activation memory
    (:mod:`kanitts.codec.memory`): a larger step runs as several calls. The fast path's
    CUDA graphs cover ``max_streams`` rows and at most ``max(first_chunk_frames,
    chunk_frames)`` frames per call: the most one step takes from a stream."""

    def __init__(
        self,
        codec: NanoCodec,
        max_streams: int = 64,
        first_chunk_frames: int = 2,
        chunk_frames: int = 8,
        device: str | torch.device | None = None,
        max_pending_frames: int | None = None,
        max_ready_chunks: int = 4,
        fast: bool = True,
        max_batch_frames: int | None = None,
    ) -> None:
        if first_chunk_frames < 1 or chunk_frames < 1:
            raise ValueError("chunk sizes must be >= 1 frame")
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if device is not None and torch.device(device) != codec.device:
            codec = codec.to(device)
        self.codec = codec
        self.max_streams = max_streams
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.max_pending_frames = max_pending_frames or 4 * max(chunk_frames, first_chunk_frames)
        self.max_ready_chunks = max(1, max_ready_chunks)
        # Channels-last decoder walk with fused activations everywhere; on CUDA also one
        # CUDA graph per (batch bucket, frames), on the pool's own stream so decoding never
        # serialises behind token generation.
        self._pool: StreamingDecoder | FastStreamingDecoder
        if fast:
            # "ops": compile only the fused pointwise pieces (seconds, not minutes) on CUDA;
            # on the CPU the same fused forms run eagerly (no compile at start-up). A step
            # takes at most the larger chunk size of frames from a stream (``_plan``), so
            # no graph is captured for more frames than that.
            self._pool = FastStreamingDecoder(
                codec, max_streams, compile="ops" if codec.device.type == "cuda" else False,
                max_batch_frames=max_batch_frames,
                frame_sizes=frame_sizes_up_to(DEFAULT_FRAME_SIZES, max(first_chunk_frames, chunk_frames)),
            )
        else:
            self._pool = StreamingDecoder(codec, max_streams)
        self.fast = bool(fast)
        # Read once: NanoCodec computes these properties on every access (per frame here).
        self._num_codebooks = codec.num_codebooks
        self._codebook_size = codec.codebook_size
        self._samples_per_frame = codec.samples_per_frame
        #: On CUDA, the stream all of this worker's device work runs on (the fast pool's own,
        #: else one made here): a non-blocking stream, so in a process that also generates
        #: tokens (the native engine) decoding never serialises with the decode step. None on
        #: the CPU/MPS.
        self.stream: torch.cuda.Stream | None = None
        if codec.device.type == "cuda":
            self.stream = getattr(self._pool, "stream", None) or torch.cuda.Stream(codec.device)
            self.stream.wait_stream(torch.cuda.current_stream(codec.device))  # the pool's state is made
        # One thread: the only one that touches the pool's state (kanitts.offload: a cheaper
        # hop per step than run_in_executor).
        self._thread = WorkerThreads(1, "kanitts-codec")
        self._free: list[int] = list(range(max_streams - 1, -1, -1))  # pop() -> lowest slot
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._streams: dict[int, _Stream] = {}
        #: Streams whose state changed since the last plan (frames in, end of input, room in
        #: their queue, consumer gone), by slot: ``_plan`` looks at these, not at every stream.
        self._ready: dict[int, _Stream] = {}
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._stats = CodecWorkerStats()

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> CodecWorkerStats:
        s = self._stats
        return CodecWorkerStats(
            active_streams=len(self._streams),
            waiting_streams=sum(1 for w in self._waiters if not w.done()),
            steps=s.steps,
            batched_calls=s.batched_calls,
            frames_decoded=s.frames_decoded,
            streams_started=s.streams_started,
            streams_finished=s.streams_finished,
        )

    def warmup(self) -> int:
        """Capture the fast path's CUDA graphs before serving (blocking; call it from a
        thread at start-up). Returns the number of graphs; 0 on the plain path."""
        if not self.fast:
            return 0
        with torch.inference_mode():
            return self._pool.warmup()  # type: ignore[union-attr]

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    async def decode(
        self, frames: AsyncIterator[list[list[int]]], *, fixed_chunks: bool = False
    ) -> AsyncIterator[np.ndarray]:
        """Stream PCM for ``frames``; raises the producer's exception (after the audio of
        the frames that preceded it) or ``ValueError`` for malformed frames.
        ``fixed_chunks``: decode in chunks of exactly ``first_chunk_frames`` then
        ``chunk_frames`` frames (reproducible samples; see the module docstring)."""
        self._ensure_running()
        slot = await self._acquire_slot()
        stream = _Stream(slot=slot, fixed=fixed_chunks)
        self._streams[slot] = stream
        self._stats.streams_started += 1
        pump = asyncio.create_task(self._pump(stream, frames), name=f"codec-pump-{slot}")
        try:
            while True:
                item = await stream.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self._mark(stream)  # the queue has room again: the stream may be planned
                yield item
        finally:
            stream.closed = True
            stream.space.set()
            if not pump.done():
                pump.cancel()
                try:
                    await pump
                except BaseException:  # noqa: BLE001 - cancellation/producer errors end here
                    pass
            if self._scheduler is None or self._scheduler.done():
                self._release(stream)  # no scheduler left to do it
            self._mark(stream)

    def close(self) -> None:
        """Stop the scheduler, fail streams still running and release the thread.
        Safe to call more than once; a step already running on the thread completes."""
        if self._closed:
            return
        self._closed = True
        if self._scheduler is not None and not self._scheduler.done():
            self._scheduler.cancel()
        for stream in list(self._streams.values()):
            self._finish(stream, CodecWorkerClosed("codec worker closed"))
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(CodecWorkerClosed("codec worker closed"))
        self._waiters.clear()
        self._thread.close()
        logger.debug("codec worker closed: %s", self.stats)

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the scheduler (and its running step) to end."""
        task = self._scheduler
        self.close()
        if task is not None:
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ slots
    def _ensure_running(self) -> None:
        if self._closed:
            raise CodecWorkerClosed("codec worker is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("CodecWorker is bound to another event loop")
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = loop.create_task(self._schedule(), name="codec-scheduler")

    async def _acquire_slot(self) -> int:
        if self._free and not self._waiters:
            return self._free.pop()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_slot(waiter.result())  # handed over just as we were cancelled
            else:
                waiter.cancel()
            raise

    def _give_slot(self, slot: int) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    def _release(self, stream: _Stream) -> None:
        if self._streams.get(stream.slot) is stream:
            del self._streams[stream.slot]
            self._stats.streams_finished += 1
            self._give_slot(stream.slot)

    def _finish(self, stream: _Stream, final: BaseException | None) -> None:
        """Deliver the end-of-stream sentinel (or error) and free the slot."""
        if not stream.finished:
            stream.finished = True
            if not stream.closed:
                stream.out.put_nowait(final)
        self._release(stream)

    # ------------------------------------------------------------------ producer side
    def _checked(self, batch: list[list[int]]) -> list[list[int]]:
        """The frames of ``batch`` as fresh lists, each checked against the codec: the one
        frame check on every path into the codec (the token parser upstream checks the
        token grammar, not frames). Raises ``ValueError`` for a frame without exactly
        ``num_codebooks`` codes or with a code outside ``0..codebook_size - 1`` (an
        out-of-range code would index past the codebook table on the device)."""
        num_codebooks, size = self._num_codebooks, self._codebook_size
        out = []
        for frame in batch:
            codes = list(frame)
            if len(codes) != num_codebooks or min(codes) < 0 or max(codes) >= size:
                raise ValueError(f"malformed frame {frame!r}: expected {num_codebooks} codes in 0..{size - 1}")
            out.append(codes)
        return out

    async def _pump(self, stream: _Stream, frames: AsyncIterator[list[list[int]]]) -> None:
        try:
            async for batch in frames:
                stream.pending.extend(self._checked(batch))
                self._mark(stream)
                while len(stream.pending) >= self.max_pending_frames and not stream.closed:
                    stream.space.clear()
                    await stream.space.wait()
                if stream.closed:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer after flushing
            stream.error = exc
        finally:
            stream.eos = True
            self._mark(stream)
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()  # closing the producer aborts upstream generation
                except Exception:  # noqa: BLE001
                    logger.debug("error closing frame producer", exc_info=True)

    # ------------------------------------------------------------------ scheduler
    def _mark(self, stream: _Stream) -> None:
        """``stream`` may have work for the scheduler: plan it next time and wake it."""
        self._ready[stream.slot] = stream
        self._wake.set()

    def _plan(self) -> dict[int, list[tuple[_Stream, list[list[int]]]]]:
        """This step's chunks by frame count, from the streams marked since the last plan (a
        stream skipped here is marked again by whatever lets it go on: frames, end of input,
        room in its queue, its consumer leaving); releases closed streams, finishes ended ones."""
        groups: dict[int, list[tuple[_Stream, list[list[int]]]]] = {}
        ready, self._ready = self._ready, {}
        for stream in ready.values():
            if self._streams.get(stream.slot) is not stream:
                continue  # released already
            if stream.closed:
                self._release(stream)
                continue
            if not stream.pending:
                if stream.eos:
                    self._finish(stream, stream.error)
                continue
            if stream.out.qsize() >= self.max_ready_chunks:
                continue  # slow consumer: let it drain first
            cap = self.chunk_frames if stream.started else self.first_chunk_frames
            if stream.fixed and not stream.eos and len(stream.pending) < cap:
                continue  # a fixed chunk waits until it is full (or the stream ends)
            n = min(cap, len(stream.pending))
            take = [stream.pending.popleft() for _ in range(n)]
            stream.started = True
            stream.space.set()
            groups.setdefault(n, []).append((stream, take))
            if stream.pending or stream.eos:
                self._ready[stream.slot] = stream  # the rest, or its end, in a later step
        return groups

    def _run_step(
        self, groups: dict[int, list[tuple[_Stream, list[list[int]]]]], resets: list[int]
    ) -> list[tuple[_Stream, np.ndarray]]:
        """Runs on the worker thread: the only place the pool's state is touched. Every
        group's decode is queued before the one wait at the end; on CUDA the PCM comes back
        through pinned buffers (an asynchronous copy, ~5x faster than a pageable one)."""
        ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        outs: list[tuple[list[tuple[_Stream, list[list[int]]]], torch.Tensor]] = []
        with torch.inference_mode(), ctx:
            if resets:
                self._pool.reset(resets)
            for items in groups.values():
                slots = [stream.slot for stream, _ in items]
                # [k, T, G] as collected: the layout step_slots takes (no permute). numpy builds
                # it from the nested lists about twice as fast as torch.tensor does.
                codes = torch.from_numpy(np.array([frames for _, frames in items], dtype=np.int64))
                audio = self._pool.step_slots(slots, codes.to(self._pool.device, non_blocking=True))
                audio = audio.float().clamp_(-1.0, 1.0)
                if self.stream is not None:
                    host = torch.empty(audio.shape, dtype=torch.float32, pin_memory=True)
                    audio = host.copy_(audio, non_blocking=True)
                else:
                    audio = audio.cpu()
                outs.append((items, audio))
            if self.stream is not None:
                self.stream.synchronize()
        results: list[tuple[_Stream, np.ndarray]] = []
        for items, audio in outs:
            pcm = audio.numpy()
            results.extend((stream, pcm[i]) for i, (stream, _) in enumerate(items))
        return results

    async def _schedule(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while not self._closed:
                groups = self._plan()
                if not groups:
                    break
                planned = [s for items in groups.values() for s, _ in items]
                resets = [s.slot for s in planned if s.needs_reset]
                for s in planned:
                    s.needs_reset = False
                try:
                    results = await self._thread.run(self._run_step, groups, resets)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - fail the streams of this step only
                    logger.exception("codec step failed for %d streams", len(planned))
                    for s in planned:
                        self._finish(s, exc)
                    continue
                self._stats.steps += 1
                self._stats.batched_calls += len(groups)
                for stream, pcm in results:
                    self._stats.frames_decoded += pcm.shape[0] // self._samples_per_frame
                    if not stream.closed and not stream.finished:
                        stream.out.put_nowait(pcm)
