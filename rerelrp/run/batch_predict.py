"""``rerelrp predict``: a saved model classifies files on disk, one CSV row per image.

Inputs are PNG, JPEG or DICOM files, folders of them (searched recursively) and ``.npz`` data sets
(one split). A file that cannot be read is listed with the reason and skipped; it never stops the
others (a FIFO, a device, a broken link or a link loop is named as such, never opened). Images are
read in memory and written nowhere, except heatmaps when ``--explain`` asks; each file's image is
made the network's input as soon as it is read (:func:`rerelrp.data.images.compact_input`), so memory
holds one decoded image at a time. Names are written as text whatever bytes they hold
(:func:`rerelrp.text.printable`), and the CSV, with cells a spreadsheet would run as formulas
neutralised, replaces ``--out`` only once it is complete.
"""
from __future__ import annotations

import csv
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerelrp.data import load_medmnist
from rerelrp.data.core import SkippedFile
from rerelrp.data.images import compact_input, encode_png, network_input, network_inputs, to_uint8
from rerelrp.errors import DataError, RerelrpError
from rerelrp.figures.display_images import heatmap_rgb
from rerelrp.fileio import RefusedFile, file_kind, read_regular, replaced_when_done
from rerelrp.method.modality import apply_modality, read_image_with_modality, scope_texts
from rerelrp.text import csv_cell, printable

BATCH = 256  # images per predict call: one stacked pass per batch, bounded memory
MAX_FILE_BYTES = 1 << 30  # one image file (a single-frame DICOM is at most a few hundred MB)
EXPLAIN_SCALE = 4  # heatmap PNGs are enlarged so that 28-pixel inputs stay visible


@dataclass
class Item:
    source: str  # the file (or .npz) the image came from
    index: int  # the image's row in an .npz split; 0 for a single file
    image: np.ndarray  # uint8 (H, W, C) for an .npz row; float32 (C, size, size), the network's input, for a file
    modality: str | None = None  # the DICOM header's Modality (rerelrp.method.modality); None for PNG, JPEG, .npz rows


def collect(paths, split="test", dicom_size=64):
    """``(items, skipped)`` for the given paths: every readable image, and why the others are not.

    DICOM files are read at ``dicom_size`` (the network's input size), as the data set loader reads them."""
    items, skipped = [], []
    for path in map(Path, paths):
        if not path.exists():
            skipped.append(SkippedFile(printable(path), _missing(path)))
        elif path.is_dir():
            before = len(skipped)
            files = _files_in(path, skipped)
            if not files and len(skipped) == before:
                skipped.append(SkippedFile(printable(path), "an empty folder"))
            for file in files:
                _read_file(file, items, skipped, dicom_size)
        elif path.suffix.lower() == ".npz":
            _read_npz(path, split, items, skipped)
        else:
            _read_file(path, items, skipped, dicom_size)
    return items, skipped


def _missing(path):
    """Why ``path`` cannot be opened at all: no such file, a broken link, or a link loop."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
        if os.path.islink(path):
            return "a broken link (what it points to does not exist)"
        if exc.errno != errno.ENOENT:
            return f"cannot be read ({exc.strerror})"
    return "does not exist"


def _files_in(folder, skipped):
    """Every regular file below ``folder`` (sorted; links followed, each folder once, hidden names left out);
    what is not a regular file, a broken link or a link back to a folder already searched goes to ``skipped``."""
    files, seen = [], set()

    def unreadable(exc):
        skipped.append(SkippedFile(printable(exc.filename), f"cannot be listed ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable):
        info = os.stat(dirpath)
        if (info.st_dev, info.st_ino) in seen:
            skipped.append(SkippedFile(printable(dirpath), "a link back to a folder already searched (a link loop); "
                                                           "not searched again"))
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                mode = os.stat(path).st_mode
            except OSError:
                skipped.append(SkippedFile(printable(path), _missing(path)))
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                skipped.append(SkippedFile(printable(path), f"{file_kind(mode)}, not a regular file; not read"))
    return sorted(files)


def _read_file(path, items, skipped, dicom_size):
    try:
        data = read_regular(path, MAX_FILE_BYTES, follow_links=True)
        image, modality = read_image_with_modality(data, printable(path), dicom_size=dicom_size)
        items.append(Item(str(path), 0, compact_input(image, dicom_size), modality))
    except DataError as exc:
        skipped.append(SkippedFile(printable(path), exc.problem))
    except RefusedFile as exc:
        skipped.append(SkippedFile(printable(path), str(exc)))
    except OSError as exc:
        skipped.append(SkippedFile(printable(path), f"cannot be read ({exc.strerror or exc})"))


def _read_npz(path, split, items, skipped):

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise RefusedFile(f"is {file_kind(os.stat(path).st_mode)}, not a regular file; not read")
        images = load_medmnist(str(path)).split(split).images
    except RerelrpError as exc:
        skipped.append(SkippedFile(printable(path), printable(exc)))
        return
    except OSError as exc:
        skipped.append(SkippedFile(printable(path), printable(exc)))
        return
    except MemoryError:  # arrays that fit their header but not this machine's memory: this file only is skipped
        skipped.append(SkippedFile(printable(path), "its arrays do not fit in memory; not read"))
        return
    items.extend(Item(str(path), i, image) for i, image in enumerate(images))


def rows_of(learner, items, prediction, offset=0):
    """CSV rows (dicts) for ``items`` and their :class:`~rerelrp.method.base.Prediction`."""
    names = [t["name"] for t in learner.tasks_]
    reasons = scope_texts(prediction)
    rows = []
    for k, item in enumerate(items):
        t = int(prediction.task[k])
        score = float(prediction.scope_score[k]) if prediction.scope_score is not None else float("nan")
        rows.append({
            "source": item.source,
            "index": item.index,
            "task": t,
            "task_name": names[t],
            "class_index": int(prediction.local_class[k]),
            "class_name": learner.tasks_[t]["classes"][int(prediction.local_class[k])],
            "out_of_scope": bool(prediction.out_of_scope[k]) if prediction.out_of_scope is not None else False,
            "scope_score": round(score, 4),
            "scope_reason": reasons[k],
            **{f"p_task_{m}": round(float(prediction.p_task[k, m]), 4) for m in range(len(names))},
        })
    return rows


def write_heatmaps(explanation, items, folder, first):
    """One PNG per image and sub-network: the input relevance over the image (``--explain``)."""

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, item in enumerate(items):
        stem = Path(item.source).stem.replace(" ", "_")[:60] or "image"
        seen = to_uint8(network_input(item.image, explanation.heatmaps.shape[-1]))[0]  # what the network read
        for m in range(explanation.heatmaps.shape[1]):
            rgb = heatmap_rgb(explanation.heatmaps[k, m], seen, overlay=True)
            path = folder / f"{first + k:06d}_{stem}_{item.index}_task{m}.png"
            path.write_bytes(encode_png(rgb, scale=EXPLAIN_SCALE))
            written.append(path)
    return written


def predict_files(learner, items, out_csv, explain_dir=None, progress=None):
    """Predict every item in batches and write the CSV (in full, or not at all); returns the rows written."""
    columns = None
    rows = []
    with replaced_when_done(out_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            images = network_inputs([item.image for item in batch], learner.input_size_)
            if explain_dir is not None:  # one LRP pass gives the heatmaps and the prediction
                explanation = learner.explain(images)
                prediction = explanation.prediction
                write_heatmaps(explanation, batch, Path(explain_dir), start)
            else:
                prediction = learner.predict(images)
            apply_modality(prediction, [item.modality for item in batch], learner.tasks_)
            part = rows_of(learner, batch, prediction)
            if columns is None:
                columns = list(part[0])
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
            writer.writerows([{key: csv_cell(value) for key, value in row.items()} for row in part])
            rows.extend(part)
            if progress:
                progress(len(batch))
    return rows
