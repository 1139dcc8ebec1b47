"""Data-parallel engine replicas behind one :class:`GenerationBackend`.

``ReplicaPool`` runs N copies of the configured backend (native or vLLM), each in its own
process pinned to its own GPU (``kanitts serve --gpus 0,1`` or ``data_parallel_size``), and
streams their tokens back to the one HTTP server. To the synthesizer it is just another
backend: ``stream(prompt_ids, params, request_id)`` yields lists of token ids and closing
the iterator aborts the request on the replica that runs it.

Design (see docs/scaling.md):

* **Processes, spawn.** One process per replica so each has its own CUDA context, its own
  vLLM engine (vLLM's in-engine data parallelism is built for its own API server and
  does not fit our streaming-delta path) and its own GIL; ``spawn`` so nothing CUDA is
  inherited. A replica pins its GPU with ``CUDA_VISIBLE_DEVICES`` before torch loads.
* **IPC: one duplex ``multiprocessing.Pipe`` per replica**, pickled event lists. The
  front has a reader thread per replica (blocking ``recv`` -> one
  ``loop.call_soon_threadsafe`` per *message*, not per token) and a sender thread (so a
  full pipe never blocks the event loop). The replica's sender thread coalesces all
  events queued since its last write, merging token lists per request, so per-token
  IPC cost falls as load rises. Tokens are tiny (50/s per stream): the IPC volume is
  negligible next to the model; what matters is the number of wake-ups, hence batching.
* **Routing**: each new request goes to the live replica with the fewest active streams,
  then the fewest outstanding tokens (sum of ``max_tokens - generated`` of its streams),
  then the one picked least recently (so sequential requests alternate).
* **Fault tolerance**: a replica's death is seen within ``monitor_interval`` (process poll)
  or at once (EOF on its pipe); a replica silent for ``heartbeat_timeout`` is killed.
  Its in-flight streams raise :class:`ReplicaError` (the synthesizer turns it into a
  clean ``SynthesisError``), new requests go to the others, and it is restarted in the
  background with exponential backoff. The pool is ready while one replica is ready.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kanitts.engine.base import GenerationBackend, SamplingParams
from kanitts.engine.replica_pipe import PipeSender
from kanitts.hub import ModelLoadError

logger = logging.getLogger(__name__)

_END = object()


class ReplicaError(RuntimeError):
    """A request could not complete because its replica failed (or none is available)."""


class NoReplicaAvailable(ReplicaError):
    """No replica was ready within the pool's ``acquire_timeout``."""


@dataclass
class _Pending:
    rid: str
    queue: asyncio.Queue[Any]
    budget: int
    generated: int = 0


@dataclass
class _Replica:
    index: int
    device: str | None  # GPU id given to CUDA_VISIBLE_DEVICES, or None
    state: str = "stopped"  # starting | ready | dead | restarting | failed | stopped
    generation: int = 0
    proc: Any = None
    conn: Any = None
    sender: Any = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    outstanding: int = 0
    last_pick: float = 0.0
    last_heartbeat: float = 0.0
    ready_since: float | None = None
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    requests: int = 0
    tokens: int = 0
    aborted: int = 0
    failed_requests: int = 0
    last_error: str | None = None
    exitcode: int | None = None
    child_stats: dict[str, Any] = field(default_factory=dict)
    ready_event: asyncio.Event | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()


class ReplicaPool(GenerationBackend):
    """N backend replicas in worker processes; least-loaded routing; restart on death."""

    name = "replicas"

    def __init__(
        self,
        settings: Any,
        model_path: str,
        *,
        share: float = 1.0,
        devices: list[str | None] | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 60.0,
        start_timeout: float = 1800.0,
        acquire_timeout: float = 10.0,
        monitor_interval: float = 0.2,
        restart_backoff: tuple[float, float] = (1.0, 30.0),
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.model_path = model_path
        self.share = share
        devs = devices if devices is not None else settings.engine.replica_devices()
        if not devs:
            raise ValueError("a replica pool needs at least one replica")
        self._replicas = [_Replica(i, d) for i, d in enumerate(devs)]
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.acquire_timeout = acquire_timeout
        self.monitor_interval = monitor_interval
        self.restart_backoff = restart_backoff
        self.stop_timeout = stop_timeout
        self._ctx = mp.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count()
        self._closing = False
        self._any_ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None

    # -- public status ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return any(r.state == "ready" for r in self._replicas)

    @property
    def size(self) -> int:
        return len(self._replicas)

    @property
    def replica_status(self) -> list[dict[str, Any]]:
        """Per-replica state for ``/health``: JSON-ready dicts, one per replica."""
        out = []
        for r in self._replicas:
            out.append({
                "index": r.index,
                "pid": r.pid,
                "gpu": r.device,
                "device": r.info.get("device"),
                "backend": r.info.get("backend"),
                "state": r.state,
                "alive": r.state == "ready" and r.alive,
                "active": len(r.pending),
                "outstanding_tokens": r.outstanding,
                "requests": r.requests,
                "tokens": r.tokens,
                "aborted": r.aborted,
                "failed_requests": r.failed_requests,
                "restarts": r.restarts,
                "last_error": r.last_error,
                "kv_cache_usage": r.child_stats.get("kv_cache_usage"),
            })
        return out

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start every replica; return when one is ready (the others join as they come up).

        Raises :class:`ModelLoadError` if every replica fails to start."""
        self._loop = asyncio.get_running_loop()
        self._any_ready = asyncio.Event()
        self._closing = False
        for r in self._replicas:
            await self._spawn(r)
        self._monitor = asyncio.create_task(self._monitor_loop(), name="replica-monitor")
        waiters = {asyncio.ensure_future(r.ready_event.wait()) for r in self._replicas if r.ready_event}
        try:
            while not self.ready:
                if all(r.state in ("dead", "failed", "restarting") for r in self._replicas):
                    errors = "; ".join(f"replica {r.index}: {r.last_error}" for r in self._replicas)
                    await self.close()
                    raise ModelLoadError(f"no engine replica could start ({errors})")
                await asyncio.wait(waiters, timeout=self.monitor_interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        logger.info("replica pool ready (%d of %d replicas up)",
                    sum(r.state == "ready" for r in self._replicas), len(self._replicas))

    async def wait_ready(self, count: int | None = None, timeout: float = 600.0) -> None:
        """Wait until ``count`` replicas (default: all) are ready."""
        need = len(self._replicas) if count is None else count
        deadline = time.monotonic() + timeout
        while sum(r.state == "ready" for r in self._replicas) < need:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{need} replicas not ready after {timeout} s: {self.replica_status}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
        for t in list(self._tasks):
            t.cancel()
        for r in self._replicas:
            self._fail_pending(r, "the engine is shutting down")
            if r.sender is not None:
                r.sender.put(("stop",))
        await asyncio.gather(*(asyncio.to_thread(self._reap, r) for r in self._replicas))
        for r in self._replicas:
            r.state = "stopped"
        self._any_ready = None

    def _reap(self, r: _Replica) -> None:
        p = r.proc
        if p is None:
            return
        p.join(self.stop_timeout)
        if p.is_alive():
            logger.warning("replica %d (pid %s) did not stop; killing it", r.index, p.pid)
            p.kill()
            p.join(5)
        if r.sender is not None:
            r.sender.close()
        try:
            r.conn.close()
        except Exception:  # noqa: BLE001
            pass

    async def _spawn(self, r: _Replica) -> None:
        from kanitts.engine.replica_worker import replica_main

        r.generation += 1
        gen = r.generation
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=replica_main,
            args=(r.index, child, self.settings, self.model_path, self.share, r.device,
                  self.heartbeat_interval, self._cpu_threads(r)),
            name=f"kanitts-replica-{r.index}",
            daemon=False,  # vLLM starts its own engine-core process; daemons cannot
        )
        await asyncio.to_thread(proc.start)
        child.close()  # our copy: the pipe now reaches EOF as soon as the replica exits
        r.proc, r.conn, r.pid = proc, parent, proc.pid
        r.state, r.started_at, r.ready_since = "starting", time.monotonic(), None
        r.last_heartbeat = time.monotonic()
        r.ready_event = asyncio.Event()
        r.sender = PipeSender(parent, f"replica-{r.index}-send")
        threading.Thread(target=self._reader, args=(r, gen, parent), name=f"replica-{r.index}-recv",
                         daemon=True).start()
        logger.info("replica %d: started pid %d (gpu %s)", r.index, proc.pid, r.device)

    def _cpu_threads(self, r: _Replica) -> int | None:
        """Replicas without a GPU split the host's cores instead of oversubscribing them."""
        if r.device is not None:
            return None
        dev = str(self.settings.engine.device)
        if dev not in ("cpu", "auto"):
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // len(self._replicas))

    # -- IPC: reader thread -> event loop -----------------------------------------------
    def _reader(self, r: _Replica, gen: int, conn: Any) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                events = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - a bad message: treat as a dead replica
                logger.exception("replica %d: unreadable message", r.index)
                self._call(loop, self._on_death, r, gen, f"unreadable message: {exc}")
                return
            self._call(loop, self._dispatch, r, gen, events)
        self._call(loop, self._on_death, r, gen, "its pipe closed")

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # loop closed: the pool is gone

    def _dispatch(self, r: _Replica, gen: int, events: list[tuple[Any, ...]]) -> None:
        if gen != r.generation:
            return
        now = time.monotonic()
        r.last_heartbeat = now
        for ev in events:
            kind = ev[0]
            if kind == "tok":
                p = r.pending.get(ev[1])
                n = len(ev[2])
                r.tokens += n
                self.stats.tokens_generated += n
                if p is not None:
                    take = min(n, max(0, p.budget - p.generated))
                    p.generated += n
                    r.outstanding -= take
                    p.queue.put_nowait(ev[2])
            elif kind == "end":
                p = r.pending.get(ev[1])
                if p is not None:
                    p.queue.put_nowait(_END)
            elif kind == "err":
                p = r.pending.get(ev[1])
                if p is not None:
                    p.queue.put_nowait(ReplicaError(f"replica {r.index}: {ev[2]}"))
            elif kind == "stats":
                r.child_stats = ev[1]
                self._update_kv()
            elif kind == "ready":
                r.info = ev[1]
                r.pid = ev[1].get("pid", r.pid)
                r.state, r.ready_since = "ready", now
                r.last_error = None
                if r.ready_event is not None:
                    r.ready_event.set()
                if self._any_ready is not None:
                    self._any_ready.set()
                logger.info("replica %d ready: pid %s, %s on %s", r.index, r.pid,
                            r.info.get("backend"), r.info.get("device"))
            elif kind == "fatal":
                r.last_error = str(ev[1]).strip().splitlines()[0] if ev[1] else "fatal error"
                logger.error("replica %d failed: %s", r.index, ev[1])

    def _update_kv(self) -> None:
        vals = [r.child_stats.get("kv_cache_usage") for r in self._replicas if r.state == "ready"]
        vals = [v for v in vals if v is not None]
        self.stats.kv_cache_usage = sum(vals) / len(vals) if vals else None

    # -- failure handling ----------------------------------------------------------------
    def _on_death(self, r: _Replica, gen: int, why: str) -> None:
        if gen != r.generation or r.state in ("dead", "restarting", "stopped"):
            return
        if self._closing:
            return  # close() reaps the process itself (one waiter per child)
        code = None
        if r.proc is not None:
            r.proc.join(0.1)  # EOF usually beats the exit status by a moment
            code = r.proc.exitcode
            if code is None:
                # Pipe trouble or a hang while the process lives: make the death real.
                r.proc.kill()
        r.exitcode = code
        was_ready = r.state == "ready"
        r.state = "dead"
        detail = r.last_error or why
        r.last_error = f"replica {r.index} (pid {r.pid}, gpu {r.device}) died: {detail}" + (
            f" (exit code {code})" if code is not None else "")
        self._fail_pending(r, r.last_error)
        if r.sender is not None:
            r.sender.close()
        logger.error("%s; in-flight requests failed, restarting it", r.last_error)
        # Reset the backoff once a replica had served for a while.
        if was_ready and r.ready_since is not None and time.monotonic() - r.ready_since > 60:
            r.failures = 0
        r.failures += 1
        if self._any_ready is not None and not self.ready:
            self._any_ready.clear()
        task = asyncio.create_task(self._restart(r, r.generation), name=f"replica-{r.index}-restart")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail_pending(self, r: _Replica, message: str) -> None:
        for p in r.pending.values():
            r.failed_requests += 1
            p.queue.put_nowait(ReplicaError(message))
        r.pending.clear()
        r.outstanding = 0

    async def _restart(self, r: _Replica, gen: int) -> None:
        base, cap = self.restart_backoff
        delay = min(cap, base * 2 ** (r.failures - 1))
        r.state = "restarting"
        old = r.proc
        if old is not None:
            await asyncio.to_thread(old.join, 5)
        try:
            r.conn.close()
        except Exception:  # noqa: BLE001
            pass
        await asyncio.sleep(delay)
        if self._closing or gen != r.generation:
            return
        r.restarts += 1
        await self._spawn(r)

    async def _monitor_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.monitor_interval)
            now = time.monotonic()
            for r in self._replicas:
                if r.state not in ("starting", "ready") or r.proc is None:
                    continue
                if not r.proc.is_alive():
                    self._on_death(r, r.generation, "process exited")
                elif r.state == "ready" and now - r.last_heartbeat > self.heartbeat_timeout:
                    self._on_death(r, r.generation, f"no heartbeat for {self.heartbeat_timeout:.0f} s")
                elif r.state == "starting" and now - r.started_at > self.start_timeout:
                    self._on_death(r, r.generation, f"not ready after {self.start_timeout:.0f} s")

    # -- routing and streaming -----------------------------------------------------------
    def _pick(self) -> _Replica | None:
        live = [r for r in self._replicas if r.state == "ready"]
        if not live:
            return None
        return min(live, key=lambda r: (len(r.pending), r.outstanding, r.last_pick))

    async def _acquire(self) -> _Replica:
        r = self._pick()
        deadline = time.monotonic() + self.acquire_timeout
        while r is None:
            if self._closing or self._any_ready is None:
                raise NoReplicaAvailable("the engine is not running")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoReplicaAvailable(
                    f"no engine replica is available (all {len(self._replicas)} are down or restarting)")
            try:
                await asyncio.wait_for(self._any_ready.wait(), left)
            except asyncio.TimeoutError:
                pass
            r = self._pick()
        return r

    async def stream(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[list[int]]:
        r = await self._acquire()
        rid = f"{request_id or 'req'}#{next(self._ids)}"
        pending = _Pending(rid, asyncio.Queue(), max(0, params.max_tokens))
        r.pending[rid] = pending
        r.outstanding += pending.budget
        r.requests += 1
        r.last_pick = time.monotonic()
        gen = r.generation
        kw = asdict(params)
        kw["stop_token_ids"] = tuple(kw["stop_token_ids"])
        r.sender.put(("start", rid, list(prompt_ids), kw))
        self.stats.active_requests += 1
        finished = False
        try:
            while True:
                item = await pending.queue.get()
                ids: list[int] = []
                while True:
                    if item is _END:
                        finished = True
                        break
                    if isinstance(item, BaseException):
                        finished = True  # nothing left to abort
                        raise item
                    ids.extend(item)
                    if pending.queue.empty():
                        break
                    item = pending.queue.get_nowait()
                if ids:
                    yield ids
                if finished:
                    self.stats.requests_finished += 1
                    return
        finally:
            self.stats.active_requests -= 1
            if r.pending.pop(rid, None) is not None:
                r.outstanding -= max(0, pending.budget - pending.generated)
            if not finished:
                self.stats.requests_aborted += 1
                r.aborted += 1
                if gen == r.generation and r.state == "ready":
                    r.sender.put(("abort", rid))
