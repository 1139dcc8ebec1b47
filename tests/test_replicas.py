"""Data-parallel engine replicas (ReplicaPool): load sharing, abort, a killed replica, HTTP.

Two CPU replica processes of the native engine on the tiny checkpoint, started once
for the module (spawning a replica imports torch: a few seconds each).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import wave

import pytest
import pytest_asyncio
from _wait import wait_for

from kanitts import tokens as p
from kanitts.config import load_settings
from kanitts.engine.base import SamplingParams
from kanitts.engine.replicas import ReplicaError, ReplicaPool

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [p.START_OF_HUMAN, 1, 40, 41, 42, p.END_OF_TEXT, p.END_OF_HUMAN]


def tiny_settings(tiny_dir, **engine):
    return load_settings(
        None,
        {
            "multi_language": False,
            "languages": {"en": {"model": str(tiny_dir / "model"), "default_voice": "andrew"}},
            "codec": {"model": str(tiny_dir / "codec.nemo")},
            "engine": {"backend": "native", "device": "cpu", "warmup": False, **engine},
        },
        env=False,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tiny_dir):
    s = tiny_settings(tiny_dir, data_parallel_size=2)
    pl = ReplicaPool(s, str(tiny_dir / "model"), restart_backoff=(0.2, 2.0), monitor_interval=0.1)
    await pl.start()
    await pl.wait_ready(timeout=120)
    yield pl
    await pl.close()


async def run(pool, n=60, seed=0):
    out = []
    async for ids in pool.stream(PROMPT, SamplingParams(max_tokens=n, min_tokens=n, seed=seed)):
        out += ids
    return out


def served(pool):
    return [r["requests"] for r in pool.replica_status]


async def test_build_backend_returns_a_pool(tiny_dir):
    from kanitts.models import build_backend

    assert isinstance(build_backend(tiny_settings(tiny_dir, data_parallel_size=2), "m"), ReplicaPool)
    pl = build_backend(tiny_settings(tiny_dir, gpus="0,1"), "m")
    assert isinstance(pl, ReplicaPool) and [r["gpu"] for r in pl.replica_status] == ["0", "1"]
    assert not isinstance(build_backend(tiny_settings(tiny_dir), "m"), ReplicaPool)


async def test_two_replicas_share_the_load(pool):
    before = served(pool)
    outs = await asyncio.gather(*(run(pool, 60, seed=i) for i in range(4)))
    assert all(len(o) == 60 for o in outs)
    for o in outs:  # valid frames: the constrained sampler ran in the replica
        p.FrameParser().feed(o)
    after = served(pool)
    assert [a - b for a, b in zip(after, before)] == [2, 2]
    # Same seed, same tokens, whichever replica serves it.
    assert await run(pool, 40, seed=7) == await run(pool, 40, seed=7)
    st = pool.replica_status
    assert all(r["alive"] and r["active"] == 0 and r["outstanding_tokens"] == 0 for r in st)
    assert pool.stats.active_requests == 0 and pool.stats.tokens_generated >= 240


async def test_sequential_requests_alternate(pool):
    before = served(pool)
    for i in range(4):
        await run(pool, 8, seed=i)
    assert [a - b for a, b in zip(served(pool), before)] == [2, 2]


async def test_abort_reaches_the_replica(pool):
    aborted = pool.stats.requests_aborted
    child_aborted = sum(r.child_stats.get("requests_aborted", 0) for r in pool._replicas)
    stream = pool.stream(PROMPT, SamplingParams(max_tokens=3000, min_tokens=3000, seed=1))
    got = await stream.__anext__()
    assert got
    await stream.aclose()
    assert pool.stats.requests_aborted == aborted + 1
    assert all(r["active"] == 0 for r in pool.replica_status)
    # The replica's own engine counted the abort (reported on its next heartbeat).
    await wait_for(
        lambda: sum(r.child_stats.get("requests_aborted", 0) for r in pool._replicas) == child_aborted + 1
        and all(r.child_stats.get("running", 0) == 0 for r in pool._replicas),
        what="the abort to reach the replica",
    )


async def test_killed_replica_fails_in_flight_cleanly_and_restarts(pool):
    stream = pool.stream(PROMPT, SamplingParams(max_tokens=3000, min_tokens=3000, seed=2))
    assert await stream.__anext__()
    victim = next(r for r in pool.replica_status if r["active"] == 1)
    other = 1 - victim["index"]
    os.kill(victim["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ReplicaError, match="died"):
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
    assert time.monotonic() - t0 < 5
    st = pool.replica_status[victim["index"]]
    assert st["state"] in ("dead", "restarting", "starting") and not st["alive"]
    assert st["failed_requests"] >= 1 and "died" in st["last_error"]
    assert pool.ready  # the other one still serves
    # New requests go to the live replica while the dead one restarts.
    before = served(pool)
    outs = await asyncio.gather(run(pool, 20, seed=3), run(pool, 20, seed=4))
    assert all(len(o) == 20 for o in outs)
    after = served(pool)
    if pool.replica_status[victim["index"]]["state"] != "ready":
        assert after[other] - before[other] >= 1
    # It comes back (new process) and serves again.
    await pool.wait_ready(timeout=60)
    st = pool.replica_status[victim["index"]]
    assert st["restarts"] == 1 and st["pid"] != victim["pid"] and st["alive"]
    before = served(pool)
    await asyncio.gather(*(run(pool, 20, seed=i) for i in range(2)))
    assert [a - b for a, b in zip(served(pool), before)] == [1, 1]


async def test_pool_with_no_live_replica_fails_fast(tiny_dir):
    s = tiny_settings(tiny_dir, data_parallel_size=2)
    pl = ReplicaPool(s, str(tiny_dir / "missing-model"), restart_backoff=(5.0, 5.0))
    from kanitts.hub import ModelLoadError

    with pytest.raises(ModelLoadError, match="no engine replica could start"):
        async with asyncio.timeout(60):
            await pl.start()
    assert not pl.ready


async def test_http_two_replicas_serve_concurrently_and_a_kill_is_a_clean_500(tiny_dir):
    import httpx

    from kanitts.server.app import create_app
    from kanitts.service import TTSService

    s = tiny_settings(tiny_dir, data_parallel_size=2)
    svc = TTSService(s)
    await svc.start()
    try:
        backend = svc.models["en"].backend
        assert isinstance(backend, ReplicaPool)
        await backend.wait_ready(timeout=120)
        app = create_app(s, service=svc)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            body = {"input": "Hello there.", "voice": "andrew", "response_format": "wav", "max_tokens": 80, "seed": 1}
            r1, r2 = await asyncio.gather(
                client.post("/v1/audio/speech", json=body),
                client.post("/v1/audio/speech", json={**body, "seed": 2}),
            )
            for r in (r1, r2):
                assert r.status_code == 200, r.text
                with wave.open(io.BytesIO(r.content)) as w:
                    assert w.getframerate() == p.SAMPLE_RATE and w.getnframes() > 0
            assert [x["requests"] for x in backend.replica_status] == [1, 1]

            # A replica killed mid-request: the client gets a clean 500, not a hang.
            long = {**body, "max_tokens": 3000, "min_tokens": 3000}
            task = asyncio.create_task(client.post("/v1/audio/speech", json=long))
            await wait_for(lambda: any(x["active"] for x in backend.replica_status), what="a running request")
            victim = next(x for x in backend.replica_status if x["active"])
            os.kill(victim["pid"], signal.SIGKILL)
            async with asyncio.timeout(15):
                r = await task
            assert r.status_code == 500
            assert "died" in r.json()["error"]["message"]
            # The other replica keeps serving.
            r = await client.post("/v1/audio/speech", json=body)
            assert r.status_code == 200
    finally:
        await svc.close()
