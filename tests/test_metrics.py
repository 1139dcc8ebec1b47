"""/metrics: Prometheus text, per-app registry, counters move with requests (issue 8)."""

from __future__ import annotations

import httpx
import pytest
from _liveserver import LiveServer, tiny_settings
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[str, list]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str | None = None, **labels: str) -> float:
    total = 0.0
    for s in fams.get(family, []):
        if s.name.endswith("_created"):
            continue
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


@pytest.fixture(scope="module")
def live(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    with LiveServer(create_app(tiny_settings(tiny_model, tiny_codec))) as srv:
        yield srv


def test_metrics_parse_and_move(live):
    before = scrape(live.url)
    for name in ("kanitts_ready", "kanitts_active_streams", "kanitts_queue_depth", "process_resident_memory_bytes",
                 "kanitts_engine_active_requests", "kanitts_engine_tokens_generated"):
        assert name in before, name
    assert value(before, "kanitts_ready") == 1.0
    assert value(before, "process_resident_memory_bytes") > 10e6
    assert "kanitts_gpu_memory_allocated_bytes" not in before  # CPU only: absent, not zero

    body = {"input": "Metrics, please.", "voice": "andrew", "response_format": "pcm", "stream_format": "audio",
            "max_tokens": 24}
    r = httpx.post(live.url + "/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200 and len(r.content) > 0
    r = httpx.post(live.url + "/v1/audio/speech", json=dict(body, stream_format=None, response_format="wav"),
                   timeout=60)
    assert r.status_code == 200
    assert httpx.post(live.url + "/v1/audio/speech", json={"input": 5}, timeout=10).status_code == 400
    httpx.get(live.url + "/no/such/path", timeout=10)

    after = scrape(live.url)
    req = "kanitts_http_requests"
    route = "/v1/audio/speech"
    assert value(after, req, route=route, status="200", format="pcm") - value(
        before, req, route=route, status="200", format="pcm") == 1
    assert value(after, req, route=route, status="200", format="wav") - value(
        before, req, route=route, status="200", format="wav") == 1
    assert value(after, req, route=route, status="400") - value(before, req, route=route, status="400") == 1
    assert value(after, req, route="other", status="404") >= 1  # unknown paths share one label
    sp = "kanitts_speech_requests"
    assert value(after, sp, status="ok") - value(before, sp, status="ok") == 2
    ttfa = "kanitts_time_to_first_audio_seconds"
    assert value(after, ttfa, ttfa + "_count", stream="audio") - value(before, ttfa, ttfa + "_count", stream="audio") == 1
    assert value(after, "kanitts_synthesis_rtf", "kanitts_synthesis_rtf_count") >= 2
    assert value(after, "kanitts_audio_seconds") - value(before, "kanitts_audio_seconds") > 0.5
    assert value(after, "kanitts_generated_tokens") - value(before, "kanitts_generated_tokens") >= 40
    assert value(after, "kanitts_engine_tokens_generated") >= 40
    assert value(after, "kanitts_active_streams") == 0


def test_registries_are_per_app(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    a = create_app(tiny_settings(tiny_model, tiny_codec))
    b = create_app(tiny_settings(tiny_model, tiny_codec))  # would raise "Duplicated timeseries" on a shared one
    assert a.state.metrics.registry is not b.state.metrics.registry
    a.state.metrics.observe({"status": "ok", "format": "wav", "stream": None, "language": "en", "ttfa_ms": 120.0,
                             "rtf": 0.2, "audio_seconds": 1.5, "tokens": 75, "chars": 10})
    fa = {f.name: f.samples for f in text_string_to_metric_families(a.state.metrics.render().decode())}
    fb = {f.name: f.samples for f in text_string_to_metric_families(b.state.metrics.render().decode())}
    assert value(fa, "kanitts_audio_seconds") == 1.5 and value(fb, "kanitts_audio_seconds") == 0
    assert value(fa, "kanitts_time_to_first_audio_seconds", "kanitts_time_to_first_audio_seconds_sum") == 0.12


def test_engine_kv_and_gpu_metrics_when_exposed(monkeypatch):
    """KV-cache usage appears when the backend reports it; GPU memory when CUDA is live."""
    import types

    from kanitts.engine.base import BackendStats
    from kanitts.server import metrics as m

    stats = BackendStats(active_requests=2, tokens_generated=500, kv_cache_usage=0.25)
    svc = types.SimpleNamespace(ready=True, models={"en": types.SimpleNamespace(
        model_id="x", backend=types.SimpleNamespace(stats=stats, name="vllm"))})
    app = types.SimpleNamespace(state=types.SimpleNamespace(active_streams=3), routes=[])
    fake_cuda = types.SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: True, device_count=lambda: 1,
        memory_allocated=lambda i: 1000, memory_reserved=lambda i: 2000, mem_get_info=lambda i: (6000, 10000))
    import torch

    monkeypatch.setattr(torch, "cuda", fake_cuda)
    km = m.KanittsMetrics(app, svc)
    fams = {f.name: f.samples for f in text_string_to_metric_families(km.render().decode())}
    assert value(fams, "kanitts_engine_kv_cache_usage_ratio", backend="vllm") == 0.25
    assert value(fams, "kanitts_engine_active_requests") == 2
    assert value(fams, "kanitts_active_streams") == 3
    assert value(fams, "kanitts_gpu_memory_reserved_bytes", device="0") == 2000
    assert value(fams, "kanitts_gpu_memory_used_bytes", device="0") == 4000


def test_request_log_decomposes_time_to_first_audio(tiny_model, tiny_codec):
    """The per-request log line says where the time to first audio went, in order."""
    from kanitts.server.app import create_app

    app = create_app(tiny_settings(tiny_model, tiny_codec))
    records: list[dict] = []
    with LiveServer(app) as srv:
        app.state.observers.append(records.append)
        body = {"model": "tts-1", "input": "Hello there. How are you today?", "voice": "andrew",
                "response_format": "pcm", "stream_format": "audio", "max_tokens": 48, "min_tokens": 48}
        with httpx.stream("POST", srv.url + "/v1/audio/speech", json=body, timeout=60) as r:
            assert r.status_code == 200
            assert sum(len(c) for c in r.iter_bytes()) > 0
        for _ in range(50):
            if records:
                break
            import time

            time.sleep(0.05)
    rec = records[-1]
    assert rec["status"] == "ok"
    steps = [rec["start_ms"], rec["ttft_ms"], rec["first_frame_ms"], rec["ttfa_ms"]]
    assert all(isinstance(v, float) for v in steps), rec
    assert 0 <= steps[0] <= steps[1] <= steps[2] <= steps[3], rec
    from kanitts.server.timeline import STAGES

    stages = [rec[key] for key in STAGES]  # every stage, from arrival to the first byte sent
    assert all(isinstance(v, float) for v in stages), rec
    assert all(0 <= a <= b for a, b in zip(stages, stages[1:])), rec
