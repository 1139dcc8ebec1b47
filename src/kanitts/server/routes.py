"""The OpenAI-compatible HTTP routes: thin adapters between FastAPI and the service.

Each route reads what it needs from the app's state through a dependency (no module
globals); the speech route hands the validated body to :meth:`Speaker.speak`
(:mod:`kanitts.server.speech`) and only turns the result into a response.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kanitts.config import Settings
from kanitts.server.schemas import OPENAI_TTS_MODELS, SpeechRequest
from kanitts.server.speech import Speaker
from kanitts.service import TTSService

router = APIRouter()

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
@router.get("/health")
async def health(request: Request, svc: Service) -> dict[str, Any]:
    state = request.app.state
    return {
        "status": "ok",
        "tts_ready": svc.ready,
        "models": {code: _model_health(svc, code, st) for code, st in svc.status.items()},
        "active_streams": state.active_streams,
        "queued": state.admission.waiting,
    }


def _model_health(svc: TTSService, code: str, st: Any) -> dict[str, Any]:
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


@router.get("/ready")
async def ready(svc: Service) -> JSONResponse:
    if svc.ready and all(m.backend.ready for m in svc.models.values()):
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": svc.error}, status_code=503)


@router.get("/v1/models")
async def models(svc: Service) -> dict[str, Any]:
    ids = [m.model_id for m in svc.models.values()] + list(OPENAI_TTS_MODELS)
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "kanitts"} for i in ids],
    }


@router.get("/v1/audio/voices")
async def voices(svc: Service, settings: Annotated[Settings, Depends(get_settings)]) -> dict[str, Any]:
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


# -- speech -----------------------------------------------------------------------------------
@router.post("/v1/audio/speech")
async def speech(
    body: SpeechRequest, request: Request, speaker: Annotated[Speaker, Depends(get_speaker)]
) -> Response:
    """One file, a streamed file (``stream_format="audio"``) or SSE events; errors are
    OpenAI's JSON (see :mod:`kanitts.server.speech` for which and when)."""
    t_arrival = time.perf_counter()
    result = await speaker.speak(body, request.state.request_id, t_arrival)
    if result.stream_format is None:
        audio = await result.audio()
        return Response(audio.data, media_type=result.media_type, headers=result.headers)
    return StreamingResponse(result.stream(), media_type=result.media_type, headers=result.headers)
