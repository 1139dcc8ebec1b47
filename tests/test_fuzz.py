"""Bad input, tried: thousands of malformed requests against a live app (issue 8).

Hypothesis throws wrong types, huge/unicode/control-character input, nested junk,
invalid JSON, wrong content types, absurd numbers, odd methods/paths, huge headers and
bad ``Authorization`` values at the server -- in-process (Starlette ``TestClient``, fast)
and over real loopback HTTP. Every answer must be: not a 5xx (503/429 load answers
excepted), OpenAI's error shape on every 4xx, valid audio on every 200, in bounded time;
afterwards the server still serves correct audio and no stream is left active.

``KANITTS_FUZZ_EXAMPLES`` (default 1500) and ``KANITTS_FUZZ_HTTP_EXAMPLES`` (default 300)
scale the run; TESTING.md records a bigger one.
"""

from __future__ import annotations

import collections
import json
import os
import struct
import time

import httpx
import pytest
from _liveserver import LiveServer, tiny_settings

from kanitts.config import ServerConfig

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEY = "sk-fuzz-key"
N_INPROC = int(os.environ.get("KANITTS_FUZZ_EXAMPLES", "1500"))
N_HTTP = int(os.environ.get("KANITTS_FUZZ_HTTP_EXAMPLES", "300"))
STATS: collections.Counter[str] = collections.Counter()

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
FIELDS = ["model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "temperature",
          "top_p", "repetition_penalty", "seed", "max_tokens", "min_tokens", "max_chunk_duration",
          "silence_duration", "language", "normalize"]

# -- strategies -----------------------------------------------------------------------------------
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=50),  # control chars
    st.sampled_from(["", " ", "\n\n\t", "\u200b\u200b", "\ufeff", "🙂" * 50, "a\x00b", "<break time=\"99s\"/>",
                     "<speak><break time='-1s'/></speak>", "%s%n{0}", "\\u0000", "\ud7ff", "١٢٣٤", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
                     "1" * 300, "$9,999,999,999,999,999.99", "12/31/99999", "3:99 pm", "x" * 9000]),
)
absurd_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 2**63, 2**64, 1e-320, 0.2499, 4.0001]),
)
json_junk = st.recursive(
    st.none() | st.booleans() | absurd_numbers | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
valid_values = {
    "model": st.sampled_from(["tts-1", "tts-1-hd", "gpt-4o-mini-tts", None]),
    "input": st.sampled_from(["Hello there.", "Hi!", "Testing one two three.", "¿Qué tal?", "5 km, $3.50."]),
    "voice": st.sampled_from(["andrew", "katie", "alloy", "nova", None]),
    "response_format": st.sampled_from([*FORMATS, None]),
    "speed": st.floats(0.25, 4.0),
    "stream_format": st.sampled_from(["audio", "sse", None]),
    "temperature": st.floats(0.0, 2.0),
    "top_p": st.floats(0.01, 1.0),
    "repetition_penalty": st.floats(0.5, 2.0),
    "seed": st.integers(0, 2**63 - 1),
    "max_tokens": st.integers(8, 16),
    "min_tokens": st.integers(0, 12),
    "silence_duration": st.floats(0.0, 1.0),
    "language": st.sampled_from(["en", "es", "xx", "EN", None]),
    "normalize": st.booleans(),
}


@st.composite
def speech_body(draw) -> dict:
    """A request object whose fields are each valid, absent or junk. max_tokens is always
    present and tiny when valid, so that accepted requests stay cheap."""
    body: dict = {}
    for field in FIELDS:
        choice = draw(st.sampled_from(["valid", "valid", "absent", "junk"]))
        if field in ("max_tokens", "input") and choice == "absent":
            choice = "valid"
        if field == "min_tokens" and choice == "junk":
            choice = "absent"  # a valid huge min_tokens is a legit (slow) benchmark request
        if choice == "valid" and field in valid_values:
            body[field] = draw(valid_values[field])
        elif choice == "junk":
            body[field] = draw(json_junk)
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(json_junk)  # unknown fields are ignored
    return body


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"{", b"}", b"null", b"[]", b"[1,2]", b'"input"', b"{'input': 'hi'}", b'{"input": }',
                     b'{"input": "hi"', b'{"input": "\xff\xfe"}', b'{"input": "hi", "speed": NaN}',
                     b'{"input": "hi", "speed": Infinity}', b'{"input": "hi", "max_tokens": 1e999}',
                     b'{"input": "\\ud800"}', b'{"input": "hi", "input": 3}', b"\x00" * 64,
                     b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
                     b'{"input": "' + b"x" * 200_000 + b'"}']),
    speech_body().map(lambda b: json.dumps(b).encode()),
    speech_body().map(lambda b: json.dumps(b).encode()),
    speech_body().map(lambda b: json.dumps(b).encode()),
)
content_types = st.sampled_from([
    "application/json", "application/json", "application/json", "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "", "*/*",
    "application/json\x7f", "application/" + "j" * 3000,
])
auth_headers = st.one_of(
    st.just(f"Bearer {KEY}"), st.just(f"Bearer {KEY}"), st.just(f"Bearer {KEY}"),
    st.none(),
    st.sampled_from(["Bearer", "Bearer  ", f"bearer {KEY}", f"Bearer {KEY} extra", f"Basic {KEY}", KEY,
                     "Bearer " + "k" * 8000, f"Bearer {KEY}\t", "Bearer sk-fuzz-ke", "Bearer sk-fuzz-keyy"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60).map(lambda s: "Bearer " + s),
)
paths = st.one_of(
    st.just("/v1/audio/speech"),
    st.just("/v1/audio/speech"),
    st.just("/v1/audio/speech"),
    st.sampled_from(["/v1/audio/speech"] * 6 + ["/v1/audio/speech/", "/v1/audio/voices", "/v1/models",
                                                "/v1/audio/speech?x=1&x=2", "/v1/%2e%2e/health", "/v1//audio//speech",
                                                "/static/../../etc/passwd", "/static/%2e%2e/app.py", "/metrics",
                                                "/v1/audio/speech?" + "q=1&" * 500]),
    st.text(alphabet="abc/%.?=&~-_", max_size=40).map(lambda p: "/" + p),
)
methods = st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
extra_headers = st.dictionaries(
    st.sampled_from(["X-Request-Id", "X-Junk", "Accept", "Accept-Encoding", "Origin", "X-Forwarded-For", "Range"]),
    st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
              st.integers(1, 30_000).map(lambda n: "h" * n)),
    max_size=3,
)
request_case = st.fixed_dictionaries({
    "method": methods, "path": paths, "body": raw_bodies, "ctype": content_types, "auth": auth_headers,
    "headers": extra_headers,
})


# -- checks ---------------------------------------------------------------------------------------
def check_audio(fmt: str, data: bytes) -> None:
    assert data, "empty audio"
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
        assert struct.unpack("<I", data[40:44])[0] in (len(data) - 44, 0xFFFFFFFF, 0)
    elif fmt == "flac":
        assert data[:4] == b"fLaC"
    elif fmt == "opus":
        assert data[:4] == b"OggS"
    elif fmt == "mp3":
        assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    elif fmt == "aac":
        assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0
    elif fmt == "pcm":
        assert len(data) % 2 == 0


#: Known bugs outside this suite's scope may be counted instead of failing, for big recorded runs:
#: KANITTS_FUZZ_TOLERATE=tiny_temperature (the retired torch backend: 0 < temperature < ~1e-38 gave NaN probs).
TOLERATE = set(filter(None, os.environ.get("KANITTS_FUZZ_TOLERATE", "").split(",")))


def _known_bug(case: dict, status: int, content: bytes) -> str | None:
    if "tiny_temperature" in TOLERATE and b"probability tensor contains" in content:
        return "known_bug_tiny_temperature"
    if "tiny_temperature" in TOLERATE and status == 200 and not content:
        try:
            t = json.loads(case["body"]).get("temperature")
        except Exception:  # noqa: BLE001
            return None
        if isinstance(t, float) and 0 < t < 1e-30:
            return "known_bug_tiny_temperature"
    return None


def check_response(case: dict, status: int, headers: httpx.Headers | dict, content: bytes) -> None:
    bug = _known_bug(case, status, content)
    if bug:
        STATS[bug] += 1
        return
    STATS[str(status)] += 1
    assert status < 500 or status == 503, f"{status} for {case!r:.600}: {content[:300]!r}"
    ctype = headers.get("content-type", "")
    if status >= 400:
        if case["method"] == "HEAD":
            return
        assert ctype.startswith("application/json"), (status, ctype, content[:200])
        err = json.loads(content)["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["type"], str) and "param" in err and "code" in err
        if status == 401:
            assert headers.get("www-authenticate") == "Bearer"
        if status == 429:
            assert headers.get("retry-after")
        return
    path = case["path"].split("?")[0]
    if case["method"] == "POST" and path == "/v1/audio/speech" and status == 200:
        body = json.loads(case["body"])
        if body.get("stream_format") == "sse":
            assert ctype.startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in content.decode().splitlines() if line.startswith("data: ")]
            assert events and events[-1]["type"] in ("speech.audio.done", "error")
            return
        fmt = body.get("response_format") or ServerConfig().default_response_format
        check_audio(fmt, content)
        STATS["audio"] += 1
        if fmt in ("wav", "pcm") and len(content) <= 44:
            STATS["audio_empty"] += 1  # e.g. input of only zero-width spaces: 200 with 0 samples


def _headers(case: dict) -> dict:
    h = dict(case["headers"])
    if case["ctype"]:
        h["Content-Type"] = case["ctype"]
    if case["auth"] is not None:
        h["Authorization"] = case["auth"]
    return {k: v.encode("latin-1") for k, v in h.items()}  # bytes: non-ASCII values go out as sent


def _app(tiny_model: str, tiny_codec: str):
    from kanitts.server.app import create_app

    return create_app(tiny_settings(
        tiny_model, tiny_codec, api_keys=[KEY],
        server={"max_input_chars": 2000, "max_body_bytes": 256 * 1024, "max_concurrent": 4, "max_queue": 16},
    ))


def assert_still_serves(get, post) -> None:
    r = post("/v1/audio/speech", {"input": "Still alive?", "voice": "andrew", "response_format": "wav",
                                  "max_tokens": 24})
    assert r.status_code == 200
    check_audio("wav", r.content)
    assert len(r.content) > 44 + 1000
    health = get("/health").json()
    assert health["active_streams"] == 0 and health["queued"] == 0


# -- tests ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inproc(tiny_model, tiny_codec):
    from starlette.testclient import TestClient

    with TestClient(_app(tiny_model, tiny_codec), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {KEY}"})
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:  # the lifespan loads the models in the background
            assert time.monotonic() < deadline, "models never loaded"
            time.sleep(0.1)
        yield client


@pytest.fixture(scope="module")
def live(tiny_model, tiny_codec):
    with LiveServer(_app(tiny_model, tiny_codec)) as srv:
        yield srv


def test_fuzz_in_process(inproc):
    STATS.clear()

    @settings(max_examples=N_INPROC, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=request_case)
    def one(case):
        headers = _headers(case)
        r = inproc.request(case["method"], case["path"], content=case["body"], headers=headers)
        check_response(case, r.status_code, r.headers, r.content)

    # Requests without auth must not inherit the client's default key.
    inproc.headers.pop("Authorization", None)
    try:
        one()
    finally:
        inproc.headers["Authorization"] = f"Bearer {KEY}"
    print(f"\nin-process fuzz: {sum(v for k, v in STATS.items() if k.isdigit())} requests, "
          f"statuses {dict(sorted((k, v) for k, v in STATS.items() if k.isdigit()))}, valid audio {STATS['audio']} (empty {STATS['audio_empty']}), "
          f"known bugs {dict((k, v) for k, v in STATS.items() if k.startswith('known_bug'))}")
    assert sum(v for k, v in STATS.items() if k.isdigit() or k.startswith("known_bug")) >= 0.9 * N_INPROC
    assert_still_serves(inproc.get, lambda p, j: inproc.post(p, json=j))


def test_fuzz_speech_bodies_in_process(inproc):
    """Structured JSON bodies only: the validation paths of /v1/audio/speech."""
    STATS.clear()

    @settings(max_examples=max(N_INPROC // 3, 100), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=speech_body())
    def one(body):
        case = {"method": "POST", "path": "/v1/audio/speech", "body": json.dumps(body).encode(), "auth": None}
        r = inproc.post("/v1/audio/speech", content=case["body"], headers={"Content-Type": "application/json"})
        check_response(case, r.status_code, r.headers, r.content)

    one()
    print(f"\nbody fuzz: statuses {dict(sorted((k, v) for k, v in STATS.items() if k.isdigit()))}, "
          f"valid audio {STATS['audio']} (empty {STATS['audio_empty']})")
    assert STATS["400"] > 0 and STATS["audio"] > 0
    assert_still_serves(inproc.get, lambda p, j: inproc.post(p, json=j))


def test_fuzz_over_loopback(live):
    STATS.clear()
    client = httpx.Client(base_url=live.url, timeout=httpx.Timeout(30.0))

    @settings(max_examples=N_HTTP, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=request_case)
    def one(case):
        try:
            r = client.request(case["method"], case["path"], content=case["body"], headers=_headers(case))
        except httpx.TimeoutException:
            raise AssertionError(f"timed out: {case!r:.300}") from None
        except httpx.LocalProtocolError:
            STATS["client_refused"] += 1  # httpx will not even send it (e.g. a trailing space)
            return
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # uvicorn/h11 refusing a malformed request (e.g. headers over 64 KiB) closes the
            # connection: that is a rejection, not a crash; the checks below prove it lives.
            STATS["closed"] += 1
            return
        if r.status_code == 400 and r.content == b"Invalid HTTP request received.":
            STATS["h11_400"] += 1  # uvicorn's HTTP parser rejected it before the app saw it
            return
        check_response(case, r.status_code, r.headers, r.content)

    try:
        one()
        print(f"\nloopback fuzz: statuses {dict(sorted(STATS.items()))}")
        assert_still_serves(client.get, lambda p, j: client.post(p, json=j, headers={"Authorization": f"Bearer {KEY}"}))
    finally:
        client.close()
