"""MedMNIST ``.npz`` files in the published layout, from a path or by flag from a data root.

The network is never touched unless ``download=True``: MedMNIST's own downloader is called then,
and a failure (offline, server down) becomes a :class:`DataError` that says so.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from rerelrp.data.core import (
    SPLITS,
    ImageDataset,
    LoadReport,
    Split,
    as_uint8_images,
    check_dataset,
    check_labels,
    file_record,
    image_split_record,
    stratified_holdout,
)
from rerelrp.data.npz_archive import compressed_bytes, read_arrays
from rerelrp.errors import DataError
from rerelrp.fileio import sha256_bytes

FLAG_RE = re.compile(r"^(?P<flag>[a-z]+mnist(?:3d)?)(?:_(?P<size>28|64|128|224))?$")
VAL_FRACTION = 0.1
BIG = 2**30  # compressed arrays beyond this get a note suggesting `rerelrp unpack`


def medmnist_info(flag):
    """MedMNIST's metadata for ``flag`` (class names, task type), or None for an unknown flag."""
    from medmnist import INFO  # imported late: medmnist pulls in its evaluator on import

    return INFO.get(flag)


def parse_flag(text):
    """('bloodmnist', 64) for 'bloodmnist_64'; None if ``text`` is not a MedMNIST-style flag."""
    match = FLAG_RE.match(text)
    if not match:
        return None
    return match["flag"], int(match["size"]) if match["size"] else 28


def resolve_source(source, root="./data", download=False):
    """Turn a path or a flag into an existing ``.npz`` path, downloading only when asked."""
    path = Path(source)
    if path.suffix == ".npz" or path.exists():
        if not path.exists():
            raise DataError(path, "file not found")
        return path
    parsed = parse_flag(str(source))
    if parsed is None:
        raise DataError(
            source,
            "not a file and not a MedMNIST flag (expected e.g. 'bloodmnist' or 'bloodmnist_64', or a path to an .npz)",
        )
    flag, size = parsed
    filename = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    path = Path(root) / filename
    if path.exists():
        return path
    if medmnist_info(flag) is None:
        raise DataError(source, f"unknown MedMNIST flag '{flag}' and no file {path}")
    if not download:
        raise DataError(
            path,
            f"file not found. Put {filename} in {root}, or ask for it explicitly with --download "
            "(the app: the Download button); nothing is fetched otherwise",
        )
    return download_medmnist(flag, size, root)


def download_medmnist(flag, size, root):
    """Fetch one MedMNIST file through the medmnist package; a clear error when offline."""
    import medmnist

    info = medmnist_info(flag)
    Path(root).mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, info["python_class"])
    try:
        data_class(split="train", download=True, root=str(root), size=None if size == 28 else size)
    except Exception as exc:  # medmnist wraps every network failure in a RuntimeError
        raise DataError(
            f"{flag}_{size}" if size != 28 else flag,
            "download failed: the MedMNIST server (zenodo.org) could not be reached. The network may be "
            f"unavailable; download the .npz by hand and put it in {root}. ({type(exc).__name__})",
        ) from exc
    filename = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    path = Path(root) / filename
    if not path.exists():
        raise DataError(path, "download reported success but the file is not there")
    return path


def _read_npz(handle, path):
    if isinstance(handle, io.BytesIO):
        head = handle.getvalue()[:4]
    else:
        with open(handle, "rb") as f:
            head = f.read(4)
    if head[:1] == b"\x93":
        raise DataError(path, "holds a single array, not an .npz archive of train_/val_/test_ arrays")
    if head != b"PK\x03\x04":
        raise DataError(path, "not an .npz file (it is not a zip archive of NumPy arrays)")
    try:
        return read_arrays(handle)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})") from exc
    except ValueError as exc:
        raise DataError(path, f"not a readable .npz archive, or it holds pickled objects, which are refused ({exc})") from exc


def load_medmnist(source, root="./data", download=False, seed=0, name=None):
    """Load a MedMNIST npz as an :class:`ImageDataset`, validating every array.

    ``source`` is a path, a flag (looked up in ``root``), or the bytes / file object of an
    upload, which is read in memory and never written to disk (``name`` then names it).
    A file without ``val_`` arrays gets a stratified, seeded 10 % validation split carved from train.
    """
    path, arrays, record = _read_source(source, root, download, name)
    packed = 0 if record.get("upload") else compressed_bytes(path)
    parsed = parse_flag(path.stem)
    flag = parsed[0] if parsed else None
    info = medmnist_info(flag) if flag else None
    report = LoadReport(source=str(path))
    if packed > BIG:
        report.notes.append(
            f"{packed / 2**30:.1f} GiB of compressed arrays are held in memory; `rerelrp unpack {path.name} "
            f"OTHER_FOLDER/{path.name}` writes an uncompressed copy whose images are read from disk as tasks need them")
    _check_contents(arrays, path, flag, info)
    splits = _read_splits(arrays, path, len(info["label"]) if info else None)
    if "val" not in splits:
        keep, hold = stratified_holdout(splits["train"].labels, VAL_FRACTION, seed)
        splits["val"] = splits["train"].subset(hold)
        splits["train"] = splits["train"].subset(keep)
        report.notes.append(f"no val split in the file: {len(hold)} images carved from train (stratified, seed {seed})")
    class_names = _class_names(info, splits)
    given = "train/val/test" if "val_images" in arrays else "train/test"
    report.notes.append(f"MedMNIST's official {given} splits are used" if info else f"the file's own {given} splits are used")
    ds = ImageDataset(
        name=path.stem,
        class_names=class_names,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        provenance={"kind": "medmnist", "flag": flag, "files": [record],
                    "split": image_split_record("official", class_names, splits)}
        | ({} if record.get("upload") else {"reload": {"loader": "medmnist", "source": str(path.resolve()), "seed": seed}}),
        report=report,
    )
    return check_dataset(ds, path)


def _read_source(source, root, download, name):
    """(path, arrays, file record) of a path or flag on disk, or of an upload's bytes read in memory."""
    if isinstance(source, (bytes, bytearray)) or hasattr(source, "read"):
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else source.read()
        path = Path(name or getattr(source, "name", None) or "upload.npz")
        arrays = _read_npz(io.BytesIO(data), path)
        return path, arrays, {"path": path.name, "bytes": len(data), "sha256": sha256_bytes(data), "upload": True}
    path = resolve_source(source, root=root, download=download)
    arrays = _read_npz(path, path)
    return path, arrays, file_record(path)


def _check_contents(arrays, path, flag, info):
    """A DataError when the train/test arrays are missing or the data set is multi-label."""
    required = ["train_images", "train_labels", "test_images", "test_labels"]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(
            path,
            f"missing key(s) {', '.join(missing)}; a MedMNIST file holds train_/val_/test_ images and labels "
            f"(found: {', '.join(sorted(arrays)) or 'nothing'})",
        )
    if info is not None and "multi-label" in info["task"]:
        raise DataError(path, f"{flag} is a multi-label data set: not supported, ReReLRP needs one class per image")


def _read_splits(arrays, path, n_classes):
    """{split: Split} of the splits the file holds, images and labels checked (labels < ``n_classes`` if known)."""
    splits = {}
    for s in SPLITS:
        if f"{s}_images" not in arrays:
            continue
        images = as_uint8_images(arrays[f"{s}_images"], path, key=f"{s}_images")
        labels = check_labels(arrays.get(f"{s}_labels", np.zeros(0)), len(images), path, f"{s}_labels", n_classes)
        splits[s] = Split(images, labels)
    return splits


def _class_names(info, splits):
    """MedMNIST's class names, or 'class 0'.. up to the largest label for a file of unknown flag."""
    if not info:
        return [f"class {c}" for c in range(int(max(int(splits[s].labels.max(initial=-1)) for s in SPLITS)) + 1)]
    return [info["label"][str(c)] for c in range(len(info["label"]))]
