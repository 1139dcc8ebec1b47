"""API keys, per-client limits, request-body cap and CORS, as pure ASGI middleware.

``install_security(app, settings)`` adds, outermost first:

1. ``CORSMiddleware`` (only when ``security.cors_origins`` is set; same-origin otherwise).
   Credentials are never allowed: the API uses a bearer header, not cookies, so ``*``
   can never be combined with credentials.
2. :class:`SecurityMiddleware`:

   * ``Authorization: Bearer KEY`` checked against ``settings.all_api_keys()`` in
     constant time (every configured key is compared, always). Keys are off when none
     are configured; a non-loopback bind without keys refuses to start
     (:class:`InsecureBindError`) unless ``server.insecure`` (``--insecure``) allows it,
     and then logs a WARNING.
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

WebSockets pass through with this middleware in their scope (``WS_GUARD``): the route
accepts first (a key may come in the first message), then calls :meth:`SecurityMiddleware.ws_client`
(same keys) and :meth:`SecurityMiddleware.ws_open` (a session is one request and one stream).

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

from kanitts.config import ConfigError
from kanitts.server.asgi import ASGIApp, Message, Receive, Scope, Send
from kanitts.server.errors import error_payload

logger = logging.getLogger(__name__)

#: Reachable without a key: the playground page and its assets (the page asks for a key).
PLAYGROUND_ROUTES = ("/", "/static/*", "/favicon.ico")
#: Response headers a browser page on another origin may read.
EXPOSED_HEADERS = (
    "X-Request-Id", "X-Kanitts-Voice", "X-Kanitts-Language", "X-Kanitts-Model",
    "X-Sample-Rate", "X-Channels", "X-Bit-Depth", "Retry-After", "X-Kanitts-Segments",
)  # fmt: skip
_BODY_METHODS = {"POST", "PUT", "PATCH"}
#: Scope key under which a WebSocket route finds the :class:`SecurityMiddleware` (its guard).
WS_GUARD = "kanitts.security"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class InsecureBindError(ConfigError):
    """A non-loopback bind without API keys and without ``server.insecure``."""


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


def key_id(token: bytes) -> str:
    """A stable, non-secret id of an API key (``key:`` + 16 hex digits of its SHA-256): the
    per-client identity of the limits and the owner of the custom voices it creates."""
    return "key:" + hashlib.sha256(token).hexdigest()[:16]


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
        body_caps: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.keys = KeyChecker(keys)
        self.open_routes = [*open_routes, *PLAYGROUND_ROUTES]
        self.rate = SlidingWindow(rate_limit_per_minute) if rate_limit_per_minute > 0 else None
        self.max_streams = max_streams_per_client
        self.max_body = max_body_bytes
        #: Exact paths with their own body cap (the voice upload).
        self.body_caps = dict(body_caps or {})
        self.active: dict[str, int] = {}
        #: Rejection counters (read by the metrics collector).
        self.stats = stats if stats is not None else {}

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    # -- the WebSocket route's guard (the same keys and limits as HTTP) ----------------------
    def ws_client(self, scope: Scope, key: str | None) -> str | None:
        """The client id of a WebSocket: its ``Authorization`` header's key, else ``key`` (from
        its first message), else its IP when keys are off; ``None`` when the key is missing or
        wrong (counted as ``unauthorized``)."""
        if not self.keys.enabled:
            peer = scope.get("client")
            return "ip:" + (peer[0] if peer else "unknown")
        token = bearer_token(scope.get("headers", []))
        if token is None and key:
            token = key.strip().encode()
        if token is None or not self.keys.check(token):
            self._count("unauthorized")
            return None
        return "key:" + hashlib.sha256(token).hexdigest()[:16]

    def ws_open(self, client: str) -> tuple[str, str] | None:
        """Count a session as one request and one stream of ``client``: ``None`` when allowed
        (call :meth:`ws_close` at the end), else ``(code, message)``."""
        if self.rate is not None:
            wait = self.rate.hit(client)
            if wait > 0:
                self._count("rate_limited")
                return ("rate_limit_exceeded", f"rate limit reached ({self.rate.limit} requests per minute); "
                        f"retry in {math.ceil(wait)} s")
        if self.max_streams > 0:
            if self.active.get(client, 0) >= self.max_streams:
                self._count("too_many_streams")
                return ("too_many_streams",
                        f"too many concurrent streams for this client (limit {self.max_streams})")
            self.active[client] = self.active.get(client, 0) + 1
        return None

    def ws_close(self, client: str) -> None:
        """Release the stream :meth:`ws_open` counted."""
        if self.max_streams > 0:
            n = self.active.get(client, 1) - 1
            if n <= 0:
                self.active.pop(client, None)
            else:
                self.active[client] = n

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method = scope.get("method")
        # open routes are open to reading only: POST /v1/audio/voices (an upload) needs a key
        # although GET /v1/audio/voices is open for Open-WebUI
        if method == "OPTIONS" or (method in ("GET", "HEAD") and route_matches(path, self.open_routes)):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            # A WebSocket may send its key in its first message, so the route authenticates
            # after accepting (and closes 1008 on a bad key): it gets this guard.
            await self.app({**scope, WS_GUARD: self}, receive, send)
            return

        # -- who is it --------------------------------------------------------------------
        client: str
        if self.keys.enabled:
            token = bearer_token(scope.get("headers", []))
            if token is None or not self.keys.check(token):
                self._count("unauthorized")
                if token is None:
                    message, code = ("missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                                     "missing_api_key")
                else:
                    message, code = "incorrect API key provided", "invalid_api_key"
                await send_error(send, 401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
                return
            client = key_id(token)
        else:
            peer = scope.get("client")
            client = "ip:" + (peer[0] if peer else "unknown")

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
                cap = self.body_caps.get(path, self.max_body)
                body, too_big, disconnected = await _read_capped(receive, cap)
                if too_big:
                    self._count("body_too_large")
                    await send_error(send, 413, f"request body larger than {cap} bytes",
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


def install_security(app: Any, settings: Any, body_caps: dict[str, int] | None = None) -> SecurityMiddleware | None:
    """Add CORS and :class:`SecurityMiddleware` to ``app`` from ``settings``; log the posture.
    ``body_caps``: exact paths with their own body cap. Sets ``app.state.auth_enabled`` and
    ``app.state.admin_key_ids`` (:func:`key_id` of each ``admin_api_keys`` entry)."""
    sec = settings.security
    keys = settings.all_api_keys()
    host = settings.server.host
    if not keys and not is_local_host(host) and not settings.server.insecure:
        raise InsecureBindError(
            f"refusing to listen on {host} without API keys: anyone who can reach the port could use "
            "the server. Set api_keys / api_keys_file / KANITTS_API_KEYS, bind 127.0.0.1, or pass "
            "--insecure (config server.insecure = true) to allow it."
        )
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
        body_caps=body_caps,
    )
    origins = [o.rstrip("/") if o != "*" else o for o in getattr(sec, "cors_origins", [])]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # bearer keys, not cookies: never '*' with credentials
            allow_methods=["GET", "POST", "OPTIONS"],
            # Any request header: the official JS SDK's preflight names its x-stainless-*
            # headers (os, lang, arch, runtime, package-version, retry-count, timeout...),
            # and their list grows; credentials stay off, so this exposes no cookie.
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    app.state.auth_enabled = bool(keys)
    app.state.admin_key_ids = frozenset(key_id(k.encode()) for k in getattr(settings, "admin_api_keys", []) if k)
    if keys:
        logger.info("API keys on (%d configured); open routes: %s", len(set(keys)),
                    ", ".join(getattr(sec, "open_routes", [])) or "none")
    elif is_local_host(host):
        logger.info("API keys off (listening on loopback %s only)", host)
    else:
        logger.warning(
            "listening on %s WITHOUT API keys (server.insecure): anyone who can reach this port can use "
            "the server. Set api_keys / api_keys_file / KANITTS_API_KEYS (see docs/deployment.md).", host,
        )
    if origins:
        logger.info("CORS allowed origins: %s", ", ".join(origins))
    return None
