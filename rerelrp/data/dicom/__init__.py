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

Nothing that identifies a patient leaves this package: per file the provenance keeps the path relative
to the root, the SHA-256, modality, body part, rows x columns, photometric interpretation and the
frames used. The report lists which identifying *keywords* were present, never their values.

Modules, in the order a load goes through them: ``sources`` (a folder, or a zip read in memory, and
zip safety), ``collect`` (class folders or a manifest -> the items), ``read`` (one file: DICOM or not,
an image or not), ``identifiers`` (what identifies a patient; scrubbing messages), ``pixels`` (the
pixel pipeline), ``assemble`` (splits, notes, provenance); ``skips`` holds the reason every stage
raises for a file it cannot use.

Parameters of :func:`load_dicom`
--------------------------------
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
group_by : "auto" | "patient" | "study" | "series" | "file"
    The unit that goes to one split as a whole, so that test images are new patients (or studies,
    scans), not near-duplicates of training images. ``"auto"`` (default), per class: patient when
    every file names one (PatientID), else study, else series, else file; where that gives fewer
    than 3 units (one could not be held out for both val and test) the next finer unit is used, with
    a warning in ``report.warnings`` saying what the test figures then measure. An explicit unit
    is used as given (a file without its key is its own unit), with a warning for each class that
    has fewer than 3. ``"file"`` keeps only the frames of a file together. The keys are used in
    memory only; ``provenance["split"]`` holds the counts, and every image's unit is an anonymous
    code in ``Split.groups``.
progress : callable(done, total) | None
    Called after every file, for a progress bar.
stop : threading.Event-like | None
    If set between two files, the load stops with :class:`StopRequested`.
name : str | None
    Name of the data set (default: the folder or zip name).

Splitting rule (no ``split`` column in a manifest; a manifest's split column is taken as given)
-----------------------------------------------------------------------------------------------
Per class and seeded, on the units of ``group_by``: a class with at least 3 units gives 15 % to
test and 15 % to val, at least one each (about 70/15/15, always >= 1 left for training); a class
with 1 or 2 units goes to train entirely (said in ``report.warnings``). If val or test would then
be empty overall, a :class:`DataError` says how many units per class are needed.

Bad files never stop a load: non-DICOM files, non-image objects, missing or undecodable pixel
data, truncated files, unsafe or oversized zip entries are skipped, each with its reason in
``report.skipped``. A :class:`DataError` is raised only when nothing usable remains, when a class
has no usable image, or when the splits cannot be made.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rerelrp.data.core import LoadReport
from rerelrp.data.dicom.assemble import assemble, nothing_found
from rerelrp.data.dicom.collect import Item, collect_items
from rerelrp.data.dicom.identifiers import GROUP_BY, GROUPINGS, IDENTIFYING
from rerelrp.data.dicom.pixels import FRAME_MODES, WINDOWS, Options
from rerelrp.data.dicom.read import DICOM_FIRST_GROUPS, InMemory, new_counters, read_all, read_scrubbed, sniff_dicom
from rerelrp.data.dicom.skips import Skip
from rerelrp.data.dicom.sources import describe_source, open_source
from rerelrp.errors import ConfigError, DataError
from rerelrp.text import printable

__all__ = ["DICOM_FIRST_GROUPS", "GROUP_BY", "GROUPINGS", "IDENTIFYING", "load_dicom", "read_dicom_image",
           "read_dicom_image_with_meta", "sniff_dicom"]


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
    group_by="auto",
    progress=None,
    stop=None,
    name=None,
):
    """Load DICOM images from a folder or a zip as an :class:`ImageDataset` of uint8 images.

    Medical images come as DICOM far more often than as arrays; this reads them, skipping bad files with
    a reason, keeping nothing that identifies a patient, and splitting by patient where it can. The
    parameters, the splitting rule and when a load fails are documented once, in this module's docstring
    ("Parameters of load_dicom") and in docs/dicom.md.
    """
    opts = _check_options(size, window, frames, max_frames, max_files, max_total_bytes, group_by)
    report = LoadReport(source=describe_source(source, name))
    error_path = report.source
    with open_source(source, name, max_files, max_total_bytes, report) as (tree, source_record, ds_name):
        items, classes = collect_items(tree, manifest, max_files, report)
        if not items:
            raise DataError(error_path, nothing_found(report))
        loaded, identifiers = read_all(items, opts, report, progress, stop)
    report.dropped_identifiers = sorted(identifiers)
    ds = assemble(loaded, items, classes, opts, group_by, seed, report, source_record, printable(ds_name), error_path)
    if isinstance(source, (str, os.PathLike)):  # a file on disk can be read again; an upload cannot
        ds.provenance["reload"] = {"loader": "dicom", "source": str(Path(source).resolve()), "size": opts.size,
                                   "window": ds.provenance["settings"]["window"], "frames": opts.frames,
                                   "max_frames": opts.max_frames, "group_by": group_by, "seed": seed,
                                   "manifest": None if manifest is None else str(manifest), "name": name}
    return ds


def _check_options(size, window, frames, max_frames, max_files, max_total_bytes, group_by):
    """The settings as :class:`Options`, checked before anything is read (a bad one is a ConfigError)."""
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
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by={group_by!r}: use one of {', '.join(GROUP_BY)}")
    return Options(int(size), window, frames, int(max_frames))


def read_dicom_image(data, name="upload", size=64, window="first"):
    """One uploaded 2D DICOM image, read in memory, through the same pipeline as a data set.

    Returns uint8 (size, size, C). A multi-frame object, a non-image object or an unreadable file
    raises :class:`DataError` naming the file, with any identifying value scrubbed from the reason.
    """
    return read_dicom_image_with_meta(data, name, size, window)[0]


def read_dicom_image_with_meta(data, name="upload", size=64, window="first"):
    """:func:`read_dicom_image` and the file's non-identifying attributes (modality, body part, size, SHA-256):
    the modality lets a caller tell an MR slice from a chest X-ray by its header (:mod:`rerelrp.method.modality`)."""
    opts = _check_options(size, window, "all", 2, 1, len(data) + 1, "file")
    item = Item(path=InMemory(bytes(data)), rel=str(name), label="")
    try:
        loaded = read_scrubbed(item, opts, set(), new_counters(), unreadable="unreadable DICOM file")
    except Skip as exc:
        raise DataError(name, str(exc)) from None
    frames = loaded.meta.get("frames_in_file", 1)
    if frames > 1:
        raise DataError(name, f"a multi-frame DICOM object ({frames} frames, a 3D volume or cine); "
                              "upload a single 2D image")
    return np.array(loaded.images[0]), dict(loaded.meta)
