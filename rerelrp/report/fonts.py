"""Fonts of the PDF report, and text made printable in them.

fpdf2 embeds a TrueType font for Unicode text (names from medical data sets are rarely plain
ASCII) or falls back to its latin-1 core fonts; either way a character the font lacks would
print as nothing or raise, so every string goes through :class:`Printable` first.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

_FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
    ("/Library/Fonts/Arial Unicode.ttf", "/Library/Fonts/Arial Unicode.ttf"),
    ("/System/Library/Fonts/Supplemental/Arial.ttf", "/System/Library/Fonts/Supplemental/Arial Bold.ttf"),
    ("C:/Windows/Fonts/arial.ttf", "C:/Windows/Fonts/arialbd.ttf"),
]
_ASCII = {"–": "-", "—": "-", "−": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "≤": "<=", "≥": ">=",
          "✓": "ok", "✗": "x", "→": "->", "⚠": "!", "\u00a0": " "}


def find_unicode_font():
    """(regular, bold) TTF paths of a Unicode font, or None (then the PDF falls back to latin-1 core fonts).

    ``RERELRP_PDF_FONT`` (and ``RERELRP_PDF_FONT_BOLD``) name a TTF to use instead.
    """
    env = os.environ.get("RERELRP_PDF_FONT")
    if env and Path(env).is_file():
        bold = os.environ.get("RERELRP_PDF_FONT_BOLD", env)
        return env, bold if Path(bold).is_file() else env
    for regular, bold in _FONT_CANDIDATES:
        if Path(regular).is_file():
            return regular, bold if Path(bold).is_file() else regular
    return None


def use_font(pdf, unicode=True):
    """Give ``pdf`` a Unicode TTF as family "body" (regular and bold) if one is found; returns its :class:`Printable`."""
    fonts = find_unicode_font() if unicode else None
    if not fonts:
        pdf.font_name = "helvetica"
        return Printable(None)
    from fontTools.ttLib import TTFont

    pdf.add_font("body", "", fonts[0])
    pdf.add_font("body", "B", fonts[1])
    pdf.font_name = "body"
    with TTFont(fonts[0], lazy=True) as ttf:
        return Printable(set(ttf.getBestCmap()))


class Printable:
    """Makes any string printable in the chosen font: unknown characters become close ASCII or '?'."""

    def __init__(self, cmap=None):
        self.cmap = cmap  # code points of the TTF font; None: latin-1 core font

    def ok(self, ch):
        if ch == "\n":
            return True
        if self.cmap is None:
            return ord(ch) < 256 and ch.isprintable()
        return ord(ch) in self.cmap and ch.isprintable()

    def __call__(self, text):
        out = []
        for ch in str(text):
            if self.ok(ch):
                out.append(ch)
                continue
            sub = _ASCII.get(ch)
            if sub is None:
                base = "".join(c for c in unicodedata.normalize("NFKD", ch) if self.ok(c) and not unicodedata.combining(c))
                sub = base or ("" if unicodedata.category(ch) in ("Cf", "Cc") else "?")
            out.append(sub)
        return "".join(out)
