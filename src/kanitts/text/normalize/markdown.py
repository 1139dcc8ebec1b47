"""Chat markdown -> readable sentences.

Headings, list items, table rows and block-quote lines each become their own sentence
(a full stop is added when the line has no closing punctuation); emphasis, strike-through
and inline-code markers are dropped and their text kept; links read their text, images
their alt text; reference definitions, footnote marks and horizontal rules are dropped.
Fenced code blocks follow ``code_blocks``: ``"skip"`` drops them, ``"summarize"`` says
that a code block (in the named language) was there, ``"read"`` reads their lines.

Plain text without markdown comes back unchanged (the fast path looks for markdown
characters first).
"""

from __future__ import annotations

import re
from typing import Literal

CodeBlocks = Literal["skip", "summarize", "read"]
CODE_BLOCK_RULES: tuple[str, ...] = ("skip", "summarize", "read")

_CODE_SUMMARY = {
    "en": ("Code block.", "Code block in {}."),
    "es": ("Bloque de código.", "Bloque de código en {}."),
    "de": ("Codeblock.", "Codeblock in {}."),
}
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([\w+#.\-]*)[^\n]*\n(.*?)(?:^ {0,3}\1[`~]*[ \t]*$|\Z)",
                       re.M | re.S)
_HEADING_RE = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
_SETEXT_RE = re.compile(r"^([^\n]*\S)[ \t]*\n {0,3}(?:=+|-{2,})[ \t]*$", re.M)
_HR_RE = re.compile(r"^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$", re.M)
_QUOTE_RE = re.compile(r"^ {0,3}(?:>[ \t]?)+", re.M)
_LIST_RE = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?(?=\S)", re.M)
_TABLE_SEP_RE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$", re.M)
_TABLE_ROW_RE = re.compile(r"^[ \t]*\|(.*)\|[ \t]*$", re.M)
_REFDEF_RE = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*\S+.*$", re.M)
_IMAGE_RE = re.compile(r"!\[([^\]\n]{0,300})\]\([^)\n]{0,500}\)")
_LINK_RE = re.compile(r"\[([^\]\n]{1,300})\](?:\([^)\n]{0,500}\)|\[[^\]\n]{0,100}\])")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp)://[^\s<>]{1,500}|[\w.+\-]{1,100}@[\w\-]{1,100}(?:\.[\w\-]{1,60}){1,6})>",
                          re.I)
_FOOTNOTE_RE = re.compile(r"\[\^[^\]\n]{1,50}\]")
_CODE_SPAN_RE = re.compile(r"(`{1,3})(?!`)([^\n]{1,400}?)(?<!`)\1(?!`)")
_BOLD_RE = re.compile(r"(\*\*|__)(?=\S)([^\n]{1,400}?)(?<=\S)\1")
_STAR_EM_RE = re.compile(r"(?<![\w*])\*(?=[^\s*])([^\n]{1,400}?)(?<=[^\s*])\*(?![\w*])")
_UNDER_EM_RE = re.compile(r"(?<![\w_])_(?=[^\s_])([^\n]{1,400}?)(?<=[^\s_])_(?![\w_])")
_STRIKE_RE = re.compile(r"~~(?=\S)([^\n]{1,400}?)(?<=\S)~~")
_BR_RE = re.compile(r"<br\s*/?>", re.I)
_ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")
#: escaped markdown characters wait as Private Use characters (input never holds them)
_ESCAPED = 0xE000
_ESCAPED_RE = re.compile("[\ue000-\ue07f]")
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
#: Characters whose presence means the text may hold markdown.
_MARKERS = re.compile(r"[#*_`\[\]|>~\\]|^[ \t]*(?:[-+•]|\d{1,3}[.)])[ \t]|^ {0,3}(?:-{3,}|={3,})", re.M)
_END_PUNCT = ".!?:;…。"


def _sentence(line: str) -> str:
    """End a heading/list/table line with a full stop unless it has closing punctuation."""
    s = line.rstrip()
    if not s:
        return s
    core = s.rstrip("\"'”’)]*_`")
    if core and core[-1] in _END_PUNCT:
        return s
    return s + "."


def _code_block(m: re.Match[str], rule: str, lang: str) -> str:
    if rule == "read":
        return m.group(3).rstrip("\n") + "\n\n"
    if rule == "skip":
        return "\n"
    plain, named = _CODE_SUMMARY.get(lang, _CODE_SUMMARY["en"])
    name = m.group(2).strip()
    return "\n\n" + (named.format(name) if name else plain) + "\n\n"


def _table_row(m: re.Match[str]) -> str:
    cells = [c.strip() for c in m.group(1).split("|")]
    return _sentence(", ".join(c for c in cells if c))


def strip_markdown(text: str, lang: str = "en", code_blocks: str = "summarize") -> str:
    """Rewrite chat markdown in ``text`` as plain sentences (see module docstring).

    ``code_blocks``: ``"skip"``, ``"summarize"`` or ``"read"`` (an unknown value reads as
    ``"summarize"``). Never raises on any string.
    """
    if not _MARKERS.search(text):
        return text
    rule = code_blocks if code_blocks in CODE_BLOCK_RULES else "summarize"
    if "```" in text or "~~~" in text:
        text = _FENCE_RE.sub(lambda m: _code_block(m, rule, lang), text)
    text = _COMMENT_RE.sub(" ", text)
    text = _BR_RE.sub("\n", text)
    text = _REFDEF_RE.sub("", text)
    text = _SETEXT_RE.sub(lambda m: "\n" + _sentence(m.group(1).strip()) + "\n", text)
    text = _HR_RE.sub("\n", text)
    text = _HEADING_RE.sub(lambda m: "\n" + _sentence(m.group(1)) + "\n", text)
    text = _QUOTE_RE.sub("", text)
    text = _TABLE_SEP_RE.sub("", text)
    text = _TABLE_ROW_RE.sub(_table_row, text)
    text = _LIST_RE.sub("", _mark_list_items(text))
    text = _IMAGE_RE.sub(lambda m: m.group(1), text)
    text = _LINK_RE.sub(lambda m: m.group(1), text)
    text = _AUTOLINK_RE.sub(lambda m: m.group(1), text)
    text = _FOOTNOTE_RE.sub("", text)
    text = _ESCAPE_RE.sub(lambda m: chr(_ESCAPED + ord(m.group(1))), text)
    text = _CODE_SPAN_RE.sub(lambda m: m.group(2).strip(), text)
    for _ in range(2):  # nested emphasis: ***x*** or **_x_**
        text = _BOLD_RE.sub(lambda m: m.group(2), text)
        text = _STAR_EM_RE.sub(lambda m: m.group(1), text)
        text = _UNDER_EM_RE.sub(lambda m: m.group(1), text)
    text = _STRIKE_RE.sub(lambda m: m.group(1), text)
    return _ESCAPED_RE.sub(lambda m: chr(ord(m.group(0)) - _ESCAPED), text)


def _mark_list_items(text: str) -> str:
    """Give every list item a closing full stop so each is read as its own sentence."""
    if not _LIST_RE.search(text):
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _LIST_RE.match(line):
            lines[i] = _sentence(line)
    return "\n".join(lines)
