"""Reading one file: is it DICOM, is it an image, and its images and provenance (or why it is skipped).

A file is DICOM by its content, never by its extension (:func:`sniff_dicom`): the ``DICM`` marker
at byte 128, or (files without the 128-byte preamble) a first tag of a DICOM group, which pydicom
then parses with ``force=True``. Objects that are not scans (segmentations, dose grids, plans,
structured reports, files without pixel data) are skipped with the reason. :func:`read_all` goes
through the items of a load, one file in memory at a time, and turns every failure into a skip
whose reason holds no identifying value.
"""
from __future__ import annotations

import io
import logging
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from rerelrp.data.core import SkippedFile
from rerelrp.data.dicom.collect import Item
from rerelrp.data.dicom.identifiers import GROUPINGS, scan_identifiers, scrub
from rerelrp.data.dicom.pixels import render
from rerelrp.data.dicom.skips import Skip, short
from rerelrp.errors import StopRequested
from rerelrp.fileio import sha256_bytes

# the first group of a data set stored without preamble: file meta, directory, identification, patient,
# acquisition, relationship, image
DICOM_FIRST_GROUPS = {0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}
NON_IMAGE_MODALITIES = {
    "SEG": "a segmentation (label map), not a scan",
    "RTDOSE": "a radiotherapy dose grid, not a scan",
    "RTSTRUCT": "radiotherapy structures, not a scan",
    "RTPLAN": "a radiotherapy plan, not a scan",
    "SR": "a structured report, not a scan",
}
# Modality defined terms (PS3.3 C.7.3.1.1.1, current and retired): a modality among them is a code, never
# an identifying value, and is kept in a reason even where an identifying value of the file reads the same
MODALITIES = frozenset(
    """
    AR ASMT AU BDUS BI BMD CD CF CP CR CS CT DD DF DG DM DOC DS DX EC ECG EPS ES FA FID FS GM HC HD IO IOL
    IVOCT IVUS KER KO LEN LP LS MA MG MR MS NM OAM OCT OP OPM OPR OPT OPTBSV OPTENF OPV OSS OT PLAN POS PR
    PT PX REG RESP RF RG RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN ST TEXTUREMAP
    TG US VA VF XA XAPROTOCOL XC CTPROTOCOL
    """.split()
)
PYDICOM_NOTES = 5  # distinct pydicom warnings quoted in a load's notes (the rest are counted)
_QUOTED = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|\s*Please see <[^>]*>[^.]*\.""")
_quiet_lock = threading.Lock()
_quiet_depth = [0, {}]  # reads under way (threads of one process); pydicom's loggers and their state before them


@dataclass
class Loaded:
    """One file read: its images and its provenance entry."""

    item: Item
    images: list  # uint8 (size, size, 1) or (size, size, 3), one per frame used
    meta: dict  # the provenance entry: size, SHA-256 and non-identifying attributes only
    keys: dict = field(default_factory=dict)  # grouping keys, held in memory only, never stored


@dataclass
class InMemory:
    """An uploaded file held in memory, opened like a path."""

    data: bytes

    def open(self, mode="rb"):
        return io.BytesIO(self.data)


def sniff_dicom(head):
    """'dicm' (preamble and ``DICM`` marker), 'raw' (a plausible data set without preamble) or None.

    ``head``: the first bytes of the file (132 suffice; only they are looked at).
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicm"
    if len(head) >= 8:
        little = int.from_bytes(head[0:2], "little")
        big = int.from_bytes(head[0:2], "big")
        if little in DICOM_FIRST_GROUPS or big in DICOM_FIRST_GROUPS:
            return "raw"
    return None


def new_counters():
    """What a load counts to mention in its report notes."""
    return {"no_window": 0, "mosaic": 0, "private": 0, "gray_window_fallback": 0, "pydicom": {}}


@contextmanager
def quiet_pydicom():
    """While a file is read: pydicom's warnings recorded (the yielded list), never printed, and its logger silent.

    pydicom quotes values in its warnings ("Invalid value for VR DA: '...'") and logs the same text
    to the "pydicom" logger, which prints wherever an application configured logging; both would carry
    a patient's values past the scrubber. The caller turns the recorded warnings into scrubbed notes.
    """
    with _quiet_lock:
        if _quiet_depth[0] == 0:
            _quiet_depth[1] = {logger: logger.disabled for logger in _pydicom_loggers()}
        _quiet_depth[0] += 1
        for logger in _quiet_depth[1]:
            logger.disabled = True
    try:
        with warnings.catch_warnings(record=True) as heard, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            yield heard
    finally:
        with _quiet_lock:
            _quiet_depth[0] -= 1
            if _quiet_depth[0] == 0:
                for logger, disabled in _quiet_depth[1].items():
                    logger.disabled = disabled


def _pydicom_loggers():
    """The "pydicom" logger and its children (the pixel decoders log on their own, past a disabled parent)."""
    names = [name for name in logging.Logger.manager.loggerDict if name.startswith("pydicom.")]
    return [logging.getLogger("pydicom"), *(logging.getLogger(name) for name in names)]


def note_warnings(heard, where, counters):
    """Count the distinct warnings of one file in ``counters["pydicom"]``, values left out and the rest scrubbed.

    Quoted parts of a message (where pydicom puts the value) become "[value]"; the scrubber then takes
    out any identifying value of the file that is still there.
    """
    texts = set()
    for w in heard:
        text = " ".join(_QUOTED.sub(lambda m: "" if m.group(0).lstrip().startswith("Please") else "[value]",
                                    str(w.message)).split())
        text = scrub(text, where)
        texts.add(text if len(text) <= 160 else text[:157] + "...")
    for text in texts:
        counters["pydicom"][text] = counters["pydicom"].get(text, 0) + 1


def read_all(items, opts, report, progress, stop):
    """(loaded files, identifying keywords met) of ``items``; skips and counted notes go to ``report``."""
    identifiers = set()
    loaded = []
    total = len(items)
    counters = new_counters()
    if progress is not None:
        progress(0, total)
    for done, item in enumerate(items, start=1):
        if stop is not None and stop.is_set():
            raise StopRequested("loading stopped on request; nothing was loaded")
        try:
            loaded.append(read_scrubbed(item, opts, identifiers, counters))
        except Skip as exc:
            report.skipped.append(SkippedFile(item.rel, str(exc)))
        if progress is not None:
            progress(done, total)
    if counters["no_window"]:
        report.notes.append(
            f"{counters['no_window']} gray files store no VOI LUT or window: shown at their full range (min..max)"
        )
    if counters["gray_window_fallback"]:
        report.notes.append(
            f"{counters['gray_window_fallback']} files lack the window index {opts.window}: shown at their full range"
        )
    if counters["mosaic"]:
        report.notes.append(
            f"{counters['mosaic']} Siemens MOSAIC images are used as stored (the tiled 2D image), not split into slices"
        )
    if counters["private"]:
        report.notes.append(f"{counters['private']} files carry private (vendor) elements; none are copied")
    if counters["pydicom"]:
        said = sorted(counters["pydicom"].items(), key=lambda kv: -kv[1])
        listed = "; ".join(f"{text} ({n} {'file' if n == 1 else 'files'})" for text, n in said[:PYDICOM_NOTES])
        more = f"; and {len(said) - PYDICOM_NOTES} other warnings" if len(said) > PYDICOM_NOTES else ""
        report.notes.append(f"pydicom warned while reading (values left out): {listed}{more}")
    return loaded, identifiers


def read_scrubbed(item, opts, identifiers, counters, unreadable="unreadable"):
    """:func:`read_one`, any failure raised as a :class:`Skip` whose reason holds no identifying value.

    pydicom's warnings about the file go, scrubbed, to ``counters["pydicom"]`` (see :func:`note_warnings`);
    the scrubbing reads values too, so it runs while pydicom is still kept quiet.
    """
    where = []  # (data set, tag) of the file's identifying values, for scrubbing a message
    with quiet_pydicom() as heard:
        try:
            return read_one(item, opts, identifiers, where, counters)
        except Skip as exc:
            raise Skip(scrub(str(exc), where, exc.keep)) from None
        except Exception as exc:  # noqa: BLE001 - a bad file never stops a load
            raise Skip(scrub(f"{unreadable}: {short(exc)}", where)) from None
        finally:
            note_warnings(heard, where, counters)


def read_dataset(source):
    """(data set, {"bytes", "sha256"} of the file) from ``source``: anything with ``open("rb")``.

    The file is read once, into memory: a Path from disk, a zip entry from the archive.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with source.open("rb") as handle:
        head = handle.read(132)
        if not head:
            raise Skip("empty file (0 bytes)")
        kind = sniff_dicom(head)
        if kind is None:
            raise Skip("not a DICOM file (no 'DICM' marker at byte 128 and no DICOM data set at the start)")
        handle.seek(0)
        data = handle.read()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=(kind == "raw"))
    except InvalidDicomError as exc:
        raise Skip(f"not a DICOM file ({short(exc)})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, NotImplementedError) as exc:
        raise Skip(f"corrupt or truncated DICOM file: {short(exc)}") from exc
    if kind == "raw" and len(ds) == 0:
        raise Skip("not a DICOM file (no DICOM elements could be read)")
    return ds, {"bytes": len(data), "sha256": sha256_bytes(data)}


def plain_text(ds, keyword):
    """An attribute as plain text ('' if absent or unreadable)."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def what_object(ds):
    """(modality, SOP class name, the parts of them known not to identify anyone) of a data set.

    A SOP class name is known when pydicom's UID dictionary gives it (else the name is the UID as
    stored, which a crafted file could fill with anything); a modality when it is a defined term.
    """
    from pydicom.uid import UID_dictionary

    modality = plain_text(ds, "Modality")
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", "") if sop else ""
    keep = [sop_name] if sop_name and str(sop) in UID_dictionary else []
    if modality in MODALITIES:
        keep.append(modality)
    return modality, sop_name, tuple(keep)


def read_one(item, opts, identifiers, where, counters):
    """One file as :class:`Loaded`; identifying keywords go to ``identifiers``, where their values are to ``where``."""
    ds, record = read_dataset(item.path)
    if scan_identifiers(ds, identifiers, where):
        counters["private"] += 1
    keys = {}
    for group, keyword in GROUPINGS.items():
        if keyword:
            value = plain_text(ds, keyword)
            if value:
                keys[group] = value  # in memory only, for group_by
    modality, sop_name, keep = what_object(ds)
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if modality.upper() in NON_IMAGE_MODALITIES or "Segmentation" in sop_name or "RT Dose" in sop_name:
        what = NON_IMAGE_MODALITIES.get(modality.upper(), sop_name)
        raise Skip(f"not an image: {sop_name or 'DICOM object'} (modality {modality or '?'}) is {what}", keep)
    if "Waveform" in sop_name:
        raise Skip(f"a waveform object ({sop_name}), not an image; modality {modality or '?'}", keep)
    if not has_pixels:
        what = sop_name or "DICOM object"
        raise Skip(f"no pixel data: {what} (modality {modality or '?'}) is not an image", keep)
    if "Rows" not in ds or "Columns" not in ds:
        raise Skip("pixel data without Rows/Columns: the image module is incomplete")
    photometric = plain_text(ds, "PhotometricInterpretation").upper()
    if not photometric:
        raise Skip("no Photometric Interpretation: cannot tell how to display the pixels")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB") and not photometric.startswith("YBR"):
        raise Skip(f"unsupported photometric interpretation {photometric}")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise Skip(f"invalid Number of Frames ({short(exc)})") from exc
    if n_frames < 1:
        raise Skip("Number of Frames is 0")
    images = render(ds, photometric, n_frames, opts, counters)
    meta = {
        **record,
        "modality": scrub(modality, where, keep),  # free text in a crafted file: scrubbed like a reason
        "body_part": scrub(plain_text(ds, "BodyPartExamined"), where),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "photometric": photometric,
        "frames_used": len(images),
        "frames_in_file": n_frames,
    }
    return Loaded(item, images, meta, keys)
