"""Request ids and the Content-Length cap, as pure ASGI middleware."""

from __future__ import annotations

import uuid

from kanitts.server.asgi import ASGIApp, Message, Receive, Scope, Send
from kanitts.server.errors import error_response


class RequestIdMiddleware:
    """Request id (client's ``X-Request-Id`` or a new one) in ``request.state`` and echoed
    on the response, and the Content-Length cap. Pure ASGI: Starlette's ``BaseHTTPMiddleware``
    copies every streamed body chunk through an extra memory stream, measurable at hundreds
    of concurrent streams (scripts/loop_overhead.py)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                response = error_response(413, f"request body larger than {self.max_body_bytes} bytes",
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
