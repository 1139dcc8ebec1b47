"""Long-form speech: chunk joins, pipelining, pauses, runaway protection, cancellation."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import pytest_asyncio
from _wait import wait_for
from conftest import tiny_settings

SR = 22050

SENTENCES_EN = [
    "The morning train left the station a little after sunrise, carrying commuters toward the city.",
    "Most of them read quietly, while a few watched the fields roll past the windows.",
    "A conductor walked slowly down the aisle and checked every ticket with a patient smile.",
    "Outside, the river caught the light and turned the color of polished copper.",
    "Somebody near the back was telling a long story about a lost umbrella and a kind stranger.",
    "By the time the train reached the bridge, the clouds had begun to gather in the west.",
]
SENTENCES_ES = [
    "El tren de la mañana salió de la estación poco después del amanecer, lleno de viajeros.",
    "La mayoría leía en silencio, mientras algunos miraban los campos pasar por la ventana.",
    "¿Quién había dejado aquel paraguas olvidado junto a la puerta del vagón?",
    "¡Nadie lo sabía, pero todos tenían una teoría distinta y muy divertida!",
    "Afuera, el río reflejaba la luz y se volvía del color del cobre pulido.",
]


def long_text(sentences: list[str], n_chars: int = 3000) -> str:
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < n_chars:
        out.append(sentences[i % len(sentences)])
        i += 1
    return " ".join(out)


def zero_runs(x: np.ndarray, min_len: int = 200) -> list[tuple[int, int]]:
    """(start, length) of runs of exact zeros at least ``min_len`` long."""
    z = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
    d = np.diff(z)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends) if e - s >= min_len]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tiny_model, tiny_codec):
    from kanitts.service import TTSService

    svc = TTSService(tiny_settings(tiny_model, tiny_codec))
    await svc.start()
    yield svc
    await svc.close()


async def collect(svc, text, **opts):
    route = svc.route(text, "andrew", None)
    synth = svc.synthesize(route, text, svc.options(**opts), "t")
    parts = [p async for p in synth.pcm()]
    return synth, np.concatenate(parts)


@pytest.mark.parametrize("sentences,lang", [(SENTENCES_EN, "en"), (SENTENCES_ES, "es")])
@pytest.mark.asyncio(loop_scope="module")
async def test_3000_chars_exact_silence_between_chunks(service, sentences, lang):
    text = long_text(sentences)
    synth, pcm = await collect(service, text, max_tokens=26, seed=1, silence_duration=0.3)
    n_chunks = len(synth.chunks)
    assert n_chunks >= 10
    assert all(c.text for c in synth.chunks)
    runs = zero_runs(pcm)
    assert len(runs) == n_chunks - 1
    assert all(length == round(0.3 * SR) for _, length in runs), runs
    assert synth.usage.output_tokens == 26 * n_chunks  # usage counts every chunk
    assert pcm.size == synth.samples


@pytest.mark.asyncio(loop_scope="module")
async def test_chunks_are_generated_ahead_of_playback(service):
    text = long_text(SENTENCES_EN, 1500)
    synth, _ = await collect(service, text, max_tokens=26, seed=2, max_chunks_ahead=2)
    ev = sorted(synth.events, key=lambda e: e.index)
    assert len(ev) >= 4
    for a, b in zip(ev, ev[1:]):
        # chunk i+1 starts as soon as chunk i has audio, long before chunk i is done
        assert b.started >= a.first_audio
        assert b.started < a.finished


@pytest.mark.asyncio(loop_scope="module")
async def test_joins_fade_without_clicks(service):
    text = long_text(SENTENCES_EN, 600)
    synth, pcm = await collect(service, text, max_tokens=26, seed=3, silence_duration=0.1)
    for start, length in zero_runs(pcm):
        before = np.abs(pcm[start - 20 : start])
        after = np.abs(pcm[start + length : start + length + 20])
        # amplitudes ramp to (nearly) zero at both sides of every join
        assert before[-1] <= 0.02 * max(1e-6, np.abs(pcm).max())
        assert after[0] <= 0.02 * max(1e-6, np.abs(pcm).max())


@pytest.mark.asyncio(loop_scope="module")
async def test_paragraph_and_break_pauses(service):
    text = "First part of the text. <break time=\"700ms\"/> Second part here.\n\nA new paragraph starts."
    synth, pcm = await collect(service, text, max_tokens=26, seed=4, silence_duration=0.2, paragraph_pause=0.9)
    runs = [length for _, length in zero_runs(pcm)]
    assert runs == [round(0.7 * SR), round(0.9 * SR)]


@pytest.mark.asyncio(loop_scope="module")
async def test_markup_is_read_as_text_and_never_crashes(service):
    for text in ("<speak>Hello</speak>", "<break time=", "a < b > c", "<break time='x'/> ok"):
        synth, pcm = await collect(service, text, max_tokens=18, seed=5)
        assert pcm.size > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_normalize_can_be_switched_off(service):
    route = service.route("It costs $5.50.", "andrew", None)
    on = service.synthesize(route, "It costs $5.50.", service.options(), "n1")
    off = service.synthesize(route, "It costs $5.50.", service.options(normalize=False), "n2")
    assert "five dollars and fifty cents" in on.chunks[0].text
    assert off.chunks[0].text == "It costs $5.50."
    for s in (on, off):
        await s.pcm().aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_runaway_length_bound_stops_and_completes(service, caplog):
    caplog.set_level(logging.WARNING, "kanitts.synthesis")
    synth, pcm = await collect(service, "Hi.", seed=6)  # a random model never says END_OF_SPEECH
    assert synth.events[0].stopped_by == "length"
    assert 16 <= synth.usage.output_tokens <= 4 * 50 * 3  # bounded by the text length, not max_tokens
    assert pcm.size > 0
    assert any("length bound" in r.message for r in caplog.records)


class _Backend:
    """Streams valid frames forever (a model that loops)."""

    def __init__(self) -> None:
        self.active = 0

    async def stream(self, prompt, params, request_id=None) -> AsyncIterator[list[int]]:
        from kanitts.tokens import START_OF_AI, START_OF_SPEECH, frame_tokens

        self.active += 1
        try:
            yield [START_OF_AI, START_OF_SPEECH]
            i = 0
            while i < params.max_tokens:
                yield frame_tokens([1, 2, 3, 4])
                i += 4
                await asyncio.sleep(0)
        finally:
            self.active -= 1


class _SilentDecoder:
    async def decode(self, frames, **_options):
        async for batch in frames:
            yield np.zeros(1764 * len(batch), dtype=np.float32)


@pytest.mark.asyncio(loop_scope="module")
async def test_runaway_silence_is_stopped(caplog):
    from kanitts.models import VoiceModel
    from kanitts.routing import Route
    from kanitts.synthesis import SynthesisOptions, Synthesizer

    caplog.set_level(logging.WARNING, "kanitts.synthesis")
    backend = _Backend()
    model = VoiceModel("en", "fake", backend, type("T", (), {"encode": lambda self, t, add_special_tokens=True: [1]})(),
                       ["andrew"], "andrew")
    synth = Synthesizer(_SilentDecoder()).start(Route(model, "en", "andrew", False), "Hello there.",
                                                SynthesisOptions(max_tokens=4000, length_bound=False,
                                                                 max_silence_seconds=1.5))
    pcm = np.concatenate([p async for p in synth.pcm()])
    assert synth.events[0].stopped_by == "silence"
    assert 1.5 * SR <= pcm.size <= 2.0 * SR
    assert backend.active == 0  # the engine stream was closed
    assert any("silence" in r.message for r in caplog.records)


@pytest.mark.asyncio(loop_scope="module")
async def test_cancelling_a_long_request_stops_all_chunks(service):
    backend = service.models["en"].backend
    text = long_text(SENTENCES_EN, 2000)
    route = service.route(text, "andrew", None)
    synth = service.synthesize(route, text, service.options(seed=7, max_chunks_ahead=3), "c")
    it = synth.pcm()
    await it.__anext__()
    await wait_for(lambda: backend.stats.active_requests >= 2, "chunks ahead to run", timeout=120)
    await it.aclose()
    await wait_for(lambda: backend.stats.active_requests == 0, "every chunk's engine stream to end", timeout=120)


def test_long_text_over_http_first_audio_does_not_wait_for_later_chunks(live_server, monkeypatch):
    """A long text's first audio needs its first chunk only: with every later chunk held at the
    engine's door, the first bytes still arrive; released, the rest follows. (Deterministic:
    a gate, not a comparison of timings.)"""
    import threading

    backend = live_server.service.models["en"].backend
    gate = threading.Event()
    held: list[str] = []
    original = backend.stream

    async def gated(prompt, params, request_id=None):
        if request_id and not request_id.endswith("-0"):  # chunk 1, 2, ... of a request
            held.append(request_id)
            if not await asyncio.to_thread(gate.wait, 300):
                raise RuntimeError("gate never opened")
        async for ids in original(prompt, params, request_id=request_id):
            yield ids

    monkeypatch.setattr(backend, "stream", gated)
    text = long_text(SENTENCES_EN)
    got = 0
    with httpx.stream("POST", live_server.url + "/v1/audio/speech",
                      json={"input": text, "voice": "andrew", "response_format": "pcm", "stream_format": "audio",
                            "max_tokens": 26, "seed": 1}, timeout=300) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            if chunk and not gate.is_set():
                gate.set()  # first audio arrived while every later chunk was held
            got += len(chunk)
    assert gate.is_set() and held, "the text was not split into chunks"
    assert got > 0


def test_long_text_streams_with_exact_silence_over_http(live_server):
    text = long_text(SENTENCES_ES)
    r = httpx.post(live_server.url + "/v1/audio/speech",
                   json={"input": text, "voice": "andrew", "response_format": "pcm", "stream_format": "audio",
                         "max_tokens": 26, "seed": 2, "silence_duration": 0.25,
                         "sample_rate": 22050}, timeout=300)
    assert r.status_code == 200
    pcm = np.frombuffer(r.content, dtype="<i2")
    runs = [length for _, length in zero_runs(pcm)]
    n = round(0.25 * SR)
    assert len(runs) >= 10
    # int16 rounding can add a stray zero next to a fade: allow 2 samples
    assert all(n <= length <= n + 2 for length in runs), runs
    assert statistics.median(runs) == n
