"""The SSML subset: ``<sub>``, ``<say-as>``, ``<emphasis>``, ``<prosody>``, ``<speak>``, ``<p>``, ``<s>``.

* ``<sub alias="cube control">kubectl</sub>`` -> the alias, read as written.
* ``<say-as interpret-as="...">`` with ``characters``/``spell-out`` (letters one by one,
  digits as digit words), ``cardinal``, ``ordinal``, ``digits``, ``telephone``, ``date``
  (``format`` = ``mdy``/``dmy``/``ymd``, else the language's order) and ``time``.
* ``<emphasis>``, ``<prosody>`` and ``<speak>`` are accepted and ignored (their text is
  read); ``<p>`` ends a paragraph, ``<s>`` a sentence.
* Any other tag, a tag without its closing tag, or a ``say-as`` whose content does not
  fit its ``interpret-as`` stays as text: malformed markup is never an error.

``<break/>`` tags are not handled here: the driver keeps them for the chunker.
"""

from __future__ import annotations

import html
import re
from typing import Callable

from kanitts.text.normalize.base import Language

Protect = Callable[[str], str]

_ATTR_RE = re.compile(r"""([\w-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_PAIR_RE = re.compile(r"<(sub|say-as)\b([^<>]{0,300})>([^<>]{0,500})</\1\s*>", re.I)
_IGNORED_RE = re.compile(r"</?(?:emphasis|prosody|speak|voice|lang|mark|audio)\b[^<>]{0,300}>", re.I)
_UNPAIRED_RE = re.compile(r"</?(?:sub|say-as)\b[^<>]{0,300}>", re.I)
_OTHER_TAG_RE = re.compile(r"</?[A-Za-z][\w:-]*\b[^<>]{0,200}>")
_P_RE = re.compile(r"</?p\b[^<>]{0,300}>", re.I)
_S_CLOSE_RE = re.compile(r"</s\s*>", re.I)
_S_OPEN_RE = re.compile(r"<s\b[^<>]{0,300}>", re.I)


def _attrs(s: str) -> dict[str, str]:
    return {m.group(1).lower(): html.unescape(m.group(2) if m.group(2) is not None else m.group(3))
            for m in _ATTR_RE.finditer(s)}


def _characters(content: str, L: Language | None) -> str:
    out = []
    for ch in content:
        if ch.isspace():
            continue
        if ch.isascii() and ch.isdigit() and L is not None:
            out.append(L.digits(ch))
        elif ch.isalnum():
            out.append(ch)
    return " ".join(out)


def say_as(kind: str, content: str, attrs: dict[str, str], L: Language | None) -> str | None:
    """Words for one ``say-as`` element, or None when the content does not fit the kind."""
    text = content.strip()
    if kind in ("characters", "spell-out", "verbatim", "letters"):
        return _characters(text, L)
    if L is None:
        return None
    digits_only = re.sub(r"[\s,.'’]", "", text)
    if kind in ("cardinal", "number"):
        neg = digits_only.startswith(("-", "−"))
        body = digits_only.lstrip("-−")
        if not body.isdigit():
            return None
        return (f"{L.words['minus']} " if neg else "") + L.cardinal(body)
    if kind == "ordinal":
        body = re.sub(r"(?:st|nd|rd|th|º|ª|\.)$", "", digits_only)
        return L.ordinal(int(body)) if body.isdigit() else None
    if kind == "digits":
        return L.digits(digits_only) if digits_only.isdigit() else None
    if kind == "telephone":
        groups = re.findall(r"\d+", text)
        if not groups:
            return None
        if text.startswith("+"):
            head = f"{L.words['plus']} {L.cardinal(groups[0])}"
            return ", ".join([head] + [L.digits(g) for g in groups[1:]])
        return ", ".join(L.digits(g) for g in groups)
    if kind == "date":
        parts = [int(p) for p in re.findall(r"\d+", text)]
        fmt = attrs.get("format", "").lower()
        if len(parts) == 3:
            if fmt == "ymd" or parts[0] > 31:
                y, mo, d = parts
            elif fmt == "mdy" or (not fmt and L.code == "en"):
                mo, d, y = parts
            else:
                d, mo, y = parts
            return L.date_words(str(y), mo, d)
        if len(parts) == 2:
            mo, d = (parts if fmt.startswith("m") or (not fmt and L.code == "en") else parts[::-1])
            return L.date_words(None, mo, d)
        return None
    if kind == "time":
        m = re.fullmatch(r"(\d{1,2})[:.h](\d{2})(?::(\d{2}))?\s*(?:([AaPp])\.?\s?[Mm]\.?)?", text)
        if not m:
            return None
        return L.time_words(int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None, m.group(4))
    return None


def apply_ssml(text: str, L: Language | None, protect: Protect) -> str:
    """Resolve the SSML subset in ``text``; outputs of sub/say-as are ``protect``-ed."""
    if "<" not in text:
        return text

    def pair(m: re.Match[str]) -> str:
        tag, attrs, content = m.group(1).lower(), _attrs(m.group(2)), html.unescape(m.group(3))
        if tag == "sub":
            alias = attrs.get("alias")
            return protect(alias) if alias is not None else content
        try:
            words = say_as(attrs.get("interpret-as", "").lower(), content, attrs, L)
        except Exception:  # noqa: BLE001 - content that does not fit is read as text
            words = None
        return content if words is None else protect(words)

    text = _IGNORED_RE.sub("", text)
    text = _PAIR_RE.sub(pair, text)
    text = _UNPAIRED_RE.sub("", text)
    text = _P_RE.sub("\n\n", text)
    text = _S_OPEN_RE.sub("", text)
    text = _S_CLOSE_RE.sub(lambda m: _end_sentence(m), text)
    return _OTHER_TAG_RE.sub(lambda m: protect(m.group(0)), text)


def _end_sentence(m: re.Match[str]) -> str:
    before = m.string[max(0, m.start() - 8): m.start()].rstrip()
    return " " if before[-1:] in ".!?…" else ". "
