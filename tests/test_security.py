"""API keys, rate and stream limits, body cap and CORS (issue 8)."""

from __future__ import annotations

import contextlib
import json
import logging
import time

import httpx
import pytest
from _liveserver import LiveServer, tiny_settings

from kanitts.server.security import (
    KeyChecker,
    SlidingWindow,
    bearer_token,
    is_local_host,
    route_matches,
)

KEYS = ["sk-test-one", "sk-test-two"]
SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "andrew", "response_format": "wav", "max_tokens": 16}


def _error_shape(resp: httpx.Response, status: int, etype: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"} and isinstance(err["message"], str)
    if etype:
        assert err["type"] == etype
    return err


# -- units ------------------------------------------------------------------------------------
def test_is_local_host():
    for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_local_host(h), h
    for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", "10.0.0.1"):
        assert not is_local_host(h), h


def test_route_matches():
    routes = ["/health", "/metrics", "/static/*", "/"]
    assert route_matches("/health", routes) and route_matches("/static/app.js", routes)
    assert route_matches("/", routes) and not route_matches("/v1/models", routes)
    assert not route_matches("/healthz", routes)


def test_key_checker_and_bearer():
    kc = KeyChecker(KEYS + [""])
    assert kc.enabled and len(kc) == 2
    assert kc.check(b"sk-test-two") and not kc.check(b"sk-test-tw") and not kc.check(b"")
    assert not KeyChecker([]).enabled
    assert bearer_token([(b"authorization", b"Bearer abc ")]) == b"abc"
    assert bearer_token([(b"Authorization", b"bearer abc")]) == b"abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer")]) is None
    assert bearer_token([]) is None


def test_sliding_window():
    w = SlidingWindow(3, window=60)
    assert [w.hit("a", now=t) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    wait = w.hit("a", now=3)
    assert wait == pytest.approx(57)  # the oldest event leaves the window at t=60
    assert w.hit("b", now=3) == 0.0  # per client
    assert w.hit("a", now=60.5) == 0.0
    w.prune(now=1000)
    assert len(w) == 0


def test_public_bind_without_keys_warns(caplog, tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    with caplog.at_level(logging.WARNING, logger="kanitts.server.security"):
        create_app(tiny_settings(tiny_model, tiny_codec, server={"host": "0.0.0.0", "insecure": True}))
    assert any("WITHOUT API keys" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kanitts.server.security"):
        create_app(tiny_settings(tiny_model, tiny_codec, server={"host": "0.0.0.0"}, api_keys=KEYS))
        create_app(tiny_settings(tiny_model, tiny_codec))  # loopback: keys optional
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_api_keys_file(tmp_path, tiny_model, tiny_codec):
    f = tmp_path / "keys.txt"
    f.write_text("# ops keys\nsk-from-file\n\n")
    s = tiny_settings(tiny_model, tiny_codec, api_keys=["sk-inline"], api_keys_file=str(f))
    assert s.all_api_keys() == ["sk-inline", "sk-from-file"]


# -- in-process (no model needed) -------------------------------------------------------------
def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_rate_limit_per_key(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    app = create_app(tiny_settings(tiny_model, tiny_codec, api_keys=KEYS, security={"rate_limit_per_minute": 3}))
    a = {"Authorization": f"Bearer {KEYS[0]}"}
    b = {"Authorization": f"Bearer {KEYS[1]}"}
    async with _client(app) as c:
        for _ in range(3):
            assert (await c.get("/v1/models", headers=a)).status_code == 200
        r = await c.get("/v1/models", headers=a)
        err = _error_shape(r, 429, "rate_limit_error")
        assert err["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert (await c.get("/v1/models", headers=b)).status_code == 200  # the other key has its own budget
        assert (await c.get("/health")).status_code == 200  # open routes are not limited
        metrics = (await c.get("/metrics")).text
    assert 'kanitts_rejected_requests_total{reason="rate_limited"} 1.0' in metrics


async def test_rate_limit_per_ip_without_keys(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    app = create_app(tiny_settings(tiny_model, tiny_codec, security={"rate_limit_per_minute": 2}))
    async with _client(app) as c:
        codes = [(await c.get("/v1/models")).status_code for _ in range(3)]  # /v1/audio/voices is open
    assert codes == [200, 200, 429]


async def test_cors(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    origin = "https://app.example.test"
    app = create_app(tiny_settings(tiny_model, tiny_codec, api_keys=KEYS, security={"cors_origins": [origin]}))
    async with _client(app) as c:
        pre = await c.options("/v1/audio/speech", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in pre.headers
        r = await c.get("/v1/models", headers={"Origin": origin, "Authorization": f"Bearer {KEYS[0]}"})
        assert r.headers["access-control-allow-origin"] == origin
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and "x-sample-rate" in exposed and "x-kanitts-voice" in exposed
        r = await c.get("/v1/models", headers={"Origin": "https://evil.test", "Authorization": f"Bearer {KEYS[0]}"})
        assert "access-control-allow-origin" not in r.headers
        # A 401 still carries CORS headers so the page can read the error.
        r = await c.get("/v1/models", headers={"Origin": origin})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin

    default = create_app(tiny_settings(tiny_model, tiny_codec))
    async with _client(default) as c:
        r = await c.get("/health", headers={"Origin": "https://elsewhere.test"})
        assert "access-control-allow-origin" not in r.headers


async def test_chunked_body_cap(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    app = create_app(tiny_settings(tiny_model, tiny_codec, server={"max_body_bytes": 4096}))

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async with _client(app) as c:
        r = await c.post("/v1/audio/speech", content=chunks(), headers={"Content-Type": "application/json"})
        _error_shape(r, 413)
        r = await c.post("/v1/audio/speech", content=b"x" * 5000, headers={"Content-Type": "application/json"})
        _error_shape(r, 413)

        async def small():
            yield b'{"input": '
            yield b"42}"

        r = await c.post("/v1/audio/speech", content=small(), headers={"Content-Type": "application/json"})
        _error_shape(r, 400)  # the replayed body reached validation (input must be a string)


# -- live server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    # open_routes without the two list routes (open by default): they then need a key too.
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=KEYS,
                             security={"max_streams_per_client": 1, "open_routes": ["/health", "/ready", "/metrics"]})
    with LiveServer(create_app(settings)) as srv:
        yield srv


def test_openai_client_with_keys(keyed):
    openai = pytest.importorskip("openai")
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEYS[1], max_retries=0, timeout=60)
    audio = good.audio.speech.create(model="tts-1", voice="andrew", input="Hello there.",
                                     response_format="wav", extra_body={"max_tokens": 16})
    data = audio.read()
    assert data[:4] == b"RIFF" and len(data) > 44
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.audio.speech.create(model="tts-1", voice="andrew", input="Hello there.")
    assert info.value.status_code == 401


def test_missing_and_wrong_keys(keyed):
    r = httpx.post(keyed.url + "/v1/audio/speech", json=SPEECH)
    err = _error_shape(r, 401, "authentication_error")
    assert err["code"] == "missing_api_key" and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.headers.get("X-Request-Id")
    for auth in ("Bearer sk-wrong", "Basic c2stdGVzdC1vbmU=", "Bearer", "Bearer  x", f"Bearer {KEYS[0]}x", KEYS[0]):
        r = httpx.get(keyed.url + "/v1/models", headers={"Authorization": auth})
        _error_shape(r, 401, "authentication_error")
    for path in ("/v1/audio/voices", "/openapi.json", "/docs", "/v1/nonexistent"):
        assert httpx.get(keyed.url + path).status_code == 401, path
    assert httpx.get(keyed.url + "/v1/models", headers={"Authorization": f"bearer {KEYS[0]}"}).status_code == 200


def test_open_routes_need_no_key(keyed):
    for path in ("/health", "/ready", "/metrics", "/", "/static/app.js", "/static/style.css"):
        assert httpx.get(keyed.url + path).status_code == 200, path
    _error_shape(httpx.get(keyed.url + "/static/nope.js"), 404)


def test_stream_released_on_abandon(keyed):
    """A client that drops a stream mid-body gets its stream slot back."""
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    long = dict(SPEECH, response_format="pcm", stream_format="audio", min_tokens=2000, max_tokens=2000)
    with httpx.Client(base_url=keyed.url, headers=auth, timeout=30) as c:
        with c.stream("POST", "/v1/audio/speech", json=long) as first:
            assert first.status_code == 200
            next(first.iter_bytes())  # audio is flowing; now abandon it
        deadline = time.monotonic() + 10
        while True:
            r = c.post("/v1/audio/speech", json=SPEECH)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
        deadline = time.monotonic() + 10
        while httpx.get(keyed.url + "/health").json()["active_streams"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(keyed.url + "/health").json()["active_streams"] == 0


async def test_stream_limit_counts_until_body_end_or_disconnect():
    """Pure ASGI: a POST holds its slot until the last body message or until it is cancelled."""
    import asyncio

    from kanitts.server.security import SecurityMiddleware

    release = asyncio.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    mw = SecurityMiddleware(app, keys=[], open_routes=[], max_streams_per_client=1)

    def scope(ip="10.0.0.1"):
        return {"type": "http", "method": "POST", "path": "/v1/audio/speech", "client": (ip, 5000),
                "headers": [(b"content-length", b"2")]}

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    def collector():
        out = []

        async def send(message):
            out.append(message)

        return out, send

    first_out, first_send = collector()
    first = asyncio.create_task(mw(scope(), receive, first_send))
    await asyncio.sleep(0.05)
    assert first_out[0]["status"] == 200 and mw.active == {"ip:10.0.0.1": 1}
    second_out, second_send = collector()
    await mw(scope(), receive, second_send)
    assert second_out[0]["status"] == 429
    headers = dict(second_out[0]["headers"])
    assert headers[b"retry-after"] == b"1"
    assert json.loads(second_out[1]["body"])["error"]["code"] == "too_many_streams"
    other_out, other_send = collector()
    other = asyncio.create_task(mw(scope("10.0.0.2"), receive, other_send))  # another client: allowed
    await asyncio.sleep(0.05)
    assert other_out[0]["status"] == 200
    release.set()
    await asyncio.gather(first, other)
    assert mw.active == {}
    # A client that disconnects: the server cancels the app; the slot is released too.
    release.clear()
    hung = asyncio.create_task(mw(scope(), receive, collector()[1]))
    await asyncio.sleep(0.05)
    assert mw.active == {"ip:10.0.0.1": 1}
    hung.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hung
    assert mw.active == {}
