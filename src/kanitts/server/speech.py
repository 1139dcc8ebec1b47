"""One speech request, from a validated :class:`SpeechRequest` to audio bytes.

:meth:`Speaker.speak` is the single operation behind ``POST /v1/audio/speech`` and
``kanitts say`` (and any later transport): it resolves everything about a request once,
in this order, and answers bad input with :class:`APIError` (OpenAI's error shape):

1. the models are loaded (503 ``model_loading`` otherwise);
2. ``input`` is not blank (400 ``empty_input``) and not over ``max_input_chars``
   (400 ``input_too_long``);
3. ``model`` is an OpenAI TTS name (any loaded model) or names a loaded model by its id,
   path or public name, which then serves the request (400 ``model_not_found``);
4. the voice (built-in, custom by name or ``{"id"}``, or a blend:
   :mod:`kanitts.server.voice_choice`) and the route: model, language and voice
   (400 ``invalid_voice`` / ``invalid_language``);
5. the response format (``response_format``, else ``pcm`` for SSE, else the default) and
   the output rate (``sample_rate``, else ``pcm_sample_rate`` for pcm and SSE, else the
   model's native rate);
6. the synthesis options (configured defaults, then the request's own values);
7. the text plan: at least one chunk with speakable text (400 ``empty_input``);
8. an admission slot, when an :class:`Admission` is given (429 / 503).

The returned :class:`Speech` holds the planned synthesis and the slot; audio starts only
when its body is consumed: :meth:`Speech.audio` (one encoded file), :meth:`Speech.stream`
(encoded bytes, or SSE events for ``stream_format="sse"``). Either releases the slot and
reports the request exactly once (``on_finish`` receives :meth:`Speech.record`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kanitts.audio import (
    AudioFormat,
    apply_speed,
    content_type,
    encode_all,
    encode_stream,
    encoded_rate,
    resample_stream,
)
from kanitts.routing import Route, RoutingError
from kanitts.server.admission import Admission, Slot
from kanitts.server.errors import APIError
from kanitts.server.shutdown import Drain
from kanitts.server.schemas import OPENAI_TTS_MODELS, SpeechRequest
from kanitts.server.voice_choice import choose_voice, configured_embedding
from kanitts.server.segments import SEGMENTS_HEADER, chunk_segments, segments_header
from kanitts.server.timeline import request_timeline
from kanitts.service import TTSService
from kanitts.synthesis import Synthesis, SynthesisError, collect
from kanitts.tokens import SAMPLE_RATE
from kanitts.voices import Requester

logger = logging.getLogger(__name__)

#: Receives each finished request's record (:meth:`Speech.record`): the access log, metrics.
FinishHook = Callable[[dict[str, Any]], None]
#: Called with +1 when a response stream starts sending and -1 when it ends.
StreamHook = Callable[[int], None]


@dataclass(frozen=True)
class SpeechAudio:
    """A whole clip: ``data`` is the encoded file, ``samples`` the PCM length after tempo
    change and resampling (mono, ``rate`` Hz)."""

    data: bytes
    samples: int
    rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


class Speech:
    """A planned, admitted speech request (built by :meth:`Speaker.speak`).

    ``route`` (model, language, voice), ``fmt`` (the encoder's format), ``rate`` (the PCM
    rate fed to the encoder, Hz), ``headers`` and
    ``media_type`` for the response, ``synthesis`` (its ``usage`` and ``events`` fill in as
    audio is produced). Consume the body once: :meth:`audio` or :meth:`stream`.
    """

    def __init__(
        self,
        request: SpeechRequest,
        route: Route,
        fmt: AudioFormat,
        synthesis: Synthesis,
        *,
        rate: int = SAMPLE_RATE,
        request_id: str,
        t0: float,
        slot: Slot | None,
        on_stream: StreamHook | None,
        on_finish: FinishHook | None,
        drain: Drain | None = None,
        marks: dict[str, float] | None = None,
    ) -> None:
        self.request = request
        self.route = route
        self.fmt = fmt
        self.rate = rate
        self.synthesis = synthesis
        self.request_id = request_id
        self.t0 = t0
        self._slot = slot
        self._on_stream = on_stream
        self._on_finish = on_finish
        self._drain = drain
        #: True when server shutdown cut the audio short (see :mod:`kanitts.server.shutdown`).
        self.cut = False
        self._segments_sent = 0  # SSE segment events sent so far
        self._segments: list[dict[str, Any]] | None = None  # a whole clip's, with timestamps=true
        #: Request-level stage stamps (perf_counter) by timeline key (:mod:`kanitts.server.timeline`).
        self.marks: dict[str, float] = dict(marks or {})

    # -- response metadata ----------------------------------------------------------------
    @property
    def stream_format(self) -> str | None:
        """``None`` (one file), ``"audio"`` (streamed file bytes) or ``"sse"``."""
        return self.request.stream_format

    @property
    def media_type(self) -> str:
        return "text/event-stream" if self.stream_format == "sse" else content_type(self.fmt)

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: the route taken (the model's public name, never a local path),
        the audio's sample rate (``X-Sample-Rate``, Hz, as the file holds it), the PCM
        layout for ``pcm``, no caching for SSE."""
        headers = {
            "X-Kanitts-Voice": self.route.voice or "",
            "X-Kanitts-Language": self.route.language,
            "X-Kanitts-Model": self.route.model.name,
            "X-Sample-Rate": str(encoded_rate(self.fmt, self.rate)),
        }
        if self.fmt == "pcm":
            headers.update({"X-Channels": "1", "X-Bit-Depth": "16"})
        if self.stream_format == "sse":
            headers["Cache-Control"] = "no-cache"
        if self._segments is not None:
            headers[SEGMENTS_HEADER] = segments_header(self._segments)
        return headers

    # -- bodies ---------------------------------------------------------------------------
    def pcm(self) -> AsyncIterator[np.ndarray]:
        """Mono float32 PCM chunks at ``rate`` Hz, tempo-changed by ``speed`` (at the
        model's rate, then resampled by one streaming resampler for the whole request)."""
        pcm = self.synthesis.pcm()
        if self._drain is not None:
            pcm = self._drain.guard(pcm, self._cut)
        if self.request.speed != 1.0:  # pass-through layers are skipped: each costs every chunk
            pcm = apply_speed(pcm, self.request.speed, SAMPLE_RATE)
        return pcm if self.rate == SAMPLE_RATE else resample_stream(pcm, SAMPLE_RATE, self.rate)

    def _cut(self) -> None:
        self.cut = True

    async def audio(self) -> SpeechAudio:
        """The whole clip as one encoded file (the encoder runs in a worker thread).

        Raises :class:`APIError` 500 ``synthesis_failed`` when synthesis fails. Releases
        the slot; reports ``ok``, ``error`` or ``cancelled`` (the awaiting task was
        cancelled, e.g. the client disconnected)."""
        try:
            pcm = await collect(self.pcm())
            if self.cut:
                self._finish("cancelled", None)
                raise APIError(503, "the server is shutting down; retry on another replica or later",
                               code="server_shutting_down", headers={"Retry-After": "5"})
            data = await asyncio.to_thread(encode_all, pcm, self.fmt, self.rate)
        except SynthesisError as exc:
            self._finish("error", None)
            raise APIError(500, str(exc), code="synthesis_failed") from None
        except asyncio.CancelledError:  # the client went away: the engine requests are aborted
            self._finish("cancelled", None)
            raise
        finally:
            self._release()
        if self.request.timestamps:
            self._segments = chunk_segments(self.synthesis, self.request.speed, self.rate)
        self._finish("ok", time.perf_counter() - self.t0)
        return SpeechAudio(data, int(pcm.size), self.rate)

    def stream(self) -> AsyncIterator[bytes]:
        """The response body, sent as produced: encoded file bytes, or for SSE one
        ``speech.audio.delta`` event per piece (base64), a ``segment`` event
        (:mod:`kanitts.server.segments`) after each long-form chunk's audio, then
        ``speech.audio.done`` with the usage, or an ``error`` event when synthesis fails
        mid-stream."""
        if self.stream_format == "sse":
            return self._encoded(_sse_delta, _sse_done, _sse_error, self._new_segments)
        return self._encoded(lambda data: data, lambda _: None, lambda _: None)

    async def _encoded(
        self,
        wrap: Callable[[bytes], bytes],
        done: Callable[[Synthesis], bytes | None],
        fail: Callable[[str], bytes | None],
        side: Callable[[], list[bytes]] | None = None,
    ) -> AsyncIterator[bytes]:
        """Both stream formats: PCM -> tempo -> encoder (worker thread for big chunks) ->
        ``wrap``; always releases the slot and reports once (``cancelled`` on disconnect)."""
        ttfa: float | None = None
        status = "cancelled"
        if self._on_stream is not None:
            self._on_stream(1)
        stream = encode_stream(self.pcm(), self.fmt, self.rate)
        try:
            async for data in stream:
                if ttfa is None:
                    ttfa = time.perf_counter() - self.t0
                    yield wrap(data)
                    self.marks["first_byte_ms"] = time.perf_counter()  # the server's send returned
                else:
                    yield wrap(data)
                for event in side() if side is not None else ():
                    yield event
            if self.cut:  # shutdown: the body ends properly, short
                status = "cancelled"
                logger.warning("request %s: ended early, the server is shutting down", self.request_id)
                tail = fail("the server is shutting down")
            else:
                status = "ok"
                for event in side() if side is not None else ():
                    yield event
                tail = done(self.synthesis)
            if tail:
                yield tail
        except SynthesisError as exc:
            status = "error"
            logger.error("request %s: %s (stream ended early)", self.request_id, exc)
            tail = fail(str(exc))
            if tail:
                yield tail
        finally:
            if self._on_stream is not None:
                self._on_stream(-1)
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
            self._release()
            self._finish(status, ttfa)

    def _new_segments(self) -> list[bytes]:
        """SSE events for the chunks finished since the last call."""
        new = chunk_segments(self.synthesis, self.request.speed, self.rate, skip=self._segments_sent)
        self._segments_sent += len(new)
        return [_sse_event(seg) for seg in new]

    # -- bookkeeping ----------------------------------------------------------------------
    def _release(self) -> None:
        if self._slot is not None:
            self._slot.release()

    def _finish(self, status: str, ttfa: float | None) -> None:
        if self._on_finish is not None:
            self._on_finish(self.record(status, ttfa))

    def record(self, status: str, ttfa: float | None) -> dict[str, Any]:
        """The request's log record: route, sizes, the timeline to first audio (the
        :data:`~kanitts.server.timeline.STAGES`, ms since arrival; ``ttfa_ms`` is the first
        encoded bytes, or the whole clip for a non-streamed answer), real-time factor,
        tokens, ``status`` (ok, error, cancelled), ``elapsed_s`` since arrival."""
        synth = self.synthesis
        elapsed = time.perf_counter() - self.t0
        audio_s = synth.audio_seconds
        timeline = request_timeline(self.t0, self.marks, synth)
        timeline["ttfa_ms"] = None if ttfa is None else round(ttfa * 1000, 1)
        return {
            "request_id": self.request_id,
            "voice": synth.route.voice,
            "language": synth.route.language,
            "model": synth.route.model.name,
            "chars": len(self.request.input),
            "format": self.fmt,
            "stream": self.stream_format,
            "chunks": len(synth.chunks),
            "audio_seconds": round(audio_s, 3),
            **timeline,
            "rtf": round(elapsed / audio_s, 4) if audio_s > 0 else None,
            "tokens": synth.usage.output_tokens,
            "status": status,
            "elapsed_s": round(elapsed, 4),
        }


class Speaker:
    """Turns speech requests into :class:`Speech` (see the module docstring for the rules).

    ``default_format`` answers requests without ``response_format``; ``pcm_rate`` is the
    output rate (Hz) of pcm and SSE audio without ``sample_rate``; ``max_input_chars``
    (``None``: no limit) caps ``input``; ``admission`` bounds concurrent syntheses (``None``:
    unbounded, e.g. the CLI); ``on_stream`` / ``on_finish`` observe streams and finished
    requests (the server's gauge and access log); ``drain`` ends requests cleanly at
    shutdown (:mod:`kanitts.server.shutdown`).
    """

    def __init__(
        self,
        service: TTSService,
        *,
        default_format: AudioFormat = "mp3",
        pcm_rate: int = 24_000,
        max_input_chars: int | None = None,
        admission: Admission | None = None,
        on_stream: StreamHook | None = None,
        on_finish: FinishHook | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.service = service
        self.default_format = default_format
        self.pcm_rate = pcm_rate
        self.max_input_chars = max_input_chars
        self.admission = admission
        self.on_stream = on_stream
        self.on_finish = on_finish
        self.drain = drain

    def output_rate(self, fmt: str, sample_rate: int | None, sse: bool = False) -> int:
        """The output rate in Hz: ``sample_rate`` when given, else ``pcm_sample_rate`` for pcm
        and SSE (24,000, OpenAI's), else the model's 22,050."""
        if sample_rate is not None:
            return sample_rate
        return self.pcm_rate if fmt == "pcm" or sse else SAMPLE_RATE

    async def speak(self, request: SpeechRequest, request_id: str = "", t0: float | None = None,
                    who: Requester | None = None) -> Speech:
        """Validate, route and plan ``request``, then take an admission slot.

        ``t0`` is the arrival time (``time.perf_counter()``; now when omitted), the origin of
        the logged latencies; ``who`` the caller, whose custom voices it may use
        (:mod:`kanitts.server.voice_choice`; default: keys off). Raises :class:`APIError`
        for anything the client must fix or retry; no audio is generated until the returned
        body is consumed."""
        now = time.perf_counter()
        t0 = now if t0 is None else t0
        marks = {"handler_ms": now}
        svc = self.service
        if not svc.ready:
            raise APIError(503, "the model is still loading; retry shortly", code="model_loading",
                           headers={"Retry-After": "5"})
        text = request.input
        if not text or not text.strip():
            raise APIError(400, "input must not be empty", param="input", code="empty_input")
        if self.max_input_chars is not None and len(text) > self.max_input_chars:
            raise APIError(400, f"input is longer than {self.max_input_chars} characters",
                           param="input", code="input_too_long")
        languages = self._model_languages(request.model)
        choice = choose_voice(svc, request.voice, who or Requester(), svc.settings.server.unknown_voice)
        try:
            route = svc.route(text, choice.router_voice, request.language, languages, choice.among)
        except RoutingError as exc:
            raise APIError(400, str(exc), param=exc.param, code=f"invalid_{exc.param}") from None
        embedding = choice.embedding
        if embedding is not None:
            route = dataclasses.replace(route, voice=choice.label)
        else:
            embedding = configured_embedding(svc, route, who or Requester())
        fmt: AudioFormat = request.response_format or self.default_format
        if request.stream_format == "sse" and request.response_format is None:
            fmt = "pcm"
        rate = self.output_rate(fmt, request.sample_rate, request.stream_format == "sse")
        opts = svc.options(
            temperature=request.temperature,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
            seed=request.seed,
            max_tokens=request.max_tokens,
            min_tokens=request.min_tokens,
            max_chunk_seconds=request.max_chunk_duration,
            silence_duration=request.silence_duration,
            normalize=request.normalize,
            lexicon=request.lexicon,
        )
        if request.min_tokens is not None:
            opts.length_bound = False
        if embedding is not None:
            opts.speaker_embedding = tuple(embedding.tolist())
        synth = svc.synthesize(route, text, opts, request_id)  # plans only; audio starts when iterated
        if not any(chunk.text.strip() for chunk in synth.chunks):
            raise APIError(400, "input contains no speakable text", param="input", code="empty_input")
        marks["planned_ms"] = time.perf_counter()
        slot = await self.admission.acquire() if self.admission is not None else None  # 429/503 when full
        marks["admitted_ms"] = time.perf_counter()
        return Speech(request, route, fmt, synth, rate=rate, request_id=request_id, t0=t0, slot=slot,
                      on_stream=self.on_stream, on_finish=self.on_finish, drain=self.drain, marks=marks)

    def _model_languages(self, name: str | None) -> list[str] | None:
        """The languages the request's ``model`` restricts routing to: ``None`` (all) for
        no model or an OpenAI name; those of the loaded model named by its id, path or
        public name; 400 ``model_not_found`` otherwise (listing the public names)."""
        if name is None or name in OPENAI_TTS_MODELS:
            return None
        models = self.service.models
        langs = [code for code, m in models.items() if name in (code, m.model_id, m.name, m.path)]
        if not langs:
            public = sorted({m.name for m in models.values()})
            raise APIError(
                400,
                f"model {name!r} is not available; use one of: {', '.join([*OPENAI_TTS_MODELS, *public])}",
                param="model", code="model_not_found",
            )
        return langs


def _sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _sse_delta(data: bytes) -> bytes:
    return _sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})


def _sse_done(synth: Synthesis) -> bytes:
    return _sse_event({"type": "speech.audio.done", "usage": synth.usage.as_dict()})


def _sse_error(message: str) -> bytes:
    return _sse_event({"type": "error", "error": {"message": message, "type": "server_error"}})
