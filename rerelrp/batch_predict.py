"""``rerelrp predict``: a saved model classifies files on disk, one CSV row per image.

Inputs are PNG, JPEG or DICOM files, folders of them (searched recursively) and ``.npz`` data sets
(one split). A file that cannot be read is listed with the reason and skipped; it never stops the
others. Images are read in memory and written nowhere, except heatmaps when ``--explain`` asks.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerelrp.data.core import SkippedFile
from rerelrp.errors import DataError, RerelrpError
from rerelrp.images import encode_png, read_image, stack_images

BATCH = 256  # images per predict call: one stacked pass per batch, bounded memory
EXPLAIN_SCALE = 4  # heatmap PNGs are enlarged so that 28-pixel inputs stay visible


@dataclass
class Item:
    source: str  # the file (or .npz) the image came from
    index: int  # the image's row in an .npz split; 0 for a single file
    image: np.ndarray  # uint8 (H, W, C)


def collect(paths, split="test"):
    """``(items, skipped)`` for the given paths: every readable image, and why the others are not."""
    items, skipped = [], []
    for path in map(Path, paths):
        if not path.exists():
            skipped.append(SkippedFile(str(path), "does not exist"))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                skipped.append(SkippedFile(str(path), "an empty folder"))
            for file in files:
                _read_file(file, items, skipped)
        elif path.suffix.lower() == ".npz":
            _read_npz(path, split, items, skipped)
        else:
            _read_file(path, items, skipped)
    return items, skipped


def _read_file(path, items, skipped):
    try:
        items.append(Item(str(path), 0, read_image(path.read_bytes(), str(path))))
    except DataError as exc:
        skipped.append(SkippedFile(str(path), exc.problem))
    except OSError as exc:
        skipped.append(SkippedFile(str(path), f"cannot be read ({exc.strerror or exc})"))


def _read_npz(path, split, items, skipped):
    from rerelrp.data import load_medmnist

    try:
        images = load_medmnist(str(path)).split(split).images
    except RerelrpError as exc:
        skipped.append(SkippedFile(str(path), str(exc)))
        return
    items.extend(Item(str(path), i, image) for i, image in enumerate(images))


def rows_of(learner, items, prediction, offset=0):
    """CSV rows (dicts) for ``items`` and their :class:`~rerelrp.base.Prediction`."""
    names = [t["name"] for t in learner.tasks_]
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
            **{f"p_task_{m}": round(float(prediction.p_task[k, m]), 4) for m in range(len(names))},
        })
    return rows


def write_heatmaps(explanation, items, folder, first):
    """One PNG per image and sub-network: the input relevance over the image (``--explain``)."""
    from rerelrp.plots import heatmap_rgb

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, item in enumerate(items):
        stem = Path(item.source).stem.replace(" ", "_")[:60] or "image"
        for m in range(explanation.heatmaps.shape[1]):
            rgb = heatmap_rgb(explanation.heatmaps[k, m], item.image, overlay=True)
            path = folder / f"{first + k:06d}_{stem}_{item.index}_task{m}.png"
            path.write_bytes(encode_png(rgb, scale=EXPLAIN_SCALE))
            written.append(path)
    return written


def predict_files(learner, items, out_csv, explain_dir=None, progress=None):
    """Predict every item in batches and write the CSV; returns the rows written."""
    columns = None
    rows = []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            images = stack_images([item.image for item in batch], learner.input_size)
            if explain_dir is not None:  # one LRP pass gives the heatmaps and the prediction
                explanation = learner.explain(images)
                prediction = explanation.prediction
                write_heatmaps(explanation, batch, Path(explain_dir), start)
            else:
                prediction = learner.predict(images)
            part = rows_of(learner, batch, prediction)
            if columns is None:
                columns = list(part[0])
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
            writer.writerows(part)
            rows.extend(part)
            if progress:
                progress(len(batch))
    return rows
