"""Undoing the last task: the workspace goes back to the snapshot saved one task earlier, atomically.

Only ``CURRENT`` changes: it is replaced atomically to name the earlier snapshot, which saving
left in place untouched (snapshots are never changed once written), so a kill at any moment
leaves either the workspace as it was or the workspace one task back, both loadable. The
earlier snapshot's ``metrics.json`` is the one saved with it, so the metrics go back with the
model. ``compare.json`` is left alone: it is a comparison of freshly trained runs on the task
list it names itself, not a view of this model, and reports show it with those task names.

The undone snapshot is deleted once ``CURRENT`` has moved, not kept as a redo: saving numbers a
new snapshot after the highest one present and keeps the newest ``KEEP_SNAPSHOTS``, so a kept
undone snapshot (a branch no pointer follows) would take the slot of the snapshot the next undo
needs, and learning the task again redoes it anyway. It is first renamed to a ``.tmp-`` name
(which the next save or undo removes), so a kill while it is deleted leaves no half snapshot
under a snapshot name.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rerelrp.errors import WorkspaceError
from rerelrp.fileio import fsync_dir, sha256_bytes, write_bytes_atomic
from rerelrp.store.workspace.files import (
    FORMAT,
    FORMAT_VERSION,
    KEEP_SNAPSHOTS,
    MAX_JSON,
    SNAPSHOT_RE,
    abandoned_snapshots,
    check_folder,
    check_version,
    parse_workspace_json,
    read_file,
    read_pointer,
    workspace_lock,
)
from rerelrp.store.workspace.loading import verified_files
from rerelrp.text import printable


def checkpoint(stage):
    """A named point of the undo sequence; tests replace it to kill an undo exactly there."""


def undo_last_task(path):
    """Return the workspace at ``path`` to the snapshot that holds one task fewer; the undone snapshot is deleted.

    Returns ``{"workspace", "undone", "n_tasks", "task_names", "snapshot"}``: the undone task's name
    and what is left (names :func:`~rerelrp.text.printable`). Raises
    :class:`~rerelrp.errors.WorkspaceError` when the workspace holds one task only, when the
    snapshot before it was not kept, or when that snapshot is corrupt (then nothing changes).
    """
    path = Path(path)
    read_pointer(path)  # a clear error for a missing folder or a non-workspace before the lock file is made
    with workspace_lock(path):
        current, manifest = read_pointer(path)  # again: a save may have finished while we waited
        names, n_tasks = _task_names(path, current, manifest)
        if n_tasks <= 1:
            raise WorkspaceError(path, f"holds one learned task only ({printable(names[0]) if names else 'task 0'}); "
                                       "undoing it would leave nothing to open. Start a new workspace to learn a "
                                       "different first task")
        previous, manifest_bytes, previous_manifest = _previous(path, current, names)
        verified_files(path, previous, previous_manifest)  # every checksum, before CURRENT moves
        checkpoint("verified")
        pointer = {"format": FORMAT, "format_version": FORMAT_VERSION, "snapshot": previous.name,
                   "manifest_sha256": sha256_bytes(manifest_bytes)}
        write_bytes_atomic(path / "CURRENT", json.dumps(pointer, indent=2).encode())
        fsync_dir(path)
        checkpoint("current-switched")
        _discard(path, abandoned_snapshots(path, previous.name))  # the undone one (and any a killed save left)
    return {"workspace": str(path), "undone": printable(names[-1]), "n_tasks": n_tasks - 1,
            "task_names": [printable(n) for n in names[:-1]], "snapshot": previous.name}


def _task_names(path, snapshot, manifest):
    names, n_tasks = manifest.get("task_names"), manifest.get("n_tasks")
    if type(n_tasks) is not int or not isinstance(names, list) or len(names) != n_tasks:
        raise WorkspaceError(path, "the manifest does not say which tasks it holds", f"snapshots/{snapshot.name}/manifest.json")
    return names, n_tasks


def _previous(path, current, names):
    """The newest snapshot before ``current`` that holds its tasks but the last: ``(folder, manifest bytes, manifest)``.

    Snapshots saved again with the same tasks are passed over; anything else ends the search."""
    snapshots = path / "snapshots"
    earlier = sorted((e.name for e in os.scandir(snapshots) if SNAPSHOT_RE.match(e.name) and e.name < current.name),
                     reverse=True)
    for name in earlier:
        folder, rel = snapshots / name, f"snapshots/{name}/manifest.json"
        check_folder(path, folder, f"snapshots/{name}", "is missing")
        data = read_file(path, folder, "manifest.json", MAX_JSON)
        manifest = parse_workspace_json(path, rel, data)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise WorkspaceError(path, "not a rerelrp workspace manifest", rel)
        check_version(path, rel, manifest.get("format_version"))
        held, _ = _task_names(path, folder, manifest)
        if held == names:
            continue
        if held == names[:-1]:
            return folder, data, manifest
        break
    raise WorkspaceError(path, f"the snapshot with its first {len(names) - 1} task(s) was not kept: a workspace keeps "
                               f"its last {KEEP_SNAPSHOTS} snapshots (the current one and the one before it) and an "
                               "undo deletes the snapshot it undid, so one task can be undone after each save. To go "
                               "further back, import an archive exported earlier (rerelrp export) or start a new "
                               "workspace")


def _discard(path, folders):
    """Snapshots no pointer names: renamed out of the snapshot names first, then deleted."""
    snapshots = path / "snapshots"
    for folder in folders:
        grave = snapshots / f".tmp-undone-{folder.name}-{os.getpid()}"
        os.rename(folder, grave)
        fsync_dir(snapshots)
        checkpoint("undone-renamed")
        shutil.rmtree(grave, ignore_errors=True)
