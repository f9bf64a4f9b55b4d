"""Saved workspaces: everything a trained learner needs, on disk, without pickle, written atomically.

A workspace is a folder (by default ``./workspaces/<name>``)::

    CURRENT                       which snapshot is the workspace, and the SHA-256 of its manifest
    snapshots/snap-000004/        one complete snapshot; never changed once it is in place
        manifest.json             format and version, what was saved, SHA-256 and size of every file below
        learner.json              settings and the learner's metadata (layer sizes, heads, tasks, history),
                                  task fingerprints, notes, versions
        metrics.json              accuracy matrices, forgetting, timings, capacity (RunMetrics)
        network.safetensors       network weights and BatchNorm statistics
        arrays.safetensors        the learner's other arrays (kept sets of every task, relevance rows)
        estimators/<name>.skops   the learner's fitted scikit-learn models (recognisers; skops, never pickle)

What goes into these files is exactly what ``ReReLRP.export_state`` hands out, and a learner is
rebuilt from them by ``ReReLRP.from_state``: this module knows files, not the learner's attributes.

Saving writes a new snapshot into a temporary folder, fsyncs it, renames it into place and then
replaces ``CURRENT`` atomically; a crash or kill at any moment leaves the previous snapshot named
by ``CURRENT`` and loadable. Loading verifies every checksum, then parses only data formats
(JSON, safetensors, skops limited to the expected types, with every tree checked before use), so
opening a workspace someone sent cannot run code. No image and no patient attribute is stored:
tasks are described by names, sizes, file hashes and pixel fingerprints (hashes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.fileio import fsync_dir, json_bytes, sha256_bytes, write_bytes_atomic, write_bytes_durable

FORMAT = "rerelrp-workspace"
FORMAT_VERSION = 2  # 2: files from the learner's export_state (rerelrp 0.2); 1: rerelrp 0.1
DEFAULT_ROOT = "./workspaces"
KEEP_SNAPSHOTS = 2  # the current snapshot and the one before it
_SNAPSHOT_RE = re.compile(r"^snap-(\d{6})$")
_FILE_RE = re.compile(r"^(manifest|learner|metrics)\.json$|^(network|arrays)\.safetensors$"
                      r"|^estimators/[a-z][a-z0-9-]{0,63}\.skops$")
_MAX_JSON = 64 << 20


def _checkpoint(stage):
    """A named point of the save sequence; tests replace it to kill a save exactly there."""


# ---------------------------------------------------------------------------------------- naming
def resolve_workspace(name_or_path, root=DEFAULT_ROOT):
    """A bare name (no folder separator, not starting with '.') lives under ``root``; anything else is a path."""
    text = str(name_or_path)
    if not text.strip():
        raise WorkspaceError(text, "empty workspace name")
    if os.sep in text or "/" in text or text.startswith("."):
        return Path(text)
    return Path(root) / text


def is_workspace(path):
    return (Path(path) / "CURRENT").is_file()


def check_target(path):
    """Refuse to save into something that is not a workspace (a file, or a folder holding other things)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WorkspaceError(path, "exists and is not a folder; choose another workspace name")
    if path.is_dir() and any(path.iterdir()) and not is_workspace(path) and not (path / "snapshots").is_dir():
        raise WorkspaceError(path, "the folder exists, is not empty and is not a workspace; choose another name")


# ---------------------------------------------------------------------------------------- hashes
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


# ---------------------------------------------------------------------------------------- saving
def save_workspace(path, learner, metrics=None, *, tasks=None, extra=None, keep=KEEP_SNAPSHOTS):
    """Save ``learner`` (and the run's ``metrics``) as the workspace's new current snapshot.

    ``tasks``: the Task objects of the run (at least those learned); only their fingerprints
    (hashes of pixels and labels) are stored, so that samples and continued runs can be checked
    against the data later. ``extra``: JSON-able notes kept as they are (e.g. the data sources
    a run was made from). Returns the workspace path.
    """
    from rerelrp.learner import ReReLRP

    path = Path(path)
    if not isinstance(learner, ReReLRP):
        raise WorkspaceError(path, f"only a ReReLRP learner can be saved, not {type(learner).__name__}")
    if not learner.tasks_:
        raise WorkspaceError(path, "the learner has not learned a task yet; nothing to save")
    check_target(path)
    files = _serialise(learner, metrics, tasks, extra, path)
    path.mkdir(parents=True, exist_ok=True)
    snapshots = path / "snapshots"
    snapshots.mkdir(exist_ok=True)
    with _lock(path):
        for leftover in snapshots.glob(".tmp-*"):  # from a save that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        numbers = [int(m.group(1)) for p in snapshots.iterdir() if (m := _SNAPSHOT_RE.match(p.name))]
        name = f"snap-{max(numbers, default=0) + 1:06d}"
        tmp = snapshots / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_tasks": learner.n_tasks,
            "task_names": [t["name"] for t in learner.tasks_],
            "files": {rel: {"sha256": sha256_bytes(data), "bytes": len(data)} for rel, data in sorted(files.items())},
        }
        for rel, data in files.items():
            target = tmp / rel
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True)
            write_bytes_durable(target, data)
            _checkpoint("file")
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        write_bytes_durable(tmp / "manifest.json", manifest_bytes)
        if (tmp / "estimators").is_dir():
            fsync_dir(tmp / "estimators")
        fsync_dir(tmp)
        _checkpoint("snapshot-written")
        os.rename(tmp, snapshots / name)
        fsync_dir(snapshots)
        _checkpoint("snapshot-renamed")
        pointer = {"format": FORMAT, "format_version": FORMAT_VERSION, "snapshot": name,
                   "manifest_sha256": sha256_bytes(manifest_bytes)}
        write_bytes_atomic(path / "CURRENT", json.dumps(pointer, indent=2).encode())
        fsync_dir(path)
        _checkpoint("current-switched")
        ordered = sorted((p for p in snapshots.iterdir() if _SNAPSHOT_RE.match(p.name)), key=lambda p: p.name)
        for old in ordered[: max(0, len(ordered) - max(1, keep))]:
            shutil.rmtree(old, ignore_errors=True)
    return path


@contextmanager
def _lock(path):
    """One saver at a time per workspace (an OS lock through filelock, released even when the process is killed)."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(path / ".lock", timeout=30):
            yield
    except Timeout:
        raise WorkspaceError(path, "another process has been saving to this workspace for 30 s; wait for it to "
                                   "finish or save to another workspace") from None


def _serialise(learner, metrics, tasks, extra, path):
    """Every file of a snapshot as bytes, computed before anything is written."""
    import safetensors.numpy
    import safetensors.torch

    from rerelrp import estimator_io
    from rerelrp.metrics import RunMetrics
    from rerelrp.runner import package_versions

    T = learner.n_tasks
    fingerprints = [None] * T
    if tasks is not None:
        tasks = list(tasks)
        if len(tasks) < T:
            raise WorkspaceError(path, f"{len(tasks)} task(s) given but the learner has learned {T}")
        for i in range(T):
            _check_task(path, i, learner.tasks_[i], tasks[i], None)
            fingerprints[i] = task_fingerprint(tasks[i])
    try:
        state = learner.export_state()
    except ConfigError as exc:
        raise WorkspaceError(path, str(exc)) from None
    record = {
        "params": state["params"],
        "meta": state["meta"],
        "fingerprints": fingerprints,
        "extra": extra or {},
        "versions": package_versions(),
        "device": learner.describe_device(),
    }
    try:
        learner_json, metrics_json = json_bytes(record), json_bytes((metrics or RunMetrics()).to_dict())
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(path, f"the learner's metadata cannot be written as JSON ({exc}); extra= must hold "
                                   "only JSON values") from None
    files = {
        "learner.json": learner_json,
        "metrics.json": metrics_json,
        "network.safetensors": safetensors.torch.save(state["tensors"]),
        "arrays.safetensors": safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in state["arrays"].items()}),
    }
    for name, estimator in state["estimators"].items():
        files[f"estimators/{name}.skops"] = estimator_io.dumps(estimator)
    return files


# ---------------------------------------------------------------------------------------- loading
def _read_pointer(path):
    path = Path(path)
    if not path.is_dir():
        raise WorkspaceError(path, "no such folder")
    current = path / "CURRENT"
    if not current.is_file():
        raise WorkspaceError(path, "not a rerelrp workspace (it has no CURRENT file)", "CURRENT")
    pointer = _parse_json(path, "CURRENT", current.read_bytes()[: _MAX_JSON + 1])
    if not isinstance(pointer, dict) or pointer.get("format") != FORMAT:
        raise WorkspaceError(path, "not a rerelrp workspace pointer", "CURRENT")
    _check_version(path, "CURRENT", pointer.get("format_version"))
    name = pointer.get("snapshot")
    if not isinstance(name, str) or not _SNAPSHOT_RE.match(name):
        raise WorkspaceError(path, f"names the snapshot {name!r}, which is not a snapshot name", "CURRENT")
    snapshot = path / "snapshots" / name
    if not snapshot.is_dir():
        raise WorkspaceError(path, f"names snapshot {name}, which is missing", "CURRENT")
    manifest_bytes = _read(path, snapshot, "manifest.json")
    if sha256_bytes(manifest_bytes) != pointer.get("manifest_sha256"):
        raise WorkspaceError(path, "checksum mismatch: the manifest was changed after it was saved (corrupt or "
                                   "tampered); restore the workspace from a copy", f"snapshots/{name}/manifest.json")
    manifest = _parse_json(path, f"snapshots/{name}/manifest.json", manifest_bytes)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WorkspaceError(path, "not a rerelrp workspace manifest", f"snapshots/{name}/manifest.json")
    _check_version(path, f"snapshots/{name}/manifest.json", manifest.get("format_version"))
    return snapshot, manifest


def _check_version(path, file, version):
    if not isinstance(version, int):
        raise WorkspaceError(path, f"has no valid format version ({version!r})", file)
    if version > FORMAT_VERSION:
        raise WorkspaceError(path, f"was written in workspace format {version} by a newer rerelrp; this rerelrp "
                                   f"reads format {FORMAT_VERSION}. Upgrade rerelrp to open it", file)
    if version < FORMAT_VERSION:
        wrote = " (rerelrp 0.1)" if version == 1 else ""
        raise WorkspaceError(path, f"was written in the old workspace format {version}{wrote}; this rerelrp reads "
                                   f"format {FORMAT_VERSION}. Open it with the rerelrp version that wrote it, or train "
                                   "again (see 'Formats' in docs/workspaces-and-reports.md)", file)


def _read(path, snapshot, rel):
    try:
        return (snapshot / rel).read_bytes()
    except FileNotFoundError:
        raise WorkspaceError(path, "file missing (the workspace is incomplete or was tampered with)",
                             f"snapshots/{snapshot.name}/{rel}") from None
    except OSError as exc:
        raise WorkspaceError(path, f"cannot be read ({exc.strerror})", f"snapshots/{snapshot.name}/{rel}") from None


def _parse_json(path, file, data):
    if len(data) > _MAX_JSON:
        raise WorkspaceError(path, "too large for a workspace JSON file", file)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkspaceError(path, f"is not valid JSON ({exc}); the file is corrupt", file) from None


def _verified_files(path, snapshot, manifest):
    """Every file the manifest lists, read once and checked against its SHA-256; nothing else allowed."""
    listed = manifest.get("files")
    where = f"snapshots/{snapshot.name}"
    if not isinstance(listed, dict):
        raise WorkspaceError(path, "the manifest lists no files", f"{where}/manifest.json")
    for rel in listed:
        if not isinstance(rel, str) or not _FILE_RE.match(rel):
            raise WorkspaceError(path, f"the manifest lists an unexpected file {rel!r}", f"{where}/manifest.json")
    present = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir()} - {"manifest.json"}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise WorkspaceError(path, f"holds file(s) the manifest does not list: {', '.join(unlisted)} "
                                   "(the workspace was changed after it was saved)", where)
    out = {}
    for rel, entry in listed.items():
        data = _read(path, snapshot, rel)
        if not isinstance(entry, dict) or sha256_bytes(data) != entry.get("sha256") or len(data) != entry.get("bytes"):
            raise WorkspaceError(path, "checksum mismatch: the file is corrupt or was changed after it was saved; "
                                       "restore the workspace from a copy", f"{where}/{rel}")
        out[rel] = data
    return out


def load_workspace(path, device=None):
    """Open the workspace at ``path``: returns ``(learner, metrics, meta)``.

    ``device`` overrides the saved device setting (e.g. ``"cpu"`` for a workspace trained on a GPU).
    Every file is verified against its checksum first; a corrupt, tampered, newer- or older-format
    workspace raises :class:`~rerelrp.errors.WorkspaceError` naming the file and the problem.
    """
    from rerelrp.metrics import RunMetrics

    path = Path(path)
    snapshot, manifest = _read_pointer(path)
    files = _verified_files(path, snapshot, manifest)
    where = f"snapshots/{snapshot.name}"
    for required in ("learner.json", "metrics.json", "network.safetensors", "arrays.safetensors"):
        if required not in files:
            raise WorkspaceError(path, "file missing from the manifest", f"{where}/{required}")
    record = _parse_json(path, f"{where}/learner.json", files["learner.json"])
    learner = _build_learner(path, where, record, files, device)
    metrics_data = _parse_json(path, f"{where}/metrics.json", files["metrics.json"])
    if not isinstance(metrics_data, dict):
        raise WorkspaceError(path, "does not hold a metrics object", f"{where}/metrics.json")
    metrics = RunMetrics.from_dict(metrics_data)
    meta = {
        "path": str(path),
        "name": path.name,
        "snapshot": snapshot.name,
        "format_version": manifest["format_version"],
        "saved_at": manifest.get("saved_at"),
        "files": manifest["files"],
        "fingerprints": record.get("fingerprints") or [None] * learner.n_tasks,
        "extra": record.get("extra") or {},
        "versions": record.get("versions") or {},
        "saved_device": record.get("device"),
    }
    return learner, metrics, meta


# which file holds each part of a learner's state (for messages that name the file at fault)
_STATE_FILES = {"params": "learner.json", "meta": "learner.json", "tensors": "network.safetensors",
                "arrays": "arrays.safetensors", "estimators": "estimators/"}


def _build_learner(path, where, record, files, device):
    import safetensors
    import safetensors.torch

    from rerelrp import estimator_io
    from rerelrp.learner import ReReLRP

    if not isinstance(record, dict) or not isinstance(record.get("params"), dict) or not isinstance(record.get("meta"), dict):
        raise WorkspaceError(path, "does not hold the learner's settings and metadata", f"{where}/learner.json")
    name = f"{where}/network.safetensors"
    try:
        tensors = safetensors.torch.load(files["network.safetensors"])
    except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None
    arrays = _load_arrays(path, f"{where}/arrays.safetensors", files["arrays.safetensors"])
    estimators = {}
    for rel, data in files.items():
        if rel.startswith("estimators/"):
            try:
                estimators[rel[len("estimators/"):-len(".skops")]] = estimator_io.loads(data)
            except ValueError as exc:
                raise WorkspaceError(path, str(exc), f"{where}/{rel}") from None
    state = {"params": record["params"], "meta": record["meta"], "tensors": tensors, "arrays": arrays,
             "estimators": estimators}
    try:
        return ReReLRP.from_state(state, device=device)
    except ConfigError as exc:
        part = str(exc).split(":", 1)[0]
        raise WorkspaceError(path, f"holds a learner this rerelrp cannot rebuild: {exc}",
                             f"{where}/{_STATE_FILES.get(part, 'learner.json')}") from None


def _load_arrays(path, name, data):
    import safetensors
    import safetensors.numpy

    try:
        return dict(safetensors.numpy.load(data))
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None


# ---------------------------------------------------------------------------------------- listing
def workspace_info(path):
    """Name, tasks learned, save time and format of a workspace, reading only its pointer and manifest."""
    path = Path(path)
    snapshot, manifest = _read_pointer(path)
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    return {
        "name": path.name,
        "path": str(path),
        "n_tasks": manifest.get("n_tasks"),
        "task_names": manifest.get("task_names", []),
        "saved_at": manifest.get("saved_at"),
        "modified": datetime.fromtimestamp((path / "CURRENT").stat().st_mtime).isoformat(timespec="seconds"),
        "format_version": manifest.get("format_version"),
        "snapshot": snapshot.name,
        "bytes": sum(int(f.get("bytes", 0)) for f in files.values() if isinstance(f, dict)),
        "problem": None,
    }


def list_workspaces(root=DEFAULT_ROOT):
    """Every workspace folder under ``root``, newest first; unreadable ones are listed with their problem."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or not is_workspace(child):
            continue
        try:
            out.append(workspace_info(child))
        except WorkspaceError as exc:
            out.append({"name": child.name, "path": str(child), "n_tasks": None, "task_names": [], "saved_at": None,
                        "modified": datetime.fromtimestamp((child / "CURRENT").stat().st_mtime).isoformat(timespec="seconds"),
                        "format_version": None, "snapshot": None, "bytes": None, "problem": exc.problem})
    return sorted(out, key=lambda info: info["modified"], reverse=True)


# ---------------------------------------------------------------------------------------- continuing
def _describe_short(info):
    sizes = info.get("sizes") or {}
    return (f"'{info.get('name')}' with classes {info.get('classes')} "
            f"({', '.join(f'{k} {v}' for k, v in sizes.items())})")


def _file_hashes(info):
    prov = info.get("provenance") or {}
    return sorted(f.get("sha256") for f in prov.get("files", []) if isinstance(f, dict))


def _check_task(path, i, saved, task, fingerprint):
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
        _check_task(path, i, saved, tasks[i], fingerprints[i] if i < len(fingerprints) else None)
