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


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W, C) with C in {1, 3}; ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        """The rows ``index``: copied, or by index when the images are large or memory-mapped."""
        return Split(rows(self.images, index), self.labels[index])


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
    """What a load did besides returning images: files skipped (with why), notes, dropped tags."""

    source: str
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_identifiers: list[str] = field(default_factory=list)

    def to_dict(self):
        return {
            "source": self.source,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes),
            "dropped_identifiers": sorted(self.dropped_identifiers),
        }


@dataclass
class ImageDataset:
    """A labelled image data set with train/val/test splits, ready to be cut into tasks."""

    name: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    provenance: dict = field(default_factory=dict)
    report: LoadReport | None = None

    @property
    def n_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return tuple(self.train.images.shape[1:])

    def split(self, name):
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def counts(self):
        """Images per class and split, as {split: [count of class 0, count of class 1, ...]}."""
        return {
            s: np.bincount(self.split(s).labels, minlength=self.n_classes).tolist() for s in SPLITS
        }


def file_record(path, **extra):
    """Provenance of one input file: name, size and SHA-256 (never its content)."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def stratified_holdout(labels, fraction, seed):
    """Indices (keep, holdout) with ``fraction`` of every class held out, at least one where possible.

    Classes with a single sample stay entirely in ``keep`` so that training never loses a class.
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
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(path, f"'{key}' holds NaN or infinite values")
        top = 1.0 if images.size and images.max() <= 1.0 else 255.0
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(path, f"'{key}' values span {images.min():g}..{images.max():g}; expected 0..1 or 0..255")
        return np.round(images * (255.0 / top)).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) or images.dtype == bool:
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
    missing = [ds.class_names[c] for c in range(ds.n_classes) if not np.any(ds.train.labels == c)]
    if missing:
        raise DataError(path, f"no training image for class(es) {', '.join(map(str, missing))}")
    return ds
