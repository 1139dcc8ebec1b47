"""Two tiny models (en + es, different voices) in one server, routed per request."""

from __future__ import annotations


import httpx
import pytest

from conftest import LiveServer

SHORT = {"max_tokens": 26, "seed": 3}


def two_lang_toml(tmp_path, en_model, es_model, codec, extra: str = "") -> str:
    p = tmp_path / "two-langs.toml"
    p.write_text(f"""
multi_language = true
default_language = "en"
{extra}
[languages.en]
model = "{en_model}"
default_voice = "katie"

[languages.es]
model = "{es_model}"

[codec]
model = "{codec}"

[engine]
backend = "native"
device = "cpu"
""")
    return str(p)


@pytest.fixture(scope="module")
def two_lang_server(tiny_model, tiny_codec, tiny_es_dir, tmp_path_factory):
    from kanitts.config import load_settings

    cfg = two_lang_toml(tmp_path_factory.mktemp("cfg"), tiny_model, str(tiny_es_dir / "model"), tiny_codec)
    with LiveServer(load_settings(cfg, {"server": {"port": 0}}, env=False)) as srv:
        yield srv


def speak(srv, **body):
    r = httpx.post(srv.url + "/v1/audio/speech", json={**SHORT, **body}, timeout=60)
    return r


def test_both_models_load_and_are_listed(two_lang_server):
    h = httpx.get(two_lang_server.url + "/health").json()
    assert h["tts_ready"] and set(h["models"]) == {"en", "es"}
    assert all(m["state"] == "ready" for m in h["models"].values())
    voices = httpx.get(two_lang_server.url + "/v1/audio/voices").json()
    assert voices["languages"]["en"]["voices"] == ["andrew", "katie"]
    # voices come from the Spanish model's speaker_settings (not in the config)
    assert voices["languages"]["es"]["voices"] == ["nova", "ballad", "ash"]
    assert voices["languages"]["es"]["default_voice"] == "nova"
    ids = [m["id"] for m in httpx.get(two_lang_server.url + "/v1/models").json()["data"]]
    # local folders are listed by their base name, never their path (issue 17.19): both are "model"
    assert "model" in ids and not [i for i in ids if i.startswith("/")]


@pytest.mark.parametrize(
    "text",
    [
        "Hola, ¿cómo estás? Espero que tengas un buen día.",
        "El tren sale de la estación a las ocho de la mañana.",
        "Me gustaría reservar una mesa para dos personas esta noche.",
    ],
)
def test_spanish_text_without_voice_goes_to_spanish(two_lang_server, text):
    r = speak(two_lang_server, input=text)
    assert r.status_code == 200, r.text
    assert r.headers["x-kanitts-language"] == "es"
    assert r.headers["x-kanitts-voice"] in {"nova", "ballad", "ash"}
    assert r.headers["x-kanitts-model"] == "model"  # the folder's base name, never its path


@pytest.mark.parametrize(
    "text",
    ["The weather is lovely today, isn't it?", "Please remind me to call my sister tomorrow afternoon."],
)
def test_english_text_uses_english_preferred_voice(two_lang_server, text):
    r = speak(two_lang_server, input=text)
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("en", "katie")


def test_voice_unique_to_a_language_wins_over_detection(two_lang_server):
    r = speak(two_lang_server, input="The weather is lovely today.", voice="ballad")
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("es", "ballad")
    r = speak(two_lang_server, input="Hola, ¿cómo estás?", voice="andrew")
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("en", "andrew")


def test_language_field_forces(two_lang_server):
    r = speak(two_lang_server, input="The weather is lovely today.", language="es")
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("es", "nova")


def test_real_voice_beats_openai_alias(two_lang_server):
    # "nova" is an OpenAI voice and a real Spanish voice: the Spanish model speaks.
    r = speak(two_lang_server, input="The weather is lovely today.", voice="nova")
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("es", "nova")
    # "alloy" is only an alias: mapped per detected language
    r = speak(two_lang_server, input="The weather is lovely today.", voice="alloy")
    assert r.headers["x-kanitts-language"] == "en" and r.headers["x-kanitts-voice"] == "katie"
    r = speak(two_lang_server, input="Hola, ¿cómo estás? Espero que bien.", voice="alloy")
    assert (r.headers["x-kanitts-language"], r.headers["x-kanitts-voice"]) == ("es", "nova")


def test_unknown_voice_lists_all_voices(two_lang_server):
    r = speak(two_lang_server, input="Hello.", voice="darth")
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    for v in ("andrew", "katie", "nova", "ballad", "ash"):
        assert v in msg
    r = speak(two_lang_server, input="Hello.", language="de")
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"


def test_short_or_ambiguous_text_falls_back_to_default(two_lang_server):
    for text in ("Ok", "123", "?!"):
        r = speak(two_lang_server, input=text)
        assert r.headers["x-kanitts-language"] == "en", text


def test_single_language_mode_loads_one(tiny_model, tiny_codec, tiny_es_dir, tmp_path):
    from kanitts.config import load_settings

    cfg = two_lang_toml(tmp_path, tiny_model, str(tiny_es_dir / "model"), tiny_codec)
    settings = load_settings(cfg, {"multi_language": False, "default_language": "es", "server": {"port": 0}},
                             env=False)
    with LiveServer(settings) as srv:
        h = httpx.get(srv.url + "/health").json()
        assert set(h["models"]) == {"es"}
        r = speak(srv, input="The weather is lovely today.")
        assert r.headers["x-kanitts-language"] == "es"


def test_serve_cli_with_config_file(tiny_model, tiny_codec, tiny_es_dir, tmp_path):
    """`kanitts serve --config two-langs.toml` as a user runs it."""
    from _liveserver import serve_cli

    cfg = two_lang_toml(tmp_path, tiny_model, str(tiny_es_dir / "model"), tiny_codec)
    proc, url = serve_cli("--config", cfg)
    try:
        r = httpx.post(url + "/v1/audio/speech", json={"input": "Buenos días a todos, ¿qué tal están?", **SHORT},
                       timeout=60)
        assert r.status_code == 200
        assert r.headers["x-kanitts-language"] == "es" and r.headers["x-kanitts-voice"] == "nova"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown
    assert proc.returncode in (0, -15), out
    assert "Application shutdown complete" in out and "Traceback" not in out
