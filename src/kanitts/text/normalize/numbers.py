"""Number words on num2words: cardinals, digit strings, ordinals, years, decimals.

Every function takes ASCII digit strings (no separators) and a language code
("en", "es", "de") and returns words; none raises for well-formed digit strings.
Digit strings over ``MAX_CARDINAL_DIGITS`` digits (or with a leading zero) are read
digit by digit.
"""

from __future__ import annotations

import re
from functools import lru_cache

from num2words import num2words

MAX_CARDINAL_DIGITS = 15

DIGIT_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
}

_ES_APOCOPE_RE = re.compile(r"\b(veinti)?uno(?= (?:mil|millón|millones|billón|billones)\b)")


def _es_fix(words: str) -> str:
    # num2words says "veintiuno mil"; Spanish says "veintiún mil", "un millón".
    return _ES_APOCOPE_RE.sub(lambda m: "veintiún" if m.group(1) else "un", words)


def digits(digit_str: str, lang: str) -> str:
    """``"007"`` -> ``"zero zero seven"`` (non-digits are skipped)."""
    table = DIGIT_WORDS.get(lang, DIGIT_WORDS["en"])
    return " ".join(table[int(d)] for d in digit_str if d.isascii() and d.isdigit())


@lru_cache(maxsize=8192)
def cardinal(digit_str: str, lang: str, year: bool = False) -> str:
    """Words for an ASCII digit string; ``year`` reads 4-digit 1000-2099 (en, de) as a year."""
    if not digit_str:
        return ""
    if len(digit_str) > MAX_CARDINAL_DIGITS or (len(digit_str) > 1 and digit_str[0] == "0"):
        return digits(digit_str, lang)
    n = int(digit_str)
    if lang == "en":
        if year and len(digit_str) == 4 and 1000 <= n <= 2099:
            return num2words(n, lang="en", to="year").replace(",", "")
        return num2words(n, lang="en").replace(",", "")
    if lang == "de":
        if year and len(digit_str) == 4 and 1100 <= n <= 1999:
            return num2words(n, lang="de", to="year")
        return num2words(n, lang="de")
    return _es_fix(num2words(n, lang="es"))


@lru_cache(maxsize=4096)
def ordinal(n: int, lang: str) -> str:
    """``21`` -> "twenty-first" / "vigésimo primero" / "einundzwanzigste"."""
    words = num2words(n, lang=lang, to="ordinal")
    return words.replace(",", "") if lang == "en" else words


def pairs(digit_str: str, lang: str) -> str:
    """A 3-4 digit code read in pairs the way English speakers do: 8080 -> "eighty eighty"."""
    if lang == "en" and 3 <= len(digit_str) <= 4 and digit_str[0] != "0":
        n = int(digit_str)
        if n % 1000 == 0:
            return cardinal(digit_str, lang)
        head, tail = digit_str[:-2], digit_str[-2:]
        tail_w = "hundred" if tail == "00" else (
            f"oh {DIGIT_WORDS['en'][int(tail[1])]}" if tail[0] == "0" else cardinal(tail, lang))
        return f"{cardinal(head, lang)} {tail_w}"
    return cardinal(digit_str, lang)
