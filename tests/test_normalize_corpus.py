"""The committed corpus (tests/normalization/{en,es,de}.tsv) is the normalizer's spec: every row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kanitts.text import normalize

CORPUS = Path(__file__).resolve().parent / "normalization"
LANGS = ("en", "es", "de")
#: every kind of input issue 16 lists, in each language
KINDS = {"money", "dates", "times", "years", "fractions", "ordinals", "decimals", "percentages", "units",
         "phones", "addresses", "urls", "emails", "versions", "abbreviations", "roman", "ranges", "scores",
         "temperatures", "negatives", "grouped", "markdown", "ssml", "misc"}


def load(lang: str) -> list[tuple[str, str, str]]:
    """(kind, input, expected) rows of one language's corpus; ``\\n`` in a cell is a line break."""
    rows = []
    for line in (CORPUS / f"{lang}.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, text, expected = line.split("\t")
        rows.append((kind, text.replace("\\n", "\n"), expected.replace("\\n", "\n")))
    return rows


@pytest.mark.parametrize("lang", LANGS)
def test_corpus_size_and_coverage(lang):
    rows = load(lang)
    assert len(rows) >= 200
    counts = Counter(kind for kind, _, _ in rows)
    assert set(counts) == KINDS, set(counts) ^ KINDS
    assert all(n >= 3 for n in counts.values()), counts


@pytest.mark.parametrize("lang", LANGS)
def test_every_corpus_row(lang):
    wrong = [(text, expected, got) for _, text, expected in load(lang)
             if (got := normalize(text, lang)) != expected]
    assert not wrong, "\n".join(f"{t!r}: expected {e!r}, got {g!r}" for t, e, g in wrong[:20])
