"""User-derived text (file, folder, task, class and workspace names) made safe to show and to write.

Names come from file systems and from workspaces someone may have crafted: they can hold bytes
that are not UTF-8 (which Python keeps as lone surrogates), control characters, Markdown or HTML.
This module is the one place that turns them into text: :func:`printable` for messages and files,
:func:`md` for Streamlit's Markdown elements (captions, alerts, labels), :func:`csv_cell` for CSV
cells a spreadsheet would otherwise evaluate as formulas.
"""
from __future__ import annotations

import re

# C0/C1 controls, line and paragraph separators, bidirectional overrides (they reorder what is shown) and
# lone surrogates (bytes that were not UTF-8, or a "\ud800" from JSON): none can be shown or encoded as they are
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Markdown that could make an element (link, image, HTML, code, emphasis, maths, Streamlit's :directive[...]
# and :material/icon:), escaped with a backslash as CommonMark allows for any ASCII punctuation
_MD_ALWAYS = re.compile(r"[\\`*~\[\]<>$@|]")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # an intraword _ never emphasises
_MD_COLON = re.compile(r":(?=[A-Za-z/])")  # :red[...], :material/...:, :smile:, https://
_MD_WWW = re.compile(r"(?i)(?<=www)\.")  # a bare www.host would become a link
_MD_LEADING = re.compile(r"^(\s*)([#+=-])")  # a heading or a list at the start of the text
_MD_NUMBERED = re.compile(r"^(\s*\d+)([.)])")  # a numbered list
# GFM autolinks ("https://host", "www.host", "name@host") survive backslash escapes: a word joiner
# (shown as nothing) inside "//", after "www" and after "@" breaks them
_AUTOLINK = re.compile(r"(?i)(?<=:/)(?=/)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"

CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match):
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text) -> str:
    """``text`` as one line of valid UTF-8: undecodable bytes as ``\\xNN``, controls as ``\\n``, ``\\x1b`` etc."""
    return _UNPRINTABLE.sub(_escape, str(text))


def md(text) -> str:
    """``text`` for a Streamlit element that renders Markdown: shown as the same characters, never as markup."""
    text = _AUTOLINK.sub(WORD_JOINER, printable(text))
    text = _MD_ALWAYS.sub(lambda m: "\\" + m.group(), text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    text = _MD_COLON.sub(r"\\:", text)
    text = _MD_WWW.sub(r"\\.", text)
    text = _MD_LEADING.sub(r"\1\\\2", text)
    return _MD_NUMBERED.sub(r"\1\\\2", text)


def csv_cell(value):
    """A CSV cell of user-derived text: printable, and with a leading apostrophe where a spreadsheet would read a
    formula (OWASP's rule for cells starting with = + - @, tab or carriage return); other values as they are."""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if value.startswith(CSV_FORMULA_START) else text
