"""The data contract every loader returns: validated uint8 images, labels, class names, provenance.

Loaders (MedMNIST npz, DICOM, the bundled demo) all produce an :class:`ImageDataset`; nothing
downstream knows where the pixels came from. Provenance records hashes and sizes, never pixels
or patient attributes, so it can be written into workspaces and reports as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerelrp.errors import DataError
from rerelrp.fileio import sha256_file

SPLITS = ("train", "val", "test")
LAZY_BYTES = 2**26  # splits beyond this (64 MiB of images) are cut into tasks by index, not by copy
MAX_CLASSES = 10_000  # classes of one data set: checked on the labels before any class is listed
MIN_SIDE = 4  # pixels per side of an image (the digits demo has 8)


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W, C) with C in {1, 3}; ``labels`` int64 (N,).

    ``groups`` (int64 (N,) or None): which splitting unit (patient, study, series or file) each image
    came from, as anonymous codes 0..G-1 in first-seen order of one load, so that a test bootstrap can
    resample whole units; they mean nothing outside the process and are never stored.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        """The rows ``index``: copied, or by index when the images are large or memory-mapped."""
        return Split(rows(self.images, index), self.labels[index], None if self.groups is None else self.groups[index])


class IndexedRows:
    """Rows ``index`` of a large or memory-mapped image array, copied only when used.

    Cutting a data set into tasks would otherwise copy every task at once, holding the images
    twice (or, for a mapped file, reading all of it into memory); this way a task's images are
    copied when it trains (``np.asarray`` gives the copy) and freed after. Indexing gives
    arrays, as indexing the copy would.
    """

    def __init__(self, source, index):
        self.source, self.index = source, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index),) + tuple(source.shape[1:])
        self.dtype, self.ndim = source.dtype, source.ndim

    def __len__(self):
        return len(self.index)

    def __getitem__(self, key):
        return np.asarray(self.source[self.index[key]])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.source[self.index])
        return out if dtype is None else out.astype(dtype)

    def rows(self, index):
        return IndexedRows(self.source, self.index[index])


def rows(images, index):
    """``images[index]``, or :class:`IndexedRows` (no copy yet) when ``images`` is mapped or large."""
    if isinstance(images, IndexedRows):
        return images.rows(index)
    if is_mapped(images) or images.nbytes > LAZY_BYTES:
        return IndexedRows(images, index)
    return images[index]


def is_mapped(array):
    """True if ``array`` is (a view of) a memory map."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = getattr(array, "base", None)
    return False


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class LoadReport:
    """What a load did besides returning images: files skipped (with why), notes, warnings, dropped tags.

    ``notes`` inform; ``warnings`` say what limits the meaning of the figures (e.g. test images of a
    patient also seen in training), for the CLI, ``metrics.json``, the app and reports to show loudly.
    """

    source: str
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_identifiers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self):
        return {
            "source": self.source,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "dropped_identifiers": sorted(self.dropped_identifiers),
        }


@dataclass
class LabelledSplits:
    """Named classes with train/val/test splits: what a data set and a task cut from it (``tasks.Task``) share."""

    name: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    provenance: dict = field(default_factory=dict)

    @property
    def n_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return tuple(self.train.images.shape[1:])

    def split(self, name):
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass
class ImageDataset(LabelledSplits):
    """A labelled image data set with train/val/test splits, ready to be cut into tasks."""

    report: LoadReport | None = None

    def counts(self):
        """Images per class and split, as {split: [count of class 0, count of class 1, ...]}."""
        return {
            s: np.bincount(self.split(s).labels, minlength=self.n_classes).tolist() for s in SPLITS
        }


def file_record(path, **extra):
    """Provenance of one input file: name, size and SHA-256 (never its content)."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def split_record(per_class):
    """The ``provenance["split"]`` record of ``per_class``: the unit split on, units per split, warnings.

    ``per_class``: {class: {"unit", "patients" (count or None), "groups": {split: units}, "warnings"}};
    the record's unit is the classes' common one, or "mixed". Only counts: the keys that made the
    groups are never part of it.
    """
    units = {entry["unit"] for entry in per_class.values()}
    return {
        "unit": units.pop() if len(units) == 1 else "mixed",
        "groups": {s: sum(entry["groups"][s] for entry in per_class.values()) for s in SPLITS},
        "per_class": per_class,
        "warnings": [w for entry in per_class.values() for w in entry["warnings"]],
    }


def image_split_record(unit, class_names, splits):
    """A split record counting images (each its own unit): MedMNIST's official splits, the digits demo."""
    counts = {s: np.bincount(splits[s].labels, minlength=len(class_names)) for s in SPLITS}
    return split_record({name: {"unit": unit, "patients": None, "groups": {s: int(counts[s][c]) for s in SPLITS},
                                "warnings": []} for c, name in enumerate(class_names)})


def restrict_split_record(record, class_names):
    """``record`` limited to ``class_names`` (a task's classes): their units, totals and warnings."""
    if not record:
        return None
    return split_record({c: record["per_class"][c] for c in class_names if c in record["per_class"]})


def stratified_holdout(labels, fraction, seed):
    """Indices (keep, holdout) with ``fraction`` of every class held out, at least one where possible.

    Classes with a single sample stay entirely in ``keep`` so that training never loses a class.
    Not ``ReReLRP._sample`` (learner.py): this rounds fraction x class size (keeping >= 1 in ``keep``)
    and permutes with its own seeded generator, so the two pick other images and stay apart.
    """
    rng = np.random.default_rng(seed)
    keep, hold = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_hold = int(round(fraction * len(idx)))
        if len(idx) > 1:
            n_hold = min(max(n_hold, 1), len(idx) - 1)
        else:
            n_hold = 0
        hold.extend(idx[:n_hold])
        keep.extend(idx[n_hold:])
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(hold, dtype=np.int64))


def as_uint8_images(images, path, key="images"):
    """Bring an image array to uint8 (N, H, W, C) with C in {1, 3}, or say clearly why not."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim == 4 and images.shape[-1] not in (1, 3):
        if images.shape[1] in (1, 3) and images.shape[-1] > 4:
            images = np.moveaxis(images, 1, -1)  # channels-first arrays
        elif images.shape[-1] in (2, 4):
            raise DataError(
                path,
                f"'{key}' has shape {images.shape}: {images.shape[-1]} channels per pixel (gray with alpha, RGBA, "
                "two measurements); only gray (1 channel) or RGB (3 channels) images are supported",
            )
        else:
            raise DataError(
                path,
                f"'{key}' has shape {images.shape}: this looks like 3D volumes (N, D, H, W); "
                "only 2D images (N, H, W) or (N, H, W, 1|3) are supported",
            )
    elif images.ndim == 5:
        raise DataError(
            path, f"'{key}' has shape {images.shape}: 3D volumes are not supported, only 2D images"
        )
    elif images.ndim != 4:
        raise DataError(path, f"'{key}' has shape {images.shape}: expected (N, H, W) or (N, H, W, C)")
    if min(images.shape[1:3]) < MIN_SIDE:
        raise DataError(path, f"'{key}' has images of {images.shape[1]}x{images.shape[2]} pixels: too small to learn "
                              f"from (at least {MIN_SIDE} per side)")
    if images.dtype == bool:
        raise DataError(path, f"'{key}' holds booleans (masks?), not images; expected 8-bit gray or RGB values")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(path, f"'{key}' holds NaN or infinite values")
        top = 1.0 if images.size and images.max() <= 1.0 else 255.0
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(path, f"'{key}' values span {images.min():g}..{images.max():g}; expected 0..1 or 0..255")
        return np.round(images * (255.0 / top)).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(path, f"'{key}' values span {images.min()}..{images.max()}; expected 0..255")
        return images.astype(np.uint8)
    raise DataError(path, f"'{key}' has dtype {images.dtype}; expected unsigned 8-bit images")


def check_labels(labels, n_images, path, key="labels", n_classes=None):
    """Labels as int64 (N,); rejects multi-label, length mismatch, negatives and out-of-range values."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(
            path,
            f"'{key}' has {labels.shape[1]} columns: multi-label data (such as ChestMNIST) is not "
            "supported; ReReLRP needs exactly one class per image",
        )
    if labels.ndim != 1:
        raise DataError(path, f"'{key}' has shape {labels.shape}; expected (N,) or (N, 1)")
    if len(labels) != n_images:
        raise DataError(path, f"'{key}' has {len(labels)} entries but there are {n_images} images")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise DataError(path, f"'{key}' has dtype {labels.dtype}; expected integer class indices")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(path, f"'{key}' holds the negative label {labels.min()}; classes are 0..n-1")
    if n_classes is not None and labels.size and labels.max() >= n_classes:
        raise DataError(
            path, f"'{key}' holds label {labels.max()} but the data set has {n_classes} classes (0..{n_classes - 1})"
        )
    if labels.size and labels.max() >= MAX_CLASSES:
        raise DataError(path, f"'{key}' holds label {labels.max()}: more than {MAX_CLASSES:,} classes, which this "
                              "loader does not take (are these labels class indices?)")
    return labels


def check_dataset(ds, path):
    """Checks that apply to every loader's result: no empty split, one image size, every class trained."""
    shapes = {s: ds.split(s).images.shape[1:3] for s in SPLITS}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{s} {h}x{w}" for s, (h, w) in shapes.items())
        raise DataError(path, f"images of mixed sizes ({detail}); all splits must share one size")
    for s in SPLITS:
        if len(ds.split(s)) == 0:
            raise DataError(path, f"the {s} split is empty")
    in_train = set(np.unique(ds.train.labels).tolist())
    missing = [ds.class_names[c] for c in range(ds.n_classes) if c not in in_train]
    if missing:
        for s in ("val", "test"):  # a stray label there is the cause, not the classes it seems to skip
            stray = sorted(set(np.unique(ds.split(s).labels).tolist()) - in_train)
            if stray:
                raise DataError(path, f"the {s} split holds label(s) {_some(stray)} that no training image has "
                                      f"(training labels: {_some(sorted(in_train))})")
        raise DataError(path, f"no training image for class(es) {_some(missing)}")
    return ds


def _some(values, limit=10):
    """At most ``limit`` values for a message, and how many more there are."""
    values = list(map(str, values))
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more
