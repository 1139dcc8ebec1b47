"""The shared rewrite rules, built once per language from its :class:`Language` module.

Rules run in order over one paragraph; each is a compiled regex and a replacement
function.  A function that raises (or returns None) leaves its match as written, so a
rule can decline a match ("99:99" is no time) and a later rule may read it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

from kanitts.text.normalize import numbers
from kanitts.text.normalize.base import (
    Language,
    Rule,
    pad,
    roman_value,
    sentence_follows,
    word_after,
    word_before,
)

TLDS = ("com|org|net|edu|gov|io|ai|es|mx|ar|co|cl|pe|uk|de|at|ch|fr|it|info|dev|app|tv|me|us|"
        "ca|au|eu|ly|gg|xyz")
AMPM = r"(?:\s?([AaPp])\.?\s?[Mm]\b\.?)"
VULGAR = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5),
          "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8),
          "⅞": (7, 8)}
#: Acronyms that look like Roman numerals.
ROMAN_STOP = frozenset("CV XL CC CL LL CI IV VI XX XXX LIV MIX DC CD CM MD MC DIV CIV LCD".split())


def safe(fn: Callable[[re.Match[str]], str | None]) -> Callable[[re.Match[str]], str]:
    def wrapper(m: re.Match[str]) -> str:
        try:
            out = fn(m)
        except Exception:  # noqa: BLE001 - a failing rule keeps the token as written
            return m.group(0)
        return m.group(0) if out is None else out

    return wrapper


def read_address(addr: str, L: Language) -> str:
    """Read a URL, e-mail or host name: separators as words, digits as numbers."""
    words = L.url_words
    out: list[str] = []
    pieces = re.split(r"(:\d{1,5}(?=/|$)|[./\-_@:?=&#+~%])", addr)
    for piece in pieces:
        if not piece:
            continue
        if piece.startswith(":") and piece[1:].isdigit():
            out.append(f"{L.words['port']} {numbers.pairs(piece[1:], L.code)}")
        elif piece in words:
            out.append(words[piece])
        elif piece.lower() == "www":
            out.append("w w w")
        else:
            for part in re.findall(r"\d+|[^\d]+", piece):
                out.append(L.cardinal(part) if part.isdigit() and part.isascii() else part)
    return " ".join(out)


def _octet(s: str, L: Language) -> str:
    if int(s) > 255:
        raise ValueError("not an IP address")
    return numbers.pairs(s, L.code) if L.code == "en" and len(s) == 3 else L.cardinal(str(int(s)))


@lru_cache(maxsize=None)
def rules_for(L: Language) -> list[Rule]:
    """The ordered rules of one language (built once, then cached)."""
    NUM = L.num_re
    W = L.words
    rules: list[Rule] = []

    def add(pattern: str, fn: Callable[[re.Match[str]], str | None], flags: int = 0) -> None:
        rules.append((re.compile(pattern, flags), safe(fn)))

    L.extra_rules(add, "start")
    trail = r"(?<![.,;:!?)\]'\"])"

    # --- e-mail addresses, URLs, IP addresses, host:port -------------------------------
    add(r"(?<![\w.+\-])[\w.+\-]*\w@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}\b",
        lambda m: pad(m, read_address(m.group(0), L)))

    def url(m: re.Match[str]) -> str:
        s = re.sub(r"^(?:https?|ftp)://", "", m.group(0), flags=re.I).rstrip("/")
        return pad(m, read_address(s, L))

    add(r"(?<![\w@])(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", url, re.I)
    add(r"(?<![\w.@/\-])[A-Za-z0-9][A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)*\.(?:" + TLDS
        + r")\b(?!\.\w)(?::\d{1,5}\b)?(?:/[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]])?" + trail, url, re.I)

    def ip(m: re.Match[str]) -> str:
        out = f" {W['dot']} ".join(_octet(g, L) for g in m.group(1, 2, 3, 4))
        if m.group(5):
            out += f" {W['port']} {numbers.pairs(m.group(5), L.code)}"
        return pad(m, out)

    add(r"(?<![\w.,])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?::(\d{1,5}))?(?![\w]|[.,]\d)", ip)
    add(r"(?<![\w.@/\-])(localhost|[A-Za-z][\w\-]*(?:\.[\w\-]+)*):(\d{1,5})\b(?![.,:]\d)",
        lambda m: pad(m, f"{read_address(m.group(1), L)} {W['port']} {numbers.pairs(m.group(2), L.code)}"))

    add(r"\b(?i:(" + W["port"] + r")) (\d{2,5})\b(?![.,]\d)",
        lambda m: f"{m.group(1)} {numbers.pairs(m.group(2), L.code)}")

    # --- phone numbers ----------------------------------------------------------------
    def phone_groups(s: str) -> str:
        return ", ".join(L.digits(g) for g in re.findall(r"\d+", s))

    add(r"(?<![\w+])\+(\d{1,3})[ .\-]?(\(?\d{1,4}\)?(?:[ .\-/]?\d{2,8}){1,5})(?![\w]|[.,]\d)",
        lambda m: pad(m, f"{W['plus']} {L.cardinal(m.group(1))}, {phone_groups(m.group(2))}"))
    add(r"(?<![\w.,/\-+])(?:\(\d{3}\) ?|\d{3}([-. ]))\d{3}(?(1)\1|[-. ])\d{4}(?![\w\-]|[.,]\d)",
        lambda m: pad(m, phone_groups(m.group(0))))
    L.extra_rules(add, "phones")

    # --- dates ------------------------------------------------------------------------
    add(r"(?<![\w\-./])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w\-]|[.,]\d)",
        lambda m: L.date_words(m.group(1), int(m.group(2)), int(m.group(3)), m))

    def numeric_date(m: re.Match[str]) -> str:
        a, b, year = int(m.group(1)), int(m.group(3)), m.group(4)
        if L.code == "en":
            month, day = (b, a) if a > 12 else (a, b)
        else:
            day, month = (b, a) if (b > 12 and a <= 12) else (a, b)
        return L.date_words(year, month, day, m)

    add(r"(?<![\w\-./])(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})(?![\w\-]|[.,/]\d)", numeric_date)
    L.extra_rules(add, "dates")

    # --- times ------------------------------------------------------------------------
    clock_word = W.get("clock_word", "")
    suffix = f"(?:{clock_word})?" if clock_word else ""

    def keep_period(m: re.Match[str], words: str) -> str:
        return words + "." if m.group(0).endswith(".") and sentence_follows(m) else words

    def clock(m: re.Match[str]) -> str:
        sec = int(m.group(3)) if m.group(3) else None
        return keep_period(m, L.time_words(int(m.group(1)), int(m.group(2)), sec, m.group(4)))

    add(r"(?<![\w:.,])(\d{1,2}):(\d{2})(?::(\d{2}))?" + AMPM + r"?" + suffix + r"(?![\w:]|[.,]\d)", clock)
    # dotted times: with AM/PM, with the language's clock word, or after a time cue
    add(r"(?<![\w:.,])(\d{1,2})\.(\d{2})()" + AMPM + r"(?!\w)", clock)
    if clock_word:
        add(r"(?<![\w:.,])(\d{1,2})\.(\d{2})()()" + clock_word + r"(?![\w:]|[.,]\d)", clock)
    add(r"\b(" + W["time_cue"] + r") (\d{1,2})\.([0-5]\d)(?![\w:]|[.,]\d)",
        lambda m: f"{m.group(1)} {L.time_words(int(m.group(2)), int(m.group(3)), None, None)}")

    def bare_ampm(m: re.Match[str]) -> str:
        return keep_period(m, L.time_words(int(m.group(1)), 0, None, m.group(2)))

    add(r"(?<![\w:.,])(\d{1,2})" + AMPM + r"(?!\w)", bare_ampm)
    # scores and ratios: "3:2", "16:9"
    add(r"(?<![\w:.,])(\d{1,3}):(\d{1,3})(?![\w:]|[.,]\d)",
        lambda m: f"{L.cardinal(m.group(1))} {W['score']} {L.cardinal(m.group(2))}")

    # --- currency ---------------------------------------------------------------------
    mag = L.magnitude_re
    pre = r"(US\$|\$|€|£|¥|(?:USD|EUR|GBP|JPY|CHF) ?)"
    add(r"(?<![\w.,])" + pre + r" ?(" + NUM + r") ?[-–] ?(?:\1)? ?(" + NUM + r")(?:\s?(" + mag + r")(?!\w))?"
        r"(?![\d]|[.,]\d)",
        lambda m: pad(m, f"{L.read_str(m.group(2))} {W['to']} {L.money('', m.group(1).strip(), m.group(3), m.group(4))}"))
    add(r"(?<![\w.,])(" + NUM + r") ?[-–] ?(" + NUM + r")(?:\s?(" + mag + r")(?!\w))? ?(US\$|€|\$|£|¥|USD|EUR|GBP|JPY|CHF)"
        r"(?![\w$€£¥])",
        lambda m: pad(m, f"{L.read_str(m.group(1))} {W['to']} {L.money('', m.group(4), m.group(2), m.group(3))}"))
    add(r"(?<![\w.,])([\-−]?)" + pre + r" ?(" + NUM + r")(?:\s?(" + mag + r")(?!\w))?(?![\d]|[.,]\d)",
        lambda m: pad(m, L.money(m.group(1), m.group(2).strip(), m.group(3), m.group(4))))
    add(r"(?<![\w.,])([\-−]?)(" + NUM + r")(?:\s?(" + mag + r")(?!\w))? ?(US\$|€|\$|£|¥|USD|EUR|GBP|JPY|CHF)"
        r"(?![\w$€£¥])",
        lambda m: pad(m, L.money(m.group(1), m.group(4), m.group(2), m.group(3))))

    # --- percentages ------------------------------------------------------------------
    add(r"(?<![\w.,])([\-−]?)(" + NUM + r") ?%",
        lambda m: (f"{W['minus']} " if m.group(1) else "") + f"{L.read_str(m.group(2))} {W['percent']}")

    # --- fractions --------------------------------------------------------------------
    unit_alt = "|".join(re.escape(u) for u in sorted(L.units, key=len, reverse=True))

    def fraction(m: re.Match[str], whole: str | None, n: int, d: int, unit: str | None) -> str:
        if unit:
            sing, plur, fem = L.units[unit]
            return pad(m, L.fraction(whole, n, d, (sing, plur, fem)))
        nxt = word_after(m)
        return pad(m, L.fraction(whole, n, d, nxt or None))

    vulgar = "".join(VULGAR)
    add(r"(?<![\w.,])(?:(\d{1,3}) ?)?([" + vulgar + r"])(?: ?(" + unit_alt + r")(?![\w/°º]))?",
        lambda m: fraction(m, m.group(1), *VULGAR[m.group(2)], m.group(3)))
    add(r"(?<![\w./\-])24/7(?![\w/])", lambda m: f"{L.cardinal('24')} {L.cardinal('7')}")
    add(r"(?<![\w./\-])(?:(\d{1,3}) )?(\d{1,2})/(\d{1,2})(?: ?(" + unit_alt + r")(?![\w/°º]))?"
        r"(?![\w/]|[.,]\d)",
        lambda m: fraction(m, m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)))

    # --- units ------------------------------------------------------------------------
    def unit(m: re.Match[str]) -> str:
        num = L.parse_num(m.group(2))
        sing, plur, fem = L.units[m.group(3)]
        name = sing if num.is_one and not num.frac_digits else plur
        out = f"{L.read_num(num, noun=name)} {name}"
        return pad(m, f"{W['minus']} {out}" if m.group(1) else out)

    add(r"(?<![\w.,/])([\-−]?)(" + NUM + r") ?(" + unit_alt + r")(?![\w/°º])", unit)

    # --- ordinals, abbreviations, language-only number forms ---------------------------
    L.extra_rules(add, "numbers")
    add(r"(?<![\w#])#(?=\d)", lambda m: pad(m, W["number"] + " "))
    add(r"(?<![\w~])~ ?(?=[\-−]?\d)", lambda m: L.symbols["~"] + " ")

    abbrs = L.abbreviations
    abbr_alt = "|".join(re.escape(a) for a in sorted(abbrs, key=len, reverse=True))

    def abbr(m: re.Match[str]) -> str:
        word, may_end = abbrs[m.group(1)]
        if may_end and L.ends_sentence(m):
            word += "."
        return pad(m, word)

    add(r"(?<![\w.])(" + abbr_alt + r")", abbr)

    # --- Roman numerals after names and nouns ----------------------------------------
    def roman(m: re.Match[str]) -> str | None:
        word, numeral, dot = m.group(1), m.group(2), m.group(3)
        value = roman_value(numeral)
        count = word.lower() in L.roman_count_nouns
        if value is None or (numeral in ROMAN_STOP and not count):
            return None
        if len(numeral) == 1 and not count and word not in L.regnal_names:
            return None
        if not count and not word[:1].isupper():
            return None
        out = f"{word} {L.roman(value, regnal=not count, name=word)}"
        if dot:
            out += "." if (sentence_follows(m) or not (L.code == "de" and not count)) else ""
        return out

    add(r"\b([^\W\d_]+) ([IVXLCDM]{1,7})\b(\.?)", roman)

    # --- versions and dotted numbers --------------------------------------------------
    point = W["point"]
    def version(m: re.Match[str]) -> str:
        words = f" {point} ".join(L.cardinal(p) for p in m.group(1).split("."))
        return pad(m, words if word_before(m) in ("version", "versión") else f"{W['version']} {words}")

    add(r"(?<![\w.])[vV](\d+(?:\.\d+)+)\b(?!\.\d)", version)
    add(r"(?<![\w.,])(?!" + NUM + r"(?![\w]|[.,]\d))\d+(?:\.\d+){2,}(?![\w]|\.\d)",
        lambda m: f" {point} ".join(L.cardinal(p) for p in m.group(0).split(".")))
    add(r"(?<=\d) ?[x×] ?(?=\d)", lambda m: f" {W['by']} ")
    add(r"(?<=\d) ?\* ?(?=\d)", lambda m: " " + L.symbols["×"] + " ")
    add(r"(?<![\w.,/\-])\d{3}-\d{4}(?![\w\-]|[.,]\d)", lambda m: pad(m, phone_groups(m.group(0))))

    # --- ranges, negatives, plain numbers -------------------------------------------------
    add(r"(?<![\w.,/\-−])(" + NUM + r")(?:-|–| – )(" + NUM + r")(?![\w\-–]|[.,]\d)",
        lambda m: f"{L.read_str(m.group(1), year=True)} {W['to']} {L.read_str(m.group(2), year=True)}")
    add(r"(?<![\w.,)\]])[\-−](" + NUM + r")(?![\w]|[.,]\d)",
        lambda m: f"{W['minus']} {L.read_str(m.group(1), year=True)}")
    add(r"(?<![\w.,])(" + NUM + r")(?![\w]|[.,]\d)", lambda m: L.plain_number(m, L.parse_num(m.group(1))))
    L.extra_rules(add, "end")

    # --- symbols and leftovers --------------------------------------------------------
    add(r"[&+=%@~×©®™§°]", lambda m: pad(m, f" {L.symbols[m.group(0)]} ").replace("  ", " "))
    add(r"#(?=\w)", lambda m: "hashtag ")
    add(r"\*+", lambda m: " ")
    add(r"\d+", lambda m: pad(m, L.cardinal(m.group(0))) if m.group(0).isascii() else m.group(0))
    return rules


def apply_rules(text: str, L: Language) -> str:
    for pattern, fn in rules_for(L):
        try:
            text = pattern.sub(fn, text)
        except Exception:  # noqa: BLE001 - a broken rule must never break the request
            continue
    return text
