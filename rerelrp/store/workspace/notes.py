"""The researcher's notes on each learned task, kept beside the workspace's snapshots and carried into reports.

Notes are the user's own words (why a task was added, what was odd about its data), so they live
in ``notes.json`` at the workspace's top, outside the snapshots: editing a note never makes a new
snapshot, and undoing a task keeps the notes (a task learned again finds its note). A task is
named by its index and its name, so a note never lands on another task. Read like any file a
workspace someone sent may hold: a regular file, bounded in size, depth and length.
"""
from __future__ import annotations

from pathlib import Path

from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.fileio import RefusedFile, parse_json, read_regular, write_json_atomic
from rerelrp.store.workspace.files import is_workspace

NOTES_FILE = "notes.json"
MAX_NOTE_CHARS = 4000
MAX_NOTES_BYTES = 4 * 2**20


def read_notes(path):
    """``{(index, task name): note}`` of the workspace at ``path`` ({} when it has none)."""
    file = Path(path) / NOTES_FILE
    try:
        data = parse_json(read_regular(file, MAX_NOTES_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RefusedFile) as exc:
        raise WorkspaceError(path, f"its notes cannot be read: {exc}", NOTES_FILE) from None
    entries = data.get("notes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise WorkspaceError(path, "its notes are not a list of notes", NOTES_FILE)
    notes = {}
    for entry in entries:
        if isinstance(entry, dict) and type(entry.get("task")) is int and isinstance(entry.get("name"), str) \
                and isinstance(entry.get("note"), str):
            notes[entry["task"], entry["name"]] = entry["note"][:MAX_NOTE_CHARS]
    return notes


def write_note(path, task, name, note):
    """Keep ``note`` for task ``task`` named ``name`` (an empty note removes it); the file is replaced atomically."""
    if not is_workspace(path):
        raise ConfigError("notes are kept in the workspace: learn a task first, so that it is saved")
    if len(note) > MAX_NOTE_CHARS:
        raise ConfigError(f"a note holds at most {MAX_NOTE_CHARS:,} characters, this one {len(note):,}")
    notes = read_notes(path)
    notes.pop((task, name), None)
    if note.strip():
        notes[task, name] = note.strip()
    entries = [{"task": t, "name": n, "note": text} for (t, n), text in sorted(notes.items())]
    write_json_atomic(Path(path) / NOTES_FILE, {"notes": entries})
    return notes


def notes_for(notes, task_names):
    """The note of each of ``task_names`` (by index and name), "" where there is none."""
    return [notes.get((i, name), "") for i, name in enumerate(task_names)]
