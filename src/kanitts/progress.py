"""A progress bar for ``kanitts say``: text chunks done and audio seconds made, on stderr.

Shown only when stderr is a terminal, so piped or captured runs stay quiet. It watches a
:class:`~kanitts.synthesis.Synthesis` (its planned ``chunks``, the ``events`` of chunks
that finished, ``audio_seconds``) from a task of its own and changes nothing in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import IO

from kanitts.synthesis import Synthesis

#: Seconds between two refreshes of the bar.
REFRESH_SECONDS = 0.25
#: Terminal (columns, lines) assumed where the terminal reports none.
FALLBACK_SIZE = (80, 24)


def wanted(stream: IO[str] | None = None) -> bool:
    """Whether to draw a bar on ``stream`` (default stderr): only on a terminal."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _size(stream: IO[str]) -> tuple[int, int]:
    """The terminal's (columns, lines), :data:`FALLBACK_SIZE` for what it does not report
    (a bare pty reports 0 x 0, and tqdm then draws nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return FALLBACK_SIZE
    return size.columns or FALLBACK_SIZE[0], size.lines or FALLBACK_SIZE[1]


@contextlib.asynccontextmanager
async def synthesis_progress(synth: Synthesis, enabled: bool, stream: IO[str] | None = None) -> AsyncIterator[None]:
    """While the body runs, draw ``chunks done/total`` with the audio seconds made so far
    on ``stream`` (default stderr); nothing when ``enabled`` is false."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    out = stream or sys.stderr
    ncols, nrows = _size(out)
    bar = tqdm(total=len(synth.chunks), unit="chunk", desc="say", file=out, ncols=ncols, nrows=nrows, leave=False)
    stop = asyncio.Event()

    def refresh() -> None:
        done = sum(1 for e in synth.events if e.finished is not None)
        bar.n = done
        bar.set_postfix_str(f"{synth.audio_seconds:.1f} s audio", refresh=False)
        bar.refresh()

    async def watch() -> None:
        while not stop.is_set():
            refresh()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        stop.set()
        await task
        refresh()
        bar.close()
