"""Spanish readings.

* Thousands are grouped with dots ("10.000.000" -> "diez millones"), decimals written
  with a comma ("3,14" -> "tres coma catorce"); a dot with other than three digits after
  it is a decimal point ("3.5" -> "tres punto cinco").
* A number agrees with the noun after it: "1 libro" -> "un libro", "301 casas" ->
  "trescientas una casas", "1000000 habitantes" -> "un millón de habitantes".
* Times: up to 12 h the colloquial reading ("3:15" -> "tres y cuarto"); 13-23 h and 0 h
  the 24-hour reading ("15:45" -> "quince cuarenta y cinco"); "a. m."/"p. m." become
  "de la mañana"/"de la tarde"/"de la noche".
* Dates: "quince de marzo de dos mil veinticuatro" (D/M/Y).
* Fractions: "1/2 taza" -> "media taza", "3/4 taza" -> "tres cuartos de taza".
* Roman numerals: ordinal after a name up to ten ("Felipe II" -> "Felipe segundo"),
  cardinal above ("Alfonso XIII" -> "Alfonso trece") and after nouns ("siglo XXI").
"""

from __future__ import annotations

import re

from kanitts.text.normalize.base import AddRule, Language, Num, word_after

MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
          "octubre", "noviembre", "diciembre")

_UNITS = {
    "km/h": ("kilómetro por hora", "kilómetros por hora", False),
    "kph": ("kilómetro por hora", "kilómetros por hora", False),
    "mph": ("milla por hora", "millas por hora", True), "m/s": ("metro por segundo", "metros por segundo", False),
    "km": ("kilómetro", "kilómetros", False), "cm": ("centímetro", "centímetros", False),
    "mm": ("milímetro", "milímetros", False), "m": ("metro", "metros", False), "mi": ("milla", "millas", True),
    "ft": ("pie", "pies", False), "yd": ("yarda", "yardas", True), "kg": ("kilogramo", "kilogramos", False),
    "mg": ("miligramo", "miligramos", False), "g": ("gramo", "gramos", False), "lbs": ("libra", "libras", True),
    "lb": ("libra", "libras", True), "oz": ("onza", "onzas", True), "ml": ("mililitro", "mililitros", False),
    "mL": ("mililitro", "mililitros", False), "l": ("litro", "litros", False), "L": ("litro", "litros", False),
    "°C": ("grado centígrado", "grados centígrados", False), "ºC": ("grado centígrado", "grados centígrados", False),
    "°F": ("grado Fahrenheit", "grados Fahrenheit", False), "ºF": ("grado Fahrenheit", "grados Fahrenheit", False),
    "°": ("grado", "grados", False), "KB": ("kilobyte", "kilobytes", False), "kB": ("kilobyte", "kilobytes", False),
    "MB": ("megabyte", "megabytes", False), "GB": ("gigabyte", "gigabytes", False),
    "TB": ("terabyte", "terabytes", False), "Mbps": ("megabit por segundo", "megabits por segundo", False),
    "Gbps": ("gigabit por segundo", "gigabits por segundo", False), "GHz": ("gigahercio", "gigahercios", False),
    "MHz": ("megahercio", "megahercios", False), "kHz": ("kilohercio", "kilohercios", False),
    "Hz": ("hercio", "hercios", False), "kWh": ("kilovatio hora", "kilovatios hora", False),
    "kW": ("kilovatio", "kilovatios", False), "W": ("vatio", "vatios", False), "V": ("voltio", "voltios", False),
    "ms": ("milisegundo", "milisegundos", False), "min": ("minuto", "minutos", False),
    "h": ("hora", "horas", True), "s": ("segundo", "segundos", False),
}

_ABBR = {
    "Sr.": ("señor", False), "Sra.": ("señora", False), "Srta.": ("señorita", False), "Sres.": ("señores", False),
    "Dr.": ("doctor", False), "Dra.": ("doctora", False), "Lic.": ("licenciado", False),
    "Lcda.": ("licenciada", False), "Ing.": ("ingeniero", False), "Prof.": ("profesor", False),
    "Profa.": ("profesora", False), "Ud.": ("usted", True), "Uds.": ("ustedes", True), "Vd.": ("usted", True),
    "Vds.": ("ustedes", True), "Dña.": ("doña", False), "D.": ("don", False), "Sto.": ("santo", False),
    "Sta.": ("santa", False), "etc.": ("etcétera", True), "p. ej.": ("por ejemplo", False),
    "p.ej.": ("por ejemplo", False), "aprox.": ("aproximadamente", False), "Av.": ("avenida", False),
    "Avda.": ("avenida", False), "C/": ("calle", False), "EE. UU.": ("Estados Unidos", True),
    "EE.UU.": ("Estados Unidos", True), "pág.": ("página", False), "págs.": ("páginas", False),
    "tel.": ("teléfono", False), "Tel.": ("teléfono", False), "vs.": ("versus", False),
    "núm.": ("número", False), "n.º": ("número", False), "nº": ("número", False), "Nº": ("número", False),
    "N.º": ("número", False), "S.A.": ("sociedad anónima", True), "Cía.": ("compañía", False),
    "a. C.": ("antes de Cristo", True), "d. C.": ("después de Cristo", True),
}

_FUNCTION_WORDS = frozenset(
    "de del y e o u a al en por para con que ni es son más menos entre sobre sin hasta desde x veces "
    "fue era será está están hay han ha se lo la los las el un una".split())
_MASC_A = frozenset(
    "día días mapa mapas problema problemas programa programas sistema sistemas tema temas idioma "
    "idiomas clima planeta planetas sofá sofás poema poemas dilema dilemas".split())
_FEM_OTHER = frozenset(
    "mano manos foto fotos moto motos radio noche noches calle calles gente parte partes clase clases "
    "llave llaves leche nave naves carne fuente fuentes mente muerte suerte tarde tardes torre torres "
    "imagen imágenes red redes ley leyes vez veces flor flores sal miel piel luz luces voz voces cruz "
    "paz nariz".split())
_FEMALE_NAMES = frozenset("Isabel María Juana Catalina Cristina Victoria Ana Leonor Urraca Berenguela".split())
_ORD_DENOM = {3: "tercio", 4: "cuarto", 5: "quinto", 6: "sexto", 7: "séptimo", 8: "octavo", 9: "noveno",
              10: "décimo"}


def is_feminine(noun: str) -> bool:
    """Guess the gender of a Spanish noun from its ending (good enough for agreement)."""
    noun = noun.lower()
    if noun in _MASC_A:
        return False
    if noun in _FEM_OTHER:
        return True
    return bool(re.search(r"(a|as|ción|ciones|sión|siones|dad|dades|tad|tades|tud|tudes|ez)$", noun))


def _feminine(words: str) -> str:
    # only the part after the last million-word agrees with the noun
    head, sep, tail = words.rpartition("mill")
    if sep:
        cut = tail.find(" ")
        head = head + sep + (tail[: cut + 1] if cut >= 0 else tail)
        tail = tail[cut + 1:] if cut >= 0 else ""
    else:
        head, tail = "", words
    tail = re.sub(r"ientos\b", "ientas", tail)
    tail = re.sub(r"\bquinientos\b", "quinientas", tail)
    tail = re.sub(r"uno\b", "una", tail)
    tail = re.sub(r"\bun\b", "una", tail) if tail.strip() == "un" else tail
    return head + tail


class Spanish(Language):
    code = "es"
    num_re = r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d{1,3}(?: \d{3}){2,4}(?![\d])|\d+(?:[.,]\d+)?"
    months = MONTHS
    month_lookup = {name: i + 1 for i, name in enumerate(MONTHS)}
    currencies = {
        "USD": ("dólar", "dólares", "centavo", "centavos", False),
        "USD_US": ("dólar estadounidense", "dólares estadounidenses", "centavo", "centavos", False),
        "EUR": ("euro", "euros", "céntimo", "céntimos", False),
        "GBP": ("libra", "libras", "penique", "peniques", True),
        "JPY": ("yen", "yenes", None, None, False),
        "CHF": ("franco suizo", "francos suizos", "céntimo", "céntimos", False),
    }
    magnitude_re = r"mil millones|millones|millón|mil|billones|billón"
    units = _UNITS
    abbreviations = _ABBR
    symbols = {"&": "y", "+": "más", "=": "igual a", "%": "por ciento", "@": "arroba", "~": "aproximadamente",
               "×": "por", "©": "copyright", "®": "marca registrada", "™": "marca", "§": "sección",
               "°": "grados"}
    url_words = {".": "punto", "/": "barra", "-": "guion", "_": "guion bajo", "@": "arroba", ":": "dos puntos",
                 "?": "interrogación", "=": "igual", "&": "y", "#": "almohadilla", "+": "más",
                 "~": "virgulilla", "%": "por ciento"}
    words = {"minus": "menos", "percent": "por ciento", "point": "punto", "number": "número", "to": "a",
             "by": "por", "and": "con", "dot": "punto", "port": "puerto", "plus": "más", "score": "a",
             "version": "versión", "time_cue": "a las|a la|las|hasta las|desde las"}
    year_cues = frozenset("en desde hasta año del de antes después hacia".split()) | frozenset(MONTHS)
    regnal_names = frozenset("Carlos Felipe Fernando Alfonso Isabel Juan Pablo Luis Enrique Pedro Jaime Sancho "
                             "Benedicto Pío León Gregorio Juana".split())
    roman_count_nouns = frozenset(
        "siglo siglos capítulo tomo volumen parte acto escena libro guerra fase tipo nivel temporada "
        "episodio edición artículo título".split())

    def parse_num(self, s: str) -> Num:
        if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", s):
            int_part, _, frac = s.partition(",")
            return Num(int_part.replace(".", ""), frac, "coma", True)
        if " " in s:
            return Num(s.replace(" ", ""), "", "coma", True)
        if "," in s:
            int_part, _, frac = s.partition(",")
            return Num(int_part, frac, "coma", False)
        int_part, _, frac = s.partition(".")
        return Num(int_part, frac, "punto", False)

    def frac_words(self, frac: str) -> str:
        if len(frac) <= 2:
            rest = frac.lstrip("0")
            parts = ["cero"] * (len(frac) - len(rest)) + ([self.cardinal(rest)] if rest else [])
            return " ".join(parts)
        return self.digits(frac)

    def agree(self, words: str, noun: str) -> str:
        if is_feminine(noun.split()[0] if noun else ""):
            words = _feminine(words)
        else:
            words = re.sub(r"veintiuno$", "veintiún", words)
            words = re.sub(r"\buno$", "un", words)
        if re.search(r"(millón|millones)$", words) and not noun.startswith("de "):
            words += " de"
        return words

    def is_counted_noun(self, word: str) -> bool:
        return word.islower() and word not in _FUNCTION_WORDS

    def is_unit_noun(self, word: str) -> bool:
        return word.lower() in ("años", "meses", "días", "horas", "minutos", "segundos", "kilómetros", "metros")

    def time_words(self, h: int, mi: int, sec: int | None, ap: str | None) -> str:
        if h > 24 or mi > 59 or (sec is not None and sec > 59):
            raise ValueError("not a time")
        if ap and not 1 <= h <= 12:
            raise ValueError("not a 12-hour time")
        hw = _feminine(self.cardinal(str(h)))
        if ap or 1 <= h <= 12:
            out = {0: f"{hw} en punto" if not ap else hw, 15: f"{hw} y cuarto", 30: f"{hw} y media"}.get(
                mi, f"{hw} y {self.cardinal(str(mi))}")
            if ap:
                if ap in "Aa":
                    part = "de la noche" if h == 12 else "de la madrugada" if h < 6 else "de la mañana"
                else:
                    part = "del mediodía" if h == 12 else "de la tarde" if h < 8 else "de la noche"
                out += f" {part}"
        elif mi == 0:
            out = f"{hw} horas"
        elif mi < 10:
            out = f"{hw} cero {self.cardinal(str(mi))}"
        else:
            out = f"{hw} {self.cardinal(str(mi))}"
        if sec:
            out += f" y {self.cardinal(str(sec))} segundo{'s' if sec != 1 else ''}"
        return out

    def date_words(self, year: str | None, month: int, day: int, m: re.Match[str] | None = None) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            raise ValueError("not a date")
        out = f"{self.cardinal(str(day))} de {MONTHS[month - 1]}"
        return f"{out} de {self.cardinal(year)}" if year else out

    def magnitude(self, num: Num, mag: str, plural: str) -> str:
        if num.is_one and mag in ("millones", "billones"):
            mag = mag[:-5] + "ón"
        amount = self.read_num(num, noun="euros")  # masculine: "un millón", "veintiún mil"
        amount = amount[:-3] if amount.endswith(" de") else amount
        return f"{amount} {mag}{' ' if mag == 'mil' else ' de '}{plural}"

    def fraction(self, whole: str | None, n: int, d: int, noun: object) -> str:
        if not (1 <= n <= 99 and 2 <= d <= 10):
            raise ValueError("not a fraction")
        unit = noun if isinstance(noun, tuple) else None
        noun_s = unit[0] if unit else (noun if isinstance(noun, str) and self.is_counted_noun(noun) else None)
        fem = bool(unit[2]) if unit else bool(noun_s and is_feminine(noun_s))
        if d == 2:
            half = "media" if fem else "medio"
            frac = half if n == 1 else f"{self.cardinal(str(n))} medios"
        else:
            den = _ORD_DENOM[d]
            frac = f"un {den}" if n == 1 else f"{self.cardinal(str(n))} {den}s"
        if whole:
            w = self.agree(self.cardinal(whole), noun_s) if noun_s else self.cardinal(whole)
            out = f"{w} y {frac}"
            return f"{out} {unit[1]}" if unit else out
        if noun_s is None:
            return "un medio" if (n, d) == (1, 2) else frac
        if d == 2 and n == 1:
            return f"{frac} {unit[0]}" if unit else frac
        return f"{frac} de {unit[0]}" if unit else f"{frac} de"

    def roman(self, value: int, regnal: bool, name: str = "") -> str:
        if regnal and value <= 10:
            words = self.ordinal(value)
            return re.sub(r"o\b", "a", words) if name in _FEMALE_NAMES else words
        return self.cardinal(str(value))

    def extra_rules(self, add: AddRule, stage: str) -> None:
        if stage == "phones":
            add(r"(?<![\w.,])(?:[6789]\d{2}(?: \d{3} \d{3}| \d{2} \d{2} \d{2})|9\d \d{3} \d{2} \d{2})(?![\w]|[.,]\d)",
                lambda m: ", ".join(self.digits(g) for g in m.group(0).split()))
            add(r"(?<=, )(\d{5})(?= [A-ZÁÉÍÓÚ][a-záéíóúñ]+)", lambda m: self.digits(m.group(1)))
            add(r"\b(C\.P\.|CP) (\d{5})\b", lambda m: f"código postal {self.digits(m.group(2))}")
        elif stage == "numbers":
            def ordinal(m: re.Match[str]) -> str:
                words = self.ordinal(int(m.group(1).replace(".", "")))
                suf = m.group(2)
                if suf in ("ª", "a", "ra", "as"):
                    words = re.sub(r"o\b", "a", words)
                elif suf == "er" or (suf in ("º", "o") and self.is_counted_noun(word_after(m))
                                     and not is_feminine(word_after(m))):
                    words = re.sub(r"(primero|tercero)$", lambda x: x.group(1)[:-1], words)
                if m.group(3) or suf in ("os", "as"):
                    words = re.sub(r"([oa])\b", r"\1s", words)
                return words

            add(r"(?<![\w.,])(\d{1,3}(?:\.\d{3})+|\d+)\.?(º|ª|er|ra|ro|os|as)(s)?(?!\w)", ordinal)


LANGUAGE = Spanish()
