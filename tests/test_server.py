"""The OpenAI-compatible server through real clients (official `openai` SDK, httpx)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time

import av
import httpx
import numpy as np
import openai
import pytest

from conftest import LiveServer, tiny_settings

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
SHORT = {"max_tokens": 42, "seed": 7, "sample_rate": 22050}  # 10 frames = 0.8 s of audio, native rate
FRAME = 1764


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decode a whole body with PyAV; returns mono float samples and the sample rate."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768, 22050
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        parts = [f.to_ndarray().reshape(-1) for f in c.decode(stream)]
        rate = stream.codec_context.sample_rate
    out = np.concatenate(parts)
    if out.dtype.kind == "i":
        out = out.astype(np.float32) / 32768
    return out, rate


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference_pcm(client) -> np.ndarray:
    r = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format="pcm",
                                   extra_body=SHORT)
    return decode(r.content, "pcm")[0]


def test_health_and_discovery(live_server):
    h = httpx.get(live_server.url + "/health").json()
    assert h["status"] == "ok" and h["tts_ready"] is True
    assert h["models"]["en"]["state"] == "ready"
    assert httpx.get(live_server.url + "/ready").status_code == 200
    models = httpx.get(live_server.url + "/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert models["object"] == "list" and "tts-1" in ids and live_server.service.models["en"].name in ids
    voices = httpx.get(live_server.url + "/v1/audio/voices").json()
    assert voices["voice_names"] == ["andrew", "katie"]  # "voices" is Open-WebUI's [{"id", "name"}] now
    assert [v["id"] for v in voices["voices"]][:2] == ["andrew", "katie"]
    assert voices["languages"]["en"]["default_voice"] == "andrew"


def test_pcm_is_whole_frames(reference_pcm):
    assert reference_pcm.size > 0 and reference_pcm.size % FRAME == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_non_streaming(client, fmt, reference_pcm):
    r = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format=fmt,
                                   extra_body=SHORT)
    ctype = r.response.headers["content-type"]
    assert ctype.startswith({"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                             "wav": "audio/wav", "pcm": "audio/pcm"}[fmt])
    assert r.response.headers["x-kanitts-voice"] == "andrew"
    samples, rate = decode(r.content, fmt)
    duration = samples.size / rate
    expected = reference_pcm.size / 22050
    # within one codec frame plus encoder priming/padding (aac/mp3 add < 0.15 s)
    assert abs(duration - expected) <= 0.16, (fmt, duration, expected)
    if fmt in ("wav", "pcm", "flac"):
        assert samples.size == reference_pcm.size
        np.testing.assert_allclose(samples, reference_pcm, atol=1 / 32768 + 1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_streaming_decodes_whole(client, fmt, reference_pcm):
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="andrew", input="Hello world.", response_format=fmt,
        extra_body={**SHORT, "stream_format": "audio"},
    ) as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = list(r.iter_bytes())
    data = b"".join(chunks)
    samples, rate = decode(data, fmt)
    assert abs(samples.size / rate - reference_pcm.size / 22050) <= 0.16
    if fmt == "wav":
        assert data.count(b"RIFF") == 1
        assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
        assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    if fmt == "opus":
        assert data.count(b"OpusHead") == 1
    if fmt == "flac":
        assert data.count(b"fLaC") == 1
    if fmt == "pcm":
        # chunking of the streaming codec depends on timing: equal within 1 LSB
        np.testing.assert_allclose(samples, reference_pcm, atol=1 / 32768 + 1e-6)


def test_sse_stream(live_server, reference_pcm):
    body = {"input": "Hello world.", "voice": "andrew", "stream_format": "sse", **SHORT}
    events = []
    with httpx.stream("POST", live_server.url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert deltas and events[-1]["type"] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    np.testing.assert_allclose(decode(pcm, "pcm")[0], reference_pcm, atol=1 / 32768 + 1e-6)
    usage = events[-1]["usage"]
    assert usage["output_tokens"] == 42 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_pcm_headers(client):
    r = client.audio.speech.create(model="tts-1", voice="katie", input="Hi.", response_format="pcm", extra_body=SHORT)
    h = r.response.headers
    assert (h["x-sample-rate"], h["x-channels"], h["x-bit-depth"]) == ("22050", "1", "16")
    assert h["x-kanitts-voice"] == "katie" and h["x-kanitts-language"] == "en"
    assert h["x-request-id"]


def test_speed_changes_duration_not_format(client, reference_pcm):
    r = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format="wav",
                                   speed=2.0, extra_body=SHORT)
    samples, _ = decode(r.content, "wav")
    assert abs(samples.size - reference_pcm.size / 2) / (reference_pcm.size / 2) < 0.05


def test_openai_voice_alias_and_instructions_accepted(client):
    r = client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hi.", instructions="Cheerful.",
                                   response_format="wav", extra_body=SHORT)
    assert r.response.headers["x-kanitts-voice"] == "katie"


def test_unknown_fields_are_ignored(live_server):
    r = httpx.post(live_server.url + "/v1/audio/speech",
                   json={"input": "Hi.", "voice": "andrew", "whatever": {"x": 1}, **SHORT}, timeout=60)
    assert r.status_code == 200


def test_open_webui_request(live_server):
    """Exactly what Open-WebUI's audio router sends for TTS engine "openai"."""
    payload = {"input": "Hello from Open WebUI.", "voice": "alloy", "model": "tts-1"}
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-anything",
               "X-OpenWebUI-User-Name": "ada", "X-OpenWebUI-User-Id": "1", "X-OpenWebUI-User-Role": "user"}
    r = httpx.post(live_server.url + "/v1/audio/speech", content=json.dumps(payload), headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    samples, rate = decode(r.content, "wav")
    assert rate == 22050 and samples.size > 0


async def _body(url: str, seed: int, fmt: str = "pcm") -> bytes:
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(url + "/v1/audio/speech",
                         json={"input": "Hello world.", "voice": "andrew", "response_format": fmt,
                               "stream_format": "audio", "max_tokens": 42, "seed": seed})
        assert r.status_code == 200
        return r.content


def test_concurrent_requests_do_not_mix(live_server):
    solo = {s: asyncio.run(_body(live_server.url, s)) for s in (1, 2, 3)}

    async def together():
        return await asyncio.gather(*[_body(live_server.url, s) for s in (1, 2, 3, 1, 2, 3)])

    results = asyncio.run(together())
    as_int = lambda b: np.frombuffer(b, dtype="<i2").astype(np.int32)  # noqa: E731
    for s, data in zip((1, 2, 3, 1, 2, 3), results):
        assert len(data) == len(solo[s])
        assert np.abs(as_int(data) - as_int(solo[s])).max() <= 1  # same audio (1 LSB: codec chunking)
    assert np.abs(as_int(solo[1]) - as_int(solo[2])).max() > 1000


def test_health_answers_while_synthesizing(live_server, monkeypatch):
    """/health answers while a synthesis is held mid-stream at the engine (a gate, not a timing)."""
    import threading

    backend = live_server.service.models["en"].backend
    gate, streaming = threading.Event(), threading.Event()
    original = backend.stream

    async def held(prompt, params, request_id=None):
        n = 0
        async for ids in original(prompt, params, request_id=request_id):
            yield ids
            n += 1
            if n == 2:  # mid-stream: the engine has produced audio, the request is not done
                streaming.set()
                if not await asyncio.to_thread(gate.wait, 300):
                    raise RuntimeError("gate never opened")

    monkeypatch.setattr(backend, "stream", held)

    async def run():
        async with httpx.AsyncClient(timeout=300) as c:
            long = asyncio.create_task(c.post(live_server.url + "/v1/audio/speech",
                                              json={"input": "Hello world.", "max_tokens": 400, "seed": 1}))
            while not streaming.is_set():
                if long.done():
                    raise AssertionError(f"the synthesis ended before it was held: {long.result()}")
                await asyncio.sleep(0.01)
            h = await c.get(live_server.url + "/health")
            done_before_health = long.done()
            gate.set()
            r = await long
            return h.status_code, done_before_health, r.status_code

    status, done_before_health, long_status = asyncio.run(run())
    assert status == 200 and not done_before_health and long_status == 200


def test_disconnect_aborts_generation(live_server):
    backend = live_server.service.models["en"].backend
    aborted_before = backend.stats.requests_aborted
    with httpx.stream("POST", live_server.url + "/v1/audio/speech",
                      json={"input": "Hello world.", "max_tokens": 4000, "min_tokens": 4000, "seed": 3,
                            "response_format": "pcm", "stream_format": "audio"}, timeout=60) as r:
        for _ in r.iter_bytes():
            break  # first audio arrived: hang up
    deadline = time.time() + 120
    while time.time() < deadline and (backend.stats.active_requests or backend.scheduler.active):
        time.sleep(0.05)
    assert backend.stats.active_requests == 0
    assert backend.scheduler.active == 0  # the engine slot is free: nothing is generated for nobody
    assert backend.stats.requests_aborted == aborted_before + 1
    assert httpx.get(live_server.url + "/health").json()["active_streams"] == 0


def err(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if param is not None:
        assert body["param"] == param
    assert "Traceback" not in r.text
    return body


@pytest.mark.parametrize(
    "payload,param",
    [
        ({"input": ""}, "input"),
        ({"input": "   \n "}, "input"),
        ({"voice": "darth"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"stream_format": "video"}, "stream_format"),
        ({"input": "x" * 10_000}, "input"),
        ({"model": "no-such-model"}, "model"),
        ({"language": "xx"}, "language"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"input": 5}, "input"),
        ({"seed": "abc"}, "seed"),
        ({"input": "\u200b\u200b"}, "input"),
        ({"input": "\ud800"}, "input"),
        ({"input": '<break time="500ms"/>'}, "input"),
    ],
)
def test_bad_parameters_are_400(live_server, payload, param):
    body = {"input": "Hello.", "voice": "andrew", **payload}
    # json.dumps escapes lone surrogates (\ud800) the way a JSON client would send them
    e = err(httpx.post(live_server.url + "/v1/audio/speech", content=json.dumps(body),
                       headers={"content-type": "application/json"}), 400, param)
    assert e["type"] == "invalid_request_error"


def test_tiny_temperature_is_greedy_not_a_crash(live_server):
    body = {"input": "Hi.", "voice": "andrew", "temperature": 1e-44, "response_format": "pcm", **SHORT}
    a = httpx.post(live_server.url + "/v1/audio/speech", json=body, timeout=60)
    b = httpx.post(live_server.url + "/v1/audio/speech", json={**body, "temperature": 0, "seed": 99}, timeout=60)
    assert a.status_code == 200 and len(a.content) > 0
    as_int = lambda x: np.frombuffer(x, dtype="<i2").astype(np.int32)  # noqa: E731
    assert len(a.content) == len(b.content)
    assert np.abs(as_int(a.content) - as_int(b.content)).max() <= 1  # both greedy (1 LSB: codec chunking)


def test_unknown_voice_lists_valid_voices(live_server):
    e = err(httpx.post(live_server.url + "/v1/audio/speech", json={"input": "Hi", "voice": "darth"}), 400, "voice")
    assert "andrew" in e["message"] and "katie" in e["message"]
    assert "alloy" in e["message"] and "nova" in e["message"]  # the accepted OpenAI names too


def test_missing_input_invalid_json_and_routes(live_server):
    err(httpx.post(live_server.url + "/v1/audio/speech", json={"voice": "andrew"}), 400, "input")
    err(httpx.post(live_server.url + "/v1/audio/speech", content=b"{not json",
                   headers={"content-type": "application/json"}), 400)
    err(httpx.post(live_server.url + "/v1/audio/speech", json=[1, 2, 3]), 400)
    err(httpx.get(live_server.url + "/v1/nothing-here"), 404)
    err(httpx.get(live_server.url + "/v1/audio/speech"), 405)
    # the server is still fine
    assert httpx.get(live_server.url + "/health").status_code == 200


def test_openai_client_raises_clean_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="darth", input="Hi")
    assert e.value.status_code == 400


def test_unknown_voice_default_fallback(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, server={"unknown_voice": "default"})
    with LiveServer(settings) as srv:
        r = httpx.post(srv.url + "/v1/audio/speech", json={"input": "Hi.", "voice": "darth", **SHORT}, timeout=60)
        assert r.status_code == 200 and r.headers["x-kanitts-voice"] == "andrew"


def test_over_capacity_is_429_with_retry_after(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, server={"max_concurrent": 1, "max_queue": 0})
    with LiveServer(settings) as srv:
        async def run():
            async with httpx.AsyncClient(timeout=60) as c:
                async with c.stream("POST", srv.url + "/v1/audio/speech",
                                    json={"input": "Hi.", "max_tokens": 2000, "min_tokens": 2000,
                                          "stream_format": "audio", "response_format": "pcm"}) as first:
                    async for _ in first.aiter_bytes():
                        break
                    second = await c.post(srv.url + "/v1/audio/speech", json={"input": "Hi.", **SHORT})
                    return second
        r = asyncio.run(run())
        e = err(r, 429)
        assert e["type"] == "rate_limit_error" and int(r.headers["retry-after"]) > 0
        # capacity comes back once the first stream is gone
        deadline = time.time() + 10
        while time.time() < deadline and httpx.get(srv.url + "/health").json()["active_streams"]:
            time.sleep(0.05)
        assert httpx.post(srv.url + "/v1/audio/speech", json={"input": "Hi.", **SHORT}, timeout=60).status_code == 200


def test_time_to_first_audio_byte_streaming(live_server):
    """Streamed audio starts long before the whole clip is done (first chunk is small)."""
    t0 = time.perf_counter()
    first = None
    with httpx.stream("POST", live_server.url + "/v1/audio/speech",
                      json={"input": "Hello world.", "max_tokens": 400, "min_tokens": 400, "seed": 5,
                            "response_format": "pcm", "stream_format": "audio"}, timeout=60) as r:
        for chunk in r.iter_bytes():
            if first is None and chunk:
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    assert first is not None and first < total / 3


def test_graceful_shutdown_finishes_streams_in_flight(tiny_model, tiny_codec, tmp_path):
    """SIGTERM while a stream is playing: the stream completes, then the server exits."""
    import signal

    from _liveserver import serve_cli

    proc, url = serve_cli("--model", tiny_model, "--codec", tiny_codec, "--backend", "native", "--device", "cpu")
    try:
        received = b""
        with httpx.stream("POST", url + "/v1/audio/speech", timeout=60,
                          json={"input": "Hello.", "max_tokens": 202, "min_tokens": 202, "seed": 1,
                                "response_format": "pcm", "stream_format": "audio", "sample_rate": 22050}) as r:
            for chunk in r.iter_bytes():
                if not received:
                    proc.send_signal(signal.SIGTERM)
                received += chunk
        assert len(received) == 50 * 1764 * 2  # every frame of the 202-token stream arrived
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert "Traceback" not in out
