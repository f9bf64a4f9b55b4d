"""Building the ImageDataset from the files read: classes, train/val/test splits, notes, provenance.

Splits are made on *units* of ``group_by`` (a file, or every file of one series, study or patient),
per class and seeded, so that near-duplicates (the slices of one series, the scans of one patient)
never sit on both sides of the train/test line; a manifest's ``split`` column is taken as given.
All frames of a file share its split. Gray and colour files mixed make 3-channel images. The
provenance holds the settings and, per file, only non-identifying attributes.
"""
from __future__ import annotations

import numpy as np

from rerelrp.data.core import ImageDataset, Split, check_dataset, stratified_holdout
from rerelrp.errors import DataError

TEST_FRACTION = 0.15
VAL_FRACTION = 0.15
MIN_FOR_HOLDOUT = 3  # a class needs this many splitting units before it gives any to val/test


def nothing_found(report):
    """The error message of a load that found no usable image, with the first reasons."""
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:3])
    return (
        "no usable DICOM image found: give a folder with one sub-folder per class holding DICOM files "
        "(or a manifest.csv with path,label columns)" + (f" (skipped: {reasons})" if reasons else "")
    )


def assemble(loaded, items, classes, opts, group_by, seed, report, source_record, ds_name, error_path):
    """The checked :class:`ImageDataset` of the loaded files, or a DataError naming what is missing."""
    usable = {lo.item.label for lo in loaded}
    if not loaded:
        raise DataError(error_path, nothing_found(report))
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
            error_path,
            "; ".join(details) + ". Every class needs at least one readable DICOM image; add images or remove the folder",
        )
    class_names = list(classes)
    class_index = {c: k for k, c in enumerate(class_names)}

    channels = {im.shape[-1] for lo in loaded for im in lo.images}
    if channels == {1, 3}:
        n_gray = sum(1 for lo in loaded if lo.images[0].shape[-1] == 1)
        report.notes.append(f"gray and colour files are mixed: {n_gray} gray files were repeated to 3 channels")
    to_rgb = 3 in channels

    def prepare(im):
        return np.repeat(im, 3, axis=-1) if to_rgb and im.shape[-1] == 1 else im

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
