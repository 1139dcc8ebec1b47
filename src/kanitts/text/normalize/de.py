"""German readings.

* Thousands grouped with dots or apostrophes ("1.234.567", "1'000"), decimals with a
  comma ("3,5" -> "drei Komma fünf").
* Years 1100-1999 read as years ("neunzehnhundertneunundneunzig") after "im/seit/bis..."
  or alone; before a noun ("1999 Menschen") as a quantity.
* Ordinals are written with a dot and inflect after the word before them: "am 3. Mai" ->
  "am dritten Mai", "der 2. Platz" -> "der zweite Platz", "3.5.2024" -> "dritter Mai
  zweitausendvierundzwanzig".
* Times: "15:30 Uhr" / "15.30 Uhr" -> "fünfzehn Uhr dreißig"; money: "5,50 €" -> "fünf
  Euro fünfzig"; "1 €" -> "ein Euro", "1 h" -> "eine Stunde".
* Fractions: "1/2" -> "ein halb", "1 1/2" -> "eineinhalb", "3/4" -> "drei Viertel";
  Roman numerals after names: "Ludwig XIV." -> "Ludwig der Vierzehnte".
"""

from __future__ import annotations

import re

from kanitts.text.normalize.base import AddRule, Language, Num, word_before

MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
          "November", "Dezember")
_MONTH_ABBR = {"Jan": 1, "Feb": 2, "Mär": 3, "Apr": 4, "Jun": 6, "Jul": 7, "Aug": 8, "Sep": 9, "Sept": 9,
               "Okt": 10, "Nov": 11, "Dez": 12}

_UNITS = {
    "km/h": ("Kilometer pro Stunde", "Kilometer pro Stunde", False),
    "mph": ("Meile pro Stunde", "Meilen pro Stunde", True), "m/s": ("Meter pro Sekunde", "Meter pro Sekunde", False),
    "km": ("Kilometer", "Kilometer", False), "cm": ("Zentimeter", "Zentimeter", False),
    "mm": ("Millimeter", "Millimeter", False), "m": ("Meter", "Meter", False), "mi": ("Meile", "Meilen", True),
    "ft": ("Fuß", "Fuß", False), "kg": ("Kilogramm", "Kilogramm", False), "mg": ("Milligramm", "Milligramm", False),
    "g": ("Gramm", "Gramm", False), "t": ("Tonne", "Tonnen", True), "lb": ("Pfund", "Pfund", False),
    "oz": ("Unze", "Unzen", True), "ml": ("Milliliter", "Milliliter", False),
    "mL": ("Milliliter", "Milliliter", False), "l": ("Liter", "Liter", False), "L": ("Liter", "Liter", False),
    "°C": ("Grad Celsius", "Grad Celsius", False), "ºC": ("Grad Celsius", "Grad Celsius", False),
    "°F": ("Grad Fahrenheit", "Grad Fahrenheit", False), "ºF": ("Grad Fahrenheit", "Grad Fahrenheit", False),
    "°": ("Grad", "Grad", False), "KB": ("Kilobyte", "Kilobyte", False), "kB": ("Kilobyte", "Kilobyte", False),
    "MB": ("Megabyte", "Megabyte", False), "GB": ("Gigabyte", "Gigabyte", False),
    "TB": ("Terabyte", "Terabyte", False), "Mbit/s": ("Megabit pro Sekunde", "Megabit pro Sekunde", False),
    "Mbps": ("Megabit pro Sekunde", "Megabit pro Sekunde", False), "GHz": ("Gigahertz", "Gigahertz", False),
    "MHz": ("Megahertz", "Megahertz", False), "kHz": ("Kilohertz", "Kilohertz", False),
    "Hz": ("Hertz", "Hertz", False), "kWh": ("Kilowattstunde", "Kilowattstunden", True),
    "kW": ("Kilowatt", "Kilowatt", False), "W": ("Watt", "Watt", False), "V": ("Volt", "Volt", False),
    "ms": ("Millisekunde", "Millisekunden", True), "min": ("Minute", "Minuten", True),
    "Std.": ("Stunde", "Stunden", True), "h": ("Stunde", "Stunden", True), "s": ("Sekunde", "Sekunden", True),
}

_ABBR = {
    "z. B.": ("zum Beispiel", False), "z.B.": ("zum Beispiel", False), "d. h.": ("das heißt", False),
    "d.h.": ("das heißt", False), "u. a.": ("unter anderem", False), "u.a.": ("unter anderem", False),
    "usw.": ("und so weiter", True), "bzw.": ("beziehungsweise", False), "ca.": ("circa", False),
    "evtl.": ("eventuell", False), "ggf.": ("gegebenenfalls", False), "inkl.": ("inklusive", False),
    "zzgl.": ("zuzüglich", False), "Nr.": ("Nummer", False), "Str.": ("Straße", True), "Dr.": ("Doktor", False),
    "Prof.": ("Professor", False), "Hr.": ("Herr", False), "Hrn.": ("Herrn", False), "Fr.": ("Frau", False),
    "St.": ("Sankt", False), "Mio.": ("Millionen", True), "Mrd.": ("Milliarden", True),
    "Tsd.": ("Tausend", True), "Jh.": ("Jahrhundert", True), "v. Chr.": ("vor Christus", True),
    "n. Chr.": ("nach Christus", True), "vgl.": ("vergleiche", False), "s. o.": ("siehe oben", True),
    "s. u.": ("siehe unten", True), "u. U.": ("unter Umständen", False), "z. T.": ("zum Teil", False),
    "Tel.": ("Telefon", False), "GmbH": ("G m b H", False), "Abs.": ("Absatz", False),
}

_FEM_END = re.compile(r"(e|ung|heit|keit|schaft|ion|tät|ik|ur|ei|in)$")
_MASC = frozenset("euro dollar cent kilometer meter liter grad löffel teelöffel esslöffel tag monat "
                  "becher rappen franken yen".split())
_NEUTER = frozenset("kilogramm gramm pfund jahr prozent kilo glas stück mal".split())
_NOT_NOUNS = frozenset("Die Der Das Ich Sie Er Es Wir Ihr Und Oder Aber Uhr".split())
_SENTENCE_OPENERS = frozenset("Der Die Das Dann Er Sie Es Ich Wir Ihr Man Aber Und Doch Heute Morgen Danach "
                              "Im Am In Auf Mit Wenn Als Da So Auch Nun Jetzt Hier Dort Ein Eine Dies Diese "
                              "Dieser Dieses Damit Deshalb Trotzdem Später".split())
_NEXT_WORD_RE = re.compile(r"\s+([A-ZÄÖÜ]\w*)")
_ORD_INFLECT_N = frozenset("am im vom zum beim dem den des ab seit bis zur ins vor nach".split())
_ORD_ARTICLE = frozenset("der die das".split())
_ORD_NOUNS = ("Jahrhundert|Jahrhunderts|Platz|Stock|Etage|Klasse|Mal|Tag|Kapitel|Auflage|Runde|Liga|"
              "Geburtstag|Jahrestag|Stelle|Quartal|Halbjahr|Woche|Monat|Preis|Sieger|Teil|Band")


def gender(noun: str) -> str:
    """Guess "f", "m" or "n" for a German noun (agreement of ein/eine/halb)."""
    low = noun.lower()
    if low in _MASC:
        return "m"
    if low in _NEUTER:
        return "n"
    return "f" if _FEM_END.search(low) else "m"


def inflect_ordinal(words: str, prev: str) -> str:
    """"dritte" after "am" -> "dritten", after "der" -> "dritte", alone -> "dritter"."""
    if prev in _ORD_INFLECT_N:
        return words + "n"
    if prev in _ORD_ARTICLE:
        return words
    return words + "r"


class German(Language):
    code = "de"
    num_re = (r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d{1,3}(?:'\d{3})+(?:,\d+)?|\d{1,3}(?: \d{3}){2,4}(?![\d])"
              r"|\d+(?:[.,]\d+)?")
    months = MONTHS
    month_lookup = {name: i + 1 for i, name in enumerate(MONTHS)} | _MONTH_ABBR
    currencies = {
        "USD": ("Dollar", "Dollar", "Cent", "Cent", False),
        "USD_US": ("US-Dollar", "US-Dollar", "Cent", "Cent", False),
        "EUR": ("Euro", "Euro", "Cent", "Cent", False),
        "GBP": ("Pfund", "Pfund", "Penny", "Pence", False),
        "JPY": ("Yen", "Yen", None, None, False),
        "CHF": ("Franken", "Franken", "Rappen", "Rappen", False),
    }
    magnitude_re = r"Mio\.|Mrd\.|Tsd\.|Millionen|Million|Milliarden|Milliarde|Tausend"
    units = _UNITS
    abbreviations = _ABBR
    symbols = {"&": "und", "+": "plus", "=": "gleich", "%": "Prozent", "@": "at", "~": "circa", "×": "mal",
               "©": "Copyright", "®": "eingetragene Marke", "™": "Trademark", "§": "Paragraf", "°": "Grad"}
    url_words = {".": "Punkt", "/": "Schrägstrich", "-": "Bindestrich", "_": "Unterstrich", "@": "at",
                 ":": "Doppelpunkt", "?": "Fragezeichen", "=": "gleich", "&": "und", "#": "Raute", "+": "plus",
                 "~": "Tilde", "%": "Prozent"}
    words = {"minus": "minus", "percent": "Prozent", "point": "Punkt", "number": "Nummer", "to": "bis",
             "by": "mal", "and": "und", "dot": "Punkt", "port": "Port", "plus": "plus", "score": "zu",
             "version": "Version", "time_cue": "um|bis|ab|gegen|von", "clock_word": r"\s?Uhr\b"}
    year_cues = frozenset("im in seit bis ab von jahr jahre jahres anno um vor nach ende anfang mitte "
                          "frühjahr herbst sommer winter".split()) | frozenset(m.lower() for m in MONTHS)
    roman_count_nouns = frozenset("kapitel teil band akt szene buch weltkrieg krieg phase typ klasse stufe "
                                  "staffel folge episode artikel".split())
    regnal_names = frozenset("Heinrich Karl Ludwig Friedrich Wilhelm Otto Elisabeth Franz Leo Pius Johannes "
                             "Paul Benedikt Gregor Georg Maria Katharina Peter Joseph Maximilian".split())

    def ends_sentence(self, m: re.Match[str]) -> bool:
        # German nouns are capitalised: only a sentence-opening word after the dot ends it
        if re.compile(r"\s*$|\n").match(m.string, m.end()):
            return True
        nxt = _NEXT_WORD_RE.match(m.string, m.end())
        return bool(nxt) and nxt.group(1) in _SENTENCE_OPENERS

    def parse_num(self, s: str) -> Num:
        if re.fullmatch(r"\d{1,3}(?:[.']\d{3})+(?:,\d+)?", s):
            int_part, _, frac = s.partition(",")
            return Num(re.sub(r"[.']", "", int_part), frac, "Komma", True)
        if " " in s:
            return Num(s.replace(" ", ""), "", "Komma", True)
        if "," in s:
            int_part, _, frac = s.partition(",")
            return Num(int_part, frac, "Komma", False)
        int_part, _, frac = s.partition(".")
        return Num(int_part, frac, "Punkt", False)

    def agree(self, words: str, noun: str) -> str:
        if words == "eins" and noun:
            return "eine" if gender(noun.split()[0]) == "f" and noun != "Uhr" else "ein"
        return words

    def is_counted_noun(self, word: str) -> bool:
        return word[:1].isupper() and word not in _NOT_NOUNS and word not in MONTHS

    def is_unit_noun(self, word: str) -> bool:
        return word in ("Jahre", "Jahren", "Monate", "Tage", "Stunden", "Minuten", "Kilometer", "Meter", "Euro")

    def time_words(self, h: int, mi: int, sec: int | None, ap: str | None) -> str:
        if h > 24 or mi > 59 or (sec is not None and sec > 59):
            raise ValueError("not a time")
        if ap and not 1 <= h <= 12:
            raise ValueError("not a 12-hour time")
        hw = "ein" if h == 1 else self.cardinal(str(h))
        out = f"{hw} Uhr" + (f" {self.cardinal(str(mi))}" if mi else "")
        if sec:
            out += f" und {'eine' if sec == 1 else self.cardinal(str(sec))} Sekunde{'n' if sec != 1 else ''}"
        return out

    def date_words(self, year: str | None, month: int, day: int, m: re.Match[str] | None = None) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise ValueError("not a date")
        prev = word_before(m) if m is not None else ""
        out = f"{inflect_ordinal(self.ordinal(day), prev)} {MONTHS[month - 1]}"
        return f"{out} {self.cardinal(year, True)}" if year else out

    def magnitude(self, num: Num, mag: str, plural: str) -> str:
        stem = {"Mio.": "Million", "Millionen": "Million", "Mrd.": "Milliarde", "Milliarden": "Milliarde",
                "Tsd.": "tausend", "Tausend": "tausend"}.get(mag, mag)
        if stem == "tausend":
            return f"{self.read_num(num)}tausend {plural}"
        if num.is_one:
            return f"eine {stem} {plural}"
        return f"{self.read_num(num)} {stem}{'n' if stem.endswith('e') else 'en'} {plural}"

    def join_money(self, major: str | None, minor: str | None, minor_word: str | None) -> str:
        if major and minor:
            return f"{major} {minor}"
        return major or f"{minor} {minor_word}"

    def fraction(self, whole: str | None, n: int, d: int, noun: object) -> str:
        if not (1 <= n <= 99 and 2 <= d <= 20):
            raise ValueError("not a fraction")
        unit = noun if isinstance(noun, tuple) else None
        noun_s = unit[0] if unit else (noun if isinstance(noun, str) and self.is_counted_noun(noun) else None)
        if d == 2 and n == 1:
            if whole:
                out = f"{'ein' if whole == '1' else self.cardinal(whole)}einhalb"
                return f"{out} {unit[1]}" if unit else out
            if noun_s:
                g = "f" if unit and unit[2] else gender(noun_s)
                half = {"f": "eine halbe", "m": "ein halber", "n": "ein halbes"}[g]
                return f"{half} {unit[0]}" if unit else half
            return "ein halb"
        den = "Halbe" if d == 2 else "Drittel" if d == 3 else self.ordinal(d).capitalize() + "l"
        frac = f"{'ein' if n == 1 else self.cardinal(str(n))} {den}"
        if whole:
            frac = f"{self.cardinal(whole)} und {frac}"
        return f"{frac} {unit[1] if whole else unit[0]}" if unit else frac

    def roman(self, value: int, regnal: bool, name: str = "") -> str:
        return f"der {self.ordinal(value).capitalize()}" if regnal else self.cardinal(str(value))

    def extra_rules(self, add: AddRule, stage: str) -> None:
        if stage == "phones":
            add(r"(?<![\w.,])0[1-9]\d{1,3}(?:[ /\-]\d{2,8})+(?![\w]|[.,]\d)",
                lambda m: ", ".join(self.digits(g) for g in re.findall(r"\d+", m.group(0))))
            add(r"(?<=, )(\d{5})(?= [A-ZÄÖÜ][a-zäöüß]+)", lambda m: self.digits(m.group(1)))
        elif stage == "dates":
            month_alt = "|".join(sorted(self.month_lookup, key=len, reverse=True))
            def day_month(m: re.Match[str]) -> str:
                out = self.date_words(m.group(3), self.month_lookup[m.group(2)], int(m.group(1)), m)
                return out + "." if m.group(0).endswith(".") and m.group(2) in MONTHS else out

            add(r"(?<![\w.,])(\d{1,2})\. ?(" + month_alt + r")\b\.?(?: (\d{4})\b)?", day_month)
            add(r"(?<![\w.,])(\d{1,2})\.(\d{1,2})\.(?!\d)",
                lambda m: self.date_words(None, int(m.group(2)), int(m.group(1)), m) + (
                    "." if m.end() == len(m.string) else ""))
        elif stage == "numbers":
            add(r"(?<=[a-zäöüß])str\.(?= ?\d)", lambda m: "straße")

            def ordinal(m: re.Match[str]) -> str:
                return inflect_ordinal(self.ordinal(int(m.group(1))), word_before(m))

            add(r"(?<![\w.,])(\d{1,3})\.(?= ?(?:" + _ORD_NOUNS + r")\b| [a-zäöüß])", ordinal)
            add(r"\b([Dd]er|[Dd]ie|[Dd]as|den|dem|des|[Aa]m|[Ii]m|[Zz]um|[Vv]om|[Bb]eim|[Zz]ur) (\d{1,3})\.(?= [A-ZÄÖÜ])",
                lambda m: f"{m.group(1)} {inflect_ordinal(self.ordinal(int(m.group(2))), m.group(1).lower())}")


LANGUAGE = German()
