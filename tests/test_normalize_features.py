"""Issue 16 through the public API: the fault table, chat markdown, lexicons, the SSML subset,
German (normalization, detection, defaults), and never raising on any of it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanitts.text import LanguageDetector, normalize
from kanitts.text.normalize import LANGUAGES, Lexicon, LexiconError, Normalizer, load_lexicon

# The table of issue 16: each row is one kind of fault.
TABLE = [
    ("There were 1234 people.", "en", "There were one thousand two hundred and thirty-four people."),
    ("Add 1/2 cup of flour.", "en", "Add one half cup of flour."),
    ("Add 3/4 cup.", "en", "Add three quarters cup."),
    ("Añade 1/2 taza.", "es", "Añade media taza."),
    ("Hay 10.000.000 de habitantes.", "es", "Hay diez millones de habitantes."),
    ("It's 1.59 p.m.", "en", "It's one fifty-nine PM."),
    ("We meet at 3.30pm today.", "en", "We meet at three thirty PM today."),
    ("### Heading\nRead [link](https://x.y) and `code`.", "en", "Heading.\n\nRead link and code."),
    ("Hay 1000000 habitantes", "es", "Hay un millón de habitantes"),
    ("Call +1 555 123 4567.", "en", "Call plus one, five five five, one two three, four five six seven."),
    ("Call 555.123.4567.", "en", "Call five five five, one two three, four five six seven."),
    ("Open localhost:8080.", "en", "Open localhost port eighty eighty."),
    ("Ping 192.168.1.1 now.", "en", "Ping one ninety-two dot one sixty-eight dot one dot one now."),
]


@pytest.mark.parametrize(("text", "lang", "expected"), TABLE)
def test_issue_table(text, lang, expected):
    assert normalize(text, lang) == expected


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("In 1999 we met.", "en", "In nineteen ninety-nine we met."),
    ("We sold 1999 cars.", "en", "We sold one thousand nine hundred and ninety-nine cars."),
    ("In 1500 years.", "en", "In one thousand five hundred years."),
    ("He was born in March 1985.", "en", "He was born in March nineteen eighty-five."),
    ("Im Jahr 1999.", "de", "Im Jahr neunzehnhundertneunundneunzig."),
    ("Es gibt 1999 Menschen.", "de", "Es gibt eintausendneunhundertneunundneunzig Menschen."),
    ("Hay 1001 noches.", "es", "Hay mil una noches."),
])
def test_years_and_quantities_by_context(text, lang, expected):
    assert normalize(text, lang) == expected


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("$5 and 5$ and 5 $", "en", "five dollars and five dollars and five dollars"),
    ("5 € y €5 y EUR 5", "es", "cinco euros y cinco euros y cinco euros"),
    ("5 € und €5 und 5 EUR", "de", "fünf Euro und fünf Euro und fünf Euro"),
    ("Es kostet 1.234,56 €.", "de", "Es kostet eintausendzweihundertvierunddreißig Euro sechsundfünfzig."),
])
def test_currency_before_or_after(text, lang, expected):
    assert normalize(text, lang) == expected


# -- markdown ----------------------------------------------------------------------------------
MD = "## Plan\n1. **Install** the `tool`\n2. Read [docs](https://d.io)\n\n```python\nprint(1)\n```"


@pytest.mark.parametrize(("rule", "expected"), [
    ("summarize", "Plan.\n\nInstall the tool.\nRead docs.\n\nCode block in python."),
    ("skip", "Plan.\n\nInstall the tool.\nRead docs."),
    ("read", "Plan.\n\nInstall the tool.\nRead docs.\n\nprint(one)"),
])
def test_code_block_rules(rule, expected):
    assert normalize(MD, "en", code_blocks=rule) == expected


def test_markdown_off_keeps_the_markers_for_the_rules():
    out = normalize("## Plan with `x`", "en", markdown=False)
    assert "`x`" in out and "Plan" in out


def test_plain_text_is_untouched_by_markdown():
    text = "The snake_case name and 5 * 3 and a - b stay."
    assert normalize(text, "en") == normalize(text, "en", markdown=False)


def test_unknown_code_block_rule_is_refused_by_the_normalizer_and_summarized_by_normalize():
    with pytest.raises(ValueError, match="code_blocks"):
        Normalizer(code_blocks="explain")
    assert normalize("```\nx\n```", "en", code_blocks="explain") == "Code block."


# -- lexicon ------------------------------------------------------------------------------------
def test_lexicon_whole_word_and_case_aware():
    lex = {"kubectl": "cube control", "Nguyen": "win", "SQL": "sequel", "C++": "C plus plus"}
    text = "Kubectl and kubectl, MySQL and SQL, nguyen and Nguyen, C++ code."
    assert normalize(text, "en", lexicon=lex) == (
        "Cube control and cube control, MySQL and sequel, nguyen and win, C plus plus code.")


def test_lexicon_replacement_is_not_rewritten_and_earlier_lexicon_wins():
    first, second = {"v2": "version 2"}, {"v2": "vee two", "abc": "a b c"}
    assert normalize("Use v2 and abc.", "en", lexicon=[first, second]) == "Use version 2 and a b c."


def test_normalizer_request_lexicon_beats_server_lexicon():
    norm = Normalizer(Lexicon({"nginx": "engine x", "k8s": "kates"}))
    assert norm("nginx on k8s", "en", lexicon={"k8s": "kubernetes"}) == "engine x on kubernetes"
    assert norm("nginx on k8s", "en") == "engine x on kates"


def test_load_lexicon_formats(tmp_path):
    txt = tmp_path / "lex.txt"
    txt.write_text("# comment\n\nkubectl = cube control\nNguyen\twin\n")
    js = tmp_path / "lex.json"
    js.write_text('{"SQL": "sequel"}')
    assert load_lexicon(txt).entries == {"kubectl": "cube control", "Nguyen": "win"}
    assert load_lexicon(js).entries == {"SQL": "sequel"}
    assert load_lexicon(None) is None


@pytest.mark.parametrize(("name", "content", "match"), [
    ("bad.txt", "no separator here\n", "line 1"),
    ("bad.json", "[1, 2]", "JSON object"),
    ("bad.json", "{oops", "invalid JSON"),
    ("missing.txt", None, "missing.txt"),
])
def test_load_lexicon_errors_name_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(LexiconError, match=match):
        load_lexicon(path)


def test_bad_lexicon_value_never_raises_from_normalize():
    assert normalize("hi 5", "en", lexicon=42) == "hi five"
    assert normalize("hi 5", "en", lexicon={"": "x"}) == "hi five"


# -- SSML ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "lang", "expected"), [
    ('<sub alias="cube control">kubectl</sub> works', "en", "cube control works"),
    ('<say-as interpret-as="spell-out">NASA</say-as>', "en", "N A S A"),
    ('<say-as interpret-as="characters">a1</say-as>', "de", "a eins"),
    ('<say-as interpret-as="cardinal">1,234</say-as>', "en", "one thousand two hundred and thirty-four"),
    ('<say-as interpret-as="ordinal">21</say-as>', "de", "einundzwanzigste"),
    ('<say-as interpret-as="digits">2024</say-as>', "es", "dos cero dos cuatro"),
    ('<say-as interpret-as="telephone">555-1234</say-as>', "en", "five five five, one two three four"),
    ('<say-as interpret-as="date" format="ymd">2024-03-15</say-as>', "es",
     "quince de marzo de dos mil veinticuatro"),
    ('<say-as interpret-as="date" format="dmy">15/03/2024</say-as>', "en", "March fifteenth, twenty twenty-four"),
    ('<say-as interpret-as="time">09:05</say-as>', "de", "neun Uhr fünf"),
    ('<emphasis>very</emphasis> <prosody pitch="high">good</prosody>', "en", "very good"),
    ('<say-as interpret-as="time">late</say-as>', "en", "late"),
    ('<say-as interpret-as="nonsense">12</say-as>', "en", "twelve"),  # read as text
    ("<b>bold</b> text", "en", "<b>bold</b> text"),
    ('<sub alias="x">open', "en", "open"),
    ('Wait <break time="500ms"/> <emphasis>now</emphasis>', "en", 'Wait <break time="500ms"/> now'),
])
def test_ssml_subset(text, lang, expected):
    assert normalize(text, lang) == expected


# -- German ---------------------------------------------------------------------------------------
def test_german_is_a_normalized_language():
    assert set(LANGUAGES) == {"en", "es", "de"}
    assert normalize("Am 3. Mai um 15:30 Uhr kostet es 5,50 €.", "de-DE") == (
        "Am dritten Mai um fünfzehn Uhr dreißig kostet es fünf Euro fünfzig.")


DE = [
    "Guten Morgen, wie geht es Ihnen heute?",
    "Das Wetter ist heute wirklich schön.",
    "Bitte schicken Sie mir den Bericht bis Freitag.",
    "Wo ist der nächste Bahnhof?",
    "Wir fahren am Wochenende mit unseren Freunden an den See.",
    "Vielen Dank für Ihre Hilfe.",
]


@pytest.fixture(scope="module")
def detector():
    return LanguageDetector(["en", "es", "de"], "en")


@pytest.mark.parametrize("text", DE)
def test_german_is_detected_among_three(detector, text):
    assert detector.detect(text) == "de"


def test_english_and_spanish_still_detected_among_three(detector):
    assert detector.detect("Where is the nearest train station?") == "en"
    assert detector.detect("¿Dónde está la estación de tren más cercana?") == "es"
    assert detector.detect("Hallo") == "en"  # too short: the default


def test_german_in_the_default_configuration():
    from kanitts.config import load_settings

    s = load_settings(env=False)
    assert s.languages["de"].model == "nineninesix/kani-tts-400m-de"
    assert s.languages["de"].voices == ["bert", "thorsten"]
    assert s.text.markdown is True and s.text.code_blocks == "summarize" and s.text.lexicon_file is None


# -- never raises ---------------------------------------------------------------------------------
PIECES = st.one_of(
    st.sampled_from(["#", "##", "- ", "* ", "1. ", "> ", "```", "~~~", "`", "**", "_", "~~", "|", "---", "[", "](",
                     ")", "![", "<br>", "\\", "<sub alias='a'>", "</sub>", "<say-as interpret-as='date'>",
                     "<say-as interpret-as='time'>", "<say-as interpret-as='cardinal'>", "</say-as>", "<speak>",
                     "<p>", "</s>", "<break time='1s'/>", "3. Mai", "1/2", "½", "+49 30 1234", "192.168.1.1:80",
                     "XIV.", "Henry VIII", "1.234,5 €", "$5-$10", "15.30 Uhr", "1.59 p.m.", "\n", "\n\n"]),
    st.from_regex(r"-?[$€£]?\d{1,6}([.,:/]\d{1,4}){0,3}[%€]?", fullmatch=True),
    st.text(max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=14), st.sampled_from(["en", "es", "de", "fr"]),
       st.sampled_from(["skip", "summarize", "read"]), st.booleans())
def test_never_raises_on_markup_soup(parts, lang, code_blocks, markdown):
    out = normalize(" ".join(parts), lang, markdown=markdown, code_blocks=code_blocks,
                    lexicon={"Henry": "Hen ree", "c++": "c plus plus"})
    assert isinstance(out, str)
    assert not any(0xF0000 <= ord(ch) <= 0xFFFFD or 0xE000 <= ord(ch) <= 0xE07F for ch in out)
