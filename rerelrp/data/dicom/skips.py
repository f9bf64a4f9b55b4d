"""Why a file was not used: the exception every stage raises for one bad file, and how reasons are worded.

A bad file never stops a load. Whatever stage finds the problem (the zip reader, the parser, the
decoder, the pixel pipeline) raises :class:`Skip` with the reason; the loader catches it, scrubs
identifying values out of it and lists it in ``report.skipped``. The helpers here keep those
reasons short and readable, and keep a flood of same-cause skips (a cap was hit) to a summary.
"""
from __future__ import annotations

from rerelrp.data.core import SkippedFile

LISTED_SKIPS = 50  # cap-related skips are listed one by one up to this count, then summarised


class Skip(Exception):
    """One input file cannot be used; the message is the reason shown in the report.

    ``keep``: parts of the message known not to identify anyone (a SOP class name from pydicom's UID
    dictionary, a modality among the DICOM defined terms), which the scrubber leaves even where an
    identifying value of the file has the same text (a study described as "ECG" is no reason to hide
    the modality ECG).
    """

    def __init__(self, message, keep=()):
        super().__init__(message)
        self.keep = tuple(k for k in keep if k)


def short(exc, limit=200):
    """An exception as one line of at most ``limit`` characters, its type named."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def human(n):
    """A byte count as people read it: 512 B, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def add_listed(report, skips, what):
    """Add (path, reason) skips to the report: the first LISTED_SKIPS one by one, the rest as one line."""
    for path, reason in skips[:LISTED_SKIPS]:
        report.skipped.append(SkippedFile(path, reason))
    if len(skips) > LISTED_SKIPS:
        rest = len(skips) - LISTED_SKIPS
        report.skipped.append(SkippedFile(f"... {rest} more {what}", skips[LISTED_SKIPS][1]))
