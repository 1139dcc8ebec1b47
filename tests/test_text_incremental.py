"""kanitts.text.incremental: cut points depend only on the text, never inside a word or number."""

import random

import pytest

from kanitts.text.incremental import TextCutter

TEXT = ("Sure, I can help with that. Dr. Smith paid $3.50 for 1,000 apples, which is cheap! "
        "The total was 3.5 percent of e.g. the budget; not bad. Call me at 5 p.m. Thanks")


def _cut(parts, **kw):
    c = TextCutter(**kw)
    out = []
    for p in parts:
        out += c.feed(p)
    return out + c.flush()


def test_cuts_at_boundaries_past_min_chars():
    pieces = _cut([TEXT])
    assert pieces == [
        "Sure, I can help with that.",
        "Dr. Smith paid $3.50 for 1,000 apples,",
        "which is cheap! The total was 3.5 percent of e.g. the budget;",
        "not bad. Call me at 5 p.m.",
        "Thanks",
    ]
    assert " ".join(pieces) == " ".join(TEXT.split())


@pytest.mark.parametrize("seed", range(40))
def test_split_points_do_not_change_the_pieces(seed):
    rng = random.Random(seed)
    parts, i = [], 0
    while i < len(TEXT):
        j = i + rng.randint(1, 9)
        parts.append(TEXT[i:j])
        i = j
    assert _cut(parts) == _cut([TEXT])


def test_numbers_are_never_cut_while_arriving():
    c = TextCutter(min_chars=1)
    assert c.feed("It costs 3.") == []
    assert c.feed("5") == []
    assert c.feed(" and 1,") == []
    assert c.feed("000 more. Next") == ["It costs 3.5 and 1,000 more."]
    assert c.pending.strip() == "Next"


def test_a_boundary_waits_for_the_next_word():
    c = TextCutter(min_chars=1)
    assert c.feed("Hello there. ") == []  # "Mr." or a sentence end? undecided until a word follows
    assert c.feed("How") == ["Hello there."]
    c2 = TextCutter(min_chars=1)
    assert c2.feed("Ask Dr. ") == []
    assert c2.feed("Who. Then") == ["Ask Dr. Who."]


def test_min_chars_joins_short_clauses_and_max_chars_cuts_between_words():
    assert _cut(["Hi. Yes, ok. Fine then, let us go."], min_chars=12) == ["Hi. Yes, ok.", "Fine then, let us go."]
    long = "word " * 30
    pieces = _cut([long], min_chars=5, max_chars=20)
    assert all(len(p) <= 24 for p in pieces) and all(p.split() == ["word"] * len(p.split()) for p in pieces)
    assert " ".join(pieces).split() == long.split()


def test_flush_and_clear():
    c = TextCutter()
    c.feed("half a sent")
    assert c.flush() == ["half a sent"]
    assert c.flush() == []
    c.feed("dropped")
    assert c.clear() == "dropped" and c.pending == ""
    with pytest.raises(ValueError):
        TextCutter(min_chars=10, max_chars=5)
