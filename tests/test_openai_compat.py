"""Drop-in compatibility with OpenAI's speech API and the clients built on it (issue 15 part 3,
issue 17's server points): 24 kHz pcm, sample_rate, mp3 default, voice names and objects,
browser preflight, Open-WebUI's list routes, disconnects, HEAD, no local paths, model field."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Callable

import av
import httpx
import numpy as np
import openai
import pytest

from conftest import LiveServer, tiny_settings
from kanitts.config import ServerConfig, _default_aliases

SHORT = {"max_tokens": 42, "seed": 7}  # 10 frames = 0.8 s at 22,050 Hz
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")
STAINLESS = ("x-stainless-os,x-stainless-lang,x-stainless-package-version,x-stainless-runtime,"
             "x-stainless-runtime-version,x-stainless-arch,x-stainless-retry-count,x-stainless-timeout,"
             "authorization,content-type")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768


def container_rate(data: bytes) -> tuple[str, int, int]:
    """(format name, sample rate, decoded samples) of an encoded file."""
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(stream))
        return c.format.name, stream.codec_context.sample_rate, n


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


# -- 24 kHz pcm, sample_rate, default format ------------------------------------------------------
def test_openai_client_reads_24khz_pcm(client):
    native = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format="pcm",
                                        extra_body={**SHORT, "sample_rate": 22050})
    r = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format="pcm",
                                   extra_body=SHORT)
    assert r.response.headers["x-sample-rate"] == "24000" and native.response.headers["x-sample-rate"] == "22050"
    n22, n24 = len(native.content) // 2, len(r.content) // 2
    assert n22 > 0 and n24 == round(n22 * 24000 / 22050)  # same audio, same duration at 24 kHz
    from kanitts.audio import resample_all

    # the tiny random model speaks at full scale: the resampler's overshoot clips in int16
    expected = np.clip(resample_all(pcm16(native.content), 22050, 24000), -1.0, 32767 / 32768)
    np.testing.assert_allclose(pcm16(r.content), expected, atol=2 / 32768)


def test_sse_is_24khz_by_default(live_server):
    body = {"input": "Hello world.", "voice": "andrew", "stream_format": "sse", **SHORT}
    with httpx.stream("POST", live_server.url + "/v1/audio/speech", json=body, timeout=60) as r:
        assert r.headers["x-sample-rate"] == "24000"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(pcm) // 2 == round(10 * 1764 * 24000 / 22050)


@pytest.mark.parametrize(("fmt", "rate", "coded"), [("wav", 16000, 16000), ("flac", 44100, 44100),
                                                     ("mp3", 48000, 48000), ("aac", 32000, 32000),
                                                     ("wav", None, 22050)])
def test_sample_rate_for_every_format(client, fmt, rate, coded):
    extra = dict(SHORT) if rate is None else {**SHORT, "sample_rate": rate}
    r = client.audio.speech.create(model="tts-1", voice="andrew", input="Hello world.", response_format=fmt,
                                   extra_body=extra)
    _, got, n = container_rate(r.content)
    assert got == coded and int(r.response.headers["x-sample-rate"]) == coded
    assert abs(n / got - 0.8) < 0.15


@pytest.mark.parametrize("rate", [7999, 48001])
def test_sample_rate_out_of_range_is_400(live_server, rate):
    r = httpx.post(live_server.url + "/v1/audio/speech", json={"input": "Hi.", "sample_rate": rate})
    assert r.status_code == 400 and r.json()["error"]["param"] == "sample_rate"


def test_default_format_is_mp3(live_server):
    assert ServerConfig().default_response_format == "mp3"
    r = httpx.post(live_server.url + "/v1/audio/speech", json={"input": "Hello.", "voice": "andrew", **SHORT},
                   timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/mpeg")
    assert container_rate(r.content)[0] == "mp3"


# -- voices ------------------------------------------------------------------------------------------
def test_every_current_openai_voice_maps(live_server):
    assert set(OPENAI_VOICES) <= set(_default_aliases())
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        for name in OPENAI_VOICES:
            for spelled in (name, name.upper()):
                r = c.post("/v1/audio/speech", json={"input": "Hi.", "voice": spelled, "response_format": "pcm",
                                                     "max_tokens": 8})
                assert r.status_code == 200, (spelled, r.text)
                assert r.headers["x-kanitts-voice"] in ("andrew", "katie")


def test_voice_names_are_case_insensitive_and_may_be_objects(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        for voice, expected in (("ANDREW", "andrew"), ("Katie", "katie"), ({"id": "KATIE"}, "katie"),
                                ({"id": "andrew"}, "andrew")):
            r = c.post("/v1/audio/speech", json={"input": "Hi.", "voice": voice, "response_format": "pcm",
                                                 "max_tokens": 8})
            assert r.status_code == 200 and r.headers["x-kanitts-voice"] == expected, voice
        r = c.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"name": "andrew"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
        r = c.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"id": "darth"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_voice"


# -- Open-WebUI's dropdowns, without a key --------------------------------------------------------------
def test_open_webui_lists_answer_without_a_key(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=["sk-secret"])
    with LiveServer(settings) as srv:
        models = httpx.get(srv.url + "/v1/audio/models").json()["models"]
        assert {"id": "tts-1"} in models and {"id": "model"} in models  # the tiny folder's base name
        voices = httpx.get(srv.url + "/v1/audio/voices").json()
        by_id = {v["id"]: v["name"] for v in voices["voices"]}  # what Open-WebUI builds
        assert {"andrew", "katie", *OPENAI_VOICES} <= set(by_id)
        assert voices["voice_names"] == ["andrew", "katie"] and voices["languages"]["en"]["default_voice"] == "andrew"
        assert httpx.post(srv.url + "/v1/audio/speech", json={"input": "Hi."}).status_code == 401
        assert httpx.get(srv.url + "/v1/models").status_code == 401


# -- browser clients -----------------------------------------------------------------------------------
def test_js_sdk_preflight_with_stainless_headers(tiny_model, tiny_codec):
    origin = "https://chat.example.test"
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=["sk-secret"], security={"cors_origins": [origin]})
    with LiveServer(settings) as srv:
        pre = httpx.options(srv.url + "/v1/audio/speech", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": STAINLESS})
        assert pre.status_code == 200, pre.text
        assert pre.headers["access-control-allow-origin"] == origin
        allowed = pre.headers["access-control-allow-headers"].lower()
        assert all(h in allowed for h in STAINLESS.split(","))
        assert "access-control-allow-credentials" not in pre.headers
        evil = httpx.options(srv.url + "/v1/audio/speech", headers={
            "Origin": "https://evil.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": STAINLESS})
        assert evil.status_code == 400


# -- a non-streamed request whose client leaves -------------------------------------------------------
def test_disconnect_of_a_non_streamed_request_aborts_the_engine_request(live_server):
    backend = live_server.service.models["en"].backend
    aborted, finished = backend.stats.requests_aborted, backend.stats.requests_finished
    body = json.dumps({"input": "Hello world.", "voice": "andrew", "response_format": "wav", "seed": 3,
                       "max_tokens": 8192, "min_tokens": 8192}).encode()
    host, port = live_server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: backend.stats.active_requests > 0, what="the request to reach the engine")
    finally:
        sock.close()  # the client goes away before any response
    wait_for(lambda: backend.stats.requests_aborted == aborted + 1, what="the engine request to be aborted")
    wait_for(lambda: backend.stats.active_requests == 0, what="the engine to be idle")
    assert backend.stats.requests_finished == finished  # aborted, not generated to the end


# -- HEAD, paths, model field, Content-Type ----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/health"])
def test_head_answers_like_get_without_a_body(live_server, path):
    get = httpx.get(live_server.url + path)
    head = httpx.head(live_server.url + path)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_no_absolute_local_path_on_open_routes(live_server, tiny_model):
    assert tiny_model.startswith("/")
    texts = [httpx.get(live_server.url + p).text for p in ("/health", "/v1/models", "/v1/audio/models",
                                                             "/v1/audio/voices", "/metrics")]
    r = httpx.post(live_server.url + "/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm",
                                                               "max_tokens": 8}, timeout=60)
    assert r.headers["x-kanitts-model"] == "model"
    for text in [*texts, json.dumps(dict(r.headers))]:
        assert tiny_model not in text and str(live_server.service.models["en"].path) not in text
    assert json.loads(texts[0])["models"]["en"]["model"] == "model"


def test_model_field_selects_a_loaded_model(live_server, tiny_model):
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        for name in ("tts-1", "gpt-4o-mini-tts", "model", tiny_model):
            r = c.post("/v1/audio/speech", json={"model": name, "input": "Hi.", "response_format": "pcm",
                                                 "max_tokens": 8})
            assert r.status_code == 200 and r.headers["x-kanitts-model"] == "model", name
        r = c.post("/v1/audio/speech", json={"model": "nope/missing", "input": "Hi."})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
        assert tiny_model not in r.text


@pytest.mark.parametrize("ctype", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_json_body_without_json_content_type_says_so(live_server, ctype):
    headers = {} if ctype is None else {"Content-Type": ctype}
    body = json.dumps({"input": "Hi.", "max_tokens": 8, "response_format": "pcm"}).encode()
    r = httpx.post(live_server.url + "/v1/audio/speech", content=body, headers=headers, timeout=60)
    if ctype is None and r.status_code == 200:
        return  # FastAPI reads a body without Content-Type as JSON: nothing to complain about
    assert r.status_code == 415, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_media_type" and "Content-Type" in err["message"]
    assert "application/json" in err["message"]


# -- one engine per model ---------------------------------------------------------------------------------
def test_one_backend_for_two_languages_of_one_model(tiny_model, tiny_codec):
    settings = tiny_settings(tiny_model, tiny_codec, multi_language=True,
                             languages={"en": {"model": tiny_model}, "es": {"model": tiny_model}})
    with LiveServer(settings) as srv:
        svc = srv.service
        assert len(svc.backends) == 1 and svc.models["en"].backend is svc.models["es"].backend
        health = httpx.get(srv.url + "/health").json()["models"]
        assert health["en"]["state"] == health["es"]["state"] == "ready"
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for lang in ("en", "es"):
                r = c.post("/v1/audio/speech", json={"input": "Hola.", "language": lang, "response_format": "pcm",
                                                     "max_tokens": 8})
                assert r.status_code == 200 and r.headers["x-kanitts-language"] == lang
            # the model names both languages: "language" still picks among them
            r = c.post("/v1/audio/speech", json={"model": "model", "input": "Hi.", "language": "es",
                                                 "response_format": "pcm", "max_tokens": 8})
            assert r.status_code == 200 and r.headers["x-kanitts-language"] == "es"
        assert httpx.get(srv.url + "/v1/audio/models").json()["models"].count({"id": "model"}) == 1
    assert svc.models["en"].backend.stats.active_requests == 0


# -- a non-loopback bind without keys -------------------------------------------------------------------------
def test_serve_refuses_a_public_bind_without_keys(tiny_model, tiny_codec):
    import subprocess
    import sys

    from _liveserver import free_port

    cmd = [sys.executable, "-m", "kanitts.cli", "serve", "--model", tiny_model, "--codec", tiny_codec,
           "--backend", "native", "--device", "cpu", "--host", "0.0.0.0", "--port", str(free_port())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env_without_keys())
    assert proc.returncode != 0
    assert "refusing to listen on 0.0.0.0 without API keys" in proc.stderr and "--insecure" in proc.stderr
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stderr


def _env_without_keys() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KANITTS_")}


# -- shutdown with streams in flight ---------------------------------------------------------------------------
def test_shutdown_ends_streams_in_flight_cleanly(tiny_model, tiny_codec, caplog):
    import logging
    import threading

    import uvicorn

    from kanitts.server.app import create_app
    from kanitts.server.shutdown import DrainingServer

    app = create_app(tiny_settings(tiny_model, tiny_codec, server={"graceful_shutdown_seconds": 2}))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info", lifespan="on",
                            timeout_graceful_shutdown=2)
    server = DrainingServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        wait_for(lambda: server.started, what="uvicorn to start")
        url = "http://127.0.0.1:%d" % server.servers[0].sockets[0].getsockname()[1]
        wait_for(lambda: httpx.get(url + "/ready").status_code == 200, timeout=120, what="the models")
        long = {"input": "Hi.", "max_tokens": 8192, "min_tokens": 8192, "response_format": "wav"}
        results: dict[str, object] = {}
        started = {"audio": threading.Event(), "sse": threading.Event()}

        def consume(kind: str) -> None:
            body = dict(long, stream_format=kind)
            with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=60) as r:
                parts = []
                for part in r.iter_bytes():
                    parts.append(part)
                    started[kind].set()
                results[kind] = b"".join(parts)  # raises on a truncated chunked body

        clients = [threading.Thread(target=consume, args=(k,)) for k in started]
        for c in clients:
            c.start()
        for event in started.values():
            assert event.wait(60)
        server.should_exit = True
        for c in clients:
            c.join(60)
        thread.join(60)
    assert set(results) == {"audio", "sse"}
    wav = results["audio"]
    assert wav[:4] == b"RIFF" and (len(wav) - 44) % 2 == 0 and len(wav) > 44
    events = [json.loads(line[6:]) for line in results["sse"].decode().splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and "shutting down" in events[-1]["error"]["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Exception in ASGI application" not in logged and "timeout graceful shutdown exceeded" not in logged
    assert not any(r.exc_info for r in caplog.records)


# -- seed: the same bytes every time, over HTTP as in `kanitts say` --------------------------------------------
def test_fixed_codec_chunks_do_not_depend_on_arrival_timing(tiny_codec):
    import asyncio

    from kanitts.codec import CodecWorker, NanoCodec

    codec = NanoCodec.from_pretrained(tiny_codec, device="cpu")
    frames = np.random.default_rng(0).integers(0, codec.codebook_size, (30, 4)).tolist()

    async def decode(worker: CodecWorker, splits: list[int], fixed: bool) -> tuple[np.ndarray, list[int]]:
        async def gen():
            i = 0
            for n in splits:
                yield frames[i:i + n]
                i += n
                # a slow producer: unfixed, the worker would decode whatever is pending now
                # (the assertions below hold whatever the timing; the pause only varies it)
                await asyncio.sleep(0.05)
        out = [c async for c in worker.decode(gen(), fixed_chunks=fixed)]
        return np.concatenate(out), [c.size // codec.samples_per_frame for c in out]

    async def run() -> None:
        worker = CodecWorker(codec, max_streams=2, first_chunk_frames=1, chunk_frames=8)
        try:
            burst, burst_sizes = await decode(worker, [30], True)
            trickle, trickle_sizes = await decode(worker, [1, 2, 3, 1, 5, 2, 3, 4, 1, 1, 7], True)
            assert burst_sizes == trickle_sizes == [1, 8, 8, 8, 5]
            assert np.array_equal(burst, trickle)
        finally:
            await worker.aclose()

    asyncio.run(run())


def test_seed_gives_identical_bytes_over_http_and_in_say(live_server, tiny_model, tiny_codec, tmp_path):
    import subprocess
    import sys

    body = {"input": "Hello world.", "voice": "andrew", "seed": 5, "max_tokens": 42, "response_format": "wav",
            "sample_rate": 22050}
    with httpx.Client(base_url=live_server.url, timeout=120) as c:
        plain = [c.post("/v1/audio/speech", json=body).content for _ in range(3)]
        streamed = [c.post("/v1/audio/speech", json={**body, "response_format": "pcm", "stream_format": "audio"}).content
                    for _ in range(2)]
    assert plain[0][:4] == b"RIFF" and plain[0] == plain[1] == plain[2]
    assert streamed[0] == streamed[1] == plain[0][44:]  # the same samples, streamed
    out = tmp_path / "say.wav"
    proc = subprocess.run([sys.executable, "-m", "kanitts.cli", "say", "Hello world.", "-o", str(out), "--seed", "5",
                           "--max-tokens", "42", "--model", tiny_model, "--codec", tiny_codec, "--backend", "native",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == plain[0]
