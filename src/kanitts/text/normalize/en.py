"""English readings.

* A 4-digit number 1000-2099 is a year ("nineteen ninety-nine") unless context makes it
  a quantity: a plural noun or a unit after it ("1234 people" -> "one thousand two
  hundred and thirty-four people"); after "in/since/by/until..." or a month it is a
  year unless a unit of time or measure follows ("in 1500 years").
* Times: 12-hour reading; 24-hour times are converted ("15:45" -> "three forty-five PM");
  ":00" -> "o'clock" without AM/PM; "1.59 p.m." and "at 3.30" are times too.
* Dates: "March fifteenth, twenty twenty-four"; numeric dates are M/D/Y (D/M/Y when the
  first field is over 12).
* Fractions: "1/2 cup" -> "one half cup", "3/4" -> "three quarters", "1 1/2" -> "one and
  a half"; Roman numerals after names are regnal ("Henry VIII" -> "Henry the Eighth"),
  after nouns such as "Chapter" or "War" plain numbers.
"""

from __future__ import annotations

import re

from kanitts.text.normalize import numbers
from kanitts.text.normalize.base import AddRule, Language, pad, sentence_follows

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
_MONTH_ABBR = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "Jun": 6, "Jul": 7, "Aug": 8, "Sep": 9,
               "Sept": 9, "Oct": 10, "Nov": 11, "Dec": 12}

_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"), "m/s": ("meter per second", "meters per second"),
    "km": ("kilometer", "kilometers"), "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "m": ("meter", "meters"), "mi": ("mile", "miles"), "ft": ("foot", "feet"), "yd": ("yard", "yards"),
    "in.": ("inch", "inches"), "kg": ("kilogram", "kilograms"), "mg": ("milligram", "milligrams"),
    "g": ("gram", "grams"), "lbs": ("pound", "pounds"), "lb": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "l": ("liter", "liters"),
    "L": ("liter", "liters"), "°C": ("degree Celsius", "degrees Celsius"),
    "ºC": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "ºF": ("degree Fahrenheit", "degrees Fahrenheit"), "°": ("degree", "degrees"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"),
    "Mbps": ("megabit per second", "megabits per second"), "Gbps": ("gigabit per second", "gigabits per second"),
    "GHz": ("gigahertz", "gigahertz"), "MHz": ("megahertz", "megahertz"), "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"), "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"),
    "W": ("watt", "watts"), "V": ("volt", "volts"), "mAh": ("milliamp hour", "milliamp hours"),
    "ms": ("millisecond", "milliseconds"), "min": ("minute", "minutes"), "h": ("hour", "hours"),
    "hrs": ("hour", "hours"), "s": ("second", "seconds"), "sec": ("second", "seconds"),
}

_ABBR = {
    "Dr.": ("Doctor", False), "Mr.": ("Mister", False), "Mrs.": ("Missus", False), "Ms.": ("Miz", False),
    "Prof.": ("Professor", False), "Jr.": ("Junior", True), "Sr.": ("Senior", True), "Mt.": ("Mount", False),
    "Capt.": ("Captain", False), "Sgt.": ("Sergeant", False), "Gov.": ("Governor", False),
    "Rev.": ("Reverend", False), "Gen.": ("General", False), "Lt.": ("Lieutenant", False),
    "vs.": ("versus", False), "etc.": ("et cetera", True), "e.g.": ("for example", False),
    "i.e.": ("that is", False), "approx.": ("approximately", False), "Ave.": ("Avenue", True),
    "Blvd.": ("Boulevard", True), "Rd.": ("Road", True), "Inc.": ("Incorporated", True),
    "Ltd.": ("Limited", True), "Co.": ("Company", True), "Corp.": ("Corporation", True),
    "Fig.": ("Figure", False), "fig.": ("figure", False), "Dept.": ("Department", True),
    "Jan.": ("January", False), "Feb.": ("February", False), "Aug.": ("August", False),
    "Sept.": ("September", False), "Oct.": ("October", False), "Nov.": ("November", False),
    "Dec.": ("December", False), "Apt.": ("Apartment", False), "Ft.": ("Fort", False),
}

_IRREGULAR_PLURALS = frozenset(
    "people children men women feet teeth mice geese sheep fish deer cattle police staff data "
    "dozen hundred thousand million billion".split())
_NOT_PLURAL = frozenset(
    "is was has does goes this its his hers ours yours theirs us as thus plus minus yes less "
    "unless always perhaps across whereas besides towards afterwards news series species".split())
_UNIT_NOUNS = frozenset(
    "years months weeks days hours minutes seconds miles meters metres feet inches pounds kilometers "
    "kilometres kilograms grams liters litres gallons acres tons tonnes degrees dollars euros points "
    "calories steps words pages units votes".split())


class English(Language):
    code = "en"
    months = MONTHS
    month_lookup = {name: i + 1 for i, name in enumerate(MONTHS)} | _MONTH_ABBR
    currencies = {
        "USD": ("dollar", "dollars", "cent", "cents", False),
        "USD_US": ("US dollar", "US dollars", "cent", "cents", False),
        "EUR": ("euro", "euros", "cent", "cents", False),
        "GBP": ("pound", "pounds", "penny", "pence", False),
        "JPY": ("yen", "yen", None, None, False),
        "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes", False),
    }
    magnitude_re = r"thousand|million|billion|trillion|k|K|m|M|bn|BN|B"
    magnitude_words = {"k": "thousand", "K": "thousand", "m": "million", "M": "million",
                       "bn": "billion", "BN": "billion", "B": "billion"}
    units = {k: (s, p, False) for k, (s, p) in _UNITS.items()}
    abbreviations = _ABBR
    symbols = {"&": "and", "+": "plus", "=": "equals", "%": "percent", "@": "at", "~": "about",
               "×": "times", "©": "copyright", "®": "registered", "™": "trademark", "§": "section",
               "°": "degrees"}
    url_words = {".": "dot", "/": "slash", "-": "dash", "_": "underscore", "@": "at", ":": "colon",
                 "?": "question mark", "=": "equals", "&": "and", "#": "hash", "+": "plus",
                 "~": "tilde", "%": "percent"}
    words = {"minus": "minus", "percent": "percent", "point": "point", "number": "number", "to": "to",
             "by": "by", "and": "and", "dot": "dot", "port": "port", "plus": "plus", "score": "to",
             "version": "version", "time_cue": "at|until|till|before|after"}
    year_cues = frozenset("in since by until till from during before after around circa year of "
                          "early late mid".split()) | frozenset(m.lower() for m in MONTHS)
    roman_count_nouns = frozenset(
        "chapter part volume vol act scene book war phase type class level season episode stage "
        "section article title bowl round grade mark step appendix".split())
    regnal_names = frozenset(
        "Henry George Elizabeth Charles Louis Edward William James Richard Peter Napoleon John Paul "
        "Benedict Gregory Pius Leo Mary Anne Victoria Frederick Alexander Nicholas Catherine".split())

    def is_counted_noun(self, word: str) -> bool:
        w = word.lower()
        if not word.islower() or w in _NOT_PLURAL or len(w) < 3:
            return w in _IRREGULAR_PLURALS
        return w in _IRREGULAR_PLURALS or (w.endswith("s") and not w.endswith(("ss", "us", "is")))

    def is_unit_noun(self, word: str) -> bool:
        return word.lower() in _UNIT_NOUNS

    def time_words(self, h: int, mi: int, sec: int | None, ap: str | None) -> str:
        if h > 24 or mi > 59 or (sec is not None and sec > 59):
            raise ValueError("not a time")
        if ap and not 1 <= h <= 12:
            raise ValueError("not a 12-hour time")
        suffix = ""
        if ap:
            suffix = " AM" if ap in "Aa" else " PM"
        elif h in (0, 24):
            h, suffix = 12, " AM"
        elif h > 12:
            h, suffix = h - 12, " PM"
        hw = self.cardinal(str(h))
        if mi == 0:
            out = hw + (suffix or " o'clock")
        elif mi < 10:
            out = f"{hw} oh {self.cardinal(str(mi))}{suffix}"
        else:
            out = f"{hw} {self.cardinal(str(mi))}{suffix}"
        if sec:
            out += f" and {self.cardinal(str(sec))} second{'s' if sec != 1 else ''}"
        return out

    def date_words(self, year: str | None, month: int, day: int, m: re.Match[str] | None = None) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise ValueError("not a date")
        out = f"{MONTHS[month - 1]} {self.ordinal(day)}"
        return f"{out}, {self.cardinal(year, True)}" if year else out

    def fraction(self, whole: str | None, n: int, d: int, noun: object) -> str:
        if not (1 <= n <= 99 and 2 <= d <= 32):
            raise ValueError("not a fraction")
        name = {2: ("half", "halves"), 4: ("quarter", "quarters")}.get(d)
        sing, plur = name or (self.ordinal(d), self.ordinal(d) + "s")
        frac = f"{self.cardinal(str(n))} {sing if n == 1 else plur}"
        if whole:
            frac = f"{self.cardinal(whole)} and {'a ' + sing if n == 1 else frac}"
        if isinstance(noun, tuple):  # a unit symbol follows
            if whole or n > d:
                return f"{frac} {noun[1]}"
            return f"half a {noun[0]}" if (n, d) == (1, 2) else f"{frac} of a {noun[0]}"
        return frac

    def roman(self, value: int, regnal: bool, name: str = "") -> str:
        return f"the {self.ordinal(value).capitalize()}" if regnal else self.cardinal(str(value))

    def extra_rules(self, add: AddRule, stage: str) -> None:
        if stage == "phones":
            # ZIP codes after a state code; house numbers before a street name
            add(r"\b([A-Z]{2}) (\d{5})(?:-(\d{4}))?\b(?![.,]\d)",
                lambda m: f"{m.group(1)} {self.digits(m.group(2))}"
                + (f", {self.digits(m.group(3))}" if m.group(3) else ""))
            add(r"(?<![\w.,])(\d{3,4})(?= (?:[NSEW]\.? )?[A-Z][a-z]+(?: [A-Z][a-z]+)? (?:St|Street|Ave|Avenue|"
                r"Rd|Road|Blvd|Boulevard|Lane|Ln|Dr|Drive|Way|Ct|Court|Pl|Place|Pkwy|Parkway|Hwy|Highway)\b)",
                lambda m: numbers.pairs(m.group(1), "en"))
        elif stage == "dates":
            month_alt = "|".join(sorted(self.month_lookup, key=len, reverse=True))
            add(r"\b(" + month_alt + r")\.? (\d{1,2})(?:st|nd|rd|th)?\b(?!:)(?:,? (\d{4})\b)?",
                lambda m: self.date_words(m.group(3), self.month_lookup[m.group(1)], int(m.group(2))))

            def day_month(m: re.Match[str]) -> str:
                day = int(m.group(1))
                if not 1 <= day <= 31:
                    raise ValueError("not a day")
                out = f"the {self.ordinal(day)} of {MONTHS[self.month_lookup[m.group(2)] - 1]}"
                return f"{out}, {self.cardinal(m.group(3), True)}" if m.group(3) else out

            add(r"(?<![\w.,])(\d{1,2})(?:st|nd|rd|th)? (?:of )?(" + month_alt + r")\b\.?(?:,? (\d{4})\b)?",
                day_month)

            def decade(m: re.Match[str]) -> str:
                d = m.group(1)
                words = self.cardinal(d, True) if len(d) == 4 else self.cardinal(d)
                return words[:-1] + "ies" if words.endswith("y") else words + "s"

            add(r"(?<![\w.,])'?(\d{2}|1\d{2}0|20\d0)'?s\b", decade)
        elif stage == "numbers":
            add(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th|ST|ND|RD|TH)\b",
                lambda m: self.ordinal(int(m.group(1).replace(",", ""))))
            add(r"\b(No|no|Nos|nos)\.(?= ?\d)", lambda m: "number" if m.group(1) in ("No", "no") else "numbers")

            def saint_or_street(m: re.Match[str]) -> str:
                nxt = m.string[m.end():m.end() + 3]
                prev = m.string[max(0, m.start() - 40): m.start()].rstrip().rsplit(" ", 1)[-1]
                street = prev[:1].isupper() or not re.match(r" ?[A-Z]", nxt)
                word = "Street" if street else "Saint"
                return pad(m, word + "." if street and sentence_follows(m) else word)

            add(r"(?<![\w.])St\.", saint_or_street)
            add(r"\bvs\b(?!\.)", lambda m: "versus")


LANGUAGE = English()
