"""Text normalization for speech: written forms -> words the model can read aloud.

``normalize(text, language)`` rewrites numbers, money, dates, times, units,
abbreviations, URLs, e-mail addresses and symbols into words for English ("en")
and Spanish ("es").  Any other language gets only the generic cleanup
(control characters, emoji, whitespace).

Guarantees
----------
* Never raises: every rewrite rule runs inside its own guard; a rule that fails on
  a token leaves that token as written, and a failure of the whole pipeline returns
  the sanitized input.
* ``<break .../>`` tags are kept byte-for-byte (chunking parses them).
* Paragraph breaks (blank lines) are kept as exactly ``"\\n\\n"``; a single line
  break is kept as ``"\\n"``; every other run of whitespace becomes one space.

Reading choices (see docs in ``kanitts.text.__init__`` too)
----------------------------------------------------------
* English 4-digit integers 1000-2099 without a thousands separator are read as years
  ("1999" -> "nineteen ninety-nine"); amounts, units and percentages never are.
* English times: 12-hour reading; 24-hour times are converted ("15:45" ->
  "three forty-five PM"); ":00" -> "o'clock" when there is no AM/PM.
* Spanish times: up to 12 h the colloquial reading ("3:15" -> "tres y cuarto",
  "3:30" -> "tres y media", "9:00" -> "nueve en punto"); 13-23 h and 0 h the 24-hour
  reading ("15:45" -> "quince cuarenta y cinco", "15:00" -> "quince horas").
  "a. m."/"p. m." become "de la mañana"/"de la tarde"/"de la noche".
* Dates: "March fifteenth, twenty twenty-four" (en); "quince de marzo de dos mil
  veinticuatro" (es).  Numeric dates are M/D/Y in English (D/M/Y when the first
  field is over 12) and D/M/Y in Spanish.
* Digit strings over 15 digits (or with a leading zero) are read digit by digit.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

from num2words import num2words

__all__ = ["normalize"]

_MAX_CARDINAL_DIGITS = 15

# ----------------------------------------------------------------------------------
# Sanitizing
# ----------------------------------------------------------------------------------

#: ``<break ...>`` tags are protected; the chunker decides whether they are valid.
_BREAK_TAG_RE = re.compile(r"<break\b[^<>]{0,200}>", re.IGNORECASE)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_EMOJI_RE = re.compile(
    "["
    "\U0001F000-\U0001FAFF"  # pictographs, emoticons, transport, flags, ...
    "\u2600-\u27BF"  # misc symbols, dingbats
    "\u2B00-\u2BFF"  # arrows, stars
    "\uFE00-\uFE0F"  # variation selectors
    "\u20E3"  # combining keycap
    "\U000E0000-\U000E007F"  # tag characters (flag sequences)
    "]+"
)


def _sanitize(text: str) -> str:
    text = _SURROGATE_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2029", "\n\n").replace("\u2028", "\n").replace("\x85", "\n")
    text = text.replace("\x0b", "\n").replace("\x0c", "\n\n")
    text = _EMOJI_RE.sub(" ", text)
    out = []
    for ch in text:
        if ch == "\n":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" " if ch == "\t" else "")
        elif cat == "Cf":
            out.append("\u200c" if ch == "\u200c" else "")  # keep ZWNJ (Persian etc.)
        elif cat in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif cat in ("Co", "Cn", "Cs"):
            out.append("")
        else:
            out.append(ch)
    return "".join(out)


def _collapse_ws(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{2,}", "\n\n", text)
    return text


# ----------------------------------------------------------------------------------
# Number reading
# ----------------------------------------------------------------------------------

_DIGIT_WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
}

_ES_APOCOPE_RE = re.compile(r"\b(veinti)?uno(?= (?:mil|millón|millones|billón|billones)\b)")


def _es_fix(words: str) -> str:
    # num2words says "veintiuno mil"; Spanish says "veintiún mil", "un millón".
    return _ES_APOCOPE_RE.sub(lambda m: "veintiún" if m.group(1) else "un", words)


def _digits(digits: str, lang: str) -> str:
    table = _DIGIT_WORDS[lang]
    return " ".join(table[int(d)] for d in digits if d.isdigit() and d.isascii())


@lru_cache(maxsize=4096)
def _cardinal(digits: str, lang: str, year_ok: bool = False) -> str:
    """Words for an ASCII digit string (no separators)."""
    if not digits:
        return ""
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return _digits(digits, lang)
    n = int(digits)
    if lang == "en":
        if year_ok and len(digits) == 4 and 1000 <= n <= 2099:
            return num2words(n, lang="en", to="year").replace(",", "")
        return num2words(n, lang="en").replace(",", "")
    return _es_fix(num2words(n, lang="es"))


def _es_gender(words: str, *, feminine: bool, before_noun: bool) -> str:
    """Adjust a Spanish cardinal that precedes a noun ("uno" -> "un"/"una")."""
    if not before_noun:
        return words
    if feminine:
        # only the part after the last million-word agrees with the noun
        head, sep, tail = words.rpartition("mill")
        if sep:
            cut = tail.find(" ")
            head, tail = head + sep + tail[: cut + 1 if cut >= 0 else len(tail)], tail[cut + 1 :] if cut >= 0 else ""
        else:
            head, tail = "", words
        tail = re.sub(r"ientos\b", "ientas", tail)
        tail = re.sub(r"\bquinientos\b", "quinientas", tail)
        tail = re.sub(r"uno\b", "una", tail)
        tail = re.sub(r"\bun\b", "una", tail) if tail.strip() == "un" else tail
        return head + tail
    words = re.sub(r"veintiuno$", "veintiún", words)
    return re.sub(r"\buno$", "un", words)


class _Num:
    """A parsed written number."""

    __slots__ = ("int_digits", "frac_digits", "sep_word", "grouped")

    def __init__(self, int_digits: str, frac_digits: str, sep_word: str, grouped: bool):
        self.int_digits = int_digits
        self.frac_digits = frac_digits
        self.sep_word = sep_word
        self.grouped = grouped

    @property
    def is_one(self) -> bool:
        return self.int_digits.lstrip("0") == "1" and not self.frac_digits.strip("0")


# Number shapes (the grouped form is tried first).
_NUM = {
    "en": r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?",
    "es": r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?",
}


def _parse_num(s: str, lang: str) -> _Num:
    if lang == "en":
        int_part, _, frac = s.partition(".")
        grouped = "," in int_part
        return _Num(int_part.replace(",", ""), frac, "point", grouped)
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", s):
        int_part, _, frac = s.partition(",")
        return _Num(int_part.replace(".", ""), frac, "coma", True)
    if "," in s:
        int_part, _, frac = s.partition(",")
        return _Num(int_part, frac, "coma", False)
    int_part, _, frac = s.partition(".")
    return _Num(int_part, frac, "punto", False)


def _frac_words(frac: str, lang: str) -> str:
    if lang == "es" and len(frac) <= 2:
        zeros = len(frac) - len(frac.lstrip("0"))
        rest = frac.lstrip("0")
        parts = ["cero"] * zeros + ([_cardinal(rest, lang)] if rest else [])
        return " ".join(parts)
    return _digits(frac, lang)


def _read_num(num: _Num, lang: str, *, year_ok: bool = False, noun_fem: bool | None = None) -> str:
    """Read a parsed number; ``noun_fem`` set means a noun follows (es agreement)."""
    words = _cardinal(num.int_digits, lang, year_ok and not num.grouped and not num.frac_digits)
    if lang == "es" and noun_fem is not None and not num.frac_digits:
        words = _es_gender(words, feminine=noun_fem, before_noun=True)
    if num.frac_digits:
        words = f"{words} {num.sep_word} {_frac_words(num.frac_digits, lang)}"
    return words


def _read_str(s: str, lang: str, **kw) -> str:
    return _read_num(_parse_num(s, lang), lang, **kw)


# ----------------------------------------------------------------------------------
# Rule plumbing
# ----------------------------------------------------------------------------------

Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]


def _safe(fn: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
    def wrapper(m: re.Match[str]) -> str:
        try:
            out = fn(m)
        except Exception:  # noqa: BLE001 - a failing rule keeps the token as written
            return m.group(0)
        return m.group(0) if out is None else out

    return wrapper


def _pad(m: re.Match[str], words: str) -> str:
    """Surround ``words`` with spaces where the match touches a letter or digit."""
    s = m.string
    before = s[m.start() - 1] if m.start() > 0 else " "
    after = s[m.end()] if m.end() < len(s) else " "
    if before.isalnum():
        words = " " + words
    if after.isalnum():
        words = words + " "
    return words


# ----------------------------------------------------------------------------------
# Language data
# ----------------------------------------------------------------------------------

_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre"],
}
_EN_MONTH_ABBR = {
    "Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "Jun": 6, "Jul": 7, "Aug": 8,
    "Sep": 9, "Sept": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}
_EN_MONTH_NUM = {name: i + 1 for i, name in enumerate(_MONTHS["en"])} | _EN_MONTH_ABBR

# currency code -> (singular, plural, minor singular, minor plural, feminine)
_CURRENCY = {
    "en": {
        "USD": ("dollar", "dollars", "cent", "cents", False),
        "USD_US": ("US dollar", "US dollars", "cent", "cents", False),
        "EUR": ("euro", "euros", "cent", "cents", False),
        "GBP": ("pound", "pounds", "penny", "pence", False),
        "JPY": ("yen", "yen", None, None, False),
    },
    "es": {
        "USD": ("dólar", "dólares", "centavo", "centavos", False),
        "USD_US": ("dólar estadounidense", "dólares estadounidenses", "centavo", "centavos", False),
        "EUR": ("euro", "euros", "céntimo", "céntimos", False),
        "GBP": ("libra", "libras", "penique", "peniques", True),
        "JPY": ("yen", "yenes", None, None, False),
    },
}
_CUR_SYMBOL = {"US$": "USD_US", "$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY",
               "USD": "USD", "EUR": "EUR", "GBP": "GBP", "JPY": "JPY"}
_MAGNITUDE = {
    "en": r"thousand|million|billion|trillion|k|K|m|M|bn|BN",
    "es": r"mil millones|millones|millón|mil|billones|billón",
}
_EN_MAG_WORD = {"k": "thousand", "K": "thousand", "m": "million", "M": "million",
                "bn": "billion", "BN": "billion"}

# unit -> en (singular, plural), es (singular, plural, feminine)
_UNITS: dict[str, tuple[tuple[str, str], tuple[str, str, bool]]] = {
    "km/h": (("kilometer per hour", "kilometers per hour"), ("kilómetro por hora", "kilómetros por hora", False)),
    "kph": (("kilometer per hour", "kilometers per hour"), ("kilómetro por hora", "kilómetros por hora", False)),
    "mph": (("mile per hour", "miles per hour"), ("milla por hora", "millas por hora", True)),
    "m/s": (("meter per second", "meters per second"), ("metro por segundo", "metros por segundo", False)),
    "km": (("kilometer", "kilometers"), ("kilómetro", "kilómetros", False)),
    "cm": (("centimeter", "centimeters"), ("centímetro", "centímetros", False)),
    "mm": (("millimeter", "millimeters"), ("milímetro", "milímetros", False)),
    "m": (("meter", "meters"), ("metro", "metros", False)),
    "mi": (("mile", "miles"), ("milla", "millas", True)),
    "ft": (("foot", "feet"), ("pie", "pies", False)),
    "yd": (("yard", "yards"), ("yarda", "yardas", True)),
    "kg": (("kilogram", "kilograms"), ("kilogramo", "kilogramos", False)),
    "mg": (("milligram", "milligrams"), ("miligramo", "miligramos", False)),
    "g": (("gram", "grams"), ("gramo", "gramos", False)),
    "lbs": (("pound", "pounds"), ("libra", "libras", True)),
    "lb": (("pound", "pounds"), ("libra", "libras", True)),
    "oz": (("ounce", "ounces"), ("onza", "onzas", True)),
    "ml": (("milliliter", "milliliters"), ("mililitro", "mililitros", False)),
    "mL": (("milliliter", "milliliters"), ("mililitro", "mililitros", False)),
    "l": (("liter", "liters"), ("litro", "litros", False)),
    "L": (("liter", "liters"), ("litro", "litros", False)),
    "°C": (("degree Celsius", "degrees Celsius"), ("grado centígrado", "grados centígrados", False)),
    "ºC": (("degree Celsius", "degrees Celsius"), ("grado centígrado", "grados centígrados", False)),
    "°F": (("degree Fahrenheit", "degrees Fahrenheit"), ("grado Fahrenheit", "grados Fahrenheit", False)),
    "ºF": (("degree Fahrenheit", "degrees Fahrenheit"), ("grado Fahrenheit", "grados Fahrenheit", False)),
    "°": (("degree", "degrees"), ("grado", "grados", False)),
    "KB": (("kilobyte", "kilobytes"), ("kilobyte", "kilobytes", False)),
    "kB": (("kilobyte", "kilobytes"), ("kilobyte", "kilobytes", False)),
    "MB": (("megabyte", "megabytes"), ("megabyte", "megabytes", False)),
    "GB": (("gigabyte", "gigabytes"), ("gigabyte", "gigabytes", False)),
    "TB": (("terabyte", "terabytes"), ("terabyte", "terabytes", False)),
    "Mbps": (("megabit per second", "megabits per second"), ("megabit por segundo", "megabits por segundo", False)),
    "Gbps": (("gigabit per second", "gigabits per second"), ("gigabit por segundo", "gigabits por segundo", False)),
    "GHz": (("gigahertz", "gigahertz"), ("gigahercio", "gigahercios", False)),
    "MHz": (("megahertz", "megahertz"), ("megahercio", "megahercios", False)),
    "kHz": (("kilohertz", "kilohertz"), ("kilohercio", "kilohercios", False)),
    "Hz": (("hertz", "hertz"), ("hercio", "hercios", False)),
    "kWh": (("kilowatt hour", "kilowatt hours"), ("kilovatio hora", "kilovatios hora", False)),
    "kW": (("kilowatt", "kilowatts"), ("kilovatio", "kilovatios", False)),
    "ms": (("millisecond", "milliseconds"), ("milisegundo", "milisegundos", False)),
    "min": (("minute", "minutes"), ("minuto", "minutos", False)),
    "h": (("hour", "hours"), ("hora", "horas", True)),
    "s": (("second", "seconds"), ("segundo", "segundos", False)),
}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))

# abbreviation -> (expansion, may_end_sentence)
_ABBR = {
    "en": {
        "Dr.": ("Doctor", False), "Mr.": ("Mister", False), "Mrs.": ("Missus", False),
        "Ms.": ("Miz", False), "Prof.": ("Professor", False), "Jr.": ("Junior", True),
        "Sr.": ("Senior", True), "Mt.": ("Mount", False), "Capt.": ("Captain", False),
        "Sgt.": ("Sergeant", False), "Gov.": ("Governor", False), "Rev.": ("Reverend", False),
        "Gen.": ("General", False), "Lt.": ("Lieutenant", False),
        "vs.": ("versus", False), "etc.": ("et cetera", True), "e.g.": ("for example", False),
        "i.e.": ("that is", False), "approx.": ("approximately", False),
        "Ave.": ("Avenue", True), "Blvd.": ("Boulevard", True), "Inc.": ("Incorporated", True),
        "Ltd.": ("Limited", True), "Fig.": ("Figure", False), "fig.": ("figure", False),
        "Dept.": ("Department", True), "Jan.": ("January", False), "Feb.": ("February", False),
        "Aug.": ("August", False), "Sept.": ("September", False), "Oct.": ("October", False),
        "Nov.": ("November", False), "Dec.": ("December", False),
    },
    "es": {
        "Sr.": ("señor", False), "Sra.": ("señora", False), "Srta.": ("señorita", False),
        "Sres.": ("señores", False), "Dr.": ("doctor", False), "Dra.": ("doctora", False),
        "Lic.": ("licenciado", False), "Lcda.": ("licenciada", False), "Ing.": ("ingeniero", False),
        "Prof.": ("profesor", False), "Profa.": ("profesora", False), "Ud.": ("usted", True),
        "Uds.": ("ustedes", True), "Vd.": ("usted", True), "Vds.": ("ustedes", True),
        "Dña.": ("doña", False), "Sto.": ("santo", False), "Sta.": ("santa", False),
        "etc.": ("etcétera", True), "p. ej.": ("por ejemplo", False), "p.ej.": ("por ejemplo", False),
        "aprox.": ("aproximadamente", False), "Av.": ("avenida", False), "Avda.": ("avenida", False),
        "EE. UU.": ("Estados Unidos", True), "EE.UU.": ("Estados Unidos", True),
        "pág.": ("página", False), "págs.": ("páginas", False), "tel.": ("teléfono", False),
        "Tel.": ("teléfono", False), "vs.": ("versus", False), "núm.": ("número", False),
        "n.º": ("número", False), "nº": ("número", False), "Nº": ("número", False),
        "N.º": ("número", False),
    },
}

_SYMBOLS = {
    "en": {"&": "and", "+": "plus", "=": "equals", "%": "percent", "@": "at",
           "~": "about", "×": "times", "©": "copyright", "®": "registered",
           "™": "trademark", "§": "section", "°": "degrees"},
    "es": {"&": "y", "+": "más", "=": "igual a", "%": "por ciento", "@": "arroba",
           "~": "aproximadamente", "×": "por", "©": "copyright", "®": "marca registrada",
           "™": "marca", "§": "sección", "°": "grados"},
}

_URL_WORDS = {
    "en": {".": "dot", "/": "slash", "-": "dash", "_": "underscore", "@": "at", ":": "colon",
           "?": "question mark", "=": "equals", "&": "and", "#": "hash", "+": "plus",
           "~": "tilde", "%": "percent"},
    "es": {".": "punto", "/": "barra", "-": "guion", "_": "guion bajo", "@": "arroba",
           ":": "dos puntos", "?": "interrogación", "=": "igual", "&": "y", "#": "almohadilla",
           "+": "más", "~": "virgulilla", "%": "por ciento"},
}

_TLDS = ("com|org|net|edu|gov|io|ai|es|mx|ar|co|cl|pe|uk|de|fr|it|info|dev|app|tv|me|us|"
         "ca|au|eu|ly|gg|xyz")

_ES_FUNCTION_WORDS = frozenset(
    "de del y e o u a al en por para con que ni es son más menos entre sobre sin "
    "hasta desde x veces".split()
)
_ES_MASC_A = frozenset(
    "día días mapa mapas problema problemas programa programas sistema sistemas tema temas "
    "idioma idiomas clima planeta planetas sofá sofás poema poemas dilema dilemas".split()
)


def _es_feminine(noun: str) -> bool:
    """Guess the gender of a Spanish noun from its ending (good enough for agreement)."""
    if noun in _ES_MASC_A:
        return False
    return bool(re.search(r"(a|as|ción|ciones|sión|siones|dad|dades|tad|tades|tud|tudes)$", noun))


# ----------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------


def _spell_token(tok: str, lang: str) -> str:
    """Read one URL/e-mail token: words stay, digits become numbers."""
    parts = []
    for piece in re.findall(r"\d+|[^\d]+", tok):
        parts.append(_cardinal(piece, lang) if piece.isdigit() and piece.isascii() else piece)
    return " ".join(parts)


def _read_address(addr: str, lang: str) -> str:
    words = _URL_WORDS[lang]
    out: list[str] = []
    for piece in re.split(r"([./\-_@:?=&#+~%])", addr):
        if not piece:
            continue
        if piece in words:
            out.append(words[piece])
        elif piece.lower() == "www":
            out.append("w w w")
        else:
            out.append(_spell_token(piece, lang))
    return " ".join(out)


def _make_rules(lang: str) -> list[Rule]:
    NUM = _NUM[lang]
    rules: list[Rule] = []

    def add(pattern: str, fn: Callable[[re.Match[str]], str], flags: int = 0) -> None:
        rules.append((re.compile(pattern, flags), _safe(fn)))

    trail = r"(?<![.,;:!?)\]'\"])"  # address must not end in punctuation

    # --- e-mail addresses and URLs -----------------------------------------------
    def email(m: re.Match[str]) -> str:
        return _pad(m, _read_address(m.group(0), lang))

    add(r"(?<![\w.+\-])[\w.+\-]*\w@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}\b", email)

    def url(m: re.Match[str]) -> str:
        s = m.group(0)
        s = re.sub(r"^(?:https?|ftp)://", "", s, flags=re.I).rstrip("/")
        return _pad(m, _read_address(s, lang))

    add(r"(?<![\w@])(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", url, re.I)
    add(r"(?<![\w.@/\-])[A-Za-z0-9][A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)*\.(?:" + _TLDS
        + r")\b(?!\.\w)(?:/[^\s<>\"'`]*" + r"[^\s<>\"'`.,;:!?)\]])?" + trail, url, re.I)

    # --- dates --------------------------------------------------------------------
    def date_words(year: str | None, month: int, day: int) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise ValueError("not a date")
        name = _MONTHS[lang][month - 1]
        if lang == "en":
            out = f"{name} {num2words(day, lang='en', to='ordinal')}"
            if year:
                out += f", {_cardinal(year, 'en', True)}"
            return out
        out = f"{_cardinal(str(day), 'es')} de {name}"
        if year:
            out += f" de {_cardinal(year, 'es')}"
        return out

    add(r"(?<![\w\-./])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w\-]|[.,]\d)",
        lambda m: date_words(m.group(1), int(m.group(2)), int(m.group(3))))

    def numeric_date(m: re.Match[str]) -> str:
        a, b, year = int(m.group(1)), int(m.group(3)), m.group(4)
        if lang == "en":
            month, day = (b, a) if a > 12 else (a, b)
        else:
            day, month = (b, a) if (b > 12 and a <= 12) else (a, b)
        return date_words(year, month, day)

    add(r"(?<![\w\-./])(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})(?![\w\-]|[.,/]\d)", numeric_date)

    if lang == "en":
        month_alt = "|".join(sorted(_EN_MONTH_NUM, key=len, reverse=True))

        def month_day(m: re.Match[str]) -> str:
            return date_words(m.group(3), _EN_MONTH_NUM[m.group(1)], int(m.group(2)))

        add(r"\b(" + month_alt + r")\.? (\d{1,2})(?:st|nd|rd|th)?\b(?:,? (\d{4})\b)?", month_day)

        def day_month(m: re.Match[str]) -> str:
            month = _EN_MONTH_NUM[m.group(2)]
            out = f"the {num2words(int(m.group(1)), lang='en', to='ordinal')} of {_MONTHS['en'][month - 1]}"
            if not 1 <= int(m.group(1)) <= 31:
                raise ValueError
            if m.group(3):
                out += f", {_cardinal(m.group(3), 'en', True)}"
            return out

        add(r"(?<![\w.,])(\d{1,2})(?:st|nd|rd|th)? (?:of )?(" + month_alt + r")\b\.?(?:,? (\d{4})\b)?",
            day_month)

        # decades: 1990s, '90s, 80s
        def decade(m: re.Match[str]) -> str:
            d = m.group(1) or ""
            if len(d) == 4:
                words = _cardinal(d, "en", True)
            else:
                words = num2words(int(d), lang="en")
            words = re.sub(r"y$", "ies", words) if words.endswith("y") else words + "s"
            return words

        add(r"(?<![\w.,])'?(\d{2}|1\d{2}0|20\d0)'?s\b", decade)

    # --- times --------------------------------------------------------------------
    if lang == "en":
        ampm = r"(?:\s?([AaPp])\.?\s?[Mm]\b\.?)"
    else:
        ampm = r"(?:\s?([AaPp])\.?\s?[Mm]\b\.?)"

    def keep_period(m: re.Match[str], words: str) -> str:
        # "at 3 p.m. Then" -> the dot of "p.m." also ended the sentence
        if m.group(0).endswith("."):
            rest = m.string[m.end():]
            if not rest.strip() or re.match(r"\s+[\"'(¿¡]?[A-ZÁÉÍÓÚÑ]", rest) or rest.startswith("\n"):
                return words + "."
        return words

    def time_words(h: int, mi: int, sec: int | None, ap: str | None) -> str:
        if h > 24 or mi > 59 or (sec is not None and sec > 59):
            raise ValueError("not a time")
        if ap and not 1 <= h <= 12:
            raise ValueError("not a 12-hour time")
        if lang == "en":
            suffix = ""
            if ap:
                suffix = " AM" if ap in "Aa" else " PM"
            elif h == 0 or h == 24:
                h, suffix = 12, " AM"
            elif h > 12:
                h, suffix = h - 12, " PM"
            hw = num2words(h, lang="en")
            if mi == 0:
                out = hw + (suffix if suffix else " o'clock")
            elif mi < 10:
                out = f"{hw} oh {num2words(mi, lang='en')}{suffix}"
            else:
                out = f"{hw} {num2words(mi, lang='en')}{suffix}"
            if sec:
                out += f" and {num2words(sec, lang='en')} second{'s' if sec != 1 else ''}"
            return out
        # Spanish
        hw = _es_gender(num2words(h, lang="es"), feminine=True, before_noun=True)
        if ap or 1 <= h <= 12:
            if mi == 0:
                out = f"{hw} en punto" if not ap else hw
            elif mi == 15:
                out = f"{hw} y cuarto"
            elif mi == 30:
                out = f"{hw} y media"
            else:
                out = f"{hw} y {num2words(mi, lang='es')}"
            if ap:
                if ap in "Aa":
                    part = "de la noche" if h == 12 else "de la madrugada" if h < 6 else "de la mañana"
                else:
                    part = "del mediodía" if h == 12 else "de la tarde" if h < 8 else "de la noche"
                out += f" {part}"
        else:
            if mi == 0:
                out = f"{hw} horas"
            elif mi < 10:
                out = f"{hw} cero {num2words(mi, lang='es')}"
            else:
                out = f"{hw} {num2words(mi, lang='es')}"
        if sec:
            out += f" y {num2words(sec, lang='es')} segundo{'s' if sec != 1 else ''}"
        return out

    def clock(m: re.Match[str]) -> str:
        sec = int(m.group(3)) if m.group(3) else None
        words = time_words(int(m.group(1)), int(m.group(2)), sec, m.group(4))
        return keep_period(m, words)

    add(r"(?<![\w:.,])(\d{1,2}):(\d{2})(?::(\d{2}))?" + ampm + r"?(?![\w:]|[.,]\d)", clock)

    def bare_ampm(m: re.Match[str]) -> str:
        return keep_period(m, time_words(int(m.group(1)), 0, None, m.group(2)))

    add(r"(?<![\w:.,])(\d{1,2})" + ampm + r"(?!\w)", bare_ampm)

    # --- currency -----------------------------------------------------------------
    mag_re = _MAGNITUDE[lang]

    def money(sign: str, code: str, num_s: str, mag: str | None) -> str:
        sing, plur, minor_s, minor_p, fem = _CURRENCY[lang][code]
        num = _parse_num(num_s, lang)
        minus = ("minus " if lang == "en" else "menos ") if sign else ""
        if mag:
            mag_w = _EN_MAG_WORD.get(mag, mag) if lang == "en" else mag
            if lang == "es" and num.is_one and mag in ("millones", "billones"):
                mag_w = mag[:-5] + "ón"
            amount = _read_num(num, lang, noun_fem=False if lang == "es" else None)
            link = " de " if lang == "es" and mag_w != "mil" else " "
            return f"{minus}{amount} {mag_w}{link}{plur}"
        frac = num.frac_digits
        if frac and (len(frac) > 2 or minor_s is None):
            return f"{minus}{_read_num(num, lang)} {plur}"
        cents = int(frac.ljust(2, "0")) if frac else 0
        major = int(num.int_digits) if len(num.int_digits) <= _MAX_CARDINAL_DIGITS else None
        parts = []
        if major is None or major != 0 or cents == 0:
            words = _read_num(_Num(num.int_digits, "", "", num.grouped), lang,
                              noun_fem=fem if lang == "es" else None)
            unit = sing if major == 1 else plur
            if lang == "es" and re.search(r"(millón|millones)$", words):
                unit = "de " + unit
            parts.append(f"{words} {unit}")
        if cents:
            cw = num2words(cents, lang=lang)
            if lang == "es":
                cw = _es_gender(cw, feminine=False, before_noun=True)
            parts.append(f"{cw} {minor_s if cents == 1 else minor_p}")
        joiner = " and " if lang == "en" else " con "
        return minus + joiner.join(parts)

    sym = r"(US\$|\$|€|£|¥)"
    add(r"(?<![\w.,])([\-−]?)" + sym + r" ?(" + NUM + r")(?:\s?(" + mag_re + r")\b)?(?![\d]|[.,]\d)",
        lambda m: _pad(m, money(m.group(1), _CUR_SYMBOL[m.group(2)], m.group(3), m.group(4))))
    add(r"(?<![\w.,])([\-−]?)(" + NUM + r")(?:\s?(" + mag_re + r"))? ?(US\$|€|\$|£|¥|USD|EUR|GBP|JPY)(?![\w$€£¥])",
        lambda m: _pad(m, money(m.group(1), _CUR_SYMBOL[m.group(4)], m.group(2), m.group(3))))

    # --- percentages ------------------------------------------------------------------
    pct = "percent" if lang == "en" else "por ciento"
    minus_w = "minus" if lang == "en" else "menos"
    add(r"(?<![\w.,])([\-−]?)(" + NUM + r") ?%",
        lambda m: (f"{minus_w} " if m.group(1) else "") + f"{_read_str(m.group(2), lang)} {pct}")

    # --- units --------------------------------------------------------------------
    def unit(m: re.Match[str]) -> str:
        num = _parse_num(m.group(2), lang)
        en, es = _UNITS[m.group(3)]
        if lang == "en":
            words = _read_num(num, lang)
            name = en[0] if num.is_one and not num.frac_digits else en[1]
        else:
            words = _read_num(num, lang, noun_fem=es[2])
            name = es[0] if num.is_one and not num.frac_digits else es[1]
        out = f"{words} {name}"
        if m.group(1):
            out = f"{minus_w} {out}"
        return _pad(m, out)

    add(r"(?<![\w.,])([\-−]?)(" + NUM + r") ?(" + _UNIT_ALT + r")(?![\w/°º])", unit)

    # --- ordinals -----------------------------------------------------------------
    if lang == "en":
        add(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th|ST|ND|RD|TH)\b",
            lambda m: num2words(int(m.group(1).replace(",", "")), lang="en", to="ordinal").replace(",", ""))
    else:

        def es_ord(m: re.Match[str]) -> str:
            words = num2words(int(m.group(1).replace(".", "")), lang="es", to="ordinal")
            suf = m.group(2)
            if suf in ("ª", "a", "ra"):
                words = re.sub(r"o\b", "a", words)
            elif suf == "er":
                words = re.sub(r"(primero|tercero)$", lambda x: x.group(1)[:-1], words)
            if m.group(3):
                words = re.sub(r"([oa])\b", r"\1s", words)
            return words

        add(r"(?<![\w.,])(\d{1,3}(?:\.\d{3})+|\d+)\.?(º|ª|er|ra|ro)(s)?(?!\w)", es_ord)

    # --- "No. 5", "#5", "~5", abbreviations ---------------------------------------------
    number_w = "number" if lang == "en" else "número"
    add(r"(?<![\w#])#(?=\d)", lambda m: _pad(m, number_w + " "))
    if lang == "en":
        add(r"\b(No|no|Nos|nos)\.(?= ?\d)", lambda m: "number" if m.group(1) in ("No", "no") else "numbers")
    add(r"(?<![\w~])~ ?(?=[\-−]?\d)", lambda m: _SYMBOLS[lang]["~"] + " ")

    abbrs = _ABBR[lang]
    abbr_alt = "|".join(re.escape(a) for a in sorted(abbrs, key=len, reverse=True))

    def abbr(m: re.Match[str]) -> str:
        key = m.group(1)
        word, may_end = abbrs[key]
        if lang == "en" and key == "St.":
            nxt = m.string[m.end():]
            prev = m.string[: m.start()].rstrip().rsplit(" ", 1)[-1]
            word = "Street" if (prev[:1].isupper() or not re.match(r" ?[A-Z]", nxt)) else "Saint"
            may_end = word == "Street"
        if may_end:
            rest = m.string[m.end():]
            if not rest.strip() or re.match(r"\s+[\"'(¿¡]?[A-ZÁÉÍÓÚÑ]", rest) or rest.startswith("\n"):
                word += "."
        return _pad(m, word)

    if lang == "en":
        abbrs = dict(abbrs)
        abbrs["St."] = ("Saint", False)
        abbr_alt = "|".join(re.escape(a) for a in sorted(abbrs, key=len, reverse=True))
    add(r"(?<![\w.])(" + abbr_alt + r")", abbr)
    if lang == "en":
        add(r"\bvs\b(?!\.)", lambda m: "versus")

    # --- versions / IP-like dotted numbers -------------------------------------------
    point_w = "point" if lang == "en" else "punto"
    add(r"(?<![\w.,])\d+(?:\.\d+){2,}(?![\w]|\.\d)",
        lambda m: f" {point_w} ".join(_cardinal(p, lang) for p in m.group(0).split(".")))

    by_w = "by" if lang == "en" else "por"
    add(r"(?<=\d) ?[x×] ?(?=\d)", lambda m: f" {by_w} ")  # dimensions: 4x4, 1920x1080
    add(r"(?<=\d) ?\* ?(?=\d)", lambda m: " " + _SYMBOLS[lang]["×"] + " ")

    # --- phone numbers: 555-1234, 555-123-4567, (555) 123-4567 ---------------------
    def phone(m: re.Match[str]) -> str:
        groups = re.findall(r"\d+", m.group(0))
        return _pad(m, ", ".join(_digits(g, lang) for g in groups))

    add(r"(?<![\w.,/\-])(?:\(\d{3}\) ?|\d{3}-)?\d{3}-\d{4}(?![\w\-]|[.,]\d)", phone)

    # --- ranges ---------------------------------------------------------------------
    to_w = "to" if lang == "en" else "a"
    add(r"(?<![\w.,/\-−])(" + NUM + r")(?:-|–| – )(" + NUM + r")(?![\w\-–]|[.,]\d)",
        lambda m: f"{_read_str(m.group(1), lang, year_ok=True)} {to_w} {_read_str(m.group(2), lang, year_ok=True)}")

    # --- negative numbers, plain numbers ------------------------------------------------
    add(r"(?<![\w.,)\]])[\-−](" + NUM + r")(?![\w]|[.,]\d)",
        lambda m: f"{minus_w} {_read_str(m.group(1), lang, year_ok=True)}")
    def plain(m: re.Match[str]) -> str:
        num = _parse_num(m.group(1), lang)
        if lang == "es" and not num.frac_digits and not (len(num.int_digits) == 4 and not num.grouped):
            nxt = re.match(r" ([a-záéíóúñü]+)", m.string[m.end():])
            if nxt and nxt.group(1) not in _ES_FUNCTION_WORDS:
                return _read_num(num, lang, noun_fem=_es_feminine(nxt.group(1)))
        return _read_num(num, lang, year_ok=True)

    add(r"(?<![\w.,])(" + NUM + r")(?![\w]|[.,]\d)", plain)

    # --- symbols ----------------------------------------------------------------------
    symbols = _SYMBOLS[lang]
    add(r"[&+=%@~×©®™§°]", lambda m: _pad(m, f" {symbols[m.group(0)]} ").replace("  ", " "))
    add(r"#(?=\w)", lambda m: "hashtag " if lang == "en" else "hashtag ")
    add(r"\*+", lambda m: " ")

    # --- anything numeric left (glued to letters: "mp3", "A4") --------------------------
    add(r"\d+", lambda m: _pad(m, _cardinal(m.group(0), lang)) if m.group(0).isascii() else m.group(0))
    return rules


@lru_cache(maxsize=None)
def _rules_for(lang: str) -> list[Rule]:
    return _make_rules(lang)


def _base_lang(language: str) -> str:
    lang = (language or "").strip().lower().replace("_", "-").split("-")[0]
    return lang


def _apply_rules(segment: str, lang: str) -> str:
    for pattern, fn in _rules_for(lang):
        try:
            segment = pattern.sub(fn, segment)
        except Exception:  # noqa: BLE001 - a broken rule must never break the request
            continue
    return segment


def _normalize_segment(segment: str, lang: str) -> str:
    if lang in ("en", "es"):
        paras = re.split(r"(\n+)", segment)
        segment = "".join(p if p.startswith("\n") else _apply_rules(p, lang) for p in paras)
    return _collapse_ws(segment)


def normalize(text: str, language: str) -> str:
    """Rewrite ``text`` for speech in ``language`` (see module docstring)."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # noqa: BLE001
            return ""
    try:
        text = _sanitize(text)
    except Exception:  # noqa: BLE001
        text = _SURROGATE_RE.sub("", text)
    lang = _base_lang(language if isinstance(language, str) else "")
    try:
        pieces = []
        pos = 0
        for m in _BREAK_TAG_RE.finditer(text):
            pieces.append(_normalize_segment(text[pos:m.start()], lang))
            pieces.append(m.group(0))
            pos = m.end()
        pieces.append(_normalize_segment(text[pos:], lang))
        out = "".join(pieces)
    except Exception:  # noqa: BLE001
        out = _collapse_ws(text)
    return out.strip()
