"""What the app's workspace picker shows, read from each workspace's pointer and manifest only."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rerelrp.errors import WorkspaceError
from rerelrp.store.workspace.files import DEFAULT_ROOT, is_workspace, read_pointer
from rerelrp.text import printable


def workspace_info(path):
    """Name, tasks learned, save time and format of a workspace, reading only its pointer and manifest.

    Names are :func:`~rerelrp.text.printable` (a folder name need not be UTF-8; a manifest may be crafted)."""
    path = Path(path)
    snapshot, manifest = read_pointer(path)
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
