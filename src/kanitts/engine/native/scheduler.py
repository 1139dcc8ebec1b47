"""Continuous batching on the slot pool, in one worker thread.

Each iteration: drop cancelled requests (their slots are free for this very iteration),
admit waiting requests into free slots (one batched prefill of their prompts, on their real
lengths, at most ``max_prefill_tokens`` padded tokens; with a :class:`GroupPrefill`, prompts
that fit its buckets run as CUDA-graph replays instead), run one decode step for every slot
in use, then copy the new tokens to the host once (prefill and decode tokens together) and
hand them to the requests' asyncio queues: one ``call_soon_threadsafe`` per event loop per
iteration. Tokens are handed over ``stream_interval`` at a time (4 = one codec frame) for
the first ``GROWTH_AFTER`` groups, so the first frame leaves as soon as it exists; after that
each group is twice the last, up to ``max_stream_interval`` (the server sets one codec chunk:
tokens beyond it buy no latency), so a long stream costs the event loop a few hand-overs per
second of audio instead of 12.5.
The waiting queue is unbounded here; the backend bounds it (callers wait for room).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from kanitts.engine.native.graphs import DecodeStep
from kanitts.engine.native.kanitts2 import Kani2Runtime
from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.prefill_graphs import (
    PREFILL_ALIGN,
    GroupPrefill,
    prefill_and_sample,
)
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.slots import SlotParams, SlotPool, to_device

logger = logging.getLogger(__name__)

#: Groups of ``stream_interval`` tokens handed over before groups start to grow.
GROWTH_AFTER = 4
#: Sentinel put on a request's queue when its stream ends normally.
DONE = object()


@dataclass(eq=False)
class Request:
    """One generation as the scheduler sees it (host side). ``max_new`` is already capped
    by the slot's positions; ``stops`` are the ids that end it once ``min_tokens`` are out."""

    rid: str
    prompt: list[int]
    slot_params: SlotParams
    max_new: int
    stops: frozenset[int]
    out: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    interval: int = 0  # tokens in its next hand-over (0: not set yet)
    groups: int = 0  # hand-overs so far
    decodes: int = 0  # decode steps launched for it (its next cache write is at len(prompt) + decodes)
    generated: int = 0
    pending: list[int] = field(default_factory=list)
    finished: bool = False
    closed: bool = False  # the terminal item (DONE or an error) was sent
    admitted_at: float = 0.0
    #: KaniTTS-2: ``[speaker_emb_dim]`` float32, spliced in as a row after the first prompt token
    speaker_embedding: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        """Cache rows the prompt fills: its tokens, plus the speaker row if any."""
        return len(self.prompt) + (self.speaker_embedding is not None)


@dataclass
class SchedulerStats:
    steps: int = 0
    prefills: int = 0
    graphed_prefills: int = 0  # of ``prefills``: run by the :class:`GroupPrefill` (graphs on CUDA)
    tokens: int = 0
    finished: int = 0
    cancelled: int = 0
    host_seconds: float = 0.0  # time in the loop outside device waits (bookkeeping)
    peak_active: int = 0
    #: (request id, ``steps`` when its slot was freed), most recent last
    released: collections.deque[tuple[str, int]] = field(default_factory=lambda: collections.deque(maxlen=4096))


@dataclass
class _InFlight:
    """A launched step: its tokens' host buffer (filled once ``event`` completes), the requests
    prefilled in it, and the request owning each decoded slot at launch time."""

    host: torch.Tensor
    admitted: list[Request]
    owners: list[Request | None]
    event: Any


def _deliver(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for q, item in items:
        q.put_nowait(item)


class Scheduler:
    """Owns the pool; :meth:`run` is the worker thread's body."""

    def __init__(self, model: Lfm2, pool: SlotPool, sampler: Sampler, step: DecodeStep, *,
                 max_prefill_tokens: int = 4096, stream_interval: int = 4,
                 max_stream_interval: int | None = None, kani2: Kani2Runtime | None = None,
                 prefill: GroupPrefill | None = None) -> None:
        self.model, self.pool, self.sampler, self.step = model, pool, sampler, step
        self.kani2 = kani2
        #: the bucketed (graphed on CUDA) admission prefill; None: always the eager one
        self.prefill = prefill
        self.max_prefill_tokens = max_prefill_tokens
        self.stream_interval = max(1, stream_interval)
        self.max_stream_interval = max(self.stream_interval, max_stream_interval or self.stream_interval)
        self.incoming: queue.Queue[list[Request] | None] = queue.Queue()
        self.waiting: collections.deque[Request] = collections.deque()
        self.slot_req: dict[int, Request] = {}
        self.stats = SchedulerStats()
        self._stop = threading.Event()
        self._out: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        self._pin = model.device.type == "cuda"
        # two pinned buffers: one being filled by the step in flight, one being read
        self._host = [torch.empty(2 * pool.size, dtype=torch.int64, pin_memory=self._pin) for _ in range(2)]
        self._flip = 0
        self._inflight: _InFlight | None = None

    # -- called from any thread -----------------------------------------------------------
    def submit(self, reqs: list[Request]) -> None:
        """Queue requests for admission; one call's requests are seen by the worker together
        (so a burst submitted at once can share one batched prefill). After :meth:`stop`
        they end at once with an error."""
        if self._stop.is_set():
            for req in reqs:
                req.loop.call_soon_threadsafe(req.out.put_nowait, RuntimeError("the native engine stopped"))
            return
        self.incoming.put(list(reqs))

    def wake(self) -> None:
        self.incoming.put(None)

    def stop(self) -> None:
        self._stop.set()
        self.incoming.put(None)

    @property
    def active(self) -> int:
        return len(self.slot_req)

    # -- worker thread --------------------------------------------------------------------
    def run(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                if not (self.slot_req or self.waiting):
                    self.drain_in_flight()
                self._drain(block=not (self.slot_req or self.waiting or self._inflight))
                if self._stop.is_set():
                    break
                try:
                    self.iteration()
                except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
                    logger.exception("native engine step failed")
                    for req in [*self.slot_req.values(), *self.waiting]:
                        self._finish(req, RuntimeError(f"generation failed: {exc}"))
                    self.waiting.clear()
                    self._inflight = None
                    self._flush()
            self._drain(block=False)
            for req in [*self.slot_req.values(), *self.waiting]:
                self._finish(req, RuntimeError("the native engine stopped"))
            self._flush()

    def _drain(self, block: bool) -> None:
        try:
            item = self.incoming.get(block=block)
            while True:
                if item is not None:
                    self.waiting.extend(item)
                item = self.incoming.get_nowait()
        except queue.Empty:
            pass

    def iteration(self) -> None:
        """Cancel, admit, launch one decode step, then deliver the previous step's tokens
        while the device runs this one (the host work overlaps the GPU's)."""
        t0 = time.perf_counter()
        for req in [r for r in self.slot_req.values() if r.cancelled.is_set()]:
            self._release(req)
            self.stats.cancelled += 1
        if any(r.cancelled.is_set() for r in self.waiting):
            self.waiting = collections.deque(r for r in self.waiting if not r.cancelled.is_set())
        admitted = self._admit()
        bound = self.pool.bound()
        launched: _InFlight | None = None
        if admitted or bound:
            b = 0
            owners: list[Request | None] = []
            if bound:
                needed = 1
                unconstrained = False
                for r in self.slot_req.values():
                    needed = max(needed, r.rows + r.decodes + 1)
                    unconstrained = unconstrained or not r.slot_params.constrained
                    r.decodes += 1
                b = self.step.run(bound, needed, unconstrained)
                owners = [self.slot_req.get(i) for i in range(b)]
                self.stats.steps += 1
            n_adm = len(admitted)
            buf = self._host[self._flip]
            self._flip ^= 1
            if admitted:
                buf[:n_adm].copy_(self._first, non_blocking=self._pin)
            if b:
                buf[n_adm:n_adm + b].copy_(self.pool.tok[:b], non_blocking=self._pin)
            event = None
            if self._pin:
                event = torch.cuda.Event()
                event.record()
            launched = _InFlight(buf[:n_adm + b], admitted, owners, event)
        self.stats.host_seconds += time.perf_counter() - t0
        if self._inflight is not None:
            self._deliver_tokens(self._inflight)
        self._inflight = launched

    def drain_in_flight(self) -> None:
        """Deliver the last launched step's tokens (nothing left to overlap with)."""
        if self._inflight is not None:
            pending, self._inflight = self._inflight, None
            self._deliver_tokens(pending)

    def _deliver_tokens(self, f: _InFlight) -> None:
        if f.event is not None:
            f.event.synchronize()
        t0 = time.perf_counter()
        tokens = f.host.tolist()
        for i, req in enumerate(f.admitted):
            if not req.finished:
                self._accept(req, tokens[i])
        off = len(f.admitted)
        for slot, req in enumerate(f.owners):
            if req is not None and not req.finished:
                self._accept(req, tokens[off + slot])
        self._flush()
        self.stats.host_seconds += time.perf_counter() - t0

    def _admit(self) -> list[Request]:
        """Prefill as many waiting requests as fit; their first tokens go to ``self._first``."""
        pool = self.pool
        group: list[Request] = []
        longest = 0
        while self.waiting and pool.free_count > len(group):
            nxt = self.waiting[0]
            longest2 = max(longest, nxt.rows)
            if group and self.prefill_width(longest2) * (len(group) + 1) > self.max_prefill_tokens:
                break
            group.append(self.waiting.popleft())
            longest = longest2
        if not group:
            return []
        for req in group:
            req.slot = pool.take()
            req.admitted_at = time.perf_counter()
            self.slot_req[req.slot] = req
        self.stats.peak_active = max(self.stats.peak_active, len(self.slot_req))
        dev = self.model.device
        slots = [r.slot for r in group]
        pool.admit(slots, [r.slot_params for r in group])
        self.stats.prefills += 1
        if (self.prefill is not None and self.prefill.takes(len(group), longest)
                and all(r.slot_params.constrained for r in group)):
            self._first = self.prefill.run(slots, [r.prompt for r in group], [r.speaker_embedding for r in group])
            self.stats.graphed_prefills += 1
            return group
        longest = self.prefill_width(longest)
        ids = torch.zeros(len(group), longest, dtype=torch.int64)
        for i, r in enumerate(group):
            ids[i, : len(r.prompt)] = torch.tensor(r.prompt, dtype=torch.int64)
        lens_h = torch.tensor([len(r.prompt) for r in group], dtype=torch.int64)
        kw: dict[str, torch.Tensor] = {}
        if self.kani2 is not None:  # KaniTTS-2: speaker rows spliced in, frame-level positions
            ids, lens_h, kw = self.kani2.prefill_inputs([r.prompt for r in group],
                                                        [r.speaker_embedding for r in group],
                                                        min_width=longest)
        last_h = torch.tensor([r.prompt[-1] for r in group], dtype=torch.int64)
        idx, ids, lens, last = (to_device(t, dev) for t in (torch.tensor(slots), ids, lens_h, last_h))
        self._first = prefill_and_sample(self.model, pool, self.sampler, self.kani2, idx, ids, lens, last,
                                         torch.arange(len(group), device=dev),
                                         any(not r.slot_params.constrained for r in group), **kw)
        return group

    def prefill_width(self, rows: int) -> int:
        """The padded width of a prefill whose longest prompt fills ``rows`` cache rows: a
        multiple of :data:`PREFILL_ALIGN` (fewer distinct shapes, so fewer kernel choices),
        at most the slot's positions. ``max_prefill_tokens`` bounds groups x this width."""
        return min(self.pool.max_len, -(-rows // PREFILL_ALIGN) * PREFILL_ALIGN)

    def _accept(self, req: Request, tok: int) -> None:
        if tok < 0:  # the sampler found no valid candidate: this request fails, no other
            logger.error("request %s: no valid token to sample after %d tokens", req.rid, req.generated)
            self._finish(req, RuntimeError("generation failed: the model had no valid token to sample"))
            return
        allow_stop = req.generated >= req.slot_params.min_tokens
        req.generated += 1
        req.pending.append(tok)
        self.stats.tokens += 1
        done = (allow_stop and tok in req.stops) or req.generated >= req.max_new
        if done or len(req.pending) >= (req.interval or self.stream_interval):
            self._emit(req, req.pending)
            req.pending = []
            req.groups += 1
            req.interval = (self.stream_interval if req.groups < GROWTH_AFTER
                            else min(2 * (req.interval or self.stream_interval), self.max_stream_interval))
        if done:
            self._finish(req)

    def _emit(self, req: Request, item: Any) -> None:
        self._out.setdefault(req.loop, []).append((req.out, item))

    def _release(self, req: Request) -> None:
        req.finished = True
        if req.slot >= 0 and self.slot_req.get(req.slot) is req:
            del self.slot_req[req.slot]
            self.pool.release(req.slot)
            self.stats.released.append((req.rid, self.stats.steps))

    def _finish(self, req: Request, error: BaseException | None = None) -> None:
        """Free the request's slot and end its stream (once)."""
        self._release(req)
        if req.closed:
            return
        req.closed = True
        if error is None:
            self.stats.finished += 1
        self._emit(req, error if error is not None else DONE)

    def _flush(self) -> None:
        for loop, items in self._out.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                pass
        self._out = {}
