"""Request ids, arrival times and the Content-Length cap, as pure ASGI middleware."""

from __future__ import annotations

import time
import uuid

from kanitts.server.asgi import ASGIApp, Message, Receive, Scope, Send
from kanitts.server.errors import error_response


class RequestIdMiddleware:
    """Request id (client's ``X-Request-Id`` or a new one) in ``request.state`` and echoed
    on the response, the arrival time (``request.state.arrival``, ``time.perf_counter()``
    as the request enters the app: the origin of the access log's timeline), and the
    Content-Length cap. Pure ASGI: Starlette's ``BaseHTTPMiddleware``
    copies every streamed body chunk through an extra memory stream, measurable at hundreds
    of concurrent streams (scripts/loop_overhead.py)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_caps: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        #: Exact paths with their own cap (the voice upload takes audio files).
        self.body_caps = dict(body_caps or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = "".join(ch for ch in raw if 32 < ord(ch) < 127)[:128] or uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["arrival"] = arrival
        length = headers.get(b"content-length")
        cap = self.body_caps.get(scope.get("path", ""), self.max_body_bytes)
        if length is not None:
            try:
                too_big = int(length) > cap
            except ValueError:
                too_big = True
            if too_big:
                response = error_response(413, f"request body larger than {cap} bytes",
                                          headers={"X-Request-Id": rid})
                await response(scope, receive, send)
                return
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                hdrs = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*hdrs, rid_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
