"""The custom-voice routes (KaniTTS-2 voice cloning), OpenAI's shape where it has one:

* ``POST /v1/audio/voices`` — multipart form: ``name``, ``audio`` (or OpenAI's
  ``audio_sample``; any audio FFmpeg decodes), ``consent`` (must be true: the speaker agreed
  to be cloned), optional ``shared`` (admin keys only). Returns the voice object (201).
* ``GET /v1/audio/voices/{id}`` — one voice; ``DELETE /v1/audio/voices/{id}`` — delete it
  (its owner or an admin).
* ``POST /v1/audio/voices/{id}/share`` — JSON ``{"shared": true|false}`` (admin keys only).

``GET /v1/audio/voices`` (in :mod:`kanitts.server.routes`) adds :func:`custom_voice_list`.
Ownership: :func:`kanitts.server.voice_choice.requester_of`. Errors are OpenAI's JSON:
:class:`~kanitts.voices.VoiceError` with its ``http_status``, unusable audio 400 (413 when
too large). Decoding, the encoder and store writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from kanitts.server.errors import APIError
from kanitts.server.form_data import FormError, parse_form
from kanitts.server.voice_choice import requester_of
from kanitts.speaker import ReferenceAudioError
from kanitts.voices import Requester, Voice, VoiceError

voices_router = APIRouter()

#: Bytes of a form beyond its audio file (boundaries, headers, name, flags).
FORM_OVERHEAD_BYTES = 64 * 1024
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def voice_object(voice: Voice, who: Requester) -> dict[str, Any]:
    """The API's voice object: OpenAI's ``{id, object: "audio.voice", name, created_at,
    type}`` plus ``shared`` and ``owned`` (created by the caller's key)."""
    return {
        "id": voice.id,
        "object": "audio.voice",
        "name": voice.name,
        "created_at": int(voice.created_at),
        "type": "audio_sample" if voice.source == "upload" else "embedding_file",
        "shared": voice.shared,
        "owned": voice.source == "upload" and voice.owner == who.owner,
    }


def custom_voice_list(request: Request) -> list[dict[str, Any]]:
    """The custom voices the caller may use (pre-loaded, own, shared; an admin sees all);
    empty when no KaniTTS-2 model is loaded."""
    cloning = getattr(request.app.state.service, "cloning", None)
    if cloning is None:
        return []
    who = requester_of(request)
    return [voice_object(v, who) for v in cloning.store.list(who)]


def _cloning(request: Request) -> Any:
    svc = request.app.state.service
    if not svc.ready:
        raise APIError(503, "the model is still loading; retry shortly", code="model_loading",
                       headers={"Retry-After": "5"})
    if svc.cloning is None:
        raise APIError(400, "custom voices need a KaniTTS-2 model; none is loaded", code="voices_unavailable")
    return svc.cloning


def _voice_error(exc: VoiceError, param: str | None = None) -> APIError:
    code = {404: "voice_not_found", 409: "voice_exists", 403: "permission_denied"}.get(exc.http_status,
                                                                                      "invalid_voice")
    return APIError(exc.http_status, str(exc), param=param, code=code)


def _flag(fields: dict[str, Any], name: str) -> bool | None:
    f = fields.get(name)
    if f is None:
        return None
    value = f.text().strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise APIError(400, f"{name} must be true or false", param=name, code="invalid_value")


async def _read_body(request: Request, cap: int) -> bytes:
    """The body, or 413 as soon as it passes ``cap`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise APIError(413, f"the upload is larger than {cap - FORM_OVERHEAD_BYTES} bytes of audio",
                           code="file_too_large")
        parts.append(chunk)
    return b"".join(parts)


@voices_router.post("/v1/audio/voices", status_code=201)
async def create_voice(request: Request) -> JSONResponse:
    cloning = _cloning(request)
    who = requester_of(request)
    body = await _read_body(request, cloning.limits.max_bytes + FORM_OVERHEAD_BYTES)
    try:
        fields = await asyncio.to_thread(parse_form, request.headers.get("content-type", ""), body)
        name = fields["name"].text() if "name" in fields else None
    except FormError as exc:
        raise APIError(400, str(exc), code="invalid_request") from None
    audio = fields.get("audio") or fields.get("audio_sample")
    if not name or not name.strip():
        raise APIError(400, "missing required parameter: name", param="name", code="invalid_value")
    if audio is None:
        raise APIError(400, "missing required parameter: audio (a file of the speaker's voice)", param="audio",
                       code="invalid_value")
    if _flag(fields, "consent") is not True:
        raise APIError(400, "consent must be true: confirm that the speaker agreed to have this voice cloned",
                       param="consent", code="consent_required")
    shared = bool(_flag(fields, "shared"))
    router = request.app.state.service.router
    if router is not None and name.strip().casefold() in {v.casefold() for v in router.all_voices()}:
        raise APIError(409, f"{name.strip()!r} is the name of a built-in voice", param="name", code="voice_exists")
    try:
        voice = await asyncio.to_thread(cloning.create, name, audio.data, who, shared)
    except ReferenceAudioError as exc:
        status = 413 if exc.code == "too_large" else 400
        raise APIError(status, f"reference audio: {exc}", param="audio", code=f"audio_{exc.code}") from None
    except VoiceError as exc:
        raise _voice_error(exc, "name") from None
    return JSONResponse(voice_object(voice, who), status_code=201)


@voices_router.get("/v1/audio/voices/{voice_id}")
async def get_voice(voice_id: str, request: Request) -> dict[str, Any]:
    cloning = _cloning(request)
    who = requester_of(request)
    try:
        return voice_object(cloning.store.get(voice_id, who), who)
    except VoiceError as exc:
        raise _voice_error(exc) from None


@voices_router.delete("/v1/audio/voices/{voice_id}")
async def delete_voice(voice_id: str, request: Request) -> dict[str, Any]:
    cloning = _cloning(request)
    who = requester_of(request)
    try:
        await asyncio.to_thread(cloning.store.delete, voice_id, who)
    except VoiceError as exc:
        raise _voice_error(exc) from None
    return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


class ShareRequest(BaseModel):
    """``POST /v1/audio/voices/{id}/share``."""

    shared: bool = True


@voices_router.post("/v1/audio/voices/{voice_id}/share")
async def share_voice(voice_id: str, request: Request, body: ShareRequest | None = None) -> dict[str, Any]:
    cloning = _cloning(request)
    who = requester_of(request)
    shared = True if body is None else body.shared
    try:
        voice = await asyncio.to_thread(cloning.store.set_shared, voice_id, shared, who)
    except VoiceError as exc:
        raise _voice_error(exc) from None
    return voice_object(voice, who)
