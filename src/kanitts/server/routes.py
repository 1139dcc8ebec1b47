"""The OpenAI-compatible HTTP routes: thin adapters between FastAPI and the service.

Each route reads what it needs from the app's state through a dependency (no module
globals); the speech route hands the validated body to :meth:`Speaker.speak`
(:mod:`kanitts.server.speech`) and only turns the result into a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kanitts.config import Settings
from kanitts.models import public_model_name
from kanitts.server.schemas import OPENAI_TTS_MODELS, SpeechRequest
from kanitts.server.speech import Speaker, SpeechAudio
from kanitts.server.voice_choice import requester_of
from kanitts.server.voices_routes import custom_voice_list
from kanitts.service import TTSService

router = APIRouter()

T = TypeVar("T")
#: Status logged for a request whose client went away before its response (nginx's 499).
CLIENT_CLOSED = 499

# The dependencies are ``async def``: FastAPI runs plain ``def`` ones in its thread pool, a
# thread hop per request for what is an attribute read.


async def get_service(request: Request) -> TTSService:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_speaker(request: Request) -> Speaker:
    return request.app.state.speaker


Service = Annotated[TTSService, Depends(get_service)]


# -- health and discovery -------------------------------------------------------------------
# GET and HEAD (monitors and load balancers probe with HEAD; the server drops the body).
@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request, svc: Service) -> dict[str, Any]:
    """Open without a key: model names are public names (hub id or folder base name),
    never local paths."""
    state = request.app.state
    return {
        "status": "ok",
        "tts_ready": svc.ready,
        "models": {code: _model_health(svc, code, st) for code, st in svc.status.items()},
        "active_streams": state.active_streams,
        "queued": state.admission.waiting,
    }


def _model_health(svc: TTSService, code: str, st: Any) -> dict[str, Any]:
    name = public_model_name(st.model)
    out: dict[str, Any] = {"model": name, "state": st.state}
    if st.error:
        out["error"] = _without_paths(st.error, svc, code, st.model)
    model = svc.models.get(code)
    if model is not None:
        out["backend"] = model.backend.name
        out["engine_ready"] = model.backend.ready
        replicas = getattr(model.backend, "replica_status", None)
        if replicas is not None:
            out["replicas"] = replicas
    return out


def _without_paths(message: str, svc: TTSService, code: str, configured: str) -> str:
    """``message`` with the model's configured and resolved paths replaced by its name."""
    model = svc.models.get(code)
    for path in sorted({configured, getattr(model, "path", "") or ""}, key=len, reverse=True):
        if path and path != public_model_name(path):
            message = message.replace(path, public_model_name(path))
    return message


@router.api_route("/ready", methods=["GET", "HEAD"])
async def ready(svc: Service) -> JSONResponse:
    if svc.ready and all(m.backend.ready for m in svc.models.values()):
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": svc.error}, status_code=503)


@router.get("/v1/models")
async def models(svc: Service) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "kanitts"} for i in _model_ids(svc)],
    }


def _model_ids(svc: TTSService) -> list[str]:
    """The loaded models' public names (each once), then OpenAI's TTS model names."""
    return list(dict.fromkeys(m.name for m in svc.models.values())) + list(OPENAI_TTS_MODELS)


@router.get("/v1/audio/models")
async def audio_models(svc: Service) -> dict[str, Any]:
    """Open-WebUI's model dropdown: ``{"models": [{"id": ...}, ...]}`` (open by default)."""
    return {"models": [{"id": i} for i in _model_ids(svc)]}


@router.get("/v1/audio/voices")
async def voices(request: Request, svc: Service,
                 settings: Annotated[Settings, Depends(get_settings)]) -> dict[str, Any]:
    """The built-in voices and the OpenAI voice aliases (open by default: Open-WebUI asks
    without a key). ``voices`` is Open-WebUI's shape, ``[{"id", "name"}]``, the models'
    voices first, then the aliases, then the custom voices the caller may use (KaniTTS-2);
    ``voice_names`` the models' voices as plain names; ``custom`` the custom voice objects."""
    langs = {
        code: {"model": m.name, "voices": m.voices, "default_voice": m.default_voice}
        for code, m in svc.models.items()
    }
    all_voices: list[str] = []
    for m in svc.models.values():
        all_voices.extend(v for v in m.voices if v not in all_voices)
    aliases = sorted(a for a in settings.voice_aliases if a not in all_voices)
    custom = custom_voice_list(request)
    return {
        "voices": [{"id": v, "name": v} for v in all_voices]
        + [{"id": a, "name": f"{a} (OpenAI alias)"} for a in aliases]
        + [{"id": c["name"], "name": f"{c['name']} (custom)"} for c in custom],
        "voice_names": all_voices,
        "languages": langs,
        "default_language": svc.router.default_language if svc.router else settings.default_language,
        "aliases": sorted(settings.voice_aliases),
        # KaniTTS-2: the caller's custom voices, shared and pre-loaded ones (voices_routes)
        "custom": custom,
    }


# -- speech -----------------------------------------------------------------------------------
@router.post("/v1/audio/speech")
async def speech(
    body: SpeechRequest, request: Request, speaker: Annotated[Speaker, Depends(get_speaker)]
) -> Response:
    """One file, a streamed file (``stream_format="audio"``) or SSE events; errors are
    OpenAI's JSON (see :mod:`kanitts.server.speech` for which and when)."""
    t_arrival = getattr(request.state, "arrival", None) or time.perf_counter()
    result = await speaker.speak(body, request.state.request_id, t_arrival, who=requester_of(request))
    if result.stream_format is None:
        audio: SpeechAudio | None = await until_disconnect(result.audio(), request)
        if audio is None:  # the client left: generation was cancelled, nobody reads this
            return Response(status_code=CLIENT_CLOSED)
        return Response(audio.data, media_type=result.media_type, headers=result.headers)
    return StreamingResponse(result.stream(), media_type=result.media_type, headers=result.headers)


async def until_disconnect(work: Awaitable[T], request: Request) -> T | None:
    """Await ``work`` unless the client disconnects first: then ``work`` is cancelled (for a
    speech request that aborts its engine requests within one engine step) and the result
    is ``None``. The request body must already have been read (the next ASGI message is
    then ``http.disconnect``)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    finally:
        for t in (task, gone):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
