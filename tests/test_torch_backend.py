import asyncio

import pytest

from kanitts import tokens as p
from kanitts.engine.base import SamplingParams
from kanitts.engine.torch_backend import TorchBackend


@pytest.fixture
async def backend(tiny_model):
    b = TorchBackend(tiny_model, device="cpu")
    await b.start()
    yield b
    await b.close()


PROMPT = [p.START_OF_HUMAN, 1, 40, 41, 42, p.END_OF_TEXT, p.END_OF_HUMAN]


async def run(b, params, prompt=PROMPT):
    out = []
    async for ids in b.stream(prompt, params):
        out += ids
    return out


async def test_constrained_generation_gives_only_valid_frames(backend):
    for seed in range(3):
        toks = await run(backend, SamplingParams(max_tokens=162, seed=seed, temperature=1.0, top_p=1.0))
        parser = p.FrameParser()
        frames = parser.feed(toks)  # raises on any malformed token
        parser.close()
        # the opening [START_OF_AI, START_OF_SPEECH] is teacher-forced: audio comes first
        assert p.AUDIO_TOKEN_START <= toks[0] < p.AUDIO_TOKEN_START + p.CODEBOOK_SIZE
        assert len(frames) >= 1
        assert all(len(f) == 4 and all(0 <= c < p.CODEBOOK_SIZE for c in f) for f in frames)


async def test_without_forced_opening_the_model_generates_it(tiny_model):
    b = TorchBackend(tiny_model, device="cpu", force_opening=False)
    await b.start()
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


async def test_seed_reproduces_and_concurrent_streams_do_not_mix(backend):
    a = SamplingParams(max_tokens=64, seed=11)
    b = SamplingParams(max_tokens=64, seed=12)
    alone_a = await run(backend, a)
    alone_b = await run(backend, b)
    together = await asyncio.gather(run(backend, a), run(backend, b), run(backend, a))
    assert together[0] == alone_a and together[2] == alone_a
    assert together[1] == alone_b
    assert alone_a != alone_b


async def test_max_and_min_tokens(backend):
    toks = await run(backend, SamplingParams(max_tokens=30, min_tokens=30, seed=3))
    assert len(toks) == 30
    assert not any(t in p.STOP_TOKEN_IDS for t in toks)


async def test_closing_the_stream_aborts_generation(backend):
    gen = backend.stream(PROMPT, SamplingParams(max_tokens=4000, seed=1))
    got = 0
    async for ids in gen:
        got += len(ids)
        if got >= 8:
            break
    await gen.aclose()
    await asyncio.sleep(0.4)
    produced = backend.stats.tokens_generated
    await asyncio.sleep(0.3)
    assert backend.stats.tokens_generated == produced  # nothing more is generated
    assert backend.stats.active_requests == 0
    assert backend.stats.requests_aborted >= 1


async def test_cancelling_the_consumer_task_aborts(backend):
    async def consume():
        async for _ in backend.stream(PROMPT, SamplingParams(max_tokens=4000, seed=2)):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)
    produced = backend.stats.tokens_generated
    await asyncio.sleep(0.3)
    assert backend.stats.tokens_generated == produced
    assert backend.stats.active_requests == 0
