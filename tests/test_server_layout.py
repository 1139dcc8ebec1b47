"""The server's parts without loaded models: the playground's format menu comes from the
audio layer, routes on the included router get their metrics label, and the speech
operation refuses work until the models are ready."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from _liveserver import tiny_settings

from kanitts.audio import FORMATS


def _app(tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    return create_app(tiny_settings(tiny_model, tiny_codec))  # lifespan not run: models not loaded


async def _get(app, method: str, path: str, **kw) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await c.request(method, path, **kw)


def test_playground_menu_lists_the_audio_formats(tiny_model, tiny_codec):
    r = asyncio.run(_get(_app(tiny_model, tiny_codec), "GET", "/"))
    assert r.status_code == 200
    menu = re.search(r'<select id="format">(.*?)</select>', r.text, re.S)
    assert menu is not None
    values = re.findall(r'<option value="([^"]+)"', menu.group(1))
    assert sorted(values) == sorted(FORMATS) and len(values) == len(FORMATS)
    assert re.search(r'<option value="wav" selected>', menu.group(1))


def test_render_index_needs_its_marker():
    from kanitts.server.playground import render_index

    with pytest.raises(ValueError, match="marker"):
        render_index("<html></html>")


def test_speech_before_ready_is_503_and_labelled(tiny_model, tiny_codec):
    app = _app(tiny_model, tiny_codec)

    async def run() -> tuple[httpx.Response, str]:
        r = await _get(app, "POST", "/v1/audio/speech", json={"input": "Hi."})
        return r, (await _get(app, "GET", "/metrics")).text

    r, metrics = asyncio.run(run())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "model_loading"
    assert re.search(r'kanitts_http_requests_total\{[^}]*route="/v1/audio/speech"[^}]*status="503"', metrics)


def test_speaker_refuses_until_ready(tiny_model, tiny_codec):
    from kanitts.server.errors import APIError
    from kanitts.server.schemas import SpeechRequest
    from kanitts.server.speech import Speaker
    from kanitts.service import TTSService

    speaker = Speaker(TTSService(tiny_settings(tiny_model, tiny_codec)))
    with pytest.raises(APIError) as info:
        asyncio.run(speaker.speak(SpeechRequest(input="Hi.")))
    assert info.value.status == 503 and info.value.code == "model_loading"
