"""The speech WebSocket's wire protocol (version 1): messages, events and close codes.

Client -> server (JSON text frames):

* ``{"type": "session.start", "version": 1, ...options}``: first message; options are
  :class:`SessionStart` (voice, response_format, sample_rate, speed, language, normalize,
  seed, sampling, silence_duration, max_tokens, ``audio``: ``"binary"`` or ``"base64"``, and
  ``api_key`` when the handshake carried no ``Authorization`` header);
* ``{"type": "text.delta", "text": "..."}``: more text (an LLM's tokens as they come);
* ``{"type": "flush"}``: speak what is buffered now, boundary or not;
* ``{"type": "cancel"}``: barge-in: drop buffered text, stop generating and sending;
  the session stays open;
* ``{"type": "close"}``: speak what is buffered, then ``done`` and close 1000.

Server -> client: ``session.created``; audio as binary frames (``audio: "binary"``) or
``{"type": "audio.delta", "audio": BASE64}``; ``segment`` after each piece's audio;
``cancelled``; ``done`` with usage; ``error`` in OpenAI's shape. README "WebSocket"
documents every field.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kanitts.audio import MAX_SPEED, MIN_SPEED, AudioFormat
from kanitts.server.errors import error_payload
from kanitts.server.segments import segment_event

__all__ = ["PROTOCOL_VERSION", "SessionStart", "ProtocolError", "parse_message", "error_event", "audio_event",
           "segment_event"]

PROTOCOL_VERSION = 1

#: Close codes (RFC 6455): finished normally; auth or a session limit; server error; full.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN = 1013

CLIENT_MESSAGES = ("session.start", "text.delta", "flush", "cancel", "close")


class SessionStart(BaseModel):
    """``session.start``: the options of every piece spoken in the session."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["session.start"]
    version: Literal[1] = PROTOCOL_VERSION
    api_key: str | None = Field(None, description="Only when the handshake had no Authorization header")
    audio: Literal["binary", "base64"] = "binary"
    model: str | None = None
    voice: str | None = None
    response_format: AudioFormat = "pcm"
    sample_rate: int | None = Field(None, ge=8000, le=48000)
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    language: str | None = Field(None, max_length=16)
    normalize: bool | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=0.5, le=2.0)
    silence_duration: float | None = Field(None, ge=0.0, le=5.0)
    max_tokens: int | None = Field(None, ge=8, le=8192, description="Tokens per generation (50 = 1 s)")

    def request_fields(self) -> dict[str, Any]:
        """The fields a :class:`~kanitts.server.schemas.SpeechRequest` takes (not the
        session's own: type, version, api_key, audio); unset ones left out."""
        own = {"type", "version", "api_key", "audio"}
        return {k: v for k, v in self.model_dump().items() if k not in own and v is not None}


class ProtocolError(Exception):
    """A client message the session answers with an ``error`` event (400 shape)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_message") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def parse_message(raw: str | bytes | None) -> dict[str, Any]:
    """One client frame -> its JSON object with a known ``type``; raises :class:`ProtocolError`."""
    if raw is None:
        raise ProtocolError("binary frames are not accepted; send JSON text messages", code="invalid_message")
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    kind = msg.get("type")
    if kind not in CLIENT_MESSAGES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of: {', '.join(CLIENT_MESSAGES)}",
                            param="type", code="unknown_message_type")
    if kind == "text.delta" and not isinstance(msg.get("text"), str):
        raise ProtocolError("text.delta needs a string field 'text'", param="text")
    return msg


def error_event(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {message, type, param, code}}`` (OpenAI's shape)."""
    return {"type": "error", **error_payload(status, message, param, code)}


def audio_event(data: bytes) -> dict[str, Any]:
    return {"type": "audio.delta", "audio": base64.b64encode(data).decode()}
