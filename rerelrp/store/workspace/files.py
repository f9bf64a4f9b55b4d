"""How a workspace's files are named and read: the format, its version, one file read safely (regular files, bounded)."""
from __future__ import annotations

import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rerelrp.errors import WorkspaceError
from rerelrp.fileio import (
    RefusedFile,
    parse_json,
    read_regular,
    sha256_bytes,
)

FORMAT = "rerelrp-workspace"


FORMAT_VERSION = 3  # 3: typed task reports, nine scope statistics, the input size; 2: rerelrp 0.2; 1: rerelrp 0.1


OLDEST_READABLE = 2  # format 2 opens as it is (seven scope statistics, task reports without settings)


DEFAULT_ROOT = "./workspaces"


KEEP_SNAPSHOTS = 2  # the current snapshot and the one before it


SNAPSHOT_RE = re.compile(r"^snap-(\d{6})$")


FILE_RE = re.compile(r"^(manifest|learner|metrics)\.json$|^(network|arrays)\.safetensors$"
                      r"|^estimators/[a-z][a-z0-9-]{0,63}\.skops$")


MAX_JSON = 64 << 20


MAX_POINTER = 64 << 10  # CURRENT is a few lines


MAX_FILE_BYTES = 8 << 30  # one weights or recogniser file (VGG11 at 224 px with grown layers: under 1 GiB)


MAX_ENTRIES = 4096  # files and folders in one snapshot (a learner of 1,000 tasks has about 1,000)


MAX_UNITS = 1 << 16  # units of one layer (VGG11's widest has 4,096 before it grows)


MAX_CLASSES = 100_000  # classes of one task's head


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


@contextmanager
def workspace_lock(path):
    """One writer at a time per workspace (saving, undoing, exporting): an OS lock through filelock on
    ``path/.lock``, released even when the process is killed."""
    try:
        with FileLock(Path(path) / ".lock", timeout=30):
            yield
    except Timeout:
        raise WorkspaceError(path, "another process has been saving to this workspace for 30 s; wait for it to "
                                   "finish or save to another workspace") from None


def abandoned_snapshots(path, current=None):
    """Snapshot folders numbered after the one CURRENT names (``current``, or read from CURRENT): left by a save
    killed between renaming its snapshot in and switching CURRENT, or by an undo killed before it removed the
    snapshot it undid. No pointer names them and none ever will; [] when CURRENT cannot be read (then nothing
    is known to be abandoned). Call it holding :func:`workspace_lock`."""
    path = Path(path)
    if current is None:
        try:
            pointer = parse_workspace_json(path, "CURRENT", read_limited(path, path / "CURRENT", "CURRENT", MAX_POINTER))
        except WorkspaceError:
            return []
        current = pointer.get("snapshot") if isinstance(pointer, dict) else None
        if not isinstance(current, str) or not SNAPSHOT_RE.match(current):
            return []
    try:
        entries = sorted(os.scandir(path / "snapshots"), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if SNAPSHOT_RE.match(e.name) and e.name > current
            and e.is_dir(follow_symlinks=False)]


def read_pointer(path):
    path = Path(path)
    if not path.is_dir():
        raise WorkspaceError(path, "no such folder")
    if not os.path.lexists(path / "CURRENT"):
        if (path / "snapshots").is_dir():  # the first save was interrupted before it was committed
            raise WorkspaceError(path, "has no complete snapshot: nothing learned yet (the first save did not finish); "
                                       "run again to learn its first task", "CURRENT")
        raise WorkspaceError(path, "not a rerelrp workspace (it has no CURRENT file)", "CURRENT")
    pointer = parse_workspace_json(path, "CURRENT", read_limited(path, path / "CURRENT", "CURRENT", MAX_POINTER))
    if not isinstance(pointer, dict) or pointer.get("format") != FORMAT:
        raise WorkspaceError(path, "not a rerelrp workspace pointer", "CURRENT")
    check_version(path, "CURRENT", pointer.get("format_version"))
    name = pointer.get("snapshot")
    if not isinstance(name, str) or not SNAPSHOT_RE.match(name):
        raise WorkspaceError(path, f"names the snapshot {name!r}, which is not a snapshot name", "CURRENT")
    snapshot = path / "snapshots" / name
    for folder, rel in ((path / "snapshots", "snapshots"), (snapshot, f"snapshots/{name}")):
        check_folder(path, folder, rel, f"names snapshot {name}, which is missing")
    manifest_bytes = read_file(path, snapshot, "manifest.json", MAX_JSON)
    if sha256_bytes(manifest_bytes) != pointer.get("manifest_sha256"):
        raise WorkspaceError(path, "checksum mismatch: the manifest was changed after it was saved (corrupt or "
                                   "tampered); restore the workspace from a copy", f"snapshots/{name}/manifest.json")
    manifest = parse_workspace_json(path, f"snapshots/{name}/manifest.json", manifest_bytes)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WorkspaceError(path, "not a rerelrp workspace manifest", f"snapshots/{name}/manifest.json")
    check_version(path, f"snapshots/{name}/manifest.json", manifest.get("format_version"))
    return snapshot, manifest


def check_version(path, file, version):
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


def check_folder(path, folder, rel, missing):
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


def read_limited(path, file, rel, max_bytes):
    """The bytes of one workspace file: a regular file of at most ``max_bytes``, else a WorkspaceError naming it."""
    try:
        return read_regular(file, max_bytes)
    except FileNotFoundError:
        raise WorkspaceError(path, "file missing (the workspace is incomplete or was tampered with)", rel) from None
    except RefusedFile as exc:
        raise WorkspaceError(path, str(exc), rel) from None
    except OSError as exc:
        raise WorkspaceError(path, f"cannot be read ({exc.strerror or exc})", rel) from None


def read_file(path, snapshot, rel, max_bytes):
    where = f"snapshots/{snapshot.name}/{rel}"
    if "/" in rel:  # estimators/NAME.skops: its folder must be the snapshot's own
        check_folder(path, snapshot / rel.rsplit("/", 1)[0], where.rsplit("/", 1)[0], "file missing")
    return read_limited(path, snapshot / rel, where, max_bytes)


def parse_workspace_json(path, file, data):
    if len(data) > MAX_JSON:
        raise WorkspaceError(path, "too large for a workspace JSON file", file)
    try:
        return parse_json(data)
    except ValueError as exc:
        raise WorkspaceError(path, f"is not valid JSON ({exc}); the file is corrupt", file) from None
