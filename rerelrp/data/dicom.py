"""DICOM task data: a folder (or a ``.zip``) of DICOM files, one class per sub-folder or per manifest row.

Inputs
------
* ``<root>/<class>/**/*``: every sub-folder of ``root`` is a class; files may sit at any depth below it.
* ``<root>`` plus a CSV manifest (``manifest.csv`` in ``root``, or ``manifest=``) with the columns
  ``path,label`` and optionally ``split`` (train/val/test). Paths are relative to ``root``.
* A ``.zip`` of either layout (a path, ``bytes`` or a binary file object, as the app uploads it). It is
  checked entry by entry *before* anything is written (no absolute paths, no ``..``, no links, caps on
  the file count and the uncompressed size read from the archive's directory), extracted into a private
  temporary folder while counting the bytes actually written, and that folder is removed afterwards.

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
import io
import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from rerelrp.data.core import (
    ImageDataset,
    LoadReport,
    SkippedFile,
    Split,
    check_dataset,
    file_record,
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
    """One candidate file: where it is, its class and (from a manifest) its split."""

    path: Path
    rel: str
    label: str
    split: str | None = None


@dataclass
class _Loaded:
    item: _Item
    images: list  # uint8 (size, size) or (size, size, 3), one per frame used
    meta: dict  # the provenance entry (non-identifying attributes only)
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
        would take the uncompressed total over ``max_total_bytes`` are skipped (and reported).
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
    with tempfile.TemporaryDirectory(prefix="rerelrp-dicom-") as tmp:
        tmp = Path(tmp)
        base, source_record, ds_name, is_zip = _open_source(source, name, tmp, max_files, max_total_bytes, report)
        class_root = _find_class_root(base, manifest, is_zip, report)
        items, classes = _collect_items(base, class_root, manifest, max_files, report)
        error_path = report.source
        if not items:
            raise DataError(error_path, _nothing_found(report))
        loaded, identifiers = _read_all(items, opts, report, progress, stop)
        report.dropped_identifiers = sorted(identifiers)
        return _assemble(loaded, items, classes, opts, group_by, seed, report, source_record, ds_name, error_path)


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


def _open_source(source, name, tmp, max_files, max_total_bytes, report):
    """(folder to read, provenance of the source, data set name, whether it came from a zip)."""
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        upload = tmp / "upload.zip"
        with open(upload, "wb") as out:
            if hasattr(source, "read"):
                if hasattr(source, "seek"):
                    source.seek(0)
                shutil.copyfileobj(source, out, CHUNK)
            else:
                out.write(bytes(source))
        label = report.source
        record = file_record(upload)
        record["path"] = label
        folder = _extract_zip(upload, tmp / "extracted", label, max_files, max_total_bytes, report)
        return folder, record, name or Path(str(label)).stem or "upload", True
    path = Path(source)
    if not path.exists():
        raise DataError(path, "not found: give a folder with one sub-folder per class, or a .zip of one")
    if path.is_dir():
        return path, {"path": str(path)}, name or path.resolve().name, False
    if zipfile.is_zipfile(path):
        folder = _extract_zip(path, tmp / "extracted", str(path), max_files, max_total_bytes, report)
        return folder, file_record(path), name or path.stem, True
    if path.suffix.lower() == ".zip":
        raise DataError(path, "not a readable zip archive (damaged or not a zip); re-create the archive")
    raise DataError(
        path,
        "a single file cannot be a data set: give a folder with one sub-folder per class "
        "(or a manifest.csv with path,label columns), or a .zip of such a folder",
    )


def _unsafe_member(name):
    """Why a zip entry name would land outside the target folder, or None if it is safe."""
    if "\x00" in name:
        return "the name holds a NUL byte"
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        return "absolute path: it would be written outside the extraction folder"
    if ".." in PurePosixPath(clean).parts:
        return "path with '..': it would be written outside the extraction folder"
    return None


def _extract_zip(archive, target, label, max_files, max_total_bytes, report):
    """Extract the safe entries of ``archive`` into ``target``; every refused entry goes to the report.

    All checks on names, links, count and declared sizes run over the whole directory first; the
    bytes written are counted again while extracting, so an entry that lies about its size stops at
    the cap.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(label, f"not a readable zip archive ({exc}); re-create the archive") from exc
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    over_cap = []
    with zf:
        try:
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(label, f"damaged zip directory ({exc})") from exc
        plan, seen, n_files, declared = [], set(), 0, 0
        for info in infos:
            if info.is_dir():
                continue
            name = info.filename
            why = _unsafe_member(name)
            parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
            if why is None and not parts:
                why = "empty entry name"
            if why is None and info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
                why = "symbolic link entry: links are not followed"
            if why is None and info.flag_bits & 0x1:
                why = "encrypted entry: password-protected archives are not supported"
            if why is None and "/".join(parts) in seen:
                why = "duplicate entry name: only the first copy is used"
            if why is not None:
                report.skipped.append(SkippedFile(name, why))
                continue
            if n_files >= max_files:
                over_cap.append((name, f"zip bomb guard: more than max_files={max_files} files in the archive"))
                continue
            if declared + info.file_size > max_total_bytes:
                over_cap.append(
                    (
                        name,
                        f"zip bomb guard: {_human(info.file_size)} uncompressed would take the archive past "
                        f"max_total_bytes={_human(max_total_bytes)}",
                    )
                )
                continue
            seen.add("/".join(parts))
            n_files += 1
            declared += info.file_size
            plan.append((info, parts))
        written = 0
        for info, parts in plan:
            dest = target.joinpath(*parts)
            if not dest.resolve().is_relative_to(root):
                report.skipped.append(SkippedFile(info.filename, "would be written outside the extraction folder"))
                continue
            limit = min(info.file_size, max_total_bytes - written)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                count = 0
                with zf.open(info) as src, open(dest, "wb") as out:
                    while block := src.read(CHUNK):
                        count += len(block)
                        if count > limit:
                            raise _Skip(
                                "zip bomb guard: the entry decompresses to more than it declares "
                                f"({_human(info.file_size)}) or past max_total_bytes; extraction stopped"
                            )
                        out.write(block)
                written += count
            except _Skip as exc:
                dest.unlink(missing_ok=True)
                report.skipped.append(SkippedFile(info.filename, str(exc)))
            except Exception as exc:  # noqa: BLE001 - bad CRC, zlib.error, unsupported method, OSError
                if dest.is_file():
                    dest.unlink()
                report.skipped.append(SkippedFile(info.filename, f"cannot extract: {_short(exc)}"))
    _add_listed(report, over_cap, "archive entries")
    if over_cap:
        report.notes.append(
            f"{len(over_cap)} zip entries were not extracted because a cap was reached "
            f"(max_files={max_files}, max_total_bytes={_human(max_total_bytes)})"
        )
    return target


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


def _find_manifest(class_root, manifest):
    if manifest is not None:
        path = Path(manifest)
        if not path.is_absolute() and (class_root / path).is_file():
            path = class_root / path
        if not path.is_file():
            raise DataError(manifest, "manifest not found: give a CSV file with the columns path,label[,split]")
        return path
    for child in sorted(class_root.iterdir()) if class_root.is_dir() else []:
        if child.is_file() and child.name.lower() == MANIFEST_NAME:
            return child
    return None


def _find_class_root(base, manifest, is_zip, report):
    """The folder whose sub-folders are the classes; a zip holding one wrapping folder is unwrapped."""
    if not is_zip or manifest is not None or _find_manifest(base, None) is not None:
        return base
    dirs = [c for c in base.iterdir() if c.is_dir() and not _is_ignored_dir(c.name)]
    files = [c for c in base.iterdir() if c.is_file() and not c.name.startswith(".")]
    if len(dirs) == 1 and not files:
        inner = dirs[0]
        if _find_manifest(inner, None) is not None or any(
            c.is_dir() and not _is_ignored_dir(c.name) for c in inner.iterdir()
        ):
            report.notes.append(
                f"the archive wraps everything in the folder '{inner.name}'; its sub-folders are the classes"
            )
            return inner
    return base


def _walk_files(base, report):
    """Every regular file under ``base`` (sorted, links followed once); hidden/macOS folders reported."""
    out, visited = [], set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            report.skipped.append(SkippedFile(_rel(Path(dirpath), base) + "/", "folder link loop: not read again"))
            continue
        visited.add(real)
        keep = []
        for d in sorted(dirnames):
            if _is_ignored_dir(d):
                n = sum(len(f) for _, _, f in os.walk(Path(dirpath) / d))
                kind = "macOS metadata" if d == "__MACOSX" else "hidden"
                report.skipped.append(
                    SkippedFile(_rel(Path(dirpath) / d, base) + "/", f"{kind} folder ignored ({n} files)")
                )
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.is_file():
                out.append(p)
            else:
                report.skipped.append(SkippedFile(_rel(p, base), "not a regular file (broken link or device)"))
    return out


def _rel(path, base):
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).name


def _collect_items(base, class_root, manifest, max_files, report):
    manifest_path = _find_manifest(class_root, manifest)
    files = _walk_files(base, report)
    if manifest_path is not None:
        items = _items_from_manifest(manifest_path, class_root, base, files, report)
    else:
        items = []
        for p in files:
            try:
                inner = p.relative_to(class_root)
            except ValueError:
                inner = None
            if inner is None or len(inner.parts) < 2:
                report.skipped.append(
                    SkippedFile(_rel(p, base), "not inside a class folder (every class is a sub-folder of the root)")
                )
                continue
            items.append(_Item(p, _rel(p, base), inner.parts[0]))
    classes = {i.label for i in items}
    if manifest_path is None:
        for d in sorted(class_root.iterdir()):
            if d.is_dir() and not _is_ignored_dir(d.name) and d.name not in classes:
                report.notes.append(f"class folder '{d.name}' holds no files")
                classes.add(d.name)
    if len(items) > max_files:
        over = items[max_files:]
        _add_listed(report, [(i.rel, f"over the cap max_files={max_files}: not read") for i in over], "files")
        report.notes.append(f"only the first {max_files} of {len(items)} files were read (max_files)")
        items = items[:max_files]
    return items, sorted(classes)


def _items_from_manifest(manifest_path, class_root, base, files, report):
    label = manifest_path.name
    try:
        with open(manifest_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(manifest_path, f"cannot read the manifest as UTF-8 CSV ({_short(exc)})") from exc
    if not rows:
        raise DataError(manifest_path, "the manifest is empty; expected a header row path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(
            manifest_path,
            f"the header must name the columns 'path' and 'label' (optional 'split'); found {', '.join(header) or 'nothing'}",
        )
    col = {h: header.index(h) for h in ("path", "label", "split") if h in header}
    items, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        rel, cls = cells[col["path"]], cells[col["label"]]
        where = f"{label} row {number}"
        if not rel:
            report.skipped.append(SkippedFile(where, "empty path"))
            continue
        if not cls:
            report.skipped.append(SkippedFile(rel, f"{where}: empty label"))
            continue
        split = None
        if "split" in col:
            raw = cells[col["split"]].lower()
            if raw not in SPLIT_NAMES:
                raise DataError(
                    manifest_path,
                    f"row {number}: split '{cells[col['split']]}' is not one of train, val, test; fill the split "
                    "column on every row, or remove the column to get a seeded 70/15/15 split",
                )
            split = SPLIT_NAMES[raw]
        if _unsafe_member(rel) is not None:
            report.skipped.append(
                SkippedFile(rel, f"{where}: absolute or '..' path leads outside the data folder; give paths relative to it")
            )
            continue
        path = class_root / rel.replace("\\", "/")
        if not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(class_root)):
            report.skipped.append(SkippedFile(rel, f"{where}: the path leads outside the data folder"))
            continue
        if not path.is_file():
            report.skipped.append(SkippedFile(rel, f"{where}: file not found"))
            continue
        key = path.resolve()
        if key in seen:
            report.skipped.append(SkippedFile(rel, f"{where}: listed twice; the first row is used"))
            continue
        seen.add(key)
        items.append(_Item(path, _rel(path, base), cls, split))
    listed = {i.path.resolve() for i in items} | {manifest_path.resolve()}
    unlisted = [p for p in files if p.resolve() not in listed]
    if unlisted:
        names = ", ".join(_rel(p, base) for p in unlisted[:5])
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        report.notes.append(f"{len(unlisted)} files not listed in the manifest were ignored ({names}{more})")
    report.notes.append(f"classes and paths from the manifest {label}")
    return items


# ------------------------------------------------------------------------------ reading files


def _read_all(items, opts, report, progress, stop):
    identifiers = set()
    loaded = []
    total = len(items)
    counters = {"no_window": 0, "mosaic": 0, "private": 0, "gray_window_fallback": 0}
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


def _sniff(path):
    """'dicm' (preamble + marker), 'raw' (plausible dataset without preamble), 'empty' or None."""
    with open(path, "rb") as handle:
        head = handle.read(132)
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


def _read_dataset(path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    kind = _sniff(path)
    if kind == "empty":
        raise _Skip("empty file (0 bytes)")
    if kind is None:
        raise _Skip("not a DICOM file (no 'DICM' marker at byte 128 and no DICOM data set at the start)")
    try:
        ds = pydicom.dcmread(path, force=(kind == "raw"))
    except InvalidDicomError as exc:
        raise _Skip(f"not a DICOM file ({_short(exc)})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, NotImplementedError) as exc:
        raise _Skip(f"corrupt or truncated DICOM file: {_short(exc)}") from exc
    if kind == "raw" and len(ds) == 0:
        raise _Skip("not a DICOM file (no DICOM elements could be read)")
    return ds, kind


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
    ds, _ = _read_dataset(item.path)
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
        record = file_record(lo.item.path)
        record["path"] = lo.item.rel
        files.append({**record, **lo.meta, "class": lo.item.label, "split": split})
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
