import pytest

from kanitts.models import VoiceModel
from kanitts.routing import Router, RoutingError


class FakeDetector:
    def detect(self, text):
        return "es" if any(w in text.lower() for w in ("hola", "gracias", "¿")) else "en"


def vm(lang, voices, default):
    return VoiceModel(language=lang, model_id=f"m-{lang}", backend=None, tokenizer=None, voices=voices,
                      default_voice=default)


ALIASES = {"alloy": {"en": "katie", "es": "nova"}, "nova": {"en": "katie", "es": "nova"},
           "onyx": {"en": "andrew", "es": "ash"}}


@pytest.fixture
def router():
    models = {"en": vm("en", ["andrew", "katie"], "andrew"), "es": vm("es", ["nova", "ballad", "ash"], "nova")}
    return Router(models, "en", ALIASES, FakeDetector())


def test_voice_unique_to_a_language_wins_over_detection(router):
    r = router.route("Hello there, how are you?", "ballad")
    assert (r.language, r.voice, r.detected) == ("es", "ballad", False)
    r = router.route("Hola, ¿qué tal?", "andrew")
    assert (r.language, r.voice) == ("en", "andrew")


def test_language_field_forces_language(router):
    r = router.route("Hello", None, "es")
    assert (r.language, r.voice) == ("es", "nova")
    r = router.route("Hello", "onyx", "es")
    assert r.voice == "ash"
    with pytest.raises(RoutingError) as e:
        router.route("Hello", None, "de")
    assert e.value.param == "language"


def test_detection_then_preferred_voice(router):
    assert (router.route("Hola, gracias.").language, router.route("Hola, gracias.").voice) == ("es", "nova")
    r = router.route("Good morning.")
    assert (r.language, r.voice, r.detected) == ("en", "andrew", True)


def test_real_voice_beats_openai_alias(router):
    # "nova" is an OpenAI voice name and a real Spanish voice: the real voice wins.
    r = router.route("Good morning, everyone.", "nova")
    assert (r.language, r.voice) == ("es", "nova")


def test_openai_alias_maps_per_language(router):
    assert router.route("Good morning.", "alloy").voice == "katie"
    assert router.route("Hola, gracias.", "alloy").voice == "nova"


def test_unknown_voice_is_an_error_listing_voices(router):
    with pytest.raises(RoutingError) as e:
        router.route("Hello", "darth")
    assert e.value.param == "voice"
    for v in ("andrew", "katie", "nova", "ballad", "ash"):
        assert v in str(e.value)


def test_unknown_voice_default_fallback():
    models = {"en": vm("en", ["andrew", "katie"], "andrew")}
    r = Router(models, "en", ALIASES, None, unknown_voice="default").route("Hello", "darth")
    assert r.voice == "andrew"


def test_single_language_without_detector():
    models = {"es": vm("es", ["nova"], "nova")}
    r = Router(models, "en", ALIASES, None).route("Hello world")
    assert (r.language, r.voice) == ("es", "nova")


def test_among_restricts_languages_for_cloned_voices():
    """A cloned voice may only go to KaniTTS-2 models: detection picks among those, a
    forced language outside them is an error naming the ones that can serve it."""
    models = {"en": vm("en", ["andrew"], "andrew"), "es": vm("es", [], None), "ky": vm("ky", [], None)}
    r = Router(models, "en", ALIASES, FakeDetector())
    assert r.route("Hello there", None, None, cloned=["es", "ky"]).language == "es"  # detection says en
    assert r.route("Hola, gracias", None, None, cloned=["ky"]).language == "ky"
    got = r.route("Hello", None, "KY", cloned=["es", "ky"])
    assert (got.language, got.voice, got.detected) == ("ky", None, False)
    with pytest.raises(RoutingError) as e:
        r.route("Hello", None, "en", cloned=["es", "ky"])
    assert e.value.param == "language" and "es, ky" in str(e.value)
    with pytest.raises(RoutingError) as e:
        r.route("Hello", None, None, cloned=[])
    assert e.value.param == "voice"
