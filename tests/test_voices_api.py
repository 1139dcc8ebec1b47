"""The custom-voice API through HTTP on a tiny KaniTTS-2 checkpoint (native engine, CPU):
upload (good and bad files), list, use by name, by ``{"id"}`` and by blend in
``/v1/audio/speech``, delete, restart over the same directory, pre-loaded embedding files,
ownership under API keys, and v1 + v2 models side by side."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from _voices_helpers import SPEECH, k2_settings, tone_wav
from conftest import LiveServer


@pytest.fixture(scope="module")
def k2_dir(tmp_path_factory):
    from kanitts.tiny_kanitts2 import make_tiny_kanitts2

    out = tmp_path_factory.mktemp("k2-voices")
    make_tiny_kanitts2(out, seed=5)
    return out


@pytest.fixture(scope="module")
def server(k2_dir, tmp_path_factory):
    with LiveServer(k2_settings(k2_dir, tmp_path_factory.mktemp("voices"))) as srv:
        yield srv


def upload(url: str, name: str, audio: bytes, consent: str | None = "true", key: str | None = None,
           **fields: str) -> httpx.Response:
    data = {"name": name, **fields}
    if consent is not None:
        data["consent"] = consent
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/audio/voices", data=data, files={"audio": ("ref.wav", audio, "audio/wav")},
                      headers=headers, timeout=120)


def speak(url: str, voice, key: str | None = None, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/audio/speech", json={**SPEECH, "voice": voice, **extra}, headers=headers,
                      timeout=120)


def pcm(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<i2").astype(np.int32)


def same(a: httpx.Response, b: httpx.Response) -> bool:
    """The same audio: same length, samples within 4 LSB (the codec's float rounding may
    differ by a unit between batch shapes); different voices differ by far more."""
    x, y = pcm(a), pcm(b)
    return x.shape == y.shape and int(np.abs(x - y).max(initial=0)) <= 4


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def test_upload_list_use_by_name_id_and_blend_then_delete(server):
    url = server.url
    r = upload(url, "Alice", tone_wav(3.5, 220.0, seed=1))
    assert r.status_code == 201, r.text
    alice = r.json()
    assert alice["id"].startswith("voice_") and alice["object"] == "audio.voice"
    assert alice["name"] == "Alice" and alice["type"] == "audio_sample" and alice["owned"] is True
    bob = upload(url, "bob", tone_wav(4.0, 587.0, amp=0.5, seed=2)).json()
    assert error_of(upload(url, "ALICE", tone_wav(3.5, seed=3)))["code"] == "voice_exists"

    listed = httpx.get(url + "/v1/audio/voices").json()["custom"]
    assert [v["name"] for v in listed] == ["Alice", "bob"]
    assert httpx.get(url + f"/v1/audio/voices/{alice['id']}").json() == alice

    by_name = speak(url, "alice")  # names are case-insensitive
    assert by_name.status_code == 200, by_name.text
    assert by_name.headers["x-kanitts-voice"] == "Alice" and len(by_name.content) > 0
    assert same(speak(url, {"id": alice["id"]}), by_name)
    by_bob = speak(url, "bob")
    assert not same(by_bob, by_name)
    assert not same(speak(url, None), by_name)  # no speaker row at all
    blend = speak(url, "alice(0.7)+bob(0.3)")
    assert blend.status_code == 200 and blend.headers["x-kanitts-voice"] == "alice(0.7)+bob(0.3)"
    assert not same(blend, by_name) and not same(blend, by_bob)
    # weights are re-normalised: all weight on alice is alice, at any scale
    assert same(speak(url, "alice(2)+bob(0)"), by_name)

    for voice, code in (("nobody", "invalid_voice"), ("alice(0.7)+", "invalid_voice"),
                        ("alice+nobody", "invalid_voice"), ({"id": "voice_missing"}, "invalid_voice")):
        r = speak(url, voice)
        assert r.status_code == 400 and error_of(r)["code"] == code, (voice, r.text)

    r = httpx.delete(url + f"/v1/audio/voices/{alice['id']}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert httpx.get(url + f"/v1/audio/voices/{alice['id']}").status_code == 404
    assert httpx.delete(url + f"/v1/audio/voices/{alice['id']}").status_code == 404
    assert speak(url, "alice").status_code == 400
    assert [v["name"] for v in httpx.get(url + "/v1/audio/voices").json()["custom"]] == ["bob"]
    assert speak(url, {"id": bob["id"]}).status_code == 200


def test_bad_uploads_answer_openai_errors(server):
    url = server.url
    cases = [
        (tone_wav(1.0), "audio_too_short", 400),
        (tone_wav(9.0), "audio_too_long", 400),
        (b"this is not audio at all " * 100, "audio_undecodable", 400),
    ]
    for audio, code, status in cases:
        r = upload(url, "x", audio)
        assert r.status_code == status and error_of(r)["code"] == code, r.text
        assert error_of(r)["param"] == "audio"
    silent = np.zeros(16000 * 4, dtype="<i2").tobytes()
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(silent)
    r = upload(url, "x", buf.getvalue())
    assert r.status_code == 400 and error_of(r)["code"] == "audio_silent"
    # over voices.max_upload_bytes (400 kB): the decoder's check, and the body cap before it
    big = tone_wav(13.0)  # 416 kB: under the body cap, over the audio cap
    r = upload(url, "x", big)
    assert r.status_code == 413 and error_of(r)["code"] == "audio_too_large", r.text
    r = upload(url, "x", tone_wav(20.0))  # 640 kB: refused from Content-Length, before reading
    assert r.status_code == 413 and error_of(r)["type"] == "invalid_request_error"
    for consent in (None, "false", "no"):
        r = upload(url, "x", tone_wav(3.5), consent=consent)
        assert r.status_code == 400 and error_of(r)["code"] == "consent_required", consent
    r = upload(url, "x", tone_wav(3.5), consent="maybe")
    assert r.status_code == 400 and error_of(r)["param"] == "consent"
    r = httpx.post(url + "/v1/audio/voices", data={"name": "x", "consent": "true"},
                   files={"note": ("n.txt", b"no audio field", "text/plain")})
    assert r.status_code == 400 and error_of(r)["param"] == "audio"
    r = httpx.post(url + "/v1/audio/voices", data={"consent": "true"}, files={"audio": ("a.wav", tone_wav(3.5))})
    assert r.status_code == 400 and error_of(r)["param"] == "name"
    for body in ({"json": {"name": "x"}}, {"data": {"name": "x", "consent": "true"}}):
        r = httpx.post(url + "/v1/audio/voices", **body)
        assert r.status_code == 400 and "multipart" in error_of(r)["message"]
    r = upload(url, "bad+name", tone_wav(3.5))
    assert r.status_code == 400 and error_of(r)["param"] == "name"
    assert not any(v["name"] == "x" for v in httpx.get(url + "/v1/audio/voices").json()["custom"])


async def test_many_voices_in_one_batch_each_as_alone(server):
    """Eight requests with eight different cloned voices at once: each gets the audio it
    gets alone (the embedding travels per request, per engine slot)."""
    url = server.url
    ids = [upload(url, f"batch{i}", tone_wav(3.2, 150.0 + 70 * i, seed=10 + i)).json()["id"] for i in range(8)]
    alone = [speak(url, {"id": vid}) for vid in ids]
    assert not any(same(a, b) for i, a in enumerate(alone) for b in alone[i + 1:])
    async with httpx.AsyncClient(timeout=120) as client:
        rs = await asyncio.gather(*(client.post(url + "/v1/audio/speech", json={**SPEECH, "voice": {"id": vid}})
                                    for vid in ids))
    assert all(same(r, a) for r, a in zip(rs, alone))
    for vid in ids:
        assert httpx.delete(url + f"/v1/audio/voices/{vid}").status_code == 200


def test_voices_survive_a_restart_and_files_preload(k2_dir, tmp_path):
    voices_dir = tmp_path / "voices"
    emb = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    np.save(tmp_path / "narrator.npy", emb / np.linalg.norm(emb))
    with LiveServer(k2_settings(k2_dir, voices_dir)) as srv:
        made = upload(srv.url, "dana", tone_wav(3.5, 330.0, seed=4)).json()
        first = speak(srv.url, "dana")
    settings = k2_settings(k2_dir, voices_dir, voices={"preload": {"Narrator": str(tmp_path / "narrator.npy")}},
                           languages={"en": {"default_voice": "narrator"}},
                           voice_aliases={"alloy": {"en": "dana"}})
    with LiveServer(settings) as srv:
        listed = {v["name"]: v for v in httpx.get(srv.url + "/v1/audio/voices").json()["custom"]}
        assert listed["dana"] == made
        assert listed["Narrator"]["type"] == "embedding_file" and listed["Narrator"]["shared"] is True
        assert same(speak(srv.url, {"id": made["id"]}), first)
        narrated = speak(srv.url, "narrator")
        # configured voices: the default voice and an OpenAI alias name pre-loaded/custom voices
        assert same(speak(srv.url, None), narrated) and speak(srv.url, None).headers["x-kanitts-voice"] == "narrator"
        assert same(speak(srv.url, "alloy"), first)
        assert speak(srv.url, "narrator(0.5)+dana(0.5)").status_code == 200
        r = httpx.delete(srv.url + f"/v1/audio/voices/{listed['Narrator']['id']}")
        assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
        assert upload(srv.url, "narrator", tone_wav(3.5)).status_code == 409


def test_ownership_under_api_keys(k2_dir, tmp_path):
    settings = k2_settings(k2_dir, tmp_path / "voices", api_keys=["key-one", "key-two"], admin_api_keys=["root"])
    with LiveServer(settings) as srv:
        url = srv.url
        assert upload(url, "carol", tone_wav(3.5)).status_code == 401
        carol = upload(url, "carol", tone_wav(3.5, 400.0, seed=6), key="key-one").json()
        assert carol["owned"] is True and carol["shared"] is False
        assert speak(url, "carol", key="key-one").status_code == 200

        def names(key: str) -> list[str]:
            r = httpx.get(url + "/v1/audio/voices", headers={"Authorization": f"Bearer {key}"})
            return [v["name"] for v in r.json()["custom"]]

        # another key: cannot see, use, or delete it (it does not exist for them)
        assert names("key-two") == []
        two = {"Authorization": "Bearer key-two"}
        assert httpx.get(url + f"/v1/audio/voices/{carol['id']}", headers=two).status_code == 404
        assert speak(url, "carol", key="key-two").status_code == 400
        assert speak(url, {"id": carol["id"]}, key="key-two").status_code == 400
        assert speak(url, "carol(0.5)+carol2", key="key-two").status_code == 400
        assert httpx.delete(url + f"/v1/audio/voices/{carol['id']}", headers=two).status_code == 404
        # the same name is free for another key
        own = upload(url, "carol", tone_wav(3.5, 500.0, seed=7), key="key-two")
        assert own.status_code == 201
        assert httpx.delete(url + f"/v1/audio/voices/{own.json()['id']}", headers=two).status_code == 200
        # only an admin shares
        r = httpx.post(url + f"/v1/audio/voices/{carol['id']}/share", headers={"Authorization": "Bearer key-one"})
        assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
        assert upload(url, "dave", tone_wav(3.5), key="key-one", shared="true").status_code == 403
        root = {"Authorization": "Bearer root"}
        assert "carol" in names("root")
        r = httpx.post(url + f"/v1/audio/voices/{carol['id']}/share", headers=root, json={"shared": True})
        assert r.status_code == 200 and r.json()["shared"] is True and r.json()["owned"] is False
        # shared: listed and usable by the other key, still not deletable by it
        assert names("key-two") == ["carol"]
        assert same(speak(url, "carol", key="key-two"), speak(url, "carol", key="key-one"))
        r = httpx.delete(url + f"/v1/audio/voices/{carol['id']}", headers=two)
        assert r.status_code == 403
        assert httpx.delete(url + f"/v1/audio/voices/{carol['id']}", headers=root).status_code == 200
        assert names("key-one") == []


def test_v1_and_v2_models_side_by_side(k2_dir, tiny_model, tmp_path):
    """en: a v1 model with built-in voices; es: a KaniTTS-2 model. Built-in voices go to v1,
    cloned voices to v2 (whatever the text looks like); a cloned voice on v1 is a clear 400;
    the v2 prompt carries the routed language's tag."""
    settings = k2_settings(k2_dir, tmp_path / "voices", model=tiny_model,
                           languages={"es": {"model": str(k2_dir / "model")}}, multi_language=True)
    with LiveServer(settings) as srv:
        url = srv.url
        svc = srv.service
        assert not svc.models["en"].clones_voices and svc.models["es"].clones_voices
        tok = svc.models["es"].tokenizer
        assert tok.decode(svc.models["es"].prompt("Hola.", None)[2:-2]) == "es: Hola."
        r = speak(url, "andrew")
        assert r.status_code == 200 and r.headers["x-kanitts-language"] == "en"
        r = upload(url, "Andrew", tone_wav(3.5, 260.0, seed=8))
        assert r.status_code == 409 and "built-in" in error_of(r)["message"]
        upload(url, "eve", tone_wav(3.5, 260.0, seed=8))
        r = speak(url, "eve")
        assert r.status_code == 200 and r.headers["x-kanitts-language"] == "es"
        assert r.headers["x-kanitts-voice"] == "eve"
        r = speak(url, "eve", language="en")
        assert r.status_code == 400 and error_of(r)["param"] == "language"
        assert "'en' is not served by a model that can use this voice" in error_of(r)["message"]
        assert speak(url, "eve", language="es").status_code == 200


def test_a_v1_only_server_has_no_custom_voices(live_server):
    url = live_server.url
    assert live_server.service.cloning is None
    r = upload(url, "x", tone_wav(3.5))
    assert r.status_code == 400 and error_of(r)["code"] == "voices_unavailable"
    r = speak(url, {"id": "voice_abc"})
    assert r.status_code == 400 and "KaniTTS-2" in error_of(r)["message"]
    r = speak(url, "andrew(0.5)+katie(0.5)")
    assert r.status_code == 400 and "KaniTTS-2" in error_of(r)["message"]
    assert httpx.get(url + "/v1/audio/voices").json()["custom"] == []
    assert speak(url, "andrew").status_code == 200
