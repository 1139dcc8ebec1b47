"""plan_chunks(): sentence-aware packing, pauses, break tags, and no text lost."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanitts.text import (
    DEFAULT_CHARS_PER_SECOND,
    TextChunk,
    estimate_seconds,
    plan_chunks,
)
from kanitts.text.chunking import parse_breaks

_VALID_BREAK = re.compile(r"<break\b[^<>]*>", re.I)


def squash(s: str) -> str:
    return "".join(s.split())


def spoken(text: str) -> str:
    return squash("".join(p for p in parse_breaks(text) if isinstance(p, str)))


def joined(chunks: list[TextChunk]) -> str:
    return squash("".join(c.text for c in chunks))


def test_short_text_is_one_chunk():
    assert plan_chunks("Hello world. How are you?", "en") == [TextChunk("Hello world. How are you?", 0.0)]
    assert plan_chunks("  Hello \n  world  ", "en") == [TextChunk("Hello world", 0.0)]


def test_empty():
    assert plan_chunks("", "en") == []
    assert plan_chunks(" \n\n ", "en") == []
    assert plan_chunks('<break time="1s"/>', "en") == []


def test_estimate_seconds():
    assert estimate_seconds("a" * 150, "en") == pytest.approx(10.0)
    assert estimate_seconds("a" * 140, "es") == pytest.approx(10.0)
    assert estimate_seconds("a" * 140, "de") == pytest.approx(10.0)
    assert estimate_seconds("a  b", "en", chars_per_second=3) == pytest.approx(1.0)
    assert estimate_seconds('a <break time="2s"/> b', "en", chars_per_second=3) == pytest.approx(1.0)
    assert DEFAULT_CHARS_PER_SECOND == {"en": 15.0, "es": 14.0}
    with pytest.raises(ValueError):
        estimate_seconds("x", "en", chars_per_second=0)


def test_long_text_packs_whole_sentences():
    sent = "This is sentence number {}. "
    text = "".join(sent.format(i) for i in range(40))
    chunks = plan_chunks(text, "en")
    assert len(chunks) > 1
    for c in chunks:
        assert estimate_seconds(c.text, "en") <= 12.0
        assert c.text.endswith(".")  # whole sentences only
    assert [c.pause_after for c in chunks] == [0.2] * (len(chunks) - 1) + [0.0]
    assert joined(chunks) == squash(text)


def test_sentence_pause_is_the_callers():
    text = "One sentence here. " * 30
    chunks = plan_chunks(text, "en", sentence_pause=0.35)
    assert {c.pause_after for c in chunks[:-1]} == {0.35}


def test_numbers_and_abbreviations_not_split():
    text = ("Dr. Smith paid $5.50 for 3.14 kg, e.g. the red ones, and 1,000 more; "
            "Mr. Jones said i.e. no. ") * 6
    chunks = plan_chunks(text, "en", max_chunk_seconds=4.0)
    for c in chunks:
        assert not c.text.endswith(("Dr.", "Mr.", "e.g.", "i.e."))
    # never split inside a word or number: the words are exactly the input's words
    assert [w for c in chunks for w in c.text.split()] == text.split()
    whole = " ".join(c.text for c in chunks)
    assert whole.count("$5.50") == 6 and whole.count("3.14") == 6 and whole.count("1,000") == 6


def test_abbreviation_sentence_ends():
    text = "We met Dr. Watson. He had apples, pears, etc. Then we left. " * 10
    chunks = plan_chunks(text, "en", max_chunk_seconds=2.0)
    texts = [c.text for c in chunks]
    assert set(texts) == {"We met Dr. Watson.", "He had apples, pears, etc.", "Then we left."}
    assert all(not t.endswith("Dr.") for t in texts)


def test_spanish_questions_and_exclamations():
    text = "¿Cómo estás? ¡Muy bien! El Sr. García llegó a las 3. ¿Y tú?¡Genial! " * 8
    chunks = plan_chunks(text, "es", max_chunk_seconds=3.0)
    assert len(chunks) > 1
    for c in chunks:
        assert estimate_seconds(c.text, "es") <= 3.0
        assert c.text[0] in "¿¡E"
        assert not c.text.endswith("Sr.")
    assert joined(chunks) == squash(text)


def test_text_without_punctuation_splits_on_words():
    text = " ".join(f"palabra{i}" for i in range(300))
    chunks = plan_chunks(text, "es")
    assert len(chunks) > 1
    for c in chunks:
        assert estimate_seconds(c.text, "es") <= 12.0
    assert [w for c in chunks for w in c.text.split()] == text.split()


def test_long_sentence_splits_on_clauses():
    clause = "and then the little dog ran around the garden"
    text = ", ".join([clause] * 12) + "."
    chunks = plan_chunks(text, "en", max_chunk_seconds=5.0)
    assert len(chunks) > 1
    for c in chunks[:-1]:
        assert c.text.endswith(",")
    assert joined(chunks) == squash(text)


def test_single_long_word_is_its_own_chunk():
    word = "x" * 500
    chunks = plan_chunks(f"a b {word} c d " * 2, "en", threshold_seconds=1, max_chunk_seconds=2)
    assert word in [c.text for c in chunks]


def test_paragraphs_get_paragraph_pause():
    text = "First paragraph. Still first.\n\nSecond paragraph.\n  \n\nThird."
    chunks = plan_chunks(text, "en", sentence_pause=0.2, paragraph_pause=0.7)
    assert chunks == [
        TextChunk("First paragraph. Still first.", 0.7),
        TextChunk("Second paragraph.", 0.7),
        TextChunk("Third.", 0.0),
    ]


def test_breaks_force_boundaries_with_exact_pause():
    text = 'Hello there. <break time="500ms"/> How are you? <break time="1.5s"/><break time="250ms"/>Bye.'
    assert plan_chunks(text, "en") == [
        TextChunk("Hello there.", 0.5),
        TextChunk("How are you?", 1.75),
        TextChunk("Bye.", 0.0),
    ]


def test_break_forms_and_clamping():
    cases = {
        "<break/>": 0.5,
        "<break />": 0.5,
        "<break>": 0.5,
        "<BREAK TIME='2s'/>": 2.0,
        "<break time=300ms/>": 0.3,
        '<break time="0.5 s"/>': 0.5,
        '<break time="60s"/>': 10.0,
        '<break strength="strong"/>': 0.75,
        '<break strength="none"/>': 0.0,
    }
    for tag, secs in cases.items():
        chunks = plan_chunks(f"One{tag}two", "en")
        assert chunks == [TextChunk("One", secs), TextChunk("two", 0.0)], tag


def test_break_replaces_paragraph_pause():
    text = 'One.\n\n<break time="2s"/>\n\nTwo.'
    assert plan_chunks(text, "en") == [TextChunk("One.", 2.0), TextChunk("Two.", 0.0)]


def test_leading_and_trailing_breaks():
    chunks = plan_chunks('<break time="1s"/> <break time="1s"/>Hello. <break time="3s"/>', "en")
    assert chunks == [TextChunk("", 2.0), TextChunk("Hello.", 0.0)]


@pytest.mark.parametrize(
    "tag",
    ['<break time="abc"/>', '<break time="5"/>', "<break time=1x/>", '<break foo="1s"/>',
     '<break strength="loud"/>', "<b>bold</b>", "<break", "break/>", "<>", "<break time='1s' time='2s'/>"],
)
def test_malformed_markup_is_text(tag):
    text = f"Hello {tag} world."
    chunks = plan_chunks(text, "en")
    assert chunks == [TextChunk(" ".join(text.split()), 0.0)]


def test_last_pause_is_zero_and_pauses_non_negative():
    chunks = plan_chunks("A. " * 200 + "\n\nB.", "en", sentence_pause=-1, paragraph_pause=0.6)
    assert chunks[-1].pause_after == 0.0
    assert all(c.pause_after >= 0 for c in chunks)


def test_bad_arguments():
    with pytest.raises(ValueError):
        plan_chunks("x", "en", max_chunk_seconds=0)
    with pytest.raises(ValueError):
        plan_chunks("x", "en", chars_per_second=-1)


_WORDS = st.sampled_from(
    ["Hello", "world", "Dr.", "e.g.", "3.14", "$5.50", "1,000", "¿Qué?", "¡Sí!", "etc.", "—", "a",
     "Mr.", "end.", "why?", "wow!", "and,", "then;", "x" * 40, "señor", "日本語。", "…"]
)
_SEPS = st.sampled_from([" ", " ", " ", "\n", "\n\n", '<break time="300ms"/>', "<break/>", "<b>", "  "])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_WORDS, _SEPS), max_size=80),
    st.floats(min_value=0.5, max_value=8.0),
    st.sampled_from(["en", "es", "fr"]),
)
def test_property_nothing_lost_and_under_limit(parts, max_s, lang):
    text = "".join(w + s for w, s in parts)
    chunks = plan_chunks(text, lang, max_chunk_seconds=max_s, threshold_seconds=max_s)
    assert joined(chunks) == spoken(text)
    if chunks:
        assert chunks[-1].pause_after == 0.0
    for c in chunks:
        assert c.pause_after >= 0
        if len(c.text.split()) > 1:
            assert estimate_seconds(c.text, lang) <= max_s + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.floats(min_value=0.1, max_value=20))
def test_property_arbitrary_text(text, max_s):
    chunks = plan_chunks(text, "en", max_chunk_seconds=max_s, threshold_seconds=max_s)
    assert joined(chunks) == spoken(text)
    for c in chunks:
        if len(c.text.split()) > 1:
            assert estimate_seconds(c.text, "en") <= max_s + 1e-9
