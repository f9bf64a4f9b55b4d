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

``undo_last_task`` moves ``CURRENT`` back to the snapshot saved one task earlier (``undo.py``);
``export_workspace`` / ``import_workspace`` carry the current snapshot as one zip file, checked
entry by entry before it is unpacked and opened like any workspace before it is named (``archive.py``).
"""
from rerelrp.store.workspace.archive import export_workspace, import_workspace
from rerelrp.store.workspace.data_checks import check_reload, check_sequence, split_fingerprint, task_fingerprint
from rerelrp.store.workspace.files import (
    DEFAULT_ROOT,
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    check_target,
    is_workspace,
    resolve_workspace,
)
from rerelrp.store.workspace.listing import list_workspaces, workspace_info
from rerelrp.store.workspace.loading import load_workspace
from rerelrp.store.workspace.notes import notes_for, read_notes, write_note
from rerelrp.store.workspace.saving import save_workspace
from rerelrp.store.workspace.undo import undo_last_task

__all__ = [
    "DEFAULT_ROOT",
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "check_reload",
    "check_sequence",
    "check_target",
    "export_workspace",
    "import_workspace",
    "is_workspace",
    "list_workspaces",
    "load_workspace",
    "resolve_workspace",
    "save_workspace",
    "split_fingerprint",
    "task_fingerprint",
    "notes_for",
    "read_notes",
    "undo_last_task",
    "write_note",
    "workspace_info",
]
