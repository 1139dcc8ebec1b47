"""Bounded admission: at most ``max_concurrent`` syntheses run, ``max_queue`` wait.

Beyond that a request is answered 429 with ``Retry-After`` at once, so overload never
turns into an unbounded backlog; a queued request that waits too long gets 503.
"""

from __future__ import annotations

import asyncio

from kanitts.server.errors import APIError


class Slot:
    __slots__ = ("_adm", "_released")

    def __init__(self, adm: "Admission") -> None:
        self._adm = adm
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._adm._sem.release()
            self._adm.running -= 1


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int, timeout: float) -> None:
        self._sem = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout = timeout
        self.waiting = 0
        self.running = 0

    async def acquire(self) -> Slot:
        if self._sem.locked() and self.waiting >= self.max_queue:
            raise APIError(
                429, "server is at capacity; retry shortly", code="queue_full",
                headers={"Retry-After": "2"},
            )
        if not self._sem.locked():  # a free slot: taken at once (wait_for would start a task)
            await self._sem.acquire()
            self.running += 1
            return Slot(self)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise APIError(
                503, "timed out waiting for a synthesis slot; retry shortly", code="queue_timeout",
                headers={"Retry-After": "5"},
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        return Slot(self)
