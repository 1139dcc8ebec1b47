"""Padding rows of a decode bucket, and a request whose row has no valid token (native
engine, CPU, tiny checkpoint): padding slots never change, and one request's failure
never ends another's (H200 run 5: a -1 reached the embedding at 1,000 streams and the
device-side assert ended every stream)."""

from __future__ import annotations

import pytest
from _wait import wait_for

from kanitts import tokens as p
from kanitts.engine.base import SamplingParams
from kanitts.engine.native.backend import NativeBackend

PROMPT = [p.START_OF_HUMAN, 1, 40, 41, 42, p.END_OF_TEXT, p.END_OF_HUMAN]
LONG = SamplingParams(seed=1, max_tokens=10_000, min_tokens=10_000)


async def started(path: str) -> NativeBackend:
    b = NativeBackend(path, device="cpu", dtype="float32", max_num_seqs=4, max_model_len=512)
    await b.start()
    return b


async def test_a_released_slot_inside_the_bucket_keeps_its_token_and_count(tiny_model):
    b = await started(tiny_model)
    try:
        sched = b.scheduler
        assert sched is not None
        short = b.stream(PROMPT, SamplingParams(seed=0, max_tokens=8, min_tokens=8), "short")
        first = await short.__anext__()  # admitted first: slot 0
        long = b.stream(PROMPT, LONG, "long")
        await long.__anext__()  # slot 1: the bucket is 2 while it runs
        rest = [t async for ids in short for t in ids]
        assert len(first) + len(rest) == 8
        await wait_for(lambda: any(rid == "short" for rid, _ in sched.stats.released), "slot 0 to be freed")
        pool = sched.pool
        tok, gen = int(pool.tok[0]), int(pool.gen[0])
        steps = sched.stats.steps
        await wait_for(lambda: sched.stats.steps >= steps + 5, "five more decode steps with slot 0 as padding")
        assert sched.pool.bound() == 2
        assert (int(pool.tok[0]), int(pool.gen[0])) == (tok, gen)
        await long.aclose()
    finally:
        await b.close()


async def test_a_request_with_no_valid_token_fails_alone(tiny_model):
    b = await started(tiny_model)
    try:
        sched = b.scheduler
        assert sched is not None
        doomed = b.stream(PROMPT, LONG, "doomed")
        await doomed.__anext__()  # slot 0
        other = b.stream(PROMPT, SamplingParams(seed=2, max_tokens=400, min_tokens=400), "other")
        got = list(await other.__anext__())  # slot 1
        pool, run = sched.pool, sched.step.run
        armed = [True]

        def run_with_a_dead_row(*args, **kw):  # in the engine thread, between two steps
            if armed[0]:
                armed[0] = False
                # after END_OF_SPEECH only END_OF_AI may follow; a stop id held back by
                # min_tokens leaves the row no valid candidate
                pool.stop_ids[0, :2] = pool.stop_ids.new_tensor([p.END_OF_SPEECH, p.END_OF_AI])
                pool.min_tokens[0] = 10**6
                pool.gen[0] = 0
                pool.tok[0] = p.END_OF_SPEECH
            return run(*args, **kw)

        sched.step.run = run_with_a_dead_row
        with pytest.raises(RuntimeError, match="no valid token"):
            async for _ in doomed:
                pass
        async for ids in other:
            got += ids
        assert len(got) == 400  # the other stream ran to its end
        await wait_for(lambda: sched.active == 0, "both slots to be freed")
        # the engine still serves
        again = [t async for ids in b.stream(PROMPT, SamplingParams(seed=3, max_tokens=12, min_tokens=12))
                 for t in ids]
        assert len(again) == 12
    finally:
        await b.close()
