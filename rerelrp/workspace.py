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
opening a workspace someone sent cannot run code. Nor can it hang or exhaust memory: only regular
files are read (a link, FIFO or device is refused before it is opened), each within a size limit
(the manifest's, capped by ``MAX_FILE_BYTES``), JSON at most ``fileio.MAX_JSON_DEPTH`` levels deep,
and the network ``learner.json`` describes is checked shape for shape against
``network.safetensors`` before a tensor of it is allocated. No image and no patient attribute is
stored: tasks are described by names, sizes, file hashes and pixel fingerprints (hashes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rerelrp import estimator_io
from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.fileio import (
    RefusedFile,
    fsync_dir,
    json_bytes,
    parse_json,
    read_regular,
    sha256_bytes,
    sha256_regular,
    write_bytes_atomic,
    write_bytes_durable,
)
from rerelrp.learner import ReReLRP
from rerelrp.metrics import RunMetrics
from rerelrp.nets import build_net
from rerelrp.text import printable
from rerelrp.versions import package_versions

FORMAT = "rerelrp-workspace"
FORMAT_VERSION = 3  # 3: typed task reports, nine scope statistics, the input size; 2: rerelrp 0.2; 1: rerelrp 0.1
OLDEST_READABLE = 2  # format 2 opens as it is (seven scope statistics, task reports without settings)
DEFAULT_ROOT = "./workspaces"
KEEP_SNAPSHOTS = 2  # the current snapshot and the one before it
_SNAPSHOT_RE = re.compile(r"^snap-(\d{6})$")
_FILE_RE = re.compile(r"^(manifest|learner|metrics)\.json$|^(network|arrays)\.safetensors$"
                      r"|^estimators/[a-z][a-z0-9-]{0,63}\.skops$")
_MAX_JSON = 64 << 20
_MAX_POINTER = 64 << 10  # CURRENT is a few lines
MAX_FILE_BYTES = 8 << 30  # one weights or recogniser file (VGG11 at 224 px with grown layers: under 1 GiB)
_MAX_ENTRIES = 4096  # files and folders in one snapshot (a learner of 1,000 tasks has about 1,000)
MAX_UNITS = 1 << 16  # units of one layer (VGG11's widest has 4,096 before it grows)
MAX_CLASSES = 100_000  # classes of one task's head


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

    path = Path(path)
    if not isinstance(learner, ReReLRP):
        raise WorkspaceError(path, f"only a ReReLRP learner can be saved, not {type(learner).__name__}")
    if not getattr(learner, "tasks_", None):  # an unfitted learner has no tasks_ at all
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
    if not os.path.lexists(path / "CURRENT"):
        if (path / "snapshots").is_dir():  # the first save was interrupted before it was committed
            raise WorkspaceError(path, "has no complete snapshot: nothing learned yet (the first save did not finish); "
                                       "run again to learn its first task", "CURRENT")
        raise WorkspaceError(path, "not a rerelrp workspace (it has no CURRENT file)", "CURRENT")
    pointer = _parse_json(path, "CURRENT", _read_limited(path, path / "CURRENT", "CURRENT", _MAX_POINTER))
    if not isinstance(pointer, dict) or pointer.get("format") != FORMAT:
        raise WorkspaceError(path, "not a rerelrp workspace pointer", "CURRENT")
    _check_version(path, "CURRENT", pointer.get("format_version"))
    name = pointer.get("snapshot")
    if not isinstance(name, str) or not _SNAPSHOT_RE.match(name):
        raise WorkspaceError(path, f"names the snapshot {name!r}, which is not a snapshot name", "CURRENT")
    snapshot = path / "snapshots" / name
    for folder, rel in ((path / "snapshots", "snapshots"), (snapshot, f"snapshots/{name}")):
        _check_folder(path, folder, rel, f"names snapshot {name}, which is missing")
    manifest_bytes = _read(path, snapshot, "manifest.json", _MAX_JSON)
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
    if version < OLDEST_READABLE:
        wrote = " (rerelrp 0.1)" if version == 1 else ""
        raise WorkspaceError(path, f"was written in the old workspace format {version}{wrote}; this rerelrp reads "
                                   f"format {FORMAT_VERSION}. Open it with the rerelrp version that wrote it, or train "
                                   "again (see 'Formats' in docs/workspaces-and-reports.md)", file)


def _check_folder(path, folder, rel, missing):
    """A real folder of the workspace: a link (to anywhere) or a file where a folder belongs is refused."""
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        raise WorkspaceError(path, missing, rel) from None
    except OSError as exc:
        raise WorkspaceError(path, f"cannot be read ({exc.strerror})", rel) from None
    if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
        raise WorkspaceError(path, "is a link or not a folder; a workspace holds only its own folders and regular "
                                   "files, so it is refused", rel)


def _read_limited(path, file, rel, max_bytes):
    """The bytes of one workspace file: a regular file of at most ``max_bytes``, else a WorkspaceError naming it."""
    try:
        return read_regular(file, max_bytes)
    except FileNotFoundError:
        raise WorkspaceError(path, "file missing (the workspace is incomplete or was tampered with)", rel) from None
    except RefusedFile as exc:
        raise WorkspaceError(path, str(exc), rel) from None
    except OSError as exc:
        raise WorkspaceError(path, f"cannot be read ({exc.strerror or exc})", rel) from None


def _read(path, snapshot, rel, max_bytes):
    where = f"snapshots/{snapshot.name}/{rel}"
    if "/" in rel:  # estimators/NAME.skops: its folder must be the snapshot's own
        _check_folder(path, snapshot / rel.rsplit("/", 1)[0], where.rsplit("/", 1)[0], "file missing")
    return _read_limited(path, snapshot / rel, where, max_bytes)


def _parse_json(path, file, data):
    if len(data) > _MAX_JSON:
        raise WorkspaceError(path, "too large for a workspace JSON file", file)
    try:
        return parse_json(data)
    except ValueError as exc:
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
    present = _snapshot_files(path, snapshot, where) - {"manifest.json"}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise WorkspaceError(path, f"holds file(s) the manifest does not list: {printable(', '.join(unlisted[:20]))} "
                                   "(the workspace was changed after it was saved)", where)
    out = {}
    for rel, entry in listed.items():
        size = entry.get("bytes") if isinstance(entry, dict) else None
        limit = _MAX_JSON if rel.endswith(".json") else MAX_FILE_BYTES
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
            raise WorkspaceError(path, f"the manifest gives it a size of {size!r} bytes; at most {limit:,} are allowed",
                                 f"{where}/{rel}")
        data = _read(path, snapshot, rel, size)
        if sha256_bytes(data) != entry.get("sha256") or len(data) != size:
            raise WorkspaceError(path, "checksum mismatch: the file is corrupt or was changed after it was saved; "
                                       "restore the workspace from a copy", f"{where}/{rel}")
        out[rel] = data
    return out


def _snapshot_files(path, snapshot, where):
    """Every entry below the snapshot folder (a bounded walk that follows no link); links and special files refused."""
    found, pending = set(), [("", snapshot)]
    while pending:
        prefix, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise WorkspaceError(path, f"cannot be listed ({exc.strerror})", f"{where}/{prefix}") from None
        for entry in entries:
            rel = prefix + entry.name
            if len(found) + len(pending) >= _MAX_ENTRIES:
                raise WorkspaceError(path, f"holds more than {_MAX_ENTRIES:,} entries; not a workspace snapshot", where)
            if entry.is_dir(follow_symlinks=False):
                pending.append((rel + "/", Path(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                found.add(rel)
            else:
                raise WorkspaceError(path, "is a link or a special file (FIFO, device, socket); a workspace holds only "
                                           "regular files, so it is refused", f"{where}/{printable(rel)}")
    return found


def load_workspace(path, device=None):
    """Open the workspace at ``path``: returns ``(learner, metrics, meta)``.

    ``device`` overrides the saved device setting (e.g. ``"cpu"`` for a workspace trained on a GPU).
    Every file is verified against its checksum first; a corrupt, tampered, newer- or older-format
    workspace raises :class:`~rerelrp.errors.WorkspaceError` naming the file and the problem.
    """

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
    try:
        metrics = RunMetrics.from_dict(metrics_data)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:  # a metrics object of the wrong shape
        raise WorkspaceError(path, f"does not hold readable metrics ({type(exc).__name__}: {printable(exc)})",
                             f"{where}/metrics.json") from None
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


    if not isinstance(record, dict) or not isinstance(record.get("params"), dict) or not isinstance(record.get("meta"), dict):
        raise WorkspaceError(path, "does not hold the learner's settings and metadata", f"{where}/learner.json")
    name = f"{where}/network.safetensors"
    try:
        tensors = safetensors.torch.load(files["network.safetensors"])
    except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None
    _check_network(path, where, record, tensors)
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
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:  # metadata of the wrong shape
        raise WorkspaceError(path, f"holds a learner this rerelrp cannot rebuild ({type(exc).__name__}: "
                                   f"{printable(exc)})", f"{where}/learner.json") from None


def _check_network(path, where, record, tensors):
    """The network ``learner.json`` describes must be the one ``network.safetensors`` holds, tensor for tensor.

    It is built on PyTorch's meta device (shapes only, no memory) exactly as the learner will
    build it, so layer sizes or class counts crafted to request 640 GB are refused before anything
    is allocated: the real network is then no larger than the file that was read. Malformed
    metadata is left to the learner, which refuses it before building anything.
    """
    import torch


    meta, file = record["meta"], f"{where}/learner.json"
    sizes, tasks, arch = meta.get("layer_sizes"), meta.get("tasks"), meta.get("arch")
    size = meta.get("input_size", record["params"].get("input_size"))  # the learner's own fallback
    if not (isinstance(sizes, list) and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                                            and type(s[1]) is int for s in sizes)):
        return
    for name, n in sizes:
        if not 1 <= n <= MAX_UNITS:
            raise WorkspaceError(path, f"gives layer {printable(name)!r} {n:,} units; a layer has 1 to {MAX_UNITS:,}",
                                 file)
    if not (isinstance(tasks, list) and all(isinstance(t, dict) and isinstance(t.get("classes"), list) for t in tasks)):
        return
    heads = [len(t["classes"]) for t in tasks]
    if any(not 1 <= k <= MAX_CLASSES for k in heads):
        raise WorkspaceError(path, f"gives a task {max(heads):,} classes; a task has 1 to {MAX_CLASSES:,}", file)
    if type(size) is not int or not 8 <= size <= 512 or not isinstance(arch, str):
        return
    layer_sizes = dict(sizes)
    try:
        with torch.device("meta"):
            net = build_net(arch, size, heads)
            if net.layer_sizes != layer_sizes:
                net = build_net(arch, size, heads, layer_sizes)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    except Exception as exc:  # noqa: BLE001 - whatever the metadata holds, it is refused with its reason
        raise WorkspaceError(path, f"describes a network this rerelrp cannot build ({type(exc).__name__}: "
                                   f"{printable(exc)})", file) from None
    held = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if held != expected:
        first = next((k for k in sorted(set(expected) | set(held)) if held.get(k) != expected.get(k)), None)
        raise WorkspaceError(path, f"describes a network that network.safetensors does not hold: {printable(first)} is "
                                   f"{held.get(first, 'missing')} in the weights, {expected.get(first, 'not in')} the "
                                   "network (corrupt or crafted)", file)


def _load_arrays(path, name, data):
    import safetensors
    import safetensors.numpy

    try:
        return dict(safetensors.numpy.load(data))
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None


# ---------------------------------------------------------------------------------------- listing
def workspace_info(path):
    """Name, tasks learned, save time and format of a workspace, reading only its pointer and manifest.

    Names are :func:`~rerelrp.text.printable` (a folder name need not be UTF-8; a manifest may be crafted)."""
    path = Path(path)
    snapshot, manifest = _read_pointer(path)
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    names = manifest.get("task_names")
    return {
        "name": printable(path.name),
        "path": str(path),
        "n_tasks": manifest.get("n_tasks"),
        "task_names": [printable(n) for n in names] if isinstance(names, list) else [],
        "saved_at": manifest.get("saved_at"),
        "modified": datetime.fromtimestamp((path / "CURRENT").stat().st_mtime).isoformat(timespec="seconds"),
        "format_version": manifest.get("format_version"),
        "snapshot": snapshot.name,
        "bytes": sum(f["bytes"] for f in files.values() if isinstance(f, dict) and type(f.get("bytes")) is int),
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
            out.append({"name": printable(child.name), "path": str(child), "n_tasks": None, "task_names": [], "saved_at": None,
                        "modified": datetime.fromtimestamp((child / "CURRENT").stat().st_mtime).isoformat(timespec="seconds"),
                        "format_version": None, "snapshot": None, "bytes": None, "problem": exc.problem})
    return sorted(out, key=lambda info: info["modified"], reverse=True)


# ---------------------------------------------------------------------------------------- reloading
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
