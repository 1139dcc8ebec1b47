"""Waiting for a condition in async tests (never a fixed sleep): one helper for every test file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(cond: Callable[[], object], what: str = "condition", timeout: float = 60.0,
                   poll: float = 0.005) -> None:
    """Poll ``cond()`` every ``poll`` s until it is true; AssertionError naming ``what`` after
    ``timeout`` s (a bound against hangs, generous for a loaded 2-core machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)
