"""API keys, per-client limits, request-body cap and CORS, as pure ASGI middleware.

``install_security(app, settings)`` adds, outermost first:

1. ``CORSMiddleware`` (only when ``security.cors_origins`` is set; same-origin otherwise).
   Credentials are never allowed: the API uses a bearer header, not cookies, so ``*``
   can never be combined with credentials.
2. :class:`SecurityMiddleware`:

   * ``Authorization: Bearer KEY`` checked against ``settings.all_api_keys()`` in
     constant time (every configured key is compared, always). Keys are off when none
     are configured; a public bind address without keys logs a WARNING at start-up.
     ``security.open_routes`` (``/health``, ``/ready``, ``/metrics`` by default) and the
     playground page (``/``, ``/static/*``, ``/favicon.ico``) stay open. Missing or
     wrong key -> 401 with ``WWW-Authenticate: Bearer`` in OpenAI's error shape.
   * Request rate per client (the key, or the client IP when keys are off): a sliding
     window of 60 s holding at most ``security.rate_limit_per_minute`` requests.
   * Concurrent streams per client (``security.max_streams_per_client``): a POST
     counts as active until its response body has been fully sent or the client went
     away (the wrapped ASGI call returns). Both limits answer 429 with ``Retry-After``.
   * Body cap for bodies without ``Content-Length`` (chunked): read up to
     ``server.max_body_bytes`` and answer 413 beyond it; ``Content-Length`` bodies are
     capped before they are read.

All state is in-process; several replicas need a shared store (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import deque
from typing import Any

from kanitts.server.asgi import ASGIApp, Message, Receive, Scope, Send
from kanitts.server.errors import error_payload

logger = logging.getLogger(__name__)

#: Reachable without a key: the playground page and its assets (the page asks for a key).
PLAYGROUND_ROUTES = ("/", "/static/*", "/favicon.ico")
#: Response headers a browser page on another origin may read.
EXPOSED_HEADERS = (
    "X-Request-Id", "X-Kanitts-Voice", "X-Kanitts-Language", "X-Kanitts-Model",
    "X-Sample-Rate", "X-Channels", "X-Bit-Depth", "Retry-After",
)  # fmt: skip
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_local_host(host: str) -> bool:
    """True for loopback bind addresses (127.0.0.0/8, ::1, localhost)."""
    h = host.strip().strip("[]").lower()
    if h in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def route_matches(path: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Exact match, or prefix match for patterns ending in ``*`` (``/static/*``)."""
    for p in patterns:
        if p.endswith("*"):
            if path.startswith(p[:-1]):
                return True
        elif path == p or (len(p) > 1 and path == p.rstrip("/")):
            return True
    return False


class KeyChecker:
    """Constant-time bearer-key check against every configured key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in dict.fromkeys(keys) if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, presented: bytes) -> bool:
        ok = False
        for key in self._keys:  # no early exit: the time does not depend on which key matched
            ok |= hmac.compare_digest(presented, key)
        return ok


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            token = token.strip()
            return token or None
    return None


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per client (exact sliding log)."""

    def __init__(self, limit: int, window: float = 60.0, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._log: dict[str, deque[float]] = {}

    def hit(self, client: str, now: float | None = None) -> float:
        """Record one event; 0.0 when allowed, else the seconds to wait (event not recorded)."""
        now = time.monotonic() if now is None else now
        q = self._log.get(client)
        if q is None:
            if len(self._log) >= self.max_clients:
                self.prune(now)
            q = self._log[client] = deque()
        cutoff = now - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if len(q) >= self.limit:
            return max(q[0] + self.window - now, 0.001)
        q.append(now)
        return 0.0

    def prune(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        cutoff = now - self.window
        for client in [c for c, q in self._log.items() if not q or q[-1] <= cutoff]:
            del self._log[client]
        if len(self._log) >= self.max_clients:  # still full of live clients: forget the oldest
            for client in list(self._log)[: len(self._log) // 2]:
                del self._log[client]

    def __len__(self) -> int:
        return len(self._log)


def _json_response_messages(status: int, payload: dict[str, Any], headers: dict[str, str]) -> list[Message]:
    import json

    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return [
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]


async def send_error(
    send: Send, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> None:
    for msg in _json_response_messages(status, error_payload(status, message, None, code), headers or {}):
        await send(msg)


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: list[str],
        open_routes: list[str],
        rate_limit_per_minute: int = 0,
        max_streams_per_client: int = 0,
        max_body_bytes: int = 1_000_000,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.keys = KeyChecker(keys)
        self.open_routes = [*open_routes, *PLAYGROUND_ROUTES]
        self.rate = SlidingWindow(rate_limit_per_minute) if rate_limit_per_minute > 0 else None
        self.max_streams = max_streams_per_client
        self.max_body = max_body_bytes
        self.active: dict[str, int] = {}
        #: Rejection counters (read by the metrics collector).
        self.stats = stats if stats is not None else {}

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if route_matches(path, self.open_routes) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return

        # -- who is it --------------------------------------------------------------------
        client: str
        if self.keys.enabled:
            token = bearer_token(scope.get("headers", []))
            if token is None or not self.keys.check(token):
                self._count("unauthorized")
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": "invalid API key"})
                    return
                if token is None:
                    message, code = ("missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                                     "missing_api_key")
                else:
                    message, code = "incorrect API key provided", "invalid_api_key"
                await send_error(send, 401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
                return
            client = "key:" + hashlib.sha256(token).hexdigest()[:16]
        else:
            peer = scope.get("client")
            client = "ip:" + (peer[0] if peer else "unknown")

        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        # -- rate ---------------------------------------------------------------------------
        if self.rate is not None:
            wait = self.rate.hit(client)
            if wait > 0:
                self._count("rate_limited")
                await send_error(
                    send, 429, f"rate limit reached ({self.rate.limit} requests per minute); "
                    f"retry in {math.ceil(wait)} s", code="rate_limit_exceeded",
                    headers={"Retry-After": str(math.ceil(wait))},
                )
                return

        # -- concurrent streams --------------------------------------------------------------
        method = scope.get("method", "GET")
        counted = self.max_streams > 0 and method in _BODY_METHODS
        if counted:
            if self.active.get(client, 0) >= self.max_streams:
                self._count("too_many_streams")
                await send_error(
                    send, 429, f"too many concurrent streams for this client (limit {self.max_streams}); "
                    "retry when one has finished", code="too_many_streams", headers={"Retry-After": "1"},
                )
                return
            self.active[client] = self.active.get(client, 0) + 1

        released = False

        def release() -> None:
            nonlocal released
            if counted and not released:
                released = True
                n = self.active.get(client, 1) - 1
                if n <= 0:
                    self.active.pop(client, None)
                else:
                    self.active[client] = n

        async def tracked_send(message: Message) -> None:
            try:
                await send(message)
            finally:
                if message.get("type") == "http.response.body" and not message.get("more_body", False):
                    release()

        try:
            if method in _BODY_METHODS and not _has_header(scope, b"content-length"):
                body, too_big, disconnected = await _read_capped(receive, self.max_body)
                if too_big:
                    self._count("body_too_large")
                    await send_error(send, 413, f"request body larger than {self.max_body} bytes",
                                     code="body_too_large", headers={"Connection": "close"})
                    return
                if disconnected:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, tracked_send if counted else send)
        finally:
            release()


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(k.lower() == name for k, _ in scope.get("headers", []))


async def _read_capped(receive: Receive, cap: int) -> tuple[bytes, bool, bool]:
    """Read a whole request body; (body, exceeded cap, client disconnected)."""
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return b"", False, True
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > cap:
            return b"", True, False
        parts.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts), False, False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for http.disconnect, as usual

    return replay


def install_security(app: Any, settings: Any) -> SecurityMiddleware | None:
    """Add CORS and :class:`SecurityMiddleware` to ``app`` from ``settings``; log the posture."""
    sec = settings.security
    keys = settings.all_api_keys()
    host = settings.server.host
    stats: dict[str, int] = {}
    app.state.security_stats = stats
    app.add_middleware(
        SecurityMiddleware,
        keys=keys,
        open_routes=list(getattr(sec, "open_routes", ["/health", "/ready", "/metrics"])),
        rate_limit_per_minute=int(getattr(sec, "rate_limit_per_minute", 0) or 0),
        max_streams_per_client=int(getattr(sec, "max_streams_per_client", 0) or 0),
        max_body_bytes=int(settings.server.max_body_bytes),
        stats=stats,
    )
    origins = [o.rstrip("/") if o != "*" else o for o in getattr(sec, "cors_origins", [])]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # bearer keys, not cookies: never '*' with credentials
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    app.state.auth_enabled = bool(keys)
    if keys:
        logger.info("API keys on (%d configured); open routes: %s", len(set(keys)),
                    ", ".join(getattr(sec, "open_routes", [])) or "none")
    elif is_local_host(host):
        logger.info("API keys off (listening on loopback %s only)", host)
    else:
        logger.warning(
            "listening on %s WITHOUT API keys: anyone who can reach this port can use the server. "
            "Set api_keys / api_keys_file / KANITTS_API_KEYS (see docs/deployment.md).", host,
        )
    if origins:
        logger.info("CORS allowed origins: %s", ", ".join(origins))
    return None
