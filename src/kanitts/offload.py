"""Blocking calls run on worker threads for an event loop, at a fraction of
``loop.run_in_executor``'s cost on the loop.

``run_in_executor`` wraps each call in a ``concurrent.futures.Future`` chained to an asyncio
future: two futures, two done-callbacks and a ``threading.Condition`` taken from both
threads per call (~25 us of loop CPU each on the 2-core test machine, and lock convoys
between the loop and the worker under load). :class:`WorkerThreads` hands the call over
through a ``queue.SimpleQueue`` and returns the result with one ``call_soon_threadsafe``
(~7 us). The audio path's per-chunk hops (resampling, encoding) and the codec worker's steps
go through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads of :data:`shared_threads` (what ``run_in_executor``'s default executor has).
SHARED_THREADS = min(32, (os.cpu_count() or 1) + 4)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class WorkerThreads:
    """``threads`` daemon threads (started on first use, named ``{name}_{k}``) running
    calls, started in the order handed over; one instance may serve any number of loops.

    ``run(fn, *args)`` (on the loop's thread) returns an asyncio future of ``fn(*args)``;
    ``fn``'s exception is set on the future. Cancelling the future does not stop a call
    that is running: it completes and its result is dropped. ``close()``: threads exit
    after the calls already queued; later ``run`` calls raise ``RuntimeError``.
    """

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError(f"worker threads {self.name!r} are closed")
        if len(self._started) < self.threads:
            self._start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._started:
                self._queue.put(None)

    def _start(self) -> None:
        with self._lock:
            while len(self._started) < self.threads and not self._closed:
                t = threading.Thread(target=self._work, name=f"{self.name}_{len(self._started)}", daemon=True)
                t.start()
                self._started.append(t)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting
                logger.debug("%s: result dropped, its event loop is closed", self.name)
            del item, fut, fn, args, result, exc  # release the call's objects before blocking again


#: The worker threads the audio path's per-chunk calls share (started on first use).
shared_threads = WorkerThreads(SHARED_THREADS, "kanitts-offload")
