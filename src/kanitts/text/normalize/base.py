"""What every language module provides: written-number parsing and reading hooks.

A language is a :class:`Language` subclass (``en.py``, ``es.py``, ``de.py``): data tables
(months, currencies, units, abbreviations, symbols, words used by the shared rules) and
the readings that differ between languages (times, dates, money, fractions, agreement of
a number with the noun after it, years vs quantities).  ``rules.py`` builds the rewrite
rules from one instance; adding a language is a module here plus its config entry.
"""

from __future__ import annotations

import re
from typing import Callable

from kanitts.text.normalize import numbers

Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]
AddRule = Callable[..., None]

#: currency symbols and ISO codes -> the key of ``Language.currencies``
CURRENCY_CODES = {"US$": "USD_US", "$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "USD": "USD",
                  "EUR": "EUR", "GBP": "GBP", "JPY": "JPY", "CHF": "CHF"}

_SENTENCE_NEXT_RE = re.compile(r"\s*$|\s+[\"'(¿¡]?[A-ZÁÉÍÓÚÑÄÖÜ]|\n")
_WORD_AFTER_RE = re.compile(r"\s+([^\W\d_]+)")
_WORD_BEFORE_RE = re.compile(r"([^\W\d_]+)\W{0,2}\s*$")


class Num:
    """A parsed written number: integer digits, fraction digits, the word for the separator."""

    __slots__ = ("int_digits", "frac_digits", "sep_word", "grouped")

    def __init__(self, int_digits: str, frac_digits: str, sep_word: str, grouped: bool) -> None:
        self.int_digits = int_digits
        self.frac_digits = frac_digits
        self.sep_word = sep_word
        self.grouped = grouped

    @property
    def is_one(self) -> bool:
        return self.int_digits.lstrip("0") == "1" and not self.frac_digits.strip("0")

    @property
    def maybe_year(self) -> bool:
        return not self.grouped and not self.frac_digits and len(self.int_digits) == 4


def word_after(m: re.Match[str]) -> str:
    """The word right after a match ("" when punctuation or the end comes first)."""
    nxt = _WORD_AFTER_RE.match(m.string, m.end())
    return nxt.group(1) if nxt else ""


def word_before(m: re.Match[str]) -> str:
    """The word right before a match (lower-cased); looks back at most 40 characters."""
    start = m.start()
    prev = _WORD_BEFORE_RE.search(m.string[max(0, start - 40):start]) if start else None
    return prev.group(1).lower() if prev else ""


def pad(m: re.Match[str], words: str) -> str:
    """Surround ``words`` with spaces where the match touches a letter or digit."""
    s = m.string
    before = s[m.start() - 1] if m.start() > 0 else " "
    after = s[m.end()] if m.end() < len(s) else " "
    if before.isalnum():
        words = " " + words
    if after.isalnum():
        words = words + " "
    return words


def sentence_follows(m: re.Match[str]) -> bool:
    """True when the match ends a sentence ("... p.m. Then"): its final dot is kept."""
    return bool(_SENTENCE_NEXT_RE.match(m.string, m.end()))


class Language:
    """Base of the per-language modules (English defaults where a choice is needed)."""

    code = "en"
    #: Thousands grouping and decimals: regex of one written number (grouped form first).
    num_re = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3}){1,4}(?![\d])|\d+(?:\.\d+)?"
    months: tuple[str, ...] = ()
    #: Written month names and abbreviations -> month number (for "March 15", "15. März").
    month_lookup: dict[str, int] = {}
    #: currency code -> (singular, plural, minor singular, minor plural, feminine)
    currencies: dict[str, tuple[str, str, str | None, str | None, bool]] = {}
    #: magnitude words after an amount ("$2 million") and their spoken form
    magnitude_re = r"thousand|million|billion|trillion"
    magnitude_words: dict[str, str] = {}
    #: unit symbol -> (singular, plural, feminine)
    units: dict[str, tuple[str, str, bool]] = {}
    #: abbreviation -> (expansion, may end a sentence)
    abbreviations: dict[str, tuple[str, bool]] = {}
    symbols: dict[str, str] = {}
    url_words: dict[str, str] = {}
    #: words used by the shared rules
    words: dict[str, str] = {}
    #: lower-case words after which a 4-digit number is a year ("in 1999")
    year_cues: frozenset[str] = frozenset()
    #: lower-case nouns after which a Roman numeral is a plain number ("Chapter IV")
    roman_count_nouns: frozenset[str] = frozenset()
    #: names after which even a one-letter Roman numeral is regnal ("Henry V")
    regnal_names: frozenset[str] = frozenset()

    # -- numbers -------------------------------------------------------------------
    def parse_num(self, s: str) -> Num:
        int_part, _, frac = s.partition(".")
        grouped = "," in int_part or " " in int_part
        return Num(int_part.replace(",", "").replace(" ", ""), frac, self.words["point"], grouped)

    def cardinal(self, digit_str: str, year: bool = False) -> str:
        return numbers.cardinal(digit_str, self.code, year)

    def digits(self, digit_str: str) -> str:
        return numbers.digits(digit_str, self.code)

    def ordinal(self, n: int) -> str:
        return numbers.ordinal(n, self.code)

    def frac_words(self, frac: str) -> str:
        return self.digits(frac)

    def agree(self, words: str, noun: str) -> str:
        """Adjust a cardinal that precedes ``noun`` (gender, apocope); English: unchanged."""
        return words

    def read_num(self, num: Num, *, year: bool = False, noun: str | None = None) -> str:
        words = self.cardinal(num.int_digits, year and num.maybe_year)
        if noun is not None and not num.frac_digits:
            words = self.agree(words, noun)
        if num.frac_digits:
            words = f"{words} {num.sep_word} {self.frac_words(num.frac_digits)}"
        return words

    def read_str(self, s: str, **kw: object) -> str:
        return self.read_num(self.parse_num(s), **kw)  # type: ignore[arg-type]

    # -- context -------------------------------------------------------------------
    def is_counted_noun(self, word: str) -> bool:
        """Whether ``word`` after a 4-digit number makes it a quantity ("1234 people")."""
        return False

    def is_unit_noun(self, word: str) -> bool:
        """Nouns of measure/time: after them even a year cue means a quantity ("in 1500 years")."""
        return False

    def plain_number(self, m: re.Match[str], num: Num) -> str:
        """A number with no unit, currency or other reading: quantity or year by context."""
        if num.maybe_year:
            nxt = word_after(m)
            prev = word_before(m)
            quantity = bool(nxt) and (self.is_unit_noun(nxt) or (
                prev not in self.year_cues and self.is_counted_noun(nxt)))
            if prev in self.year_cues and not quantity:
                return self.read_num(num, year=True)
            if quantity:
                return self.read_num(num, noun=nxt)
            return self.read_num(num, year=True)
        nxt = word_after(m)
        return self.read_num(num, noun=nxt if nxt and self.is_counted_noun(nxt) else None)

    def ends_sentence(self, m: re.Match[str]) -> bool:
        """Whether the dot of an abbreviation at ``m`` also ends the sentence."""
        return sentence_follows(m)

    # -- readings each language defines ----------------------------------------------
    def time_words(self, h: int, mi: int, sec: int | None, ap: str | None) -> str:
        raise NotImplementedError

    def date_words(self, year: str | None, month: int, day: int, m: re.Match[str] | None = None) -> str:
        raise NotImplementedError

    def magnitude(self, num: Num, mag: str, plural: str) -> str:
        """"$1.5 million" -> "one point five million dollars"."""
        return f"{self.read_num(num)} {self.magnitude_words.get(mag, mag)} {plural}"

    def join_money(self, major: str | None, minor: str | None, minor_word: str | None) -> str:
        parts = [p for p in (major, f"{minor} {minor_word}" if minor else None) if p]
        return f" {self.words['and']} ".join(parts)

    def money(self, sign: str, code: str, num_s: str, mag: str | None) -> str:
        """An amount of money in words; ``code`` is a symbol or ISO code."""
        sing, plur, minor_s, minor_p, _fem = self.currencies[CURRENCY_CODES[code]]
        num = self.parse_num(num_s)
        minus = f"{self.words['minus']} " if sign else ""
        if mag:
            return minus + self.magnitude(num, mag, plur)
        frac = num.frac_digits
        if frac and (len(frac) > 2 or minor_s is None):
            return f"{minus}{self.read_num(num)} {plur}"
        cents = int(frac.ljust(2, "0")) if frac else 0
        major_n = int(num.int_digits) if len(num.int_digits) <= numbers.MAX_CARDINAL_DIGITS else None
        major = None
        if major_n is None or major_n != 0 or cents == 0:
            unit = sing if major_n == 1 else plur
            major = f"{self.read_num(Num(num.int_digits, '', '', num.grouped), noun=unit)} {unit}"
        minor = minor_word = None
        if cents:
            minor_word = minor_s if cents == 1 else minor_p
            minor = self.agree(self.cardinal(str(cents)), minor_word or "")
        return minus + self.join_money(major, minor, minor_word)

    def fraction(self, whole: str | None, n: int, d: int, noun: str | None) -> str:
        raise NotImplementedError

    def roman(self, value: int, regnal: bool, name: str = "") -> str:
        """A Roman numeral after a name ("Henry VIII", regnal) or a noun ("Chapter IV")."""
        raise NotImplementedError

    def extra_rules(self, add: AddRule, stage: str) -> None:
        """Language-only rules inserted at ``stage`` ("start", "numbers", "end")."""


def roman_value(s: str) -> int | None:
    """Value of a well-formed Roman numeral (canonical form only), else None."""
    vals = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total, prev = 0, 0
    for ch in reversed(s):
        v = vals.get(ch)
        if v is None:
            return None
        total = total - v if v < prev else total + v
        prev = max(prev, v)
    if not 0 < total < 4000 or to_roman(total) != s:
        return None
    return total


def to_roman(n: int) -> str:
    out = []
    for v, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                   (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= v:
            out.append(sym)
            n -= v
    return "".join(out)
