"""``WS /v1/audio/speech/stream``: incremental text in, audio out (protocol: :mod:`.ws_protocol`).

The route accepts, then:

1. waits for ``session.start`` (other messages, invalid options or a bad voice get an
   ``error`` event and the client may try again); authenticates with the handshake's
   ``Authorization`` header or the message's ``api_key`` (wrong or missing: close 1008);
2. counts the session as one request and one stream of the client (rate and stream
   limits: ``error`` 429 then close 1013) and takes one admission slot for the whole
   session (full: close 1013; models loading: close 1013);
3. runs a :class:`~kanitts.server.ws_session.SpeechSession` whose pieces go through the
   same :meth:`Speaker.speak` as ``POST /v1/audio/speech`` (validation, routing,
   normalization, planning) without a slot of their own;
4. ends with ``done`` and close 1000 after ``close``; close 1008 after
   ``server.ws_idle_timeout_seconds`` without a client message while nothing is being
   spoken, or after ``server.ws_max_session_seconds``; close 1011 on an unexpected error.
   A disconnect cancels every piece (engine requests aborted within a step).

One record per session goes to the access log and metrics (``stream: "websocket"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kanitts.server.access_log import log_request
from kanitts.server.errors import APIError
from kanitts.server.schemas import SpeechRequest
from kanitts.server.security import WS_GUARD
from kanitts.server.speech import Speaker, Speech
from kanitts.server.ws_protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    CLOSE_TRY_AGAIN,
    PROTOCOL_VERSION,
    ProtocolError,
    SessionStart,
    error_event,
    parse_message,
)
from kanitts.server.ws_session import SpeechSession
from kanitts.text.incremental import TextCutter

logger = logging.getLogger(__name__)

ws_router = APIRouter()

PATH = "/v1/audio/speech/stream"


class _Closed(Exception):
    """The session is over: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Client:
    """The socket's incoming side with one pending receive (never cancelled mid-frame)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._next: asyncio.Task[dict[str, Any]] | None = None

    async def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next ASGI message, or ``None`` after ``timeout`` seconds."""
        if self._next is None:
            self._next = asyncio.ensure_future(self.ws.receive())
        done, _ = await asyncio.wait({self._next}, timeout=max(timeout, 0.0))
        if not done:
            return None
        msg, self._next = self._next.result(), None
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        return msg

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()


class _Outbox:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send_json(self, event: dict[str, Any]) -> None:
        await self.ws.send_json(event)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


@ws_router.websocket(PATH)
async def speech_stream(ws: WebSocket) -> None:
    """One session (see the module docstring)."""
    state = ws.app.state
    settings = state.settings.server
    t0 = time.perf_counter()
    deadline = t0 + settings.ws_max_session_seconds
    request_id = ws.headers.get("x-request-id") or uuid.uuid4().hex
    await ws.accept()
    client = _Client(ws)
    guard = ws.scope.get(WS_GUARD)
    who: str | None = None
    slot = None
    session: SpeechSession | None = None
    status = "cancelled"
    try:
        speaker: Speaker = state.speaker
        start, who = await _open(ws, client, guard, speaker, request_id, deadline, settings.ws_idle_timeout_seconds)
        try:
            slot = await state.admission.acquire() if state.admission is not None else None
        except APIError as exc:
            await ws.send_json(error_event(exc.status, exc.message, param=exc.param, code=exc.code))
            raise _Closed(CLOSE_TRY_AGAIN if exc.status in (429, 503) else CLOSE_POLICY, exc.code or "rejected")
        pieces = Speaker(speaker.service, default_format=start.response_format,
                         max_input_chars=speaker.max_input_chars)

        async def speak(text: str, index: int) -> Speech:
            assert session is not None
            request = SpeechRequest(input=text, **{**start.request_fields(), **session.pinned()})
            return await pieces.speak(request, f"{request_id}-{index}")

        session = SpeechSession(
            start, speak, _Outbox(ws),
            cutter=TextCutter(settings.ws_min_chars, settings.ws_max_chars),
            silence_seconds=(start.silence_duration if start.silence_duration is not None
                             else speaker.service.options().silence_duration),
        )
        if speaker.on_stream is not None:
            speaker.on_stream(1)
        try:
            await ws.send_json({"type": "session.created", "version": PROTOCOL_VERSION, "session_id": request_id,
                                "response_format": start.response_format, "audio": start.audio,
                                "sample_rate": speaker.output_rate(start.response_format, start.sample_rate)})
            await _converse(ws, client, session, deadline, settings.ws_idle_timeout_seconds,
                            speaker.max_input_chars or settings.max_input_chars)
            await ws.send_json({"type": "done", "usage": session.usage.as_dict(),
                                "audio_seconds": session.audio_seconds,
                                "segments": session.segments})
            status = "ok"
            raise _Closed(CLOSE_NORMAL, "done")
        finally:
            if speaker.on_stream is not None:
                speaker.on_stream(-1)
    except _Closed as closed:
        if session is not None and closed.code != CLOSE_NORMAL:
            await session.abort()
        with contextlib.suppress(Exception):
            await ws.close(closed.code, closed.reason)
    except WebSocketDisconnect:
        if session is not None:
            await session.abort()
    except Exception:
        logger.exception("websocket session %s failed", request_id)
        status = "error"
        if session is not None:
            await session.abort()
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.send_json(error_event(500, "internal error", code="server_error"))
                await ws.close(CLOSE_SERVER_ERROR, "server error")
    finally:
        if session is not None and status != "ok":
            with contextlib.suppress(Exception):
                await session.abort()  # also when this task is cancelled (shutdown): no piece outlives it
        client.close()
        if slot is not None:
            slot.release()
        if guard is not None and who is not None:
            guard.ws_close(who)
        if session is not None:
            _report(state, session, request_id, t0, status)


async def _open(ws: WebSocket, client: _Client, guard: Any, speaker: Speaker, request_id: str,
                deadline: float, idle: float) -> tuple[SessionStart, str | None]:
    """Wait for a valid ``session.start``; authenticate (once) and count the session."""
    who: str | None = None
    while True:
        raw = await client.receive(min(idle, deadline - time.perf_counter()))
        if raw is None:
            await ws.send_json(error_event(408, "no session.start received in time", code="idle_timeout"))
            raise _Closed(CLOSE_POLICY, "idle timeout")
        try:
            msg = parse_message(raw.get("text"))
            if msg["type"] != "session.start":
                raise ProtocolError("send session.start first", param="type", code="session_not_started")
            start = SessionStart.model_validate(msg)
        except ProtocolError as exc:
            await ws.send_json(error_event(400, exc.message, param=exc.param, code=exc.code))
            continue
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ())) or None
            await ws.send_json(error_event(400, f"{param}: {first.get('msg')}", param=param, code="invalid_value"))
            continue
        if guard is not None and who is None:
            who = guard.ws_client(ws.scope, start.api_key)
            if who is None:
                await ws.send_json(error_event(401, "missing or incorrect API key: send 'Authorization: Bearer KEY' "
                                                    "or api_key in session.start", code="invalid_api_key"))
                raise _Closed(CLOSE_POLICY, "invalid API key")
        try:
            await _check_start(speaker, start, request_id)
        except APIError as exc:
            await ws.send_json(error_event(exc.status, exc.message, param=exc.param, code=exc.code))
            if exc.status >= 500:
                raise _Closed(CLOSE_TRY_AGAIN, exc.code or "unavailable") from None
            continue
        if guard is not None and who is not None:
            refused = guard.ws_open(who)
            if refused is not None:
                await ws.send_json(error_event(429, refused[1], code=refused[0]))
                raise _Closed(CLOSE_TRY_AGAIN, refused[0])
        return start, who


async def _check_start(speaker: Speaker, start: SessionStart, request_id: str) -> None:
    """Validate the options as a request would be (ready, model, voice, language, format);
    raises :class:`APIError`. Plans a one-word text; generates nothing."""
    probe = Speaker(speaker.service, default_format=start.response_format)
    await probe.speak(SpeechRequest(input="ok", **start.request_fields()), request_id)


async def _converse(ws: WebSocket, client: _Client, session: SpeechSession, deadline: float, idle: float,
                    max_chars: int) -> None:
    """Feed client messages to ``session`` until ``close`` (then finish it) or a limit; a delta
    that would buffer more than ``max_chars`` uncut characters is refused (an error event)."""
    last = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= deadline:
            await ws.send_json(error_event(408, "session time limit reached", code="session_timeout"))
            raise _Closed(CLOSE_POLICY, "session time limit")
        quiet_since = max(last, session.idle_since)
        wait = min(deadline - now, idle - (now - quiet_since)) if not session.busy else min(deadline - now, idle)
        raw = await client.receive(wait)
        if raw is None:
            now = time.perf_counter()
            if not session.busy and now - max(last, session.idle_since) >= idle:
                await ws.send_json(error_event(408, f"no message for {idle:g} s", code="idle_timeout"))
                raise _Closed(CLOSE_POLICY, "idle timeout")
            continue
        last = time.perf_counter()
        try:
            msg = parse_message(raw.get("text"))
        except ProtocolError as exc:
            await session.send(error_event(400, exc.message, param=exc.param, code=exc.code))
            continue
        kind = msg["type"]
        if kind == "text.delta":
            if len(session.pending_text) + len(msg["text"]) > max_chars:
                await session.send(error_event(400, f"more than {max_chars} characters buffered without a boundary; "
                                                    "send flush", param="text", code="input_too_long"))
                continue
            session.text(msg["text"])
        elif kind == "flush":
            session.flush()
        elif kind == "cancel":
            await session.cancel()
        elif kind == "close":
            remaining = deadline - time.perf_counter()
            try:
                await asyncio.wait_for(session.finish(), remaining)
            except asyncio.TimeoutError:
                await session.send(error_event(408, "session time limit reached", code="session_timeout"))
                raise _Closed(CLOSE_POLICY, "session time limit") from None
            return
        else:  # session.start again
            await session.send(error_event(400, "the session has already started", param="type",
                                           code="session_already_started"))


def _report(state: Any, session: SpeechSession, request_id: str, t0: float, status: str) -> None:
    route = session.route
    elapsed = time.perf_counter() - t0
    record = {
        "request_id": request_id,
        "voice": getattr(route, "voice", None),
        "language": getattr(route, "language", None),
        "model": route.model.model_id if route is not None else None,
        "chars": session.chars,
        "format": session.options.response_format,
        "stream": "websocket",
        "chunks": session.segments,
        "audio_seconds": round(session.audio_seconds, 3),
        "ttfa_ms": None if session.ttfa is None else round(session.ttfa * 1000, 1),
        "tokens": session.usage.output_tokens,
        "status": status,
        "elapsed_s": round(elapsed, 4),
    }
    log_request(record, state.observers)
