import pytest

from kanitts.text import LanguageDetector

EN = [
    "Hello, how are you today?",
    "The weather is lovely this morning.",
    "Please send me the report by Friday.",
    "I think we should leave before the traffic gets worse.",
    "Thank you very much for your help.",
    "Where is the nearest train station?",
    "She has been working on this project for three years.",
    "Can you turn off the lights when you leave the room?",
    "The quick brown fox jumps over the lazy dog.",
    "My favourite book is about a boy who lives under the stairs.",
    "We are going to the beach this weekend with our friends.",
    "It is important to drink enough water every day.",
    "Good night, sleep well.",
    "The meeting has been moved to the afternoon because the manager is travelling.",
    "Scientists have discovered a new species of frog in the rainforest, and they "
    "believe many more are waiting to be found.",
    "What time does the store open?",
]
ES = [
    "Hola, ¿cómo estás hoy?",
    "El tiempo está precioso esta mañana.",
    "Por favor, envíame el informe antes del viernes.",
    "Creo que deberíamos salir antes de que haya más tráfico.",
    "Muchas gracias por tu ayuda.",
    "¿Dónde está la estación de tren más cercana?",
    "Ella lleva tres años trabajando en este proyecto.",
    "¿Puedes apagar las luces cuando salgas de la habitación?",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Mi libro favorito trata de un niño que vive debajo de la escalera.",
    "Vamos a la playa este fin de semana con nuestros amigos.",
    "Es importante beber suficiente agua todos los días.",
    "Buenas noches, que descanses.",
    "La reunión se ha trasladado a la tarde porque el director está de viaje.",
    "Los científicos han descubierto una nueva especie de rana en la selva, y creen "
    "que muchas más están esperando a ser encontradas.",
    "¿A qué hora abre la tienda?",
]


@pytest.fixture(scope="module")
def det():
    return LanguageDetector(["en", "es"], "en")


@pytest.mark.parametrize("text", EN)
def test_english(det, text):
    assert det.detect(text) == "en"


@pytest.mark.parametrize("text", ES)
def test_spanish(det, text):
    assert det.detect(text) == "es"


def test_spanish_default_still_detects_english():
    d = LanguageDetector(["en", "es"], "es")
    assert d.detect("The meeting has been moved to the afternoon.") == "en"
    assert d.detect("¿Dónde está la estación de tren?") == "es"


@pytest.mark.parametrize("text", ["", "   ", "12345", "3.14 + 2", "!!!", "ok", "😀😀", "a"])
def test_short_or_letterless_falls_back(text):
    assert LanguageDetector(["en", "es"], "es").detect(text) == "es"
    assert LanguageDetector(["en", "es"], "en").detect(text) == "en"


def test_ambiguous_falls_back(det):
    # "no" / "hotel" are words in both languages: too little evidence
    d_es = LanguageDetector(["en", "es"], "es")
    for text in ["no no", "hotel"]:
        assert d_es.detect(text) == "es"
        assert det.detect(text) == "en"


def test_restricted_set():
    d = LanguageDetector(["en", "es"], "en")
    # French is not configured: the answer is still one of the configured ones
    assert d.detect("Bonjour tout le monde, comment allez-vous aujourd'hui ?") in {"en", "es"}
    d3 = LanguageDetector(["en", "es", "fr"], "en")
    assert d3.detect("Bonjour tout le monde, comment allez-vous aujourd'hui ?") == "fr"


def test_many_languages_and_region_codes():
    d = LanguageDetector(["en", "es-MX", "de", "ja"], "en")
    assert d.detect("Guten Morgen, wie geht es Ihnen heute?") == "de"
    assert d.detect("今日はとても良い天気ですね。") == "ja"
    assert d.detect("Buenos días, ¿cómo está usted hoy?") == "es-MX"


def test_bad_code_raises_naming_it():
    with pytest.raises(ValueError, match="xx"):
        LanguageDetector(["en", "xx"], "en")
    with pytest.raises(ValueError):
        LanguageDetector([], "en")
    with pytest.raises(ValueError, match="fr"):
        LanguageDetector(["en", "es"], "fr")


def test_single_language_never_loads_lingua(monkeypatch):
    import lingua

    def boom(*a, **k):
        raise AssertionError("lingua must not be built for one language")

    monkeypatch.setattr(lingua.LanguageDetectorBuilder, "from_languages", boom, raising=False)
    d = LanguageDetector(["es"], "es")
    assert d.detect("The weather is lovely this morning.") == "es"
    with pytest.raises(ValueError, match="zz"):
        LanguageDetector(["zz"], "zz")


def test_deterministic(det):
    texts = EN[:5] + ES[:5] + ["Hello amigo, ¿qué tal? I am fine gracias"]
    first = [det.detect(t) for t in texts]
    for _ in range(3):
        assert [det.detect(t) for t in texts] == first
    again = LanguageDetector(["en", "es"], "en")
    assert [again.detect(t) for t in texts] == first


def test_odd_input_never_raises(det):
    for text in ["\x00\x01", "a\ud800b", "x" * 100_000, "日本語", None]:
        assert det.detect(text) in {"en", "es"}
