"""Segment timestamps on HTTP: SSE segment events per long-form chunk; timestamps=true header."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np

TEXT = "The first paragraph is here.\n\nThe second one follows it."
BODY = {"input": TEXT, "seed": 5, "max_tokens": 40, "response_format": "pcm", "sample_rate": 22050}


def _sse(url: str, body: dict) -> tuple[np.ndarray, list[dict], list[int]]:
    """PCM, segment events, and for each segment the samples received before it."""
    pcm = bytearray()
    segs: list[dict] = []
    seen: list[int] = []
    with httpx.stream("POST", url + "/v1/audio/speech", json={**body, "stream_format": "sse"}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev["type"] == "speech.audio.delta":
                pcm += base64.b64decode(ev["audio"])
            elif ev["type"] == "segment":
                segs.append(ev)
                seen.append(len(pcm) // 2)
            elif ev["type"] == "speech.audio.done":
                break
    return np.frombuffer(bytes(pcm), np.int16), segs, seen


def test_sse_streams_carry_a_segment_per_chunk(live_server):
    pcm, segs, seen = _sse(live_server.url, BODY)
    assert [s["text"] for s in segs] == ["The first paragraph is here.", "The second one follows it."]
    assert [s["index"] for s in segs] == [0, 1]
    assert segs[0]["start_sample"] == 0 and segs[1]["end_sample"] == pcm.size
    gap = segs[1]["start_sample"] - segs[0]["end_sample"]
    assert gap == round(0.6 * 22050)  # the paragraph pause, exactly
    assert not pcm[segs[0]["end_sample"]:segs[1]["start_sample"]].any()
    # audio on both sides of the gap: the second chunk's fade-in starts at 1/(n+1) of a small first
    # codec sample, which can round to 0 in int16, so its first few samples are checked
    assert pcm[segs[0]["end_sample"] - 1] != 0 and pcm[segs[1]["start_sample"]:segs[1]["start_sample"] + 4].any()
    for seg, received in zip(segs, seen):
        assert seg["end_sample"] <= received  # sent once its audio has been sent
        assert seg["end"] == round(seg["end_sample"] / 22050, 6)


def test_timestamps_true_returns_the_segments_in_a_header(live_server):
    _, sse_segs, _ = _sse(live_server.url, BODY)
    r = httpx.post(live_server.url + "/v1/audio/speech", json={**BODY, "timestamps": True}, timeout=120)
    assert r.status_code == 200
    segs = json.loads(base64.b64decode(r.headers["X-Kanitts-Segments"]))
    assert segs == sse_segs
    assert segs[-1]["end_sample"] == len(r.content) // 2
    plain = httpx.post(live_server.url + "/v1/audio/speech", json=BODY, timeout=120)
    assert "X-Kanitts-Segments" not in plain.headers


def test_segments_follow_the_speed_change(live_server):
    _, normal, _ = _sse(live_server.url, BODY)
    pcm, fast, _ = _sse(live_server.url, {**BODY, "speed": 2.0})
    for a, b in zip(normal, fast):
        assert b["start_sample"] == round(a["start_sample"] / 2) and b["end_sample"] == round(a["end_sample"] / 2)
    assert abs(fast[-1]["end_sample"] - pcm.size) < 0.02 * 22050  # the tempo change's own rounding


def test_segments_count_samples_at_the_output_rate(live_server):
    """Default pcm is 24 kHz (resampled): segment positions are samples of what is sent."""
    body = {k: v for k, v in BODY.items() if k != "sample_rate"}
    pcm, segs, _ = _sse(live_server.url, body)
    _, native, _ = _sse(live_server.url, BODY)
    assert abs(segs[-1]["end_sample"] - pcm.size) <= 2  # the resampler's own rounding
    for a, b in zip(native, segs):
        assert b["start_sample"] == round(a["start_sample"] * 24000 / 22050)
        assert b["end"] == round(b["end_sample"] / 24000, 6)
