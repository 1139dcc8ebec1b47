"""Text -> PCM: normalization, chunking, pipelined generation, joins, cancellation.

A request's chunks are started ahead of playback (``max_chunks_ahead``) so chunk i+1
generates while chunk i is heard; audio is emitted strictly in order, with exactly the
planned silence between chunks and short fades at every join. Closing the PCM iterator
cancels every chunk task, which closes every engine stream (an abort in the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kanitts.engine.base import DEFAULT_SAMPLING, SamplingParams
from kanitts.tokens import SAMPLE_RATE, TOKENS_PER_SECOND, FrameParser, MalformedStreamError
from kanitts.routing import Route

logger = logging.getLogger(__name__)

FADE_SECONDS = 0.005
_END = object()


class SynthesisError(RuntimeError):
    """Generation failed for a request (never affects other requests)."""


class PcmDecoder(Protocol):
    """Frames -> float32 PCM chunks; ``fixed_chunks=True`` (passed only for seeded
    requests) asks for chunk boundaries that do not depend on timing."""

    def decode(self, frames: AsyncIterator[list[list[int]]], **kwargs: bool) -> AsyncIterator[np.ndarray]: ...


class Normalizer(Protocol):
    def __call__(self, text: str, language: str, lexicon: dict[str, str] | None = None) -> str: ...


@dataclass
class SynthesisOptions:
    temperature: float = DEFAULT_SAMPLING.temperature
    top_p: float = DEFAULT_SAMPLING.top_p
    repetition_penalty: float = DEFAULT_SAMPLING.repetition_penalty
    max_tokens: int = DEFAULT_SAMPLING.max_tokens
    min_tokens: int = 0
    seed: int | None = None
    constrained: bool = True
    normalize: bool = True
    #: The request's pronunciation lexicon (written -> spoken), applied before the server's.
    lexicon: dict[str, str] | None = None
    max_chunk_seconds: float = 12.0
    threshold_seconds: float = 15.0
    silence_duration: float = 0.2
    paragraph_pause: float = 0.6
    chars_per_second: float | None = None
    max_chunks_ahead: int = 2
    max_silence_seconds: float = 1.5
    #: Bound each chunk's tokens by its text length (runaway protection).
    length_bound: bool = True
    #: KaniTTS-2: the request's speaker embedding (a cloned or blended voice), given to
    #: every chunk's generation; None for v1 models and voiceless requests.
    speaker_embedding: tuple[float, ...] | None = None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ChunkEvent:
    """Timestamps for one text chunk (proof of pipelining; also logged)."""

    index: int
    text: str
    started: float = 0.0
    prompt_ready: float | None = None  # the prompt tokenized
    submitted: float | None = None  # a codec slot taken, the prompt handed to the engine
    first_token: float | None = None  # first generated token from the engine
    first_frame: float | None = None  # first complete frame handed to the codec
    first_audio: float | None = None
    finished: float | None = None
    samples: int = 0
    stopped_by: str | None = None
    #: Where the chunk lies in the request's PCM (samples at ``SAMPLE_RATE``, before speed
    #: change; end exclusive, the silence after it excluded); set as it is emitted.
    start_sample: int | None = None
    end_sample: int | None = None


@dataclass
class Synthesis:
    """One request's audio: ``pcm()`` yields float32 mono chunks at 22050 Hz."""

    route: Route
    text: str
    chunks: list[Any]
    usage: Usage = field(default_factory=Usage)
    events: list[ChunkEvent] = field(default_factory=list)
    samples: int = 0
    _iter: AsyncIterator[np.ndarray] | None = None

    @property
    def audio_seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def pcm(self) -> AsyncIterator[np.ndarray]:
        assert self._iter is not None
        return self._iter


def token_bound(text: str, language: str, max_tokens: int, estimate: Any, cps: float | None) -> int:
    """Generous length bound for a chunk: 3x its estimated duration + 2 s, in whole frames."""
    try:
        est = float(estimate(text, language, cps))
    except Exception:  # noqa: BLE001
        est = len(text) / 14.0
    bound = math.ceil((est * 3.0 + 2.0) * TOKENS_PER_SECOND / 4) * 4 + 2
    return max(16, min(max_tokens, bound))


class Synthesizer:
    """Shared by all requests; holds no per-request state."""

    def __init__(
        self,
        decoder: PcmDecoder,
        *,
        normalizer: Normalizer | None = None,
        planner: Any = None,
        estimator: Any = None,
    ) -> None:
        if planner is None or estimator is None or normalizer is None:
            from kanitts import text as text_mod

            planner = planner or text_mod.plan_chunks
            estimator = estimator or text_mod.estimate_seconds
            normalizer = normalizer or text_mod.normalize
        self.decoder = decoder
        self.normalizer = normalizer
        self.planner = planner
        self.estimator = estimator

    def plan(self, text: str, language: str, opts: SynthesisOptions) -> list[Any]:
        spoken = self.normalizer(text, language, lexicon=opts.lexicon) if opts.normalize else text
        chunks = self.planner(
            spoken,
            language,
            chars_per_second=opts.chars_per_second,
            threshold_seconds=opts.threshold_seconds,
            max_chunk_seconds=opts.max_chunk_seconds,
            sentence_pause=opts.silence_duration,
            paragraph_pause=max(opts.paragraph_pause, opts.silence_duration),
        )
        return chunks

    def start(self, route: Route, text: str, opts: SynthesisOptions, request_id: str = "") -> Synthesis:
        """Plan the request; audio starts flowing when ``pcm()`` is iterated."""
        chunks = self.plan(text, route.language, opts)
        synth = Synthesis(route=route, text=text, chunks=chunks)
        synth._iter = self._run(synth, opts, request_id)
        return synth

    # -- per request ---------------------------------------------------------------------
    async def _run(self, synth: Synthesis, opts: SynthesisOptions, rid: str) -> AsyncIterator[np.ndarray]:
        chunks = synth.chunks
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in chunks]
        tasks: dict[int, asyncio.Task[None]] = {}
        ahead = max(0, opts.max_chunks_ahead)

        playing = 0
        launched = 0
        by_index: dict[int, ChunkEvent] = {}
        first_audio = [False] * len(chunks)

        def launch() -> None:
            """Start the next chunks, at most ``ahead`` beyond the one playing, each only
            once its predecessor has produced audio: generation ahead of playback without
            making the first chunk share the engine (time to first audio stays that of a
            one-sentence request)."""
            nonlocal launched
            while launched < len(chunks) and launched <= playing + ahead:
                j = launched
                prev_ready = j == 0 or first_audio[j - 1] or (j - 1) not in tasks or tasks[j - 1].done()
                if not prev_ready:
                    return
                launched += 1
                if not chunks[j].text.strip():
                    first_audio[j] = True
                    continue
                ev = ChunkEvent(index=j, text=chunks[j].text)
                synth.events.append(ev)
                by_index[j] = ev

                def on_first(j: int = j) -> None:
                    first_audio[j] = True
                    launch()

                tasks[j] = asyncio.create_task(
                    self._chunk(synth, j, chunks[j].text, opts, queues[j], ev, rid, on_first),
                    name=f"{rid}-chunk{j}",
                )

        fade_n = int(FADE_SECONDS * SAMPLE_RATE)
        # Ramps never reach 0, so the only exact zeros at a join are the planned silence.
        ramp_in = (np.arange(1, fade_n + 1, dtype=np.float32) / (fade_n + 1)).astype(np.float32)
        ramp_out = ramp_in[::-1].copy()
        emitted_any = False
        try:
            for i, chunk in enumerate(chunks):
                playing = i
                launch()
                held: np.ndarray | None = None  # tail kept back for the fade-out
                first = True
                if i in tasks:
                    while True:
                        item = await queues[i].get()
                        if item is _END:
                            break
                        if isinstance(item, BaseException):
                            raise item
                        pcm: np.ndarray = item
                        if first and emitted_any and pcm.size:
                            n = min(fade_n, pcm.size)
                            pcm = pcm.copy()
                            pcm[:n] *= ramp_in[:n]
                        if pcm.size:
                            first = False
                        if held is not None:
                            pcm = np.concatenate([held, pcm])
                        if pcm.size > fade_n:
                            held = pcm[-fade_n:]
                            out = pcm[:-fade_n]
                        else:
                            held, out = pcm, None
                        if out is not None and out.size:
                            if by_index[i].start_sample is None:
                                by_index[i].start_sample = synth.samples
                            synth.samples += out.size
                            emitted_any = True
                            yield out
                    del tasks[i]
                last = i == len(chunks) - 1
                if held is not None and held.size:
                    if not last:
                        held = held * ramp_out[-held.size :]
                    ev_i = by_index.get(i)
                    if ev_i is not None and ev_i.start_sample is None:
                        ev_i.start_sample = synth.samples
                    synth.samples += held.size
                    emitted_any = True
                    if ev_i is not None:
                        ev_i.end_sample = synth.samples
                    yield held
                pause = 0.0 if last else float(getattr(chunk, "pause_after", 0.0))
                if pause > 0 and (emitted_any or not last):
                    n = int(round(pause * SAMPLE_RATE))
                    synth.samples += n
                    emitted_any = True
                    yield np.zeros(n, dtype=np.float32)
        finally:
            for t in tasks.values():
                t.cancel()
            for t in list(tasks.values()):
                with contextlib.suppress(BaseException):
                    await t

    async def _chunk(
        self,
        synth: Synthesis,
        index: int,
        text: str,
        opts: SynthesisOptions,
        out: asyncio.Queue[Any],
        ev: ChunkEvent,
        rid: str,
        on_first_audio: Any = None,
    ) -> None:
        route = synth.route
        model = route.model
        ev.started = time.perf_counter()
        try:
            prompt = model.prompt(text, route.voice)
            ev.prompt_ready = time.perf_counter()
            max_tokens = opts.max_tokens
            if opts.length_bound:
                max_tokens = token_bound(text, route.language, opts.max_tokens, self.estimator, opts.chars_per_second)
            max_tokens = max(max_tokens, opts.min_tokens)
            params = SamplingParams(
                temperature=opts.temperature,
                top_p=opts.top_p,
                repetition_penalty=opts.repetition_penalty,
                max_tokens=max_tokens,
                min_tokens=min(opts.min_tokens, max_tokens),
                seed=None if opts.seed is None else opts.seed + index,
                constrained=opts.constrained,
                speaker_embedding=opts.speaker_embedding,
            )
            synth.usage.input_tokens += len(prompt)
            parser = FrameParser()
            generated = 0
            hit_stop = False
            tokens = model.backend.stream(prompt, params, request_id=f"{rid}-{index}")

            async def frames() -> AsyncIterator[list[list[int]]]:
                nonlocal generated, hit_stop
                ev.submitted = time.perf_counter()
                try:
                    async for ids in tokens:
                        if ev.first_token is None:
                            ev.first_token = time.perf_counter()
                        generated += len(ids)
                        synth.usage.output_tokens += len(ids)
                        got = parser.feed(ids)
                        if parser.finished:
                            hit_stop = True
                        if got:
                            if ev.first_frame is None:
                                ev.first_frame = time.perf_counter()
                            yield got
                        if parser.finished:
                            break
                    parser.close()
                finally:
                    await tokens.aclose()  # type: ignore[attr-defined]

            silent = 0
            max_silent = int(opts.max_silence_seconds * SAMPLE_RATE)
            frames_gen = frames()
            try:
                # A seed promises the same audio every time: then the codec's chunk
                # boundaries must not follow the tokens' arrival timing.
                decoded = (self.decoder.decode(frames_gen, fixed_chunks=True) if opts.seed is not None
                           else self.decoder.decode(frames_gen))
                async with contextlib.aclosing(decoded) as pcm_stream:  # type: ignore[type-var]
                    async for pcm in pcm_stream:
                        if ev.first_audio is None:
                            ev.first_audio = time.perf_counter()
                            if on_first_audio is not None:
                                on_first_audio()
                        ev.samples += pcm.size
                        out.put_nowait(pcm)
                        silent = _trailing_silence(pcm, silent)
                        if silent >= max_silent:
                            ev.stopped_by = "silence"
                            logger.warning(
                                "request %s chunk %d: stopped after %.1f s of silence (runaway)",
                                rid, index, silent / SAMPLE_RATE,
                            )
                            break
            finally:
                # Whatever the decoder did with its input, the engine stream ends here
                # (an abort when we stopped early).
                for gen in (frames_gen, tokens):
                    with contextlib.suppress(RuntimeError):
                        await gen.aclose()  # type: ignore[attr-defined]
            fixed_length = opts.min_tokens >= max_tokens  # benchmarks ask for exactly this many
            if ev.stopped_by is None and not hit_stop and generated >= max_tokens and not fixed_length:
                ev.stopped_by = "length"
                logger.warning(
                    "request %s chunk %d: stopped at its length bound (%d tokens) without an end of speech",
                    rid, index, max_tokens,
                )
            out.put_nowait(_END)
            if ev.first_audio is None and on_first_audio is not None:
                on_first_audio()  # produced no audio: let the next chunk start anyway
        except asyncio.CancelledError:
            raise
        except MalformedStreamError as exc:
            logger.error("request %s chunk %d: malformed token stream: %s", rid, index, exc)
            out.put_nowait(SynthesisError(f"the model produced an invalid audio token stream: {exc}"))
        except Exception as exc:  # noqa: BLE001 - reported to this request only
            logger.exception("request %s chunk %d failed", rid, index)
            out.put_nowait(SynthesisError(f"synthesis failed: {exc}"))
        finally:
            ev.finished = time.perf_counter()


def _trailing_silence(pcm: np.ndarray, silent_before: int, threshold: float = 1e-3) -> int:
    """Length of the silent run at the end of the stream so far (samples below ``threshold``)."""
    if pcm.size == 0:
        return silent_before
    tail = pcm[-256:]  # speech is loud near the end of a chunk: look there first
    loud = np.flatnonzero(np.abs(tail) > threshold)
    if loud.size:
        return tail.size - 1 - int(loud[-1])
    loud = np.flatnonzero(np.abs(pcm) > threshold)
    if loud.size == 0:
        return silent_before + pcm.size
    return pcm.size - 1 - int(loud[-1])


async def collect(pcm: AsyncIterator[np.ndarray]) -> np.ndarray:
    parts = [p async for p in pcm]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
