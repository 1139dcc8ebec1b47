"""Shutting down with requests in flight: every client gets a clean end, no traceback.

Uvicorn, asked to stop, closes its sockets and waits ``timeout_graceful_shutdown`` seconds
for running requests, then cancels them: a stream is cut mid-chunk (the client sees a
truncated body) and the cancellation is logged as an ASGI traceback. :class:`Drain` gives
the app a deadline instead: :class:`DrainingServer` starts it when shutdown begins, and
each speech request (:mod:`kanitts.server.speech`) checks it between audio chunks. Until
the deadline, requests go on normally (most finish); past it, a stream stops generating
and ends properly (the encoder's tail, the last chunk of the chunked body; for SSE an
``error`` event saying the server is shutting down) and a request not yet answered gets
503 ``server_shutting_down``. The deadline lies :data:`MARGIN_SECONDS` before uvicorn's,
so nothing is left to cancel.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import uvicorn

#: Seconds between the drain deadline and uvicorn's cancellation (at most half the grace).
MARGIN_SECONDS = 1.0


class Drain:
    """The shutdown deadline shared by the requests of one app (``app.state.drain``).

    ``grace_seconds`` is the server's graceful shutdown time (0: none, requests stop at
    once when shutdown begins)."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = max(0.0, float(grace_seconds))
        self._deadline: float | None = None

    def begin(self, now: float | None = None) -> None:
        """Shutdown has begun: requests may run ``grace - margin`` seconds more."""
        now = time.monotonic() if now is None else now
        margin = min(MARGIN_SECONDS, self.grace_seconds / 2)
        self._deadline = now + max(0.0, self.grace_seconds - margin)

    @property
    def started(self) -> bool:
        return self._deadline is not None

    @property
    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    async def guard(
        self, pcm: AsyncIterator[np.ndarray], on_cut: Callable[[], None]
    ) -> AsyncIterator[np.ndarray]:
        """``pcm`` chunk by chunk until the deadline; then calls ``on_cut``, closes ``pcm``
        (aborting its engine requests) and ends normally, so encoders still write their
        tail."""
        try:
            async for chunk in pcm:
                yield chunk
                if self.expired:
                    on_cut()
                    return
        finally:
            aclose = getattr(pcm, "aclose", None)
            if aclose is not None:
                await aclose()


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that starts the app's :class:`Drain` (``app.state.drain``) when
    shutdown begins, before uvicorn waits for the requests in flight."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = getattr(getattr(getattr(self.config.app, "state", None), "drain", None), "begin", None)
        if drain is not None:
            drain()
        await super().shutdown(sockets)
