"""FastAPI app factory and the OpenAI-compatible routes.

``create_app(settings)`` builds a fresh app whose lifespan loads the models in the
background: the port answers ``/health`` at once and speech requests get 503 until the
models are ready. Nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kanitts.audio import TempoChanger, content_type, encode_all, encode_stream
from kanitts.config import Settings
from kanitts.tokens import SAMPLE_RATE
from kanitts.routing import RoutingError
from kanitts.server.admission import Admission
from kanitts.server.errors import APIError, install_error_handlers
from kanitts.server.schemas import OPENAI_TTS_MODELS, SpeechRequest
from kanitts.service import TTSService
from kanitts.synthesis import Synthesis, SynthesisError, collect

logger = logging.getLogger(__name__)
access_log = logging.getLogger("kanitts.requests")


def create_app(
    settings: Settings,
    *,
    service: TTSService | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app. ``service`` may be injected (tests); ``on_fatal`` is called with a
    one-line message when the models cannot load (the CLI stops the server)."""
    svc = service or TTSService(settings)
    from kanitts.models import admission_limit

    admission = Admission(admission_limit(settings), settings.server.max_queue,
                          settings.server.queue_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def boot() -> None:
            try:
                await svc.start()
            except Exception as exc:  # noqa: BLE001 - reported, not raised into uvicorn
                logger.error("startup failed: %s", exc)
                if on_fatal is not None:
                    on_fatal(str(exc))

        task = asyncio.create_task(boot()) if not svc.ready else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await svc.close()

    app = FastAPI(title="kanitts-vllm", version="0.1.0", lifespan=lifespan)
    app.state.service = svc
    app.state.settings = settings
    app.state.admission = admission
    app.state.active_streams = 0
    #: Callables receiving each finished request's record (metrics, audit); see log_request.
    app.state.observers = []
    install_error_handlers(app)
    # Production layer (issue 8): keys/limits/CORS, Prometheus metrics, web playground.
    from kanitts.server.metrics import install_metrics
    from kanitts.server.playground import install_playground
    from kanitts.server.security import install_security

    install_security(app, settings)
    install_metrics(app, svc)
    install_playground(app)

    app.add_middleware(RequestIdMiddleware, max_body_bytes=settings.server.max_body_bytes)

    # -- health and discovery -----------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "tts_ready": svc.ready,
            "models": {code: model_health(code, st) for code, st in svc.status.items()},
            "active_streams": app.state.active_streams,
            "queued": admission.waiting,
        }

    def model_health(code: str, st: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": st.model, "state": st.state}
        if st.error:
            out["error"] = st.error
        model = svc.models.get(code)
        if model is not None:
            out["backend"] = model.backend.name
            out["engine_ready"] = model.backend.ready
            replicas = getattr(model.backend, "replica_status", None)
            if replicas is not None:
                out["replicas"] = replicas
        return out

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if svc.ready and all(m.backend.ready for m in svc.models.values()):
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": svc.error}, status_code=503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = [m.model_id for m in svc.models.values()] + list(OPENAI_TTS_MODELS)
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "kanitts"} for i in ids],
        }

    @app.get("/v1/audio/voices")
    async def voices() -> dict[str, Any]:
        langs = {
            code: {"model": m.model_id, "voices": m.voices, "default_voice": m.default_voice}
            for code, m in svc.models.items()
        }
        all_voices: list[str] = []
        for m in svc.models.values():
            all_voices.extend(v for v in m.voices if v not in all_voices)
        return {
            "voices": all_voices,
            "languages": langs,
            "default_language": svc.router.default_language if svc.router else settings.default_language,
            "aliases": sorted(settings.voice_aliases),
        }

    # -- speech ---------------------------------------------------------------------------
    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request) -> Response:
        t_arrival = time.perf_counter()
        rid: str = request.state.request_id
        if not svc.ready:
            raise APIError(503, "the model is still loading; retry shortly", code="model_loading",
                           headers={"Retry-After": "5"})
        text = body.input
        if not text or not text.strip():
            raise APIError(400, "input must not be empty", param="input", code="empty_input")
        if len(text) > settings.server.max_input_chars:
            raise APIError(400, f"input is longer than {settings.server.max_input_chars} characters",
                           param="input", code="input_too_long")
        check_model(body.model)
        try:
            route = svc.route(text, body.voice, body.language)
        except RoutingError as exc:
            raise APIError(400, str(exc), param=exc.param, code=f"invalid_{exc.param}") from None
        fmt = body.response_format or settings.server.default_response_format
        if body.stream_format == "sse" and body.response_format is None:
            fmt = "pcm"
        opts = svc.options(
            temperature=body.temperature,
            top_p=body.top_p,
            repetition_penalty=body.repetition_penalty,
            seed=body.seed,
            max_tokens=body.max_tokens,
            min_tokens=body.min_tokens,
            max_chunk_seconds=body.max_chunk_duration,
            silence_duration=body.silence_duration,
            normalize=body.normalize,
            lexicon=body.lexicon,
        )
        if body.min_tokens is not None:
            opts.length_bound = False

        synth = svc.synthesize(route, text, opts, rid)  # plans only; audio starts when iterated
        if not any(chunk.text.strip() for chunk in synth.chunks):
            raise APIError(400, "input contains no speakable text", param="input", code="empty_input")
        slot = await admission.acquire()  # raises APIError 429/503 when over capacity
        headers = {
            "X-Kanitts-Voice": route.voice or "",
            "X-Kanitts-Language": route.language,
            "X-Kanitts-Model": route.model.model_id,
        }
        if fmt == "pcm":
            headers.update({"X-Sample-Rate": str(SAMPLE_RATE), "X-Channels": "1", "X-Bit-Depth": "16"})
        info = {"rid": rid, "fmt": fmt, "t0": t_arrival, "chars": len(text), "stream": body.stream_format}

        if body.stream_format is None:
            try:
                pcm = await collect(apply_speed(synth.pcm(), body.speed))
                data = await asyncio.to_thread(encode_all, pcm, fmt, SAMPLE_RATE)
            except SynthesisError as exc:
                log_request(app, info, synth, "error", None)
                raise APIError(500, str(exc), code="synthesis_failed") from None
            finally:
                slot.release()
            log_request(app, info, synth, "ok", time.perf_counter() - t_arrival)
            return Response(data, media_type=content_type(fmt), headers=headers)

        if body.stream_format == "sse":
            body_iter = sse_events(synth, fmt, body.speed, slot, info)
            headers["Cache-Control"] = "no-cache"
            return StreamingResponse(body_iter, media_type="text/event-stream", headers=headers)
        body_iter = audio_bytes(synth, fmt, body.speed, slot, info)
        return StreamingResponse(body_iter, media_type=content_type(fmt), headers=headers)

    def check_model(name: str | None) -> None:
        if name is None or name in OPENAI_TTS_MODELS:
            return
        known = {m.model_id for m in svc.models.values()} | set(svc.models)
        if name not in known:
            raise APIError(
                400,
                f"model {name!r} is not available; use one of: {', '.join([*OPENAI_TTS_MODELS, *sorted(known)])}",
                param="model", code="model_not_found",
            )

    async def encoded(
        synth: Synthesis, fmt: str, speed: float, slot: Any, info: dict[str, Any], wrap: Callable[[bytes], bytes],
        done: Callable[[Synthesis], bytes | None], fail: Callable[[str], bytes | None],
    ) -> AsyncIterator[bytes]:
        """Shared body of both stream formats: PCM -> tempo -> encoder (worker thread for
        big chunks) -> ``wrap``; always releases the slot and logs one line."""
        ttfa: float | None = None
        status = "cancelled"
        app.state.active_streams += 1
        stream = encode_stream(apply_speed(synth.pcm(), speed), fmt, SAMPLE_RATE)  # type: ignore[arg-type]
        try:
            async for data in stream:
                if ttfa is None:
                    ttfa = time.perf_counter() - info["t0"]
                yield wrap(data)
            status = "ok"
            tail = done(synth)
            if tail:
                yield tail
        except SynthesisError as exc:
            status = "error"
            logger.error("request %s: %s (stream ended early)", info["rid"], exc)
            tail = fail(str(exc))
            if tail:
                yield tail
        finally:
            app.state.active_streams -= 1
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
            slot.release()
            log_request(app, info, synth, status, ttfa)

    def audio_bytes(synth: Synthesis, fmt: str, speed: float, slot: Any, info: dict[str, Any]) -> AsyncIterator[bytes]:
        return encoded(synth, fmt, speed, slot, info, lambda b: b, lambda _: None, lambda _: None)

    def sse_events(synth: Synthesis, fmt: str, speed: float, slot: Any, info: dict[str, Any]) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        return encoded(
            synth, fmt, speed, slot, info,
            lambda b: event({"type": "speech.audio.delta", "audio": base64.b64encode(b).decode()}),
            lambda sy: event({"type": "speech.audio.done", "usage": sy.usage.as_dict()}),
            lambda msg: event({"type": "error", "error": {"message": msg, "type": "server_error"}}),
        )

    return app


async def apply_speed(pcm: AsyncIterator[np.ndarray], speed: float) -> AsyncIterator[np.ndarray]:
    """Tempo change without pitch change (FFmpeg atempo); a pass-through at 1.0."""
    try:
        if speed == 1.0:
            async for chunk in pcm:
                yield chunk
            return
        tempo = TempoChanger(speed, SAMPLE_RATE)
        async for chunk in pcm:
            out = tempo.process(chunk)
            if out.size:
                yield out
        tail = tempo.flush()
        if tail.size:
            yield tail
    finally:
        with contextlib.suppress(Exception):
            await pcm.aclose()  # type: ignore[attr-defined]


class RequestIdMiddleware:
    """Request id (client's ``X-Request-Id`` or a new one) in ``request.state`` and echoed
    on the response, and the Content-Length cap. Pure ASGI: Starlette's ``BaseHTTPMiddleware``
    copies every streamed body chunk through an extra memory stream, measurable at hundreds
    of concurrent streams (scripts/loop_overhead.py)."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = "".join(ch for ch in raw if 32 < ord(ch) < 127)[:128] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                from kanitts.server.errors import error_response

                response = error_response(413, f"request body larger than {self.max_body_bytes} bytes",
                                          headers={"X-Request-Id": rid})
                await response(scope, receive, send)
                return
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                hdrs = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*hdrs, rid_header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def first_chunk_timeline(synth: Synthesis, t0: float) -> dict[str, float | None]:
    """Where the time to first audio went, for the first text chunk, in ms since arrival:
    ``start_ms`` (validation, text planning, admission: the request reaches the engine),
    ``ttft_ms`` (the engine's first token), ``first_frame_ms`` (the first complete frame
    goes to the codec); ``ttfa_ms`` minus that is decoding and response plumbing."""
    ev = synth.events[0] if synth.events else None

    def ms(t: float | None) -> float | None:
        return None if not t else round((t - t0) * 1000, 1)

    return {
        "start_ms": ms(ev.started if ev else None),
        "ttft_ms": ms(ev.first_token if ev else None),
        "first_frame_ms": ms(ev.first_frame if ev else None),
    }


def log_request(app: FastAPI, info: dict[str, Any], synth: Synthesis, status: str, ttfa: float | None) -> None:
    """One structured line per request, also handed to ``app.state.observers``."""
    elapsed = time.perf_counter() - info["t0"]
    audio_s = synth.audio_seconds
    record = {
        "request_id": info["rid"],
        "voice": synth.route.voice,
        "language": synth.route.language,
        "model": synth.route.model.model_id,
        "chars": info["chars"],
        "format": info["fmt"],
        "stream": info["stream"],
        "chunks": len(synth.chunks),
        "audio_seconds": round(audio_s, 3),
        "ttfa_ms": None if ttfa is None else round(ttfa * 1000, 1),
        **first_chunk_timeline(synth, info["t0"]),
        "rtf": round(elapsed / audio_s, 4) if audio_s > 0 else None,
        "tokens": synth.usage.output_tokens,
        "status": status,
        "elapsed_s": round(elapsed, 4),
    }
    access_log.info(json.dumps(record))
    for observer in app.state.observers:
        try:
            observer(record)
        except Exception:  # noqa: BLE001 - observers never break a request
            logger.exception("request observer failed")
