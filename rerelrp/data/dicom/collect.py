"""Which files a load reads and with which class: class folders, or a CSV manifest.

Two layouts name the classes. Class folders: every sub-folder of the root is a class and files
may sit at any depth below it (files directly in the root are skipped). A manifest: a
``manifest.csv`` in the root (or ``manifest=``) with the columns ``path,label`` and optionally
``split``; its paths are relative to the root, and unsafe, missing or repeated rows are skipped
with a reason. The result is the list of :class:`Item` the reader goes through, capped at
``max_files``. A zip that wraps everything in one folder is unwrapped here.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rerelrp.data.core import SkippedFile
from rerelrp.data.dicom.skips import Skip, add_listed, short
from rerelrp.data.dicom.sources import is_ignored_dir, join_rel, unsafe_member
from rerelrp.errors import DataError
from rerelrp.text import printable

MANIFEST_NAME = "manifest.csv"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Item:
    """One candidate file: how to read it, its path relative to the root, its class and (manifest) split."""

    path: object  # open("rb") reads it: a Path on disk (folder) or a ZipEntry (zip, read in memory)
    rel: str
    label: str
    split: str | None = None


def _manifest_in(tree, folder):
    """The manifest.csv directly in ``folder`` of the tree (any case), or None."""
    _, names = tree.listdir(folder)
    return next((join_rel(folder, n) for n in names if n.lower() == MANIFEST_NAME), None)


def _find_manifest(tree, class_root, manifest):
    """(where, rel) of the manifest: rel inside the tree, or None for a CSV on disk at ``where``."""
    if manifest is None:
        rel = _manifest_in(tree, class_root)
        return (None, None) if rel is None else (tree.where(rel), rel)
    path = Path(manifest)
    if not path.is_absolute():
        rel = join_rel(class_root, path.as_posix())
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
    dirs = [d for d in dirs if not is_ignored_dir(d)]
    files = [f for f in files if not f.startswith(".")]
    if len(dirs) == 1 and not files:
        inner = dirs[0]
        if _manifest_in(tree, inner) is not None or any(not is_ignored_dir(d) for d in tree.listdir(inner)[0]):
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


def collect_items(tree, manifest, max_files, report):
    """(items, sorted class names) of the tree: from the manifest if there is one, else from class folders."""
    class_root = _find_class_root(tree, manifest, report)
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
            items.append(Item(tree.handle(rel), rel, printable(inner[0])))  # a folder name need not be UTF-8
    classes = {i.label for i in items}
    if where is None:
        for d in tree.listdir(class_root)[0]:
            if not is_ignored_dir(d) and printable(d) not in classes:
                report.notes.append(f"class folder '{printable(d)}' holds no files")
                classes.add(printable(d))
    if len(items) > max_files:
        over = items[max_files:]
        add_listed(report, [(i.rel, f"over the cap max_files={max_files}: not read") for i in over], "files")
        report.notes.append(f"only the first {max_files} of {len(items)} files were read (max_files)")
        items = items[:max_files]
    return items, sorted(classes)


def _items_from_manifest(tree, where, manifest_rel, class_root, files, report):
    """The items the manifest lists (unusable rows skipped with a reason), with notes on the files it leaves out."""
    label = PurePosixPath(str(where)).name
    rows = _read_manifest(tree, where, manifest_rel)
    header, col = _manifest_columns(rows, where)
    items, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        at = f"{label} row {number}"
        fields = _row_fields(cells, col, number, at, where, report)
        if fields is None:
            continue
        rel, cls, split = fields
        entry = _row_entry(tree, rel, at, class_root, seen, report)
        if entry is not None:
            items.append(Item(tree.handle(entry), entry, printable(cls), split))
    listed = seen | ({tree.identity(manifest_rel)} if manifest_rel is not None else set())
    unlisted = [f for f in files if tree.identity(f) not in listed]
    if unlisted:
        names = ", ".join(unlisted[:5])
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        report.notes.append(f"{len(unlisted)} files not listed in the manifest were ignored ({names}{more})")
    report.notes.append(f"classes and paths from the manifest {label}")
    return items


def _read_manifest(tree, where, manifest_rel):
    """The manifest's rows as lists of cells (UTF-8, a BOM allowed); a DataError when it cannot be read."""
    source = where if manifest_rel is None else tree.handle(manifest_rel)
    try:
        with source.open("rb") as handle:
            text = handle.read().decode("utf-8-sig")
        return list(csv.reader(io.StringIO(text, newline="")))
    except Skip as exc:  # a damaged or over-cap zip entry
        raise DataError(where, f"cannot read the manifest: {exc}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(where, f"cannot read the manifest as UTF-8 CSV ({short(exc)})") from exc


def _manifest_columns(rows, where):
    """(the header, lower-cased, {column: index} of path, label and split if present); a DataError without them."""
    if not rows:
        raise DataError(where, "the manifest is empty; expected a header row path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(
            where,
            f"the header must name the columns 'path' and 'label' (optional 'split'); found {', '.join(header) or 'nothing'}",
        )
    return header, {h: header.index(h) for h in ("path", "label", "split") if h in header}


def _row_fields(cells, col, number, at, where, report):
    """(path, label, split or None) of one row; None (skipped) without a path or label, a DataError for a bad split."""
    rel, cls = cells[col["path"]], cells[col["label"]]
    if not rel:
        report.skipped.append(SkippedFile(at, "empty path"))
        return None
    if not cls:
        report.skipped.append(SkippedFile(rel, f"{at}: empty label"))
        return None
    if "split" not in col:
        return rel, cls, None
    raw = cells[col["split"]].lower()
    if raw not in SPLIT_NAMES:
        raise DataError(
            where,
            f"row {number}: split '{cells[col['split']]}' is not one of train, val, test; fill the split "
            "column on every row, or remove the column to get a seeded 70/15/15 split",
        )
    return rel, cls, SPLIT_NAMES[raw]


def _row_entry(tree, rel, at, class_root, seen, report):
    """The tree entry of a row's path, added to ``seen``; None (skipped) when unsafe, missing or listed before."""
    if unsafe_member(rel) is not None:
        report.skipped.append(
            SkippedFile(rel, f"{at}: absolute or '..' path leads outside the data folder; give paths relative to it")
        )
        return None
    entry = join_rel(class_root, rel.replace("\\", "/"))
    if not tree.is_file(entry):
        report.skipped.append(SkippedFile(rel, f"{at}: file not found"))
        return None
    key = tree.identity(entry)
    if key in seen:
        report.skipped.append(SkippedFile(rel, f"{at}: listed twice; the first row is used"))
        return None
    seen.add(key)
    return entry
