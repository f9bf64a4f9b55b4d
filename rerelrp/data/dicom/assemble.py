"""Building the ImageDataset from the files read: classes, train/val/test splits, notes, provenance.

Splits are made on *units* of ``group_by`` (a file, or every file of one series, study or patient),
per class and seeded, so that near-duplicates (the slices of one series, the scans of one patient)
never sit on both sides of the train/test line; ``"auto"`` takes the patient where it can and says,
in the report's warnings, where a class had to be split below it. A manifest's ``split`` column is
taken as given.
All frames of a file share its split. Gray and colour files mixed make 3-channel images. The
provenance holds the settings and, per file, only non-identifying attributes.
"""
from __future__ import annotations

import numpy as np

from rerelrp.data.core import SPLITS, ImageDataset, Split, check_dataset, split_record, stratified_holdout
from rerelrp.data.dicom.identifiers import GROUPINGS
from rerelrp.errors import DataError

TEST_FRACTION = 0.15
VAL_FRACTION = 0.15
MIN_FOR_HOLDOUT = 3  # a class needs this many splitting units before it gives any to val/test
PLURAL = {"patient": "patients", "study": "studies", "series": "series", "file": "files"}


def nothing_found(report):
    """The error message of a load that found no usable image, with the first reasons."""
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:3])
    return (
        "no usable DICOM image found: give a folder with one sub-folder per class holding DICOM files "
        "(or a manifest.csv with path,label columns)" + (f" (skipped: {reasons})" if reasons else "")
    )


def assemble(loaded, items, classes, opts, group_by, seed, report, source_record, ds_name, error_path):
    """The checked :class:`ImageDataset` of the loaded files, or a DataError naming what is missing."""
    _check_every_class_read(loaded, items, classes, report, error_path)
    class_names = list(classes)
    class_index = {c: k for k, c in enumerate(class_names)}
    to_rgb = _output_is_colour(loaded, report)
    splits, unit_of, split_rec = _assign_splits(loaded, class_index, class_names, group_by, seed, report, error_path)
    report.warnings.extend(split_rec["warnings"])
    by_split = _images_by_split(loaded, splits, unit_of, class_index, to_rgb)
    _add_load_notes(loaded, class_names, opts, report)
    built = {s: _stack_split(*by_split[s], opts.size, 3 if to_rgb else 1) for s in SPLITS}
    ds = ImageDataset(
        name=ds_name,
        class_names=class_names,
        train=built["train"],
        val=built["val"],
        test=built["test"],
        provenance={
            "kind": "dicom",
            "source": source_record,
            "settings": _settings_record(opts, group_by, seed),
            "split": split_rec,
            "files": [{"path": lo.item.rel, **lo.meta, "class": lo.item.label, "split": split}
                      for lo, split in zip(loaded, splits)],
        },
        report=report,
    )
    return check_dataset(ds, error_path)


def _check_every_class_read(loaded, items, classes, report, error_path):
    """A DataError when no file was usable, or when a class has no usable file (with the first reasons why)."""
    if not loaded:
        raise DataError(error_path, nothing_found(report))
    usable = {lo.item.label for lo in loaded}
    empty = [c for c in classes if c not in usable]
    if empty:
        label_of = {i.rel: i.label for i in items}
        details = [_why_class_is_empty(c, [s for s in report.skipped if label_of.get(s.path) == c]) for c in empty]
        raise DataError(
            error_path,
            "; ".join(details) + ". Every class needs at least one readable DICOM image; add images or remove the folder",
        )


def _why_class_is_empty(c, own):
    """The sentence for class ``c`` without a usable image, naming the first of its skipped files ``own``."""
    if not own:
        return f"class '{c}' has no usable DICOM image (no files)"
    why = "; ".join(f"{s.path}: {s.reason}" for s in own[:3])
    more = f" and {len(own) - 3} more" if len(own) > 3 else ""
    return f"class '{c}' has no usable DICOM image ({len(own)} file(s) skipped: {why}{more})"


def _output_is_colour(loaded, report):
    """Whether the images are made 3-channel (any file is colour); a note when gray files are repeated to match."""
    channels = {im.shape[-1] for lo in loaded for im in lo.images}
    if channels == {1, 3}:
        n_gray = sum(1 for lo in loaded if lo.images[0].shape[-1] == 1)
        report.notes.append(f"gray and colour files are mixed: {n_gray} gray files were repeated to 3 channels")
    return 3 in channels


def _images_by_split(loaded, splits, unit_of, class_index, to_rgb):
    """{split: (images, labels, unit codes)} as lists, every frame of a file in its file's split."""
    by_split = {s: ([], [], []) for s in SPLITS}
    for lo, split, unit in zip(loaded, splits, unit_of):
        images, labels, groups = by_split[split]
        for im in lo.images:
            images.append(np.repeat(im, 3, axis=-1) if to_rgb and im.shape[-1] == 1 else im)
            labels.append(class_index[lo.item.label])
            groups.append(unit)
    return by_split


def _stack_split(images, labels, groups, size, channels):
    """The :class:`Split` of the listed images (an empty one of the data set's shape when there are none)."""
    if images:
        return Split(np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=np.int64))
    return Split(np.zeros((0, size, size, channels), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))


def _add_load_notes(loaded, class_names, opts, report):
    """The notes on what was read: the file and class count first, then one class only, multi-frame files."""
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


def _settings_record(opts, group_by, seed):
    """The load settings as the provenance keeps them (a window pair as a list, for JSON)."""
    return {
        "size": opts.size,
        "window": list(opts.window) if isinstance(opts.window, tuple) else opts.window,
        "frames": opts.frames,
        "max_frames": opts.max_frames,
        "group_by": group_by,
        "seed": seed,
        "resize": "pad to square with 0, then bilinear resize",
    }


def _assign_splits(loaded, class_index, class_names, group_by, seed, report, error_path):
    """Per loaded file its split name and unit code, and the split record (the seeded rule of load_dicom).

    A manifest's split column wins over ``group_by``. Unit codes number the units 0..G-1 in the order
    the files were read: they tell which images belong together, nothing about whom.
    """
    files_of = {c: [lo for lo in loaded if lo.item.label == c] for c in class_names}
    counts = {c: {u: _distinct(files, u) for u in GROUPINGS} for c, files in files_of.items()}
    if all(lo.item.split is not None for lo in loaded):
        report.notes.append("splits taken from the manifest's split column (group_by is not used)")
        return _manifest_splits(loaded, files_of, counts)
    first, unit = _choose_units(counts, class_names, group_by)
    unit_of, unit_labels, missing_key = _number_units(loaded, unit, class_index)
    n_units = np.bincount(unit_labels, minlength=len(class_names))
    unit_split = _split_units(unit_labels, n_units, seed)
    common = set(unit.values()).pop() if len(set(unit.values())) == 1 else None
    if not (unit_split == 1).any() or not (unit_split == 2).any():
        raise DataError(error_path, _too_few_units(class_names, unit, n_units, common, group_by))
    grouping = _grouping_note(class_names, unit, n_units, counts, group_by, len(unit_labels), missing_key)
    if grouping:
        report.notes.append(grouping)
    plural = PLURAL[common] if common else "units"
    report.notes.append(
        f"splits: stratified by class, seed {seed}, about {1 - VAL_FRACTION - TEST_FRACTION:.0%}/"
        f"{VAL_FRACTION:.0%}/{TEST_FRACTION:.0%} of the {plural} of each class with >= {MIN_FOR_HOLDOUT} {plural}"
    )
    per_class = _class_records(class_names, first, unit, counts, n_units, unit_labels, unit_split)
    return [SPLITS[unit_split[u]] for u in unit_of], unit_of, split_record(per_class)


def _choose_units(counts, class_names, group_by):
    """({class: the coarsest unit its files all name}, {class: the unit it is split by}).

    ``"auto"`` takes the coarsest known unit with at least MIN_FOR_HOLDOUT units, else "file";
    an explicit ``group_by`` is used for every class as given.
    """
    first, unit = {}, {}
    for c in class_names:
        known = [u for u in GROUPINGS if counts[c][u] is not None]  # "file" is always known
        enough = [u for u in known if counts[c][u] >= MIN_FOR_HOLDOUT]
        first[c], unit[c] = (known[0], enough[0] if enough else "file") if group_by == "auto" else (group_by, group_by)
    return first, unit


def _number_units(loaded, unit, class_index):
    """(per file its unit code, per unit code its class index, how many files lacked their class's key).

    A unit is (class, group key); a file without the key is its own unit.
    """
    unit_of, units = [], {}
    missing_key = 0
    for n, lo in enumerate(loaded):
        c = lo.item.label
        key = lo.keys.get(unit[c]) if unit[c] != "file" else None
        if unit[c] != "file" and key is None:
            missing_key += 1
        unit_of.append(units.setdefault((c, ("file", n) if key is None else ("key", key)), len(units)))
    unit_labels = np.zeros(len(units), dtype=np.int64)
    for (label, _), u in units.items():
        unit_labels[u] = class_index[label]
    return unit_of, unit_labels, missing_key


def _split_units(unit_labels, n_units, seed):
    """Per unit 0 (train), 1 (val) or 2 (test): stratified and seeded over the classes with enough units."""
    unit_split = np.zeros(len(unit_labels), dtype=np.int64)
    eligible = np.flatnonzero(n_units[unit_labels] >= MIN_FOR_HOLDOUT)
    if eligible.size:
        rest, test = stratified_holdout(unit_labels[eligible], TEST_FRACTION, seed)
        _, val = stratified_holdout(unit_labels[eligible][rest], VAL_FRACTION / (1 - TEST_FRACTION), seed + 1)
        unit_split[eligible[test]] = 2
        unit_split[eligible[rest[val]]] = 1
    return unit_split


def _too_few_units(class_names, unit, n_units, common, group_by):
    """The error message when val or test is empty: the units each class has and how to get more."""
    noun = PLURAL[common] if common else "units"
    what = noun if common else "units (patients, studies, series or files)"
    found = ", ".join(f"{c} {n_units[k]}" if common else f"{c} {_amount(n_units[k], unit[c])}"
                      for k, c in enumerate(class_names))
    return (
        f"too few images to make train/val/test splits: a class gives images to val and test only when it "
        f"has at least {MIN_FOR_HOLDOUT} {what}, and at least one class must (found {noun} per class: {found}). Add images, "
        + ("split by a finer unit (group_by='auto' does so per class), " if group_by not in ("auto", "file") else "")
        + "or give a manifest.csv with a split column"
    )


def _grouping_note(class_names, unit, n_units, counts, group_by, n_groups, missing_key):
    """The note on the units split on (None for ``group_by="file"``): per class for "auto", else the group count."""
    if group_by == "auto":
        return (
            f"group_by='auto': each class is split by patient, else study, series or file, the coarsest unit its "
            f"files all name that gives at least {MIN_FOR_HOLDOUT}: "
            + ", ".join(_unit_summary(c, unit[c], n_units[k], counts[c]["patient"]) for k, c in enumerate(class_names))
        )
    if group_by != "file":
        return (
            f"split by {group_by}: {n_groups} groups"
            + (f" ({missing_key} files without the key are their own group)" if missing_key else "")
            + "; a group that appears in two classes is split per class"
        )
    return None


def _class_records(class_names, first, unit, counts, n_units, unit_labels, unit_split):
    """Per class its entry of the split record: the unit, patients, units per split and its warning."""
    per_class = {}
    for k, c in enumerate(class_names):
        mine = unit_labels == k
        warning = _warning(c, first[c], unit[c], counts[c], int(n_units[k]))
        per_class[c] = {"unit": unit[c], "patients": counts[c]["patient"],
                        "groups": {name: int(np.sum(mine & (unit_split == s))) for s, name in enumerate(SPLITS)},
                        "warnings": [warning] if warning else []}
    return per_class


def _manifest_splits(loaded, files_of, counts):
    """Splits as the manifest gives them, every file its own unit; a patient in two splits is warned about."""
    per_class = {}
    for c, files in files_of.items():
        splits_of = {}
        for lo in files:
            splits_of.setdefault(lo.keys.get("patient"), set()).add(lo.item.split)
        spread = sum(len(s) > 1 for s in splits_of.values()) if counts[c]["patient"] is not None else 0
        per_class[c] = {
            "unit": "manifest", "patients": counts[c]["patient"],
            "groups": {s: sum(lo.item.split == s for lo in files) for s in SPLITS},
            "warnings": [f"class '{c}': the manifest puts {spread} of {_amount(counts[c]['patient'], 'patient')} in "
                         "more than one split: test figures then partly measure patients seen in training"] if spread else [],
        }
    return [lo.item.split for lo in loaded], list(range(len(loaded))), split_record(per_class)


def _distinct(files, unit):
    """How many units of ``unit`` the files of a class make; None when one of them lacks the key."""
    if unit == "file":
        return len(files)
    values = {lo.keys.get(unit) for lo in files}
    return None if None in values else len(values)


def _amount(n, unit):
    """'1 patient', '2 studies', '6 files'."""
    return f"{n} {unit if n == 1 else PLURAL[unit]}"


def _unit_summary(c, unit, n_units, patients):
    """'ct by file (28 files; 1 patient)' for the note of an automatic split."""
    if unit == "patient":
        return f"{c} by patient ({_amount(n_units, unit)})"
    return f"{c} by {unit} ({_amount(n_units, unit)}; {'no PatientID' if patients is None else _amount(patients, 'patient')})"


def _warning(c, first, unit, counts, n_units):
    """What limits the test figures of one class (None if nothing does): too few units, or not new patients."""
    patients = counts["patient"]
    if n_units < MIN_FOR_HOLDOUT:
        known = f"{_amount(patients, 'patient')}, " if patients is not None and unit != "patient" else ""
        return (f"class '{c}': {known}{_amount(n_units, unit)} (fewer than {MIN_FOR_HOLDOUT}): all its images are used "
                "for training, so it has no val or test images")
    if first != unit:
        unknown = "" if patients is not None else "; no PatientID, so patients unknown"
        head = f"class '{c}': {_amount(counts[first], first)} (fewer than {MIN_FOR_HOLDOUT}{unknown}): split by {unit} instead"
    elif unit != "patient" and 1 in (patients, counts["series"]):
        head = f"class '{c}': {'1 patient' if patients == 1 else 'one series'}, split by {unit}"
    else:
        return None
    return f"{head}; test figures then measure {_measured(first, unit, patients, counts['series'])}"


def _measured(first, unit, patients, series):
    """What the test images of a class split below the patient level are: the sentence of its warning."""
    new = {"study": "studies", "series": "series", "file": "images"}[unit]
    if patients == 1:
        return ("other images of the same scan of the same patient" if series == 1
                else f"new {new} of the same patient") + ", not new patients"
    if series == 1:
        return "other images of the same scan, not new scans or patients"
    if patients is not None:
        return f"new {new} of {_amount(patients, 'patient')} that may also have images in training, not new patients"
    return f"new {new} of {PLURAL[first]} that may also have images in training"
