"""DICOM task data: a folder (or a ``.zip``) of DICOM files, one class per sub-folder or per manifest row.

Inputs
------
* ``<root>/<class>/**/*``: every sub-folder of ``root`` is a class; files may sit at any depth below it.
* ``<root>`` plus a CSV manifest (``manifest.csv`` in ``root``, or ``manifest=``) with the columns
  ``path,label`` and optionally ``split`` (train/val/test). Paths are relative to ``root``.
* A ``.zip`` of either layout (a path, ``bytes`` or a binary file object, as the app uploads it). It is
  read in memory and never extracted: nothing of it is written to disk, not even to a temporary file.
  Its directory is checked first (no absolute paths, no ``..``, no links, no encrypted or duplicate
  entries, caps on the file count and the uncompressed size it declares); then every entry is read
  into memory only when it is processed, one at a time, and the bytes actually read are counted
  against the size cap again.

A file is DICOM by its content, never by its extension: the ``DICM`` marker at byte 128, or (files
without the 128-byte preamble) a first tag of a DICOM group that pydicom parses with ``force=True``.

Pixel pipeline (per frame): decode (pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000, RLE; YBR is
converted to RGB) -> gray: Modality LUT (rescale slope/intercept) -> VOI LUT or window centre/width
(the first one stored; ``window="full"`` uses the data's min..max instead) -> 0..255 -> MONOCHROME1
inverted; colour: palette LUT applied, scaled by its bit depth -> padded to a square with 0 (the whole
field of view is kept: pad, not crop) -> resized to ``size`` x ``size`` (bilinear, antialiased).

Nothing that identifies a patient leaves this module: per file the provenance keeps the path relative
to the root, the SHA-256, modality, body part, rows x columns, photometric interpretation and the
frames used. The report lists which identifying *keywords* were present, never their values.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from rerelrp.data.core import (
    ImageDataset,
    LoadReport,
    SkippedFile,
    Split,
    check_dataset,
    stratified_holdout,
)
from rerelrp.errors import ConfigError, DataError, StopRequested

TEST_FRACTION = 0.15
VAL_FRACTION = 0.15
MIN_FOR_HOLDOUT = 3  # a class needs this many splitting units before it gives any to val/test
MANIFEST_NAME = "manifest.csv"
LISTED_SKIPS = 50  # cap-related skips are listed one by one up to this count, then summarised
CHUNK = 1 << 20

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
WINDOWS = ("first", "full")
FRAME_MODES = ("all", "middle")
GROUPINGS = {"file": None, "series": "SeriesInstanceUID", "study": "StudyInstanceUID", "patient": "PatientID"}

# Identifying attributes (after the DICOM basic confidentiality profile, PS3.15 E.1). Besides these,
# every person name (PN), date (DA), date-time (DT), time (TM) and instance UID counts as identifying.
IDENTIFYING = frozenset(
    """
    PatientName PatientID IssuerOfPatientID OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    PatientBirthDate PatientBirthTime PatientBirthName PatientMotherBirthName PatientSex PatientAge
    PatientSize PatientWeight PatientAddress PatientTelephoneNumbers PatientTelecomInformation
    MilitaryRank BranchOfService MedicalRecordLocator EthnicGroup Occupation AdditionalPatientHistory
    PatientComments PatientInsurancePlanCodeSequence PatientReligiousPreference CountryOfResidence
    RegionOfResidence ResponsiblePerson ResponsibleOrganization PregnancyStatus
    InstitutionName InstitutionAddress InstitutionalDepartmentName InstitutionCodeSequence
    ReferringPhysicianName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers
    PerformingPhysicianName OperatorsName PhysiciansOfRecord NameOfPhysiciansReadingStudy
    RequestingPhysician ScheduledPerformingPhysicianName
    AccessionNumber StudyID StudyInstanceUID SeriesInstanceUID SOPInstanceUID
    MediaStorageSOPInstanceUID FrameOfReferenceUID SynchronizationFrameOfReferenceUID
    ReferencedSOPInstanceUID IrradiationEventUID ConcatenationUID DimensionOrganizationUID
    StationName DeviceSerialNumber StudyDescription SeriesDescription RequestedProcedureDescription
    PerformedProcedureStepDescription PerformedProcedureStepID RequestedProcedureID
    ScheduledProcedureStepID ImageComments RequestAttributesSequence ReferencedPatientSequence
    ReferencedStudySequence ContentCreatorName VerifyingObserverName PersonName
    """.split()
)
NON_IMAGE_MODALITIES = {
    "SEG": "a segmentation (label map), not a scan",
    "RTDOSE": "a radiotherapy dose grid, not a scan",
    "RTSTRUCT": "radiotherapy structures, not a scan",
    "RTPLAN": "a radiotherapy plan, not a scan",
    "SR": "a structured report, not a scan",
}
DICOM_FIRST_GROUPS = {0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}


class _Skip(Exception):
    """One input file cannot be used; the message is the reason shown in the report."""


@dataclass
class _Options:
    size: int
    window: object
    frames: str
    max_frames: int


@dataclass
class _Item:
    """One candidate file: how to read it, its path relative to the root, its class and (manifest) split."""

    path: object  # open("rb") reads it: a Path on disk (folder) or a _ZipEntry (zip, read in memory)
    rel: str
    label: str
    split: str | None = None


@dataclass
class _Loaded:
    item: _Item
    images: list  # uint8 (size, size) or (size, size, 3), one per frame used
    meta: dict  # the provenance entry: size, SHA-256 and non-identifying attributes only
    keys: dict = field(default_factory=dict)  # grouping keys, held in memory only, never stored


def load_dicom(
    source,
    seed=0,
    size=64,
    window="first",
    frames="all",
    max_frames=16,
    max_files=20000,
    max_total_bytes=2 * 1024**3,
    manifest=None,
    group_by="file",
    progress=None,
    stop=None,
    name=None,
):
    """Load DICOM images from a folder or a zip as an :class:`ImageDataset` of uint8 images.

    Parameters
    ----------
    source : str | Path | bytes | binary file object
        A folder (one sub-folder per class, or a ``manifest.csv``), a ``.zip`` of one, or the bytes /
        file object of an uploaded zip.
    seed : int
        Seed of the train/val/test split.
    size : int
        Side of the square output images (8..1024).
    window : "first" | "full" | int | (center, width)
        Gray-level window: ``"first"`` applies the first VOI LUT or window centre/width stored in the
        file (files without one use their full range); an int picks that window; ``"full"`` maps the
        data's min..max (after the Modality LUT) to 0..255; ``(center, width)`` uses that window.
    frames : "all" | "middle"
        Multi-frame objects: every frame becomes a sample of the file's class, at most ``max_frames``
        of them (evenly spaced), or only the middle frame.
    max_files, max_total_bytes : int
        Caps against zip bombs and runaway folders: files beyond ``max_files`` and zip entries that
        would take the uncompressed total over ``max_total_bytes`` are skipped (and reported). A zip
        is read in memory, one entry at a time; nothing of it is written to disk.
    manifest : str | Path | None
        A CSV with ``path,label[,split]``; by default ``manifest.csv`` in the root is used if present.
    group_by : "file" | "series" | "study" | "patient"
        The unit that goes to one split as a whole. ``"file"`` (default) keeps all frames of a file
        together; ``"patient"`` (or series/study) keeps all files of a patient together, which avoids
        near-duplicate leakage between train and test. The keys are used in memory only.
    progress : callable(done, total) | None
        Called after every file, for a progress bar.
    stop : threading.Event-like | None
        If set between two files, the load stops with :class:`StopRequested`.
    name : str | None
        Name of the data set (default: the folder or zip name).

    Splitting rule (no ``split`` column in a manifest)
    -------------------------------------------------
    Per class and seeded, on the units of ``group_by``: a class with at least 3 units gives 15 % to
    test and 15 % to val, at least one each (about 70/15/15, always >= 1 left for training); a class
    with 1 or 2 units goes to train entirely (said in ``report.notes``). If val or test would then be
    empty overall, a :class:`DataError` says how many images per class are needed.

    Bad files never stop a load: non-DICOM files, non-image objects, missing or undecodable pixel
    data, truncated files, unsafe or oversized zip entries are skipped, each with its reason in
    ``report.skipped``. A :class:`DataError` is raised only when nothing usable remains, when a class
    has no usable image, or when the splits cannot be made.
    """
    opts = _check_options(size, window, frames, max_frames, max_files, max_total_bytes, group_by)
    report = LoadReport(source=_describe_source(source, name))
    error_path = report.source
    with _open_source(source, name, max_files, max_total_bytes, report) as (tree, source_record, ds_name):
        class_root = _find_class_root(tree, manifest, report)
        items, classes = _collect_items(tree, class_root, manifest, max_files, report)
        if not items:
            raise DataError(error_path, _nothing_found(report))
        loaded, identifiers = _read_all(items, opts, report, progress, stop)
    report.dropped_identifiers = sorted(identifiers)
    ds = _assemble(loaded, items, classes, opts, group_by, seed, report, source_record, ds_name, error_path)
    if isinstance(source, (str, os.PathLike)):  # a file on disk can be read again; an upload cannot
        ds.provenance["reload"] = {"loader": "dicom", "source": str(source), "size": opts.size,
                                   "window": ds.provenance["settings"]["window"], "frames": opts.frames,
                                   "max_frames": opts.max_frames, "group_by": group_by, "seed": seed,
                                   "manifest": None if manifest is None else str(manifest), "name": name}
    return ds


# ----------------------------------------------------------------------------------- arguments


def _check_options(size, window, frames, max_frames, max_files, max_total_bytes, group_by):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise ConfigError(f"size={size!r}: the image side must be an integer between 8 and 1024")
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ConfigError(f"window={window!r}: use 'first', 'full', a window index or (center, width)")
    elif isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        if window < 0:
            raise ConfigError(f"window={window}: a window index counts from 0")
    elif isinstance(window, (tuple, list)) and len(window) == 2:
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ConfigError(f"window={window!r}: (center, width) needs two numbers") from None
        if not (np.isfinite(center) and np.isfinite(width) and width > 0):
            raise ConfigError(f"window={window!r}: (center, width) needs finite numbers and a width > 0")
        window = (center, width)
    else:
        raise ConfigError(f"window={window!r}: use 'first', 'full', a window index or (center, width)")
    if frames not in FRAME_MODES:
        raise ConfigError(f"frames={frames!r}: use 'all' (up to max_frames per file) or 'middle'")
    for label, value in (("max_frames", max_frames), ("max_files", max_files), ("max_total_bytes", max_total_bytes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{label}={value!r}: must be a positive integer")
    if group_by not in GROUPINGS:
        raise ConfigError(f"group_by={group_by!r}: use one of {', '.join(GROUPINGS)}")
    return _Options(int(size), window, frames, int(max_frames))


def _describe_source(source, name):
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return name or getattr(source, "name", None) or "uploaded zip"


# -------------------------------------------------------------------------------- the source
#
# The rest of the module sees the input as a *source tree*: files named by root-relative POSIX
# paths ("rel", "" is the root). Two trees offer the same operations:
#   files(report)  every regular file (walk order: a folder's files, then its sub-folders);
#                  ignored folders and other problems go to the report
#   listdir(rel)   (sorted sub-folder names, sorted file names) directly in the folder rel
#   is_file(rel)   whether rel names a file of the tree
#   identity(rel)  equal for two paths that name the same file (links resolved)
#   handle(rel)    what an _Item keeps to read the file later: an object with open("rb")
#   where(rel)     how a message names the file
# _FolderTree reads files from disk where they are; _ZipTree reads a zip's entries into memory one
# at a time, so nothing of an archive is ever written anywhere.


@contextmanager
def _open_source(source, name, max_files, max_total_bytes, report):
    """Yield (source tree, provenance of the source, data set name); a zip stays open while it is read."""
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        label = report.source
        stream = _seekable(source)
        record = {"path": label, **_digest(stream)}
        with _open_zip(stream, label) as zf:
            yield _ZipTree(zf, label, max_files, max_total_bytes, report), record, name or Path(str(label)).stem or "upload"
        return
    path = Path(source)
    if not path.exists():
        raise DataError(path, "not found: give a folder with one sub-folder per class, or a .zip of one")
    if path.is_dir():
        yield _FolderTree(path), {"path": str(path)}, name or path.resolve().name
        return
    if zipfile.is_zipfile(path):
        with open(path, "rb") as stream:
            record = {"path": str(path), **_digest(stream)}
            with _open_zip(stream, str(path)) as zf:
                yield _ZipTree(zf, str(path), max_files, max_total_bytes, report), record, name or path.stem
        return
    if path.suffix.lower() == ".zip":
        raise DataError(path, "not a readable zip archive (damaged or not a zip); re-create the archive")
    raise DataError(
        path,
        "a single file cannot be a data set: give a folder with one sub-folder per class "
        "(or a manifest.csv with path,label columns), or a .zip of such a folder",
    )


def _seekable(upload):
    """A seekable binary stream over an upload (bytes or a file object), in memory if it must be copied."""
    if isinstance(upload, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(upload))
    if hasattr(upload, "seekable") and upload.seekable():
        return upload  # read from its start (see _digest)
    return io.BytesIO(upload.read())


def _digest(stream):
    """Size and SHA-256 of a binary stream from its start; the stream is left at its start."""
    stream.seek(0)
    digest, size = hashlib.sha256(), 0
    while block := stream.read(CHUNK):
        digest.update(block)
        size += len(block)
    stream.seek(0)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _open_zip(stream, label):
    """The archive's directory, read from ``stream`` (entries are read later, one at a time)."""
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(label, f"not a readable zip archive ({exc}); re-create the archive") from exc


def _join(*parts):
    """Root-relative POSIX path of ``parts`` joined ('' and '.' parts dropped; '..' kept as given)."""
    return "/".join(PurePosixPath(*parts).parts)


def _ignored_folder(rel, n_files):
    kind = "macOS metadata" if rel.rsplit("/", 1)[-1] == "__MACOSX" else "hidden"
    return SkippedFile(rel + "/", f"{kind} folder ignored ({n_files} files)")


class _FolderTree:
    """A folder on disk; its files are read from where they are."""

    is_archive = False

    def __init__(self, root):
        self.root = root

    def files(self, report):
        """Every regular file (sorted, links followed once); hidden/macOS folders and loops reported."""
        out, visited = [], set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            folder = Path(dirpath)
            real = os.path.realpath(dirpath)
            if real in visited:
                dirnames[:] = []
                report.skipped.append(SkippedFile(self._rel(folder) + "/", "folder link loop: not read again"))
                continue
            visited.add(real)
            keep = []
            for d in sorted(dirnames):
                if _is_ignored_dir(d):
                    n = sum(len(f) for _, _, f in os.walk(folder / d))
                    report.skipped.append(_ignored_folder(self._rel(folder / d), n))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                p = folder / f
                if p.is_file():
                    out.append(self._rel(p))
                else:
                    report.skipped.append(SkippedFile(self._rel(p), "not a regular file (broken link or device)"))
        return out

    def _rel(self, path):
        return path.relative_to(self.root).as_posix()

    def listdir(self, rel):
        folder = self.root / rel
        children = sorted(folder.iterdir()) if folder.is_dir() else []
        return [c.name for c in children if c.is_dir()], [c.name for c in children if c.is_file()]

    def is_file(self, rel):
        return (self.root / rel).is_file()

    def identity(self, rel):
        return (self.root / rel).resolve()

    def handle(self, rel):
        return self.root / rel  # a Path: open("rb") reads it from disk

    def where(self, rel):
        return self.root / rel


@dataclass(frozen=True)
class _ZipEntry:
    """One entry of a zip, read into memory (whole, within the size cap) when it is opened."""

    tree: "_ZipTree"
    info: zipfile.ZipInfo

    def open(self, mode="rb"):
        if mode != "rb":
            raise ValueError(f"zip entries are read only in binary mode, not {mode!r}")
        return io.BytesIO(self.tree.read(self.info))


def _new_counters():
    """What a load counts to mention in its report notes."""
    return {"no_window": 0, "mosaic": 0, "private": 0, "gray_window_fallback": 0}


@dataclass
class _Bytes:
    """An uploaded file held in memory, opened like a path."""

    data: bytes

    def open(self, mode="rb"):
        return io.BytesIO(self.data)


def read_dicom_image(data, name="upload", size=64, window="first"):
    """One uploaded 2D DICOM image, read in memory, through the same pipeline as a data set.

    Returns uint8 (size, size, C). A multi-frame object, a non-image object or an unreadable file
    raises :class:`DataError` naming the file, with any identifying value scrubbed from the reason.
    """
    opts = _check_options(size, window, "all", 2, 1, len(data) + 1, "file")
    scrub = []
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            loaded = _read_one(_Item(path=_Bytes(bytes(data)), rel=str(name), label=""), opts, set(), scrub,
                               _new_counters())
    except _Skip as exc:
        raise DataError(name, _scrub(str(exc), scrub)) from None
    except Exception as exc:  # noqa: BLE001 - a bad upload is reported, never a crash
        raise DataError(name, _scrub(f"unreadable DICOM file: {_short(exc)}", scrub)) from None
    frames = loaded.meta.get("frames_in_file", 1)
    if frames > 1:
        raise DataError(name, f"a multi-frame DICOM object ({frames} frames, a 3D volume or cine); "
                              "upload a single 2D image")
    image = loaded.images[0]
    return np.array(image[..., None] if image.ndim == 2 else image)


class _ZipTree:
    """A zip archive read in memory: nothing is extracted, nothing is written.

    All checks on names, links, encryption, duplicates, the file count and the declared sizes run over
    the whole directory first; every refused entry goes to the report. The bytes actually read are
    counted again entry by entry (:meth:`read`), so an entry that lies about its size stops at the cap.
    """

    is_archive = True

    def __init__(self, zf, label, max_files, max_total_bytes, report):
        self.zf, self.label, self.max_total_bytes = zf, label, max_total_bytes
        self.bytes_read = 0
        entries, over_cap, declared = {}, [], 0
        for info in zf.infolist():
            if info.is_dir():
                continue
            why = _unsafe_member(info.filename)
            rel = "" if why else _join(info.filename.replace("\\", "/"))
            if why is None and not rel:
                why = "empty entry name"
            if why is None and info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
                why = "symbolic link entry: links are not followed"
            if why is None and info.flag_bits & 0x1:
                why = "encrypted entry: password-protected archives are not supported"
            if why is None and rel in entries:
                why = "duplicate entry name: only the first copy is used"
            if why is not None:
                report.skipped.append(SkippedFile(info.filename, why))
                continue
            if len(entries) >= max_files:
                over_cap.append((info.filename, f"zip bomb guard: more than max_files={max_files} files in the archive"))
                continue
            if declared + info.file_size > max_total_bytes:
                over_cap.append(
                    (
                        info.filename,
                        f"zip bomb guard: {_human(info.file_size)} uncompressed would take the archive past "
                        f"max_total_bytes={_human(max_total_bytes)}",
                    )
                )
                continue
            declared += info.file_size
            entries[rel] = info
        _add_listed(report, over_cap, "archive entries")
        if over_cap:
            report.notes.append(
                f"{len(over_cap)} zip entries were not read because a cap was reached "
                f"(max_files={max_files}, max_total_bytes={_human(max_total_bytes)})"
            )
        # the order _FolderTree.files gives for a folder: a folder's files, then its sub-folders
        self.entries = dict(sorted(entries.items(), key=lambda kv: _walk_key(kv[0])))
        self.children = {"": (set(), [])}  # folder -> (sub-folder names, file names)
        for rel in self.entries:
            parts = rel.split("/")
            for k in range(len(parts) - 1):
                self.children.setdefault("/".join(parts[: k + 1]), (set(), []))
                self.children["/".join(parts[:k])][0].add(parts[k])
            self.children["/".join(parts[:-1])][1].append(parts[-1])

    def files(self, report):
        """Every accepted entry outside hidden/macOS folders (each such folder is reported once)."""
        out, ignored = [], {}
        for rel in self.entries:
            parts = rel.split("/")
            hidden = next((k for k, part in enumerate(parts[:-1]) if _is_ignored_dir(part)), None)
            if hidden is None:
                out.append(rel)
            else:
                folder = "/".join(parts[: hidden + 1])
                ignored[folder] = ignored.get(folder, 0) + 1
        for folder, n in ignored.items():
            report.skipped.append(_ignored_folder(folder, n))
        return out

    def listdir(self, rel):
        dirs, files = self.children.get(_join(rel), ((), ()))
        return sorted(dirs), sorted(files)

    def is_file(self, rel):
        return _join(rel) in self.entries

    def identity(self, rel):
        return _join(rel)

    def handle(self, rel):
        return _ZipEntry(self, self.entries[_join(rel)])

    def where(self, rel):
        return f"{self.label}/{_join(rel)}"

    def read(self, info):
        """The bytes of one entry, read into memory; at most the declared size and what the cap leaves."""
        limit = min(info.file_size, self.max_total_bytes - self.bytes_read)
        try:
            with self.zf.open(info) as src:
                data = src.read(limit + 1)
        except Exception as exc:  # noqa: BLE001 - bad CRC, zlib.error, unsupported method, OSError
            raise _Skip(f"cannot read this zip entry: {_short(exc)}") from exc
        if len(data) > limit:
            raise _Skip(
                "zip bomb guard: the entry decompresses to more than it declares "
                f"({_human(info.file_size)}) or past max_total_bytes={_human(self.max_total_bytes)}; reading stopped"
            )
        self.bytes_read += len(data)
        return data


def _walk_key(rel):
    """Sort key of a path in the order of os.walk over sorted names: a folder's files before its sub-folders."""
    parts = rel.split("/")
    return [(1, p) for p in parts[:-1]] + [(0, parts[-1])]


def _unsafe_member(name):
    """Why a zip entry name (or a manifest path) escapes its root, or None if it stays inside."""
    if "\x00" in name:
        return "the name holds a NUL byte"
    clean = name.replace("\\", "/")
    if clean.startswith("/"):
        return "absolute path ('/' at the start): it escapes the archive root"
    if re.match(r"^[A-Za-z]:", clean):
        return f"absolute path with a drive letter ('{clean[:2]}'): it escapes the archive root"
    if ".." in PurePosixPath(clean).parts:
        return "path escapes the archive root ('..')"
    return None


def _add_listed(report, skips, what):
    for path, reason in skips[:LISTED_SKIPS]:
        report.skipped.append(SkippedFile(path, reason))
    if len(skips) > LISTED_SKIPS:
        rest = len(skips) - LISTED_SKIPS
        report.skipped.append(SkippedFile(f"... {rest} more {what}", skips[LISTED_SKIPS][1]))


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _short(exc, limit=200):
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- finding files


def _is_ignored_dir(name):
    return name.startswith(".") or name == "__MACOSX"


def _manifest_in(tree, folder):
    """The manifest.csv directly in ``folder`` of the tree (any case), or None."""
    _, names = tree.listdir(folder)
    return next((_join(folder, n) for n in names if n.lower() == MANIFEST_NAME), None)


def _find_manifest(tree, class_root, manifest):
    """(where, rel) of the manifest: rel inside the tree, or None for a CSV on disk at ``where``."""
    if manifest is None:
        rel = _manifest_in(tree, class_root)
        return (None, None) if rel is None else (tree.where(rel), rel)
    path = Path(manifest)
    if not path.is_absolute():
        rel = _join(class_root, path.as_posix())
        if tree.is_file(rel):
            return tree.where(rel), rel
    if not path.is_file():
        raise DataError(manifest, "manifest not found: give a CSV file with the columns path,label[,split]")
    return path, None


def _find_class_root(tree, manifest, report):
    """The folder whose sub-folders are the classes; a zip holding one wrapping folder is unwrapped."""
    if not tree.is_archive or manifest is not None or _manifest_in(tree, "") is not None:
        return ""
    dirs, files = tree.listdir("")
    dirs = [d for d in dirs if not _is_ignored_dir(d)]
    files = [f for f in files if not f.startswith(".")]
    if len(dirs) == 1 and not files:
        inner = dirs[0]
        if _manifest_in(tree, inner) is not None or any(not _is_ignored_dir(d) for d in tree.listdir(inner)[0]):
            report.notes.append(
                f"the archive wraps everything in the folder '{inner}'; its sub-folders are the classes"
            )
            return inner
    return ""


def _under(rel, folder):
    """The parts of ``rel`` below ``folder`` ('' is the root), or None if it is not below it."""
    if not folder:
        return rel.split("/")
    return rel[len(folder) + 1 :].split("/") if rel.startswith(folder + "/") else None


def _collect_items(tree, class_root, manifest, max_files, report):
    where, manifest_rel = _find_manifest(tree, class_root, manifest)
    files = tree.files(report)
    if where is not None:
        items = _items_from_manifest(tree, where, manifest_rel, class_root, files, report)
    else:
        items = []
        for rel in files:
            inner = _under(rel, class_root)
            if inner is None or len(inner) < 2:
                report.skipped.append(
                    SkippedFile(rel, "not inside a class folder (every class is a sub-folder of the root)")
                )
                continue
            items.append(_Item(tree.handle(rel), rel, inner[0]))
    classes = {i.label for i in items}
    if where is None:
        for d in tree.listdir(class_root)[0]:
            if not _is_ignored_dir(d) and d not in classes:
                report.notes.append(f"class folder '{d}' holds no files")
                classes.add(d)
    if len(items) > max_files:
        over = items[max_files:]
        _add_listed(report, [(i.rel, f"over the cap max_files={max_files}: not read") for i in over], "files")
        report.notes.append(f"only the first {max_files} of {len(items)} files were read (max_files)")
        items = items[:max_files]
    return items, sorted(classes)


def _items_from_manifest(tree, where, manifest_rel, class_root, files, report):
    label = PurePosixPath(str(where)).name
    source = where if manifest_rel is None else tree.handle(manifest_rel)
    try:
        with source.open("rb") as handle:
            text = handle.read().decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except _Skip as exc:  # a damaged or over-cap zip entry
        raise DataError(where, f"cannot read the manifest: {exc}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(where, f"cannot read the manifest as UTF-8 CSV ({_short(exc)})") from exc
    if not rows:
        raise DataError(where, "the manifest is empty; expected a header row path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(
            where,
            f"the header must name the columns 'path' and 'label' (optional 'split'); found {', '.join(header) or 'nothing'}",
        )
    col = {h: header.index(h) for h in ("path", "label", "split") if h in header}
    items, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        rel, cls = cells[col["path"]], cells[col["label"]]
        at = f"{label} row {number}"
        if not rel:
            report.skipped.append(SkippedFile(at, "empty path"))
            continue
        if not cls:
            report.skipped.append(SkippedFile(rel, f"{at}: empty label"))
            continue
        split = None
        if "split" in col:
            raw = cells[col["split"]].lower()
            if raw not in SPLIT_NAMES:
                raise DataError(
                    where,
                    f"row {number}: split '{cells[col['split']]}' is not one of train, val, test; fill the split "
                    "column on every row, or remove the column to get a seeded 70/15/15 split",
                )
            split = SPLIT_NAMES[raw]
        if _unsafe_member(rel) is not None:
            report.skipped.append(
                SkippedFile(rel, f"{at}: absolute or '..' path leads outside the data folder; give paths relative to it")
            )
            continue
        entry = _join(class_root, rel.replace("\\", "/"))
        if not tree.is_file(entry):
            report.skipped.append(SkippedFile(rel, f"{at}: file not found"))
            continue
        key = tree.identity(entry)
        if key in seen:
            report.skipped.append(SkippedFile(rel, f"{at}: listed twice; the first row is used"))
            continue
        seen.add(key)
        items.append(_Item(tree.handle(entry), entry, cls, split))
    listed = seen | ({tree.identity(manifest_rel)} if manifest_rel is not None else set())
    unlisted = [f for f in files if tree.identity(f) not in listed]
    if unlisted:
        names = ", ".join(unlisted[:5])
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        report.notes.append(f"{len(unlisted)} files not listed in the manifest were ignored ({names}{more})")
    report.notes.append(f"classes and paths from the manifest {label}")
    return items


# ------------------------------------------------------------------------------ reading files


def _read_all(items, opts, report, progress, stop):
    identifiers = set()
    loaded = []
    total = len(items)
    counters = _new_counters()
    done = 0
    if progress is not None:
        progress(0, total)
    for item in items:
        if stop is not None and stop.is_set():
            raise StopRequested("loading stopped on request; nothing was loaded")
        scrub = []
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                loaded.append(_read_one(item, opts, identifiers, scrub, counters))
        except _Skip as exc:
            report.skipped.append(SkippedFile(item.rel, _scrub(str(exc), scrub)))
        except Exception as exc:  # noqa: BLE001 - a bad file never stops a load
            report.skipped.append(SkippedFile(item.rel, _scrub(f"unreadable: {_short(exc)}", scrub)))
        done += 1
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
    return loaded, identifiers


def _scrub(text, where):
    """Remove identifying values (found at ``where`` in the file) from a message before it is reported."""
    from pydicom.multival import MultiValue

    values = set()
    for dataset, tag in where:
        try:
            value = dataset[tag].value
        except Exception:  # noqa: BLE001 - unreadable values cannot be in a message either
            continue
        for v in value if isinstance(value, (list, tuple, MultiValue)) else [value]:
            values |= {str(v).strip(), str(v).replace("^", " ").strip()}
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, "[removed]")
    return text


def _sniff(head):
    """'dicm' (preamble + marker), 'raw' (plausible dataset without preamble), 'empty' or None.

    ``head`` is the first 132 bytes of the file (fewer if it is shorter).
    """
    if not head:
        return "empty"
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicm"
    if len(head) >= 8:
        little = int.from_bytes(head[0:2], "little")
        big = int.from_bytes(head[0:2], "big")
        if little in DICOM_FIRST_GROUPS or big in DICOM_FIRST_GROUPS:
            return "raw"
    return None


def _read_dataset(source):
    """(data set, {"bytes", "sha256"} of the file) from ``source``: anything with ``open("rb")``.

    The file is read once, into memory: a Path from disk, a zip entry from the archive.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with source.open("rb") as handle:
        kind = _sniff(handle.read(132))
        if kind == "empty":
            raise _Skip("empty file (0 bytes)")
        if kind is None:
            raise _Skip("not a DICOM file (no 'DICM' marker at byte 128 and no DICOM data set at the start)")
        handle.seek(0)
        data = handle.read()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=(kind == "raw"))
    except InvalidDicomError as exc:
        raise _Skip(f"not a DICOM file ({_short(exc)})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, NotImplementedError) as exc:
        raise _Skip(f"corrupt or truncated DICOM file: {_short(exc)}") from exc
    if kind == "raw" and len(ds) == 0:
        raise _Skip("not a DICOM file (no DICOM elements could be read)")
    return ds, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _scan_identifiers(ds, found, values):
    """Add identifying keywords present in ``ds`` (recursively) to ``found``; where they are to ``values``."""
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    private = False
    stack = [ds, getattr(ds, "file_meta", None)]
    while stack:
        current = stack.pop()
        if current is None:
            continue
        for tag in list(current.keys()):
            if tag.is_private:
                private = True
                continue
            keyword = keyword_for_tag(tag)
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = ""
            if vr == "SQ":
                try:
                    stack.extend(current[tag].value or [])
                except Exception:  # noqa: BLE001 - an unreadable sequence is simply not copied
                    pass
            identifying = (
                keyword in IDENTIFYING
                or vr in ("PN", "DA", "DT", "TM")
                or (vr == "UI" and (keyword.endswith("InstanceUID") or keyword.endswith("FrameOfReferenceUID")))
            )
            if identifying and keyword:
                found.add(keyword)
                if vr != "SQ":
                    values.append((current, tag))  # read only if a message must be scrubbed
    return private


def _text(ds, keyword):
    """A non-identifying attribute as plain text ('' if absent or unreadable)."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _frame_indices(n_frames, opts):
    if opts.frames == "middle":
        return [n_frames // 2]
    k = min(n_frames, opts.max_frames)
    return sorted(set(np.round(np.linspace(0, n_frames - 1, k)).astype(int).tolist()))


def _read_one(item, opts, identifiers, scrub, counters):
    ds, record = _read_dataset(item.path)
    if _scan_identifiers(ds, identifiers, scrub):
        counters["private"] += 1
    keys = {}
    for group, keyword in GROUPINGS.items():
        if keyword:
            value = _text(ds, keyword)
            if value:
                keys[group] = value  # in memory only, for group_by
    modality = _text(ds, "Modality")
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", "") if sop else ""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if modality.upper() in NON_IMAGE_MODALITIES or "Segmentation" in sop_name or "RT Dose" in sop_name:
        what = NON_IMAGE_MODALITIES.get(modality.upper(), sop_name)
        raise _Skip(f"not an image: {sop_name or 'DICOM object'} (modality {modality or '?'}) is {what}")
    if not has_pixels:
        what = sop_name or "DICOM object"
        raise _Skip(f"no pixel data: {what} (modality {modality or '?'}) is not an image")
    if "Rows" not in ds or "Columns" not in ds:
        raise _Skip("pixel data without Rows/Columns: the image module is incomplete")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if not photometric:
        raise _Skip("no Photometric Interpretation: cannot tell how to display the pixels")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB") and not photometric.startswith("YBR"):
        raise _Skip(f"unsupported photometric interpretation {photometric}")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise _Skip(f"invalid Number of Frames ({_short(exc)})") from exc
    if n_frames < 1:
        raise _Skip("Number of Frames is 0")
    _ensure_transfer_syntax(ds)
    indices = _frame_indices(n_frames, opts)
    raw_frames = [_decode(ds, i if n_frames > 1 else None) for i in indices]
    if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        counters["mosaic"] += 1
    if photometric.startswith("MONOCHROME"):
        images = _gray_frames(ds, raw_frames, indices, opts, counters)
        if photometric == "MONOCHROME1":
            images = [255 - im for im in images]
    else:
        images = [_color_frame(ds, f, photometric) for f in raw_frames]
    images = [_square(im, opts.size) for im in images]
    meta = {
        **record,
        "modality": modality,
        "body_part": _text(ds, "BodyPartExamined"),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "photometric": photometric,
        "frames_used": len(images),
        "frames_in_file": n_frames,
    }
    return _Loaded(item, images, meta, keys)


def _ensure_transfer_syntax(ds):
    """Files without meta information (read with force=True) get the syntax they were read in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    if ds.get("PixelData") is not None and ds["PixelData"].is_undefined_length:
        raise _Skip("compressed pixel data without meta information: the transfer syntax is unknown")
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def _decode(ds, index):
    from pydicom.pixels import pixel_array

    ts = ds.file_meta.TransferSyntaxUID
    try:
        arr = pixel_array(ds, index=index)
    except (RuntimeError, NotImplementedError) as exc:
        if getattr(ts, "is_compressed", False):
            raise _Skip(f"compressed pixel data ({ts.name}, {ts}) could not be decoded: {_short(exc)}") from exc
        raise _Skip(f"pixel data cannot be decoded: {_short(exc)}") from exc
    except (ValueError, EOFError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise _Skip(f"corrupt or truncated pixel data ({ts.name}): {_short(exc)}") from exc
    return np.asarray(arr)


def _frame_attributes(ds, index):
    """Rescale and window of one frame of an enhanced multi-frame object (functional groups)."""
    out = {}
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        if not groups:
            continue
        position = 0 if keyword.startswith("Shared") else (index or 0)
        if position >= len(groups):
            continue
        for macro, names in (
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
        ):
            seq = groups[position].get(macro)
            if seq:
                for name in names:
                    if name in seq[0]:
                        out[name] = seq[0][name].value
    return out


def _gray_frames(ds, raw_frames, indices, opts, counters):
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values, windows = [], []
    for raw, index in zip(raw_frames, indices):
        for name, value in _frame_attributes(ds, index).items():
            setattr(ds, name, value)
        if raw.ndim == 3:  # a gray frame with a stray sample axis
            raw = raw[..., 0]
        m = apply_modality_lut(raw, ds)
        window = opts.window
        if isinstance(window, tuple):
            center, width = window
            values.append(m.astype(np.float64))
            windows.append((center - width / 2, center + width / 2))
            continue
        if window == "full":
            values.append(m.astype(np.float64))
            windows.append(None)
            continue
        k = 0 if window == "first" else int(window)
        lut = ds.get("VOILUTSequence")
        has_lut = bool(lut) and k < len(lut) and "LUTDescriptor" in lut[k] and "LUTData" in lut[k]
        centers = ds.get("WindowCenter")
        if centers is None or "WindowWidth" not in ds:
            n_windows = 0
        else:
            n_windows = len(centers) if isinstance(centers, (list, tuple, MultiValue)) else 1
        if has_lut:
            if not np.issubdtype(m.dtype, np.integer):
                m = np.rint(m).astype(np.int64)
            v = apply_voi_lut(m, ds, index=k, prefer_lut=True)
            descriptor = lut[k].LUTDescriptor
            first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
            domain = np.arange(first, first + entries, dtype=np.int64)
            full = apply_voi_lut(domain, ds, index=k, prefer_lut=True)
            values.append(np.asarray(v, dtype=np.float64))
            windows.append((float(full.min()), float(full.max())))
        elif k < n_windows:
            v = apply_voi_lut(m, ds, index=k, prefer_lut=False)
            ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=k, prefer_lut=False)
            values.append(np.asarray(v, dtype=np.float64))
            windows.append((float(ends.min()), float(ends.max())))
        else:
            if n_windows or lut:
                counters["gray_window_fallback"] += 1
            else:
                counters["no_window"] += 1
            values.append(m.astype(np.float64))
            windows.append(None)
    if any(w is None for w in windows):  # full range, shared by all frames of the file
        finite = [v[np.isfinite(v)] for v in values]
        lo = min((float(f.min()) for f in finite if f.size), default=0.0)
        hi = max((float(f.max()) for f in finite if f.size), default=0.0)
        windows = [(lo, hi) if w is None else w for w in windows]
    return [_to_uint8(v, lo, hi) for v, (lo, hi) in zip(values, windows)]


def _to_uint8(values, lo, hi):
    """Map lo..hi linearly to 0..255 (clipped; NaN to 0)."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.subtract(values, lo, dtype=np.float32)
    scaled *= np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    scaled[np.isnan(scaled)] = 0
    return scaled.astype(np.uint8)


def _color_frame(ds, frame, photometric):
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds else 16
        top = 2**bits - 1 if bits in (8, 16) else (255 if rgb.dtype == np.uint8 else 65535)
    else:
        rgb = frame
        bits = int(ds.get("BitsStored", 8) or 8)
        top = 2**bits - 1
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise _Skip(f"colour image with shape {rgb.shape}: expected rows x columns x 3")
    if rgb.dtype == np.uint8 and top == 255:
        return rgb
    return _to_uint8(rgb.astype(np.float64), 0.0, float(top))


def _square(image, size):
    """Pad to a square with 0 (centred, nothing cropped), then resize to size x size."""
    from PIL import Image

    h, w = image.shape[:2]
    side = max(h, w)
    if h != w:
        padded = np.zeros((side, side) + image.shape[2:], dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top : top + h, left : left + w] = image
        image = padded
    if side != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image)


# ------------------------------------------------------------------------------- assembling


def _nothing_found(report):
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:3])
    return (
        "no usable DICOM image found: give a folder with one sub-folder per class holding DICOM files "
        "(or a manifest.csv with path,label columns)" + (f" (skipped: {reasons})" if reasons else "")
    )


def _assemble(loaded, items, classes, opts, group_by, seed, report, source_record, ds_name, error_path):
    usable = {lo.item.label for lo in loaded}
    if not loaded:
        raise DataError(error_path, _nothing_found(report))
    empty = [c for c in classes if c not in usable]
    if empty:
        label_of = {i.rel: i.label for i in items}
        details = []
        for c in empty:
            own = [s for s in report.skipped if label_of.get(s.path) == c]
            if own:
                why = "; ".join(f"{s.path}: {s.reason}" for s in own[:3])
                more = f" and {len(own) - 3} more" if len(own) > 3 else ""
                details.append(f"class '{c}' has no usable DICOM image ({len(own)} file(s) skipped: {why}{more})")
            else:
                details.append(f"class '{c}' has no usable DICOM image (no files)")
        raise DataError(
            error_path, "; ".join(details) + ". Every class needs at least one readable DICOM image; add images or remove the folder"
        )
    class_names = list(classes)
    class_index = {c: k for k, c in enumerate(class_names)}

    channels = {im.ndim for lo in loaded for im in lo.images}
    if channels == {2, 3}:
        n_gray = sum(1 for lo in loaded if lo.images[0].ndim == 2)
        report.notes.append(f"gray and colour files are mixed: {n_gray} gray files were repeated to 3 channels")
    to_rgb = 3 in channels

    def prepare(im):
        if im.ndim == 2:
            return np.repeat(im[..., None], 3, axis=-1) if to_rgb else im[..., None]
        return im

    splits = _assign_splits(loaded, class_index, class_names, group_by, seed, report, error_path)
    per_split = {"train": ([], []), "val": ([], []), "test": ([], [])}
    files = []
    for lo, split in zip(loaded, splits):
        images, labels = per_split[split]
        for im in lo.images:
            images.append(prepare(im))
            labels.append(class_index[lo.item.label])
        files.append({"path": lo.item.rel, **lo.meta, "class": lo.item.label, "split": split})
    c = 3 if to_rgb else 1

    def build(name):
        images, labels = per_split[name]
        if images:
            return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
        return Split(np.zeros((0, opts.size, opts.size, c), np.uint8), np.zeros(0, np.int64))

    n_frames = sum(len(lo.images) for lo in loaded)
    report.notes.insert(
        0,
        f"{len(loaded)} DICOM files read ({n_frames} images), {len(report.skipped)} skipped; "
        f"{len(class_names)} classes: {', '.join(class_names)}",
    )
    if len(class_names) == 1:
        report.notes.append("only one class was found: a task needs at least two classes to be learnt")
    if any(len(lo.images) > 1 for lo in loaded):
        report.notes.append(
            f"multi-frame files: frames='{opts.frames}'"
            + (f", at most {opts.max_frames} evenly spaced frames per file" if opts.frames == "all" else "")
            + "; all frames of a file go to the same split"
        )
    window = list(opts.window) if isinstance(opts.window, tuple) else opts.window
    ds = ImageDataset(
        name=ds_name,
        class_names=class_names,
        train=build("train"),
        val=build("val"),
        test=build("test"),
        provenance={
            "kind": "dicom",
            "source": source_record,
            "settings": {
                "size": opts.size,
                "window": window,
                "frames": opts.frames,
                "max_frames": opts.max_frames,
                "group_by": group_by,
                "seed": seed,
                "resize": "pad to square with 0, then bilinear resize",
            },
            "files": files,
        },
        report=report,
    )
    return check_dataset(ds, error_path)


def _assign_splits(loaded, class_index, class_names, group_by, seed, report, error_path):
    """A split name per loaded file (manifest splits as given, else the seeded rule of load_dicom)."""
    given = [lo.item.split for lo in loaded]
    if all(s is not None for s in given):
        report.notes.append("splits taken from the manifest's split column")
        return given
    # units: (class, group key); a file without the key is its own unit
    unit_of, units = [], {}
    missing_key = 0
    for n, lo in enumerate(loaded):
        key = lo.keys.get(group_by) if group_by != "file" else None
        if group_by != "file" and key is None:
            missing_key += 1
        unit = (lo.item.label, key if key is not None else f"file:{n}")
        unit_of.append(units.setdefault(unit, len(units)))
    unit_labels = np.zeros(len(units), dtype=np.int64)
    for (label, _), u in units.items():
        unit_labels[u] = class_index[label]
    counts = np.bincount(unit_labels, minlength=len(class_names))
    noun = "file" if group_by == "file" else group_by
    unit_split = np.zeros(len(units), dtype=np.int64)  # 0 train, 1 val, 2 test
    eligible = np.flatnonzero(counts[unit_labels] >= MIN_FOR_HOLDOUT)
    if eligible.size:
        rest, test = stratified_holdout(unit_labels[eligible], TEST_FRACTION, seed)
        _, val = stratified_holdout(unit_labels[eligible][rest], VAL_FRACTION / (1 - TEST_FRACTION), seed + 1)
        unit_split[eligible[test]] = 2
        unit_split[eligible[rest[val]]] = 1
    small = [f"{class_names[c]} ({counts[c]})" for c in range(len(class_names)) if 0 < counts[c] < MIN_FOR_HOLDOUT]
    if small:
        report.notes.append(
            f"classes with fewer than {MIN_FOR_HOLDOUT} {noun}s are used for training only: {', '.join(small)}"
        )
    if not (unit_split == 1).any() or not (unit_split == 2).any():
        found = ", ".join(f"{class_names[c]} {counts[c]}" for c in range(len(class_names)))
        raise DataError(
            error_path,
            f"too few images to make train/val/test splits: a class gives images to val and test only when it "
            f"has at least {MIN_FOR_HOLDOUT} {noun}s, and at least one class must (found {noun}s per class: "
            f"{found}). Add images, or give a manifest.csv with a split column",
        )
    if group_by != "file":
        report.notes.append(
            f"split by {group_by}: {len(units)} groups"
            + (f" ({missing_key} files without the key are their own group)" if missing_key else "")
            + "; a group that appears in two classes is split per class"
        )
    report.notes.append(
        f"splits: stratified by class, seed {seed}, about {1 - VAL_FRACTION - TEST_FRACTION:.0%}/"
        f"{VAL_FRACTION:.0%}/{TEST_FRACTION:.0%} of the {noun}s of each class with >= {MIN_FOR_HOLDOUT} {noun}s"
    )
    names = np.array(["train", "val", "test"])
    return [str(names[unit_split[u]]) for u in unit_of]
