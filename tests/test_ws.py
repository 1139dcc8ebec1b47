"""WS /v1/audio/speech/stream through a real WebSocket client against a live tiny server."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time

import httpx
import numpy as np
import pytest
from conftest import LiveServer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from _liveserver import tiny_settings

KEY = "sk-ws-test"
TEXT = "Hello there, my friend. It is 3.5 degrees today, and 1,000 people came. See you soon!"


@pytest.fixture(scope="module")
def server(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=[KEY], server={"ws_min_chars": 14})
    with LiveServer(settings) as srv:
        yield srv


def _url(srv) -> str:
    return srv.url.replace("http://", "ws://") + "/v1/audio/speech/stream"


@contextlib.contextmanager
def _open(srv, key: str | None = KEY, **start):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with connect(_url(srv), additional_headers=headers, open_timeout=30, max_size=None) as ws:
        # the model's own 22,050 Hz unless a test asks otherwise: the tests count samples at it
        ws.send(json.dumps({"type": "session.start", "version": 1, "sample_rate": 22050, **start}))
        yield ws


def _read_all(ws, timeout: float = 120.0) -> tuple[bytes, list[dict], int | None]:
    """Audio bytes, JSON events and the close code, until the server closes."""
    audio = bytearray()
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=deadline - time.monotonic())
            if isinstance(msg, bytes):
                audio += msg
                continue
            ev = json.loads(msg)
            if ev["type"] == "audio.delta":
                audio += base64.b64decode(ev["audio"])
            events.append(ev)
    except ConnectionClosed as exc:
        return bytes(audio), events, exc.rcvd.code if exc.rcvd else None
    raise AssertionError("the server did not close in time")


def _next_event(ws, kind: str, timeout: float = 60.0) -> tuple[dict, int]:
    """Skip to the next JSON event of ``kind``; returns it and the audio bytes skipped."""
    skipped = 0
    deadline = time.monotonic() + timeout
    while True:
        msg = ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
        if isinstance(msg, bytes):
            skipped += len(msg)
            continue
        ev = json.loads(msg)
        if ev["type"] == kind:
            return ev, skipped


def _session(srv, parts: list[str], **start) -> tuple[bytes, list[dict], int | None]:
    with _open(srv, seed=7, max_tokens=40, **start) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        for p in parts:
            ws.send(json.dumps({"type": "text.delta", "text": p}))
        ws.send(json.dumps({"type": "close"}))
        return _read_all(ws)


def test_a_session_speaks_pieces_in_order_with_exact_silence_and_segments(server):
    audio, events, code = _session(server, [TEXT], silence_duration=0.25)
    assert code == 1000
    segs = [e for e in events if e["type"] == "segment"]
    assert [s["text"] for s in segs] == ["Hello there, my friend.", "It is 3.5 degrees today,",
                                         "and 1,000 people came.", "See you soon!"]
    assert [s["index"] for s in segs] == [0, 1, 2, 3]
    pcm = memoryview(audio).cast("h")
    assert segs[0]["start_sample"] == 0 and segs[-1]["end_sample"] == len(pcm)
    for a, b in zip(segs, segs[1:]):
        gap = b["start_sample"] - a["end_sample"]
        assert gap == round(0.25 * 22050)  # exactly silence_duration
        assert all(x == 0 for x in pcm[a["end_sample"]:b["start_sample"]])
        assert b["start"] == pytest.approx(b["start_sample"] / 22050, abs=1e-5)
    done = events[-1]
    assert done["type"] == "done" and done["segments"] == 4
    assert done["usage"]["output_tokens"] > 0
    assert done["audio_seconds"] == pytest.approx(len(pcm) / 22050, abs=1e-5)


@pytest.mark.parametrize("seed", [1, 2])
def test_split_deltas_give_the_same_audio_and_segments(server, seed):
    whole = _session(server, [TEXT])
    rng = random.Random(seed)
    parts, i = [], 0
    while i < len(TEXT):
        j = i + rng.randint(1, 6)
        parts.append(TEXT[i:j])
        i = j
    split = _session(server, parts)
    assert split[2] == whole[2] == 1000
    assert [e for e in split[1] if e["type"] == "segment"] == [e for e in whole[1] if e["type"] == "segment"]
    assert split[1][-1]["usage"] == whole[1][-1]["usage"]
    # The same tokens; the codec batches whichever streams are decoding at the same step, so
    # float rounding may differ by a step of the 16-bit output.
    a, b = np.frombuffer(split[0], np.int16), np.frombuffer(whole[0], np.int16)
    assert a.shape == b.shape
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    print("max diff", diff.max(), "differing", int((diff > 0).sum()), "of", a.size)
    assert diff.max() <= 2


def test_flush_cancel_mid_speech_and_close(server):
    backend = server.service.models["en"].backend
    aborted = backend.stats.requests_aborted
    with _open(server, key=None, api_key=KEY, seed=3, audio="base64") as ws:  # key in the first message
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        ws.send(json.dumps({"type": "text.delta", "text": "short"}))
        ws.send(json.dumps({"type": "flush"}))  # under min_chars: only a flush speaks it
        seg, _ = _next_event(ws, "segment")
        assert seg["text"] == "short" and "interrupted" not in seg
        ws.send(json.dumps({"type": "text.delta", "text": "This sentence goes on for a long while without any end"}))
        ws.send(json.dumps({"type": "flush"}))
        first, _ = _next_event(ws, "audio.delta")  # it is being spoken
        ws.send(json.dumps({"type": "text.delta", "text": " and this is dropped"}))
        ws.send(json.dumps({"type": "cancel"}))
        cut, _ = _next_event(ws, "segment")
        assert cut["interrupted"] is True and cut["index"] == 1
        cancelled, after = _next_event(ws, "cancelled")
        assert after == 0 and cancelled["audio_end_sample"] == cut["end_sample"]
        deadline = time.monotonic() + 10
        while backend.stats.active_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend.stats.active_requests == 0 and backend.stats.requests_aborted > aborted
        ws.send(json.dumps({"type": "text.delta", "text": "Back again."}))
        ws.send(json.dumps({"type": "close"}))
        audio, events, code = _read_all(ws)
    assert code == 1000
    segs = [e for e in events if e["type"] == "segment"]
    assert [s["text"] for s in segs] == ["Back again."]
    assert segs[0]["start_sample"] == cut["end_sample"] + round(0.2 * 22050)
    assert events[-1]["type"] == "done"


def test_bad_messages_get_errors_and_the_session_goes_on(server):
    with _open(server, voice="no-such-voice") as ws:
        bad_voice = json.loads(ws.recv(timeout=30))
        assert bad_voice["type"] == "error" and bad_voice["error"]["code"] == "invalid_voice"
        assert set(bad_voice["error"]) == {"message", "type", "param", "code"}
        ws.send("not json")
        assert json.loads(ws.recv(timeout=30))["error"]["type"] == "invalid_request_error"
        ws.send(json.dumps({"type": "text.delta", "text": "too early"}))
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "session_not_started"
        ws.send(json.dumps({"type": "session.start", "speed": 9}))
        assert json.loads(ws.recv(timeout=30))["error"]["param"] == "speed"
        ws.send(json.dumps({"type": "session.start", "max_tokens": 16}))
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        ws.send(json.dumps({"type": "dance"}))
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "unknown_message_type"
        ws.send(json.dumps({"type": "text.delta", "text": "x" * 9000}))  # over server.max_input_chars
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "input_too_long"
        ws.send(json.dumps({"type": "text.delta", "text": "Still here."}))
        ws.send(json.dumps({"type": "close"}))
        _, events, code = _read_all(ws)
    assert code == 1000 and [e["text"] for e in events if e["type"] == "segment"] == ["Still here."]


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_a_missing_or_wrong_key_closes_1008(server, key):
    with _open(server, key=key) as ws:
        _, events, code = _read_all(ws, timeout=30)
    assert code == 1008
    assert events[0]["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/health").json()["active_streams"] == 0


def test_a_disconnect_frees_the_engine(server):
    backend = server.service.models["en"].backend
    aborted = backend.stats.requests_aborted
    with _open(server, seed=4) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        ws.send(json.dumps({"type": "text.delta", "text": "A long sentence that is still being spoken when we hang up"}))
        ws.send(json.dumps({"type": "flush"}))
        while not isinstance(ws.recv(timeout=60), bytes):
            pass
    deadline = time.monotonic() + 10
    while (backend.stats.active_requests or backend.stats.requests_aborted == aborted) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.stats.active_requests == 0 and backend.stats.requests_aborted == aborted + 1
    while httpx.get(server.url + "/health").json()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(server.url + "/health").json()["active_streams"] == 0


def test_idle_and_total_time_limits_close_1008(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec,
                             server={"ws_idle_timeout_seconds": 0.5, "ws_max_session_seconds": 2.0})
    with LiveServer(settings) as srv:
        with _open(srv, key=None) as ws:
            _, events, code = _read_all(ws, timeout=30)  # starts, then says nothing
        assert code == 1008
        assert [e["type"] for e in events] == ["session.created", "error"]
        assert events[-1]["error"]["code"] == "idle_timeout"
        with connect(_url(srv), open_timeout=30) as ws:  # never starts
            _, events, code = _read_all(ws, timeout=30)
        assert code == 1008 and events[-1]["error"]["code"] == "idle_timeout"
        with _open(srv, key=None) as ws:  # busy speaking (never idle), past the total limit
            assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
            t = time.monotonic()
            ws.send(json.dumps({"type": "text.delta", "text": "This sentence takes the tiny model many seconds to say"}))
            ws.send(json.dumps({"type": "flush"}))
            _, events, code = _read_all(ws, timeout=60)
        assert code == 1008 and events[-1]["error"]["code"] == "session_timeout"
        assert time.monotonic() - t < 30


def test_a_session_is_a_stream_for_admission_and_client_limits(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=["k1", "k2"],
                             server={"max_concurrent": 1, "max_queue": 0},
                             security={"max_streams_per_client": 1})
    with LiveServer(settings) as srv:
        with _open(srv, key="k1") as first:
            assert json.loads(first.recv(timeout=30))["type"] == "session.created"
            with _open(srv, key="k2") as other_client:  # the server is full
                _, events, code = _read_all(other_client, timeout=30)
            assert code == 1013 and events[-1]["error"]["code"] == "queue_full"
            with _open(srv, key="k1") as same_client:  # k1's one stream is in use
                _, events, code = _read_all(same_client, timeout=30)
            assert code == 1013 and events[-1]["error"]["code"] == "too_many_streams"
            r = httpx.post(srv.url + "/v1/audio/speech", json={"input": "Hi."},
                           headers={"Authorization": "Bearer k1"}, timeout=30)
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_streams"
            first.send(json.dumps({"type": "close"}))
            assert _read_all(first)[2] == 1000
        with _open(srv, key="k1", max_tokens=16) as again:  # released: k1 may open another
            assert json.loads(again.recv(timeout=30))["type"] == "session.created"


def test_session_created_says_the_audio_rate(server):
    """pcm defaults to OpenAI's 24 kHz, as over HTTP; session.created says the rate."""
    for asked, expected in ((None, 24000), (16000, 16000)):
        with _open(server, response_format="pcm", sample_rate=asked) as ws:
            created = json.loads(ws.recv(timeout=60))
            assert created["type"] == "session.created" and created["sample_rate"] == expected
            ws.send(json.dumps({"type": "close"}))
