"""The native engine end to end on the CPU (tiny checkpoint, float32): generation parity with
transformers' ``generate``, no cross-talk between slots, cancellation, back-pressure, frames."""

from __future__ import annotations

import asyncio

import pytest
import torch
from _wait import wait_for

from kanitts import tokens as p
from kanitts.engine.base import SamplingParams
from kanitts.engine.codebook_constraint import allowed_token_ids
from kanitts.engine.native.backend import NativeBackend

PROMPT = [p.START_OF_HUMAN, 1, 40, 41, 42, p.END_OF_TEXT, p.END_OF_HUMAN]


async def started(path: str, **kw) -> NativeBackend:
    kw.setdefault("max_num_seqs", 8)
    kw.setdefault("max_model_len", 256)
    b = NativeBackend(path, device="cpu", dtype="float32", **kw)
    await b.start()
    return b


@pytest.fixture
async def backend(tiny_model):
    b = await started(tiny_model)
    yield b
    await b.close()


async def run(b, params, prompt=PROMPT) -> list[int]:
    out: list[int] = []
    async for ids in b.stream(prompt, params):
        out += ids
    return out


def hf_generate(path: str, prompt: list[int], n: int, rep: float, constrained: bool) -> list[int]:
    from transformers import Lfm2ForCausalLM, LogitsProcessor, LogitsProcessorList

    class Constrain(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seq = input_ids[0].tolist()
            allowed = allowed_token_ids(seq[: len(prompt)], seq[len(prompt):])
            keep = torch.full_like(scores, float("-inf"))
            ids = torch.tensor(allowed.ids())
            keep[:, ids] = 0.0
            return scores + keep

    hf = Lfm2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    procs = LogitsProcessorList([Constrain()] if constrained else [])
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, repetition_penalty=rep,
                      eos_token_id=p.END_OF_TEXT, pad_token_id=0, logits_processor=procs)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("constrained,rep,opening", [(False, 1.0, False), (False, 1.1, False),
                                                     (True, 1.1, False), (True, 1.0, True)])
async def test_greedy_matches_transformers_generate(tiny_model, constrained, rep, opening):
    prompt = p.with_opening(PROMPT) if opening else PROMPT
    ref = hf_generate(tiny_model, prompt, 40, rep, constrained)
    b = await started(tiny_model, force_opening=False)
    try:
        ours = await run(b, SamplingParams(temperature=0.0, repetition_penalty=rep, max_tokens=40,
                                           constrained=constrained, stop_token_ids=(p.END_OF_TEXT,)), prompt)
    finally:
        await b.close()
    assert ours == ref
    if constrained:
        p.FrameParser().feed(ours)  # raises on any invalid token


async def test_a_seeded_stream_is_the_same_alone_and_among_64_others(tiny_model):
    b = await started(tiny_model, max_num_seqs=72)
    mine = SamplingParams(seed=1234, max_tokens=60, min_tokens=60)
    try:
        alone = await run(b, mine)
        # 1) joined while 64 others are mid-stream at different positions
        others = [b.stream([*PROMPT[:-2], *range(50, 50 + i % 13), *PROMPT[-2:]],
                           SamplingParams(seed=i, max_tokens=400, min_tokens=400)) for i in range(64)]
        firsts = [asyncio.ensure_future(o.__anext__()) for o in others]
        await asyncio.gather(*firsts)
        sched = b.scheduler
        assert sched is not None
        steps = sched.stats.steps
        await wait_for(lambda: sched.stats.steps >= steps + 5, "the others to advance")
        among = await run(b, mine)
        assert sched.stats.peak_active == 65
        for o in others:
            await o.aclose()
        await wait_for(lambda: sched.active == 0, "cancelled slots to be freed")
        # 2) admitted in the same batched prefill as 64 longer prompts (right padding)
        batch = [run(b, SamplingParams(seed=i, max_tokens=8), [*PROMPT[:-2], *range(60, 80), *PROMPT[-2:]])
                 for i in range(64)]
        results = await asyncio.gather(run(b, mine), *batch)
    finally:
        await b.close()
    assert among == alone
    assert results[0] == alone


async def test_cancel_frees_the_slot_within_one_step(tiny_model):
    b = await started(tiny_model)
    try:
        keep = b.stream(PROMPT, SamplingParams(seed=1, max_tokens=10_000, min_tokens=10_000))
        await keep.__anext__()  # keeps the scheduler stepping
        gone = b.stream(PROMPT, SamplingParams(seed=2, max_tokens=10_000, min_tokens=10_000), "gone")
        await gone.__anext__()
        sched = b.scheduler
        assert sched is not None and sched.active == 2
        at_cancel = sched.stats.steps
        await gone.aclose()
        await wait_for(lambda: any(rid == "gone" for rid, _ in sched.stats.released), "the slot to be freed")
        freed_at = next(step for rid, step in sched.stats.released if rid == "gone")
        assert freed_at - at_cancel <= 1
        assert sched.active == 1 and b.stats.requests_aborted == 1
        await keep.aclose()
        await wait_for(lambda: sched.active == 0, "the last slot to be freed")
        assert sched.pool.free_count == sched.pool.size
    finally:
        await b.close()


async def test_every_frame_is_valid_and_stops_obey_min_tokens(backend):
    for seed in range(4):
        toks = await run(backend, SamplingParams(seed=seed, max_tokens=203, temperature=1.0, top_p=1.0))
        parser = p.FrameParser()
        frames = parser.feed(toks)
        parser.close()
        assert p.AUDIO_TOKEN_START <= toks[0] < p.AUDIO_TOKEN_START + p.CODEBOOK_SIZE
        assert len(frames) == len(toks) // 4 and len(toks) == 203
    # a stop id that greedy decoding produces at once ends the stream only after min_tokens
    first = (await run(backend, SamplingParams(temperature=0.0, max_tokens=1)))[0]
    stop_now = await run(backend, SamplingParams(temperature=0.0, max_tokens=50, stop_token_ids=(first,)))
    assert stop_now == [first]
    held = await run(backend, SamplingParams(temperature=0.0, max_tokens=50, min_tokens=9,
                                             stop_token_ids=(first,)))
    assert first not in held[:9] and len(held) >= 10


async def test_seeds_reproduce_and_differ(backend):
    a = await run(backend, SamplingParams(seed=5, max_tokens=32))
    assert await run(backend, SamplingParams(seed=5, max_tokens=32)) == a
    assert await run(backend, SamplingParams(seed=6, max_tokens=32)) != a


async def test_full_pool_makes_requests_wait_not_fail(tiny_model):
    b = await started(tiny_model, max_num_seqs=2, max_waiting=1)
    try:
        outs = await asyncio.gather(*(run(b, SamplingParams(seed=i, max_tokens=24)) for i in range(7)))
        assert [len(o) for o in outs] == [24] * 7
        assert b.scheduler is not None and b.scheduler.stats.peak_active == 2
        assert b.stats.active_requests == 0 and b.stats.requests_finished == 7
    finally:
        await b.close()


async def test_prompt_limits(tiny_model):
    b = await started(tiny_model, max_model_len=64)
    try:
        with pytest.raises(ValueError, match="max_model_len"):
            await run(b, SamplingParams(), [p.START_OF_HUMAN, *range(10, 80), p.END_OF_HUMAN])
        with pytest.raises(ValueError, match="token ids"):
            await run(b, SamplingParams(), [p.START_OF_HUMAN, 10**6, p.END_OF_HUMAN])
        # prompt (7 + 2 opening) + generated tokens never exceed the 64 positions
        toks = await run(b, SamplingParams(seed=0, max_tokens=1000))
        assert len(toks) == 64 - len(p.with_opening(PROMPT))
    finally:
        await b.close()


async def test_close_ends_streams_in_flight_with_an_error(tiny_model):
    b = await started(tiny_model)
    s = b.stream(PROMPT, SamplingParams(seed=1, max_tokens=10_000, min_tokens=10_000))
    await s.__anext__()
    await b.close()
    with pytest.raises(RuntimeError, match="stopped"):
        async for _ in s:
            pass


async def test_a_burst_arrives_together_and_prefills_within_the_padded_budget(tiny_model):
    """Requests of one event-loop tick reach the scheduler in one hand-over; a prefill group
    is bounded by its padded width (9 rows -> 16) x its size <= max_prefill_tokens (64): 4 + 1."""
    b = await started(tiny_model, max_model_len=64, max_prefill_tokens=64)
    try:
        outs = await asyncio.gather(*(run(b, SamplingParams(seed=i, max_tokens=8, min_tokens=8)) for i in range(5)))
        assert b.scheduler is not None
        assert b.scheduler.stats.prefills == 2 and b.scheduler.stats.peak_active == 5
        assert [len(o) for o in outs] == [8] * 5
    finally:
        await b.close()


async def test_hand_overs_start_one_frame_at_a_time_then_grow_to_the_cap(tiny_model):
    """The first groups are ``stream_interval`` tokens (the first frame leaves at once), later
    ones double up to ``max_stream_interval``; the tokens themselves are the same either way."""
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=200, min_tokens=200)
    grown = await started(tiny_model, max_stream_interval=32)
    flat = await started(tiny_model)
    try:
        groups = [ids async for ids in grown.stream(PROMPT, params)]
        plain = [ids async for ids in flat.stream(PROMPT, params)]
    finally:
        await grown.close()
        await flat.close()
    sizes = [len(g) for g in groups]
    assert sizes[:8] == [4, 4, 4, 4, 8, 16, 32, 32], sizes
    assert all(s == 32 for s in sizes[6:-1]) and sum(sizes) == 200
    assert {len(g) for g in plain[:-1]} == {4}
    assert [t for g in groups for t in g] == [t for g in plain for t in g]


# ------------------------------------------------- moved from the retired torch backend's tests
async def test_without_forced_opening_the_model_generates_it(tiny_model):
    b = await started(tiny_model, force_opening=False)
    try:
        toks = await run(b, SamplingParams(max_tokens=10, seed=0))
    finally:
        await b.close()
    assert toks[:2] == [p.START_OF_AI, p.START_OF_SPEECH] or toks[0] == p.START_OF_SPEECH
    assert p.FrameParser().feed(toks) is not None


async def test_unconstrained_random_model_is_rejected_not_misdecoded(backend):
    toks = await run(backend, SamplingParams(max_tokens=40, seed=0, constrained=False, temperature=1.0))
    with pytest.raises(p.MalformedStreamError):
        p.FrameParser().feed(toks)


async def test_max_and_min_tokens(backend):
    toks = await run(backend, SamplingParams(max_tokens=30, min_tokens=30, seed=3))
    assert len(toks) == 30
    assert not any(t in p.STOP_TOKEN_IDS for t in toks)


@pytest.mark.parametrize("how", ["close_the_stream", "cancel_the_consumer_task"])
async def test_closing_the_stream_or_cancelling_its_consumer_aborts_generation(tiny_model, how):
    b = await started(tiny_model, max_model_len=2048)
    long = SamplingParams(max_tokens=4000, min_tokens=4000, seed=1)  # cannot end before it is aborted
    try:
        sched = b.scheduler
        assert sched is not None
        if how == "close_the_stream":
            gen = b.stream(PROMPT, long)
            got = 0
            async for ids in gen:
                got += len(ids)
                if got >= 8:
                    break
            await gen.aclose()
        else:
            first = asyncio.Event()

            async def consume():
                async for _ in b.stream(PROMPT, long.with_(seed=2)):
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await wait_for(lambda: sched.active == 0, "the aborted request's slot to be freed")
        produced = b.stats.tokens_generated
        assert sched.pool.free_count == sched.pool.size  # nothing more is generated
        assert b.stats.tokens_generated == produced < 2000
        assert b.stats.active_requests == 0
        assert b.stats.requests_aborted >= 1
    finally:
        await b.close()
