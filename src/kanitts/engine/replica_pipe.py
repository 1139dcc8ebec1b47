"""The two ends' writers on a replica's duplex :func:`multiprocessing.Pipe` (see
:mod:`kanitts.engine.replicas` for the wire protocol): each writes from its own thread, so
a full pipe never blocks an event loop."""

from __future__ import annotations

import threading
from typing import Any


class PipeSender:
    """Front -> replica writes on a thread (never blocks the event loop)."""

    def __init__(self, conn: Any, name: str) -> None:
        import queue

        self._conn = conn
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, msg: tuple[Any, ...]) -> None:
        self._q.put(msg)

    def close(self) -> None:
        self._q.put(None)

    def _run(self) -> None:
        while True:
            msg = self._q.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, EOFError, ValueError):
                return


class CoalescingSender:
    """Writes events to the pipe from a thread, coalescing whatever has queued up."""

    def __init__(self, conn: Any) -> None:
        import queue

        self._conn = conn
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="replica-sender", daemon=True)
        self._thread.start()

    def put(self, event: tuple[Any, ...]) -> None:
        self._q.put(event)

    def close(self, timeout: float = 5.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        import queue

        while True:
            first = self._q.get()
            batch = [first]
            try:
                while True:
                    batch.append(self._q.get_nowait())
            except queue.Empty:
                pass
            stop = any(e is None for e in batch)
            events = merge_events([e for e in batch if e is not None])
            if events:
                try:
                    self._conn.send(events)
                except (OSError, EOFError, ValueError):
                    return  # the front is gone; the reader notices too
            if stop:
                return


def merge_events(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Merge adjacent-in-time token events of the same request (order per request kept)."""
    out: list[tuple[Any, ...]] = []
    last_tok: dict[str, int] = {}
    for ev in events:
        if ev[0] == "tok":
            i = last_tok.get(ev[1])
            if i is not None:
                out[i] = ("tok", ev[1], out[i][2] + list(ev[2]))
                continue
            last_tok[ev[1]] = len(out)
            out.append(("tok", ev[1], list(ev[2])))
        else:
            # Anything else for a request ends its merge window (keeps end after tokens).
            if len(ev) > 1 and isinstance(ev[1], str):
                last_tok.pop(ev[1], None)
            out.append(ev)
    return out
