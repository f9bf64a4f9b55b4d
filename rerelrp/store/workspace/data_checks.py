"""Is this the data a workspace learned? Fingerprints, the sources it may reload, the sequence it continues."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from rerelrp.errors import WorkspaceError
from rerelrp.fileio import (
    RefusedFile,
    sha256_regular,
)
from rerelrp.text import printable


def split_fingerprint(split):
    """SHA-256 of a split's pixels and labels: proves a split is the same without keeping it."""
    images = np.ascontiguousarray(split.images)
    labels = np.ascontiguousarray(split.labels, dtype=np.int64)
    digest = hashlib.sha256(f"{images.shape}|{images.dtype}|{labels.shape}".encode())
    digest.update(memoryview(images).cast("B"))
    digest.update(memoryview(labels).cast("B"))
    return digest.hexdigest()


def task_fingerprint(task):
    """Fingerprints of a task's train/val/test splits (cached on the task: it never changes)."""
    cached = task.__dict__.get("_rerelrp_fingerprint")
    if cached is None:
        cached = {s: split_fingerprint(task.split(s)) for s in ("train", "val", "test")}
        task.__dict__["_rerelrp_fingerprint"] = cached
    return dict(cached)


DATA_FOLDER_ENTRIES = 100_000  # entries a recorded DICOM folder may hold (the loader reads at most 20,000 files)


def check_reload(path, task_records):
    """Before the learned tasks' data are loaded again from the sources their provenance names, make sure each
    source is the data the workspace learned, without walking or parsing anything a workspace merely names.

    The rule (a workspace someone sent may name "/" or any local file): a recorded ``.npz`` or zip
    is read only if it is a regular file of the recorded size and SHA-256; a recorded DICOM folder
    is walked only if it is a real folder that is not a file-system root, the home folder or one
    above it, holds every recorded file at its recorded size, and holds at most
    ``DATA_FOLDER_ENTRIES`` entries (counted without following links, stopping at the limit); a
    recorded manifest must be a regular file inside that folder. The loader then checks every file's
    hash and the pixels' fingerprints as before. Raises :class:`WorkspaceError` naming the task.
    """
    for i, record in enumerate(task_records):
        provenance = record.get("provenance") if isinstance(record, dict) else None
        spec = provenance.get("reload") if isinstance(provenance, dict) else None
        if not isinstance(spec, dict) or spec.get("loader") == "demo":
            continue  # nothing to read (reload_tasks says why an upload cannot be loaded again)
        try:
            _check_source(spec, provenance)
        except (RefusedFile, OSError, ValueError) as exc:
            source = printable(spec.get("source"))
            raise WorkspaceError(path, f"task {i} names {source!r} as its data, which is not loaded again: "
                                       f"{printable(exc)}. Load the data yourself (rerelrp run --data, the Data page)",
                                 "learner.json") from None


def _recorded(provenance, key="files"):
    entries = provenance.get(key)
    entries = [entries] if isinstance(entries, dict) else entries if isinstance(entries, list) else []
    return [e for e in entries if isinstance(e, dict) and type(e.get("bytes")) is int and isinstance(e.get("sha256"), str)]


def _check_source(spec, provenance):

    source = spec.get("source")
    if not isinstance(source, str) or not os.path.isabs(source):
        raise ValueError("the recorded source is not an absolute path")
    loader, where = spec.get("loader"), Path(source)
    if loader == "medmnist" or (loader == "dicom" and not stat.S_ISDIR(os.lstat(where).st_mode)):
        records = _recorded(provenance, "files" if loader == "medmnist" else "source")
        size = os.lstat(where).st_size
        if not any(r["bytes"] == size for r in records):
            raise ValueError("its size is not the recorded one")
        if sha256_regular(where) not in {r["sha256"] for r in records}:
            raise ValueError("its SHA-256 is not the recorded one")
        return
    if loader != "dicom":
        raise ValueError(f"unknown loader {printable(loader)!r}")
    if stat.S_ISLNK(os.lstat(where).st_mode):
        raise ValueError("it is a link")
    home = Path.home()
    if where == where.parent or where == home or where in home.parents:
        raise ValueError("a file-system root, the home folder or a folder above it is not a data folder")
    files = _recorded(provenance)
    if not files:
        raise ValueError("no file of it is recorded")
    for entry in files:
        rel = entry.get("path")
        if not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
            raise ValueError("a recorded file path leaves the folder")
        info = os.stat(where / rel)  # the loader follows links to files too; a link to a device is no regular file
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry["bytes"]:
            raise ValueError(f"the recorded file {printable(rel)!r} is not there at its recorded size")
    manifest = spec.get("manifest")
    if manifest is not None:
        resolved = (where / str(manifest)).resolve()
        if where.resolve() not in resolved.parents or not stat.S_ISREG(os.lstat(resolved).st_mode):
            raise ValueError("its recorded manifest is not a regular file inside the folder")
    count, pending = 0, [where]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                count += 1
                if count > DATA_FOLDER_ENTRIES:
                    raise ValueError(f"it holds more than {DATA_FOLDER_ENTRIES:,} entries; not the data folder of a run")
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)


def _describe_short(info):
    sizes = info.get("sizes") or {}
    return (f"'{info.get('name')}' with classes {info.get('classes')} "
            f"({', '.join(f'{k} {v}' for k, v in sizes.items())})")


def _file_hashes(info):
    prov = info.get("provenance") or {}
    return sorted(f.get("sha256") for f in prov.get("files", []) if isinstance(f, dict))


def check_task(path, i, saved, task, fingerprint):
    given = task.describe()
    problems = []
    for key in ("name", "classes", "sizes"):
        if saved.get(key) != given.get(key):
            problems.append(key)
    if _file_hashes(saved) != _file_hashes(given):
        problems.append("input file SHA-256")
    if fingerprint and task_fingerprint(task) != fingerprint:
        problems.append("pixels or labels (fingerprint)")
    if problems:
        raise WorkspaceError(
            path,
            f"task {i} differs from the data given ({', '.join(problems)}): the workspace learned "
            f"{_describe_short(saved)}, the data gives {_describe_short(given)}. Give the same data and task split "
            "as the run that made the workspace, or start a new workspace",
        )


def check_sequence(path, learner, meta, tasks):
    """The planned ``tasks`` must begin with the tasks the workspace learned: same names, classes, sizes, hashes."""
    tasks = list(tasks)
    if len(tasks) < learner.n_tasks:
        raise WorkspaceError(path, f"holds {learner.n_tasks} learned task(s) but the sequence given has only "
                                   f"{len(tasks)}; give the data of the run that made it")
    fingerprints = meta.get("fingerprints") or [None] * learner.n_tasks
    for i, saved in enumerate(learner.tasks_):
        check_task(path, i, saved, tasks[i], fingerprints[i] if i < len(fingerprints) else None)
