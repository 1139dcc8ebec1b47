"""kanitts.offload.WorkerThreads: results, errors, cancellation, close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kanitts.offload import WorkerThreads


def test_results_errors_and_thread_names():
    threads = WorkerThreads(2, "t-offload")

    async def run() -> None:
        names = await asyncio.gather(*[threads.run(lambda: threading.current_thread().name) for _ in range(8)])
        assert set(names) <= {"t-offload_0", "t-offload_1"}
        assert await threads.run(pow, 2, 10) == 1024
        with pytest.raises(ZeroDivisionError):
            await threads.run(lambda: 1 / 0)

    asyncio.run(run())
    threads.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(_run_one(threads))


async def _run_one(threads: WorkerThreads) -> None:
    await threads.run(int)


def test_a_cancelled_wait_lets_the_call_finish_and_drops_its_result():
    threads = WorkerThreads(1, "t-cancel")
    gate, done = threading.Event(), threading.Event()

    def blocked() -> str:
        gate.wait(60)
        done.set()
        return "late"

    async def run() -> None:
        fut = threads.run(blocked)
        fut.cancel()
        gate.set()
        assert await threads.run(lambda: "next") == "next"  # one thread: after blocked() returned
        assert done.is_set() and fut.cancelled()

    asyncio.run(run())
    threads.close()


def test_at_least_one_thread():
    with pytest.raises(ValueError):
        WorkerThreads(0, "none")
