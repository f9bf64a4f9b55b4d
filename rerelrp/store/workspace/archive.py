"""A workspace as one file: its current snapshot (with ``compare.json`` and ``notes.json``) in a zip archive, and back.

Why zip, not tar: a zip's central directory lists every entry with its type, compression and
declared size before a byte is extracted, so a hostile archive (a path leading out, a link, a
device, thousands of entries, terabytes declared) is refused up front; a tar has to be read
through to learn what it holds, and links and devices are ordinary tar members. A zip also opens
on every system without tools. Weights and recognisers are stored (they barely compress; skops
files are zips already), JSON is deflated.

An archive holds exactly a workspace's files at their own paths (``CURRENT``,
``snapshots/snap-NNNNNN/...``, ``compare.json``). Importing checks every entry against that
layout and the size limits of :mod:`rerelrp.store.workspace.files`, extracts into a hidden staging
folder beside the target, reading no more bytes than each entry declares, opens the result with
:func:`~rerelrp.store.workspace.load_workspace` (every check any workspace gets), and only then renames
it to the target: a failure or a kill never leaves a half-made target, and an existing one is
never replaced.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from rerelrp.errors import ArchiveError, WorkspaceError
from rerelrp.fileio import RefusedFile, file_kind, fsync_dir, open_regular, replaced_when_done
from rerelrp.store.workspace.files import (
    FILE_RE,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_JSON,
    MAX_POINTER,
    parse_workspace_json,
    read_file,
    read_limited,
    read_pointer,
    workspace_lock,
)
from rerelrp.store.workspace.listing import workspace_info
from rerelrp.store.workspace.loading import load_workspace, verified_files
from rerelrp.store.workspace.notes import NOTES_FILE, read_notes
from rerelrp.text import printable

MAX_ARCHIVE_ENTRIES = MAX_ENTRIES + 8  # a snapshot's entries, CURRENT, compare.json and the folders

MAX_ARCHIVE_BYTES = 2 * MAX_FILE_BYTES  # declared uncompressed total: a network and its arrays at their limits

_ENTRY_RE = re.compile(r"^(?:CURRENT|compare\.json|notes\.json)$|^snapshots/(snap-\d{6})/(.+)$")
_FOLDER_RE = re.compile(r"^snapshots/(?:snap-\d{6}/(?:estimators/)?)?$")
_CHUNK = 1 << 20
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same workspace gives the same archive


def export_workspace(path, archive_path, *, overwrite=False):
    """Write the workspace's current snapshot (and its ``compare.json``) as one zip file at ``archive_path``.

    Every file is verified against its checksum first (a corrupt workspace is refused here, not
    when someone imports it); the archive is written to a temporary name, fsynced and renamed, so
    ``archive_path`` is never half written. Returns ``{"archive", "workspace", "snapshot", "n_tasks",
    "task_names", "bytes", "entries"}``.
    """
    path, archive = Path(path), Path(archive_path)
    if os.path.lexists(archive) and not overwrite:
        raise ArchiveError(archive, "exists; choose another file name, or overwrite it (nothing was written)")
    if archive.resolve().is_relative_to((path / "snapshots").resolve()):
        raise WorkspaceError(path, "the archive cannot be written inside the workspace's snapshots; choose another folder")
    read_pointer(path)  # a clear error for a missing folder or a non-workspace before the lock file is made
    with workspace_lock(path):  # a save cannot delete the snapshot while it is read
        snapshot, manifest = read_pointer(path)
        where = f"snapshots/{snapshot.name}"
        members = {"CURRENT": read_limited(path, path / "CURRENT", "CURRENT", MAX_POINTER),
                   f"{where}/manifest.json": read_file(path, snapshot, "manifest.json", MAX_JSON)}
        members |= {f"{where}/{rel}": data for rel, data in sorted(verified_files(path, snapshot, manifest).items())}
        for extra in ("compare.json", NOTES_FILE):  # the workspace-level files that travel with the model
            if os.path.lexists(path / extra):
                members[extra] = read_limited(path, path / extra, extra, MAX_JSON)
    with replaced_when_done(archive) as tmp, open(tmp, "wb") as handle:
        with zipfile.ZipFile(handle, "w", allowZip64=True) as zf:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED if name.endswith((".json", "CURRENT")) else zipfile.ZIP_STORED
                zf.writestr(info, data)
            zf.comment = b"rerelrp workspace archive (rerelrp import --archive FILE --workspace NAME)"
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(archive.parent)
    names = manifest.get("task_names") if isinstance(manifest.get("task_names"), list) else []
    return {"archive": str(archive), "workspace": str(path), "snapshot": snapshot.name,
            "n_tasks": manifest.get("n_tasks"), "task_names": [printable(n) for n in names],
            "bytes": archive.stat().st_size, "entries": len(members)}


def import_workspace(archive_path, target_path):
    """Unpack the archive at ``archive_path`` into the new workspace folder ``target_path`` and open it once.

    Refused with an :class:`~rerelrp.errors.ArchiveError` (a WorkspaceError: ``path`` the archive,
    ``file`` the entry at fault; a WorkspaceError naming the target when it exists or cannot be
    made) before anything is extracted: a target that exists, a file that is not a zip (or a
    truncated one), an entry that is absolute or leads out with ``..``, a link or device, an entry
    outside a workspace's layout, too many entries, an entry or a total over the size limits, or a
    total larger than the free disk space. While extracting: an entry that yields more (or fewer)
    bytes than it declares or fails its CRC. After: anything :func:`load_workspace` refuses.
    Returns :func:`~rerelrp.store.workspace.workspace_info` of the new workspace.
    """
    archive, target = Path(archive_path), Path(target_path)
    if os.path.lexists(target):
        raise WorkspaceError(target, "exists; import into a new workspace name (nothing was changed)")
    try:
        handle = open_regular(archive, MAX_ARCHIVE_BYTES + MAX_JSON, follow_links=True)
    except FileNotFoundError:
        raise ArchiveError(archive, "archive file not found") from None
    except RefusedFile as exc:
        raise ArchiveError(archive, f"the archive {exc}") from None
    except OSError as exc:
        raise ArchiveError(archive, f"the archive cannot be read ({exc.strerror or exc})") from None
    with handle:
        try:
            zf = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
            raise ArchiveError(archive, f"is not a workspace archive: not a zip file, or a truncated one ({exc}); "
                                          "export one with 'rerelrp export'") from None
        with zf:
            entries, total = _checked_entries(archive, zf)
            target.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(target.parent).free
            if total > free:
                raise ArchiveError(archive, f"unpacks to {total:,} bytes; {printable(target.parent)} has {free:,} "
                                              "free. Free some space or import elsewhere (nothing was written)")
            _unpack(archive, zf, entries, target)
    return workspace_info(target)


def _checked_entries(archive, zf):
    """Every entry, checked against the layout and the limits from the central directory alone."""
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_ENTRIES:
        raise ArchiveError(archive, f"holds {len(infos):,} entries; a workspace archive has at most "
                                      f"{MAX_ARCHIVE_ENTRIES:,}. Refused (nothing was written)")
    seen, snapshots, total = set(), set(), 0
    for info in infos:
        if info.filename in seen:
            raise ArchiveError(archive, "appears twice in the archive; refused", printable(info.filename))
        seen.add(info.filename)
        snapshot = _check_entry(archive, info)
        if snapshot:
            snapshots.add(snapshot)
        total += info.file_size
        if total > MAX_ARCHIVE_BYTES:
            raise ArchiveError(archive, f"declares more than {MAX_ARCHIVE_BYTES:,} bytes uncompressed in all (a zip "
                                          "bomb, or not a workspace archive). Refused (nothing was written)")
    if "CURRENT" not in seen:
        raise ArchiveError(archive, "is not a workspace archive: it holds no CURRENT (export one with 'rerelrp export')")
    if len(snapshots) != 1:
        raise ArchiveError(archive, f"holds {len(snapshots)} snapshots; a workspace archive holds exactly one")
    return [info for info in infos if not info.is_dir()], total


def _check_entry(archive, info):
    """One entry's path, type, compression and declared size; returns its snapshot's name (None outside one)."""
    name, shown = info.filename, printable(info.filename)
    parts = name.split("/")
    if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ArchiveError(archive, "the entry's path is absolute or leads out with '..' (path traversal); "
                                      "refused (nothing was written)", shown)
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ArchiveError(archive, f"the entry is {file_kind(mode)}; a workspace archive holds only regular files, "
                                      "so it is refused (nothing was written)", shown)
    if info.is_dir():
        if not _FOLDER_RE.match(name):
            raise ArchiveError(archive, "the folder is not part of a workspace; refused", shown)
        return None
    match = _ENTRY_RE.match(name)
    if not match or (match.group(2) is not None and not FILE_RE.match(match.group(2))):
        raise ArchiveError(archive, "the entry is not a file of a workspace; refused (nothing was written)", shown)
    if info.flag_bits & 0x1:
        raise ArchiveError(archive, "the entry is encrypted; refused", shown)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(archive, f"the entry uses compression method {info.compress_type}; a workspace archive "
                                      "uses only stored and deflate", shown)
    limit = MAX_POINTER if name == "CURRENT" else MAX_JSON if name.endswith(".json") else MAX_FILE_BYTES
    if info.file_size > limit:
        raise ArchiveError(archive, f"the entry declares {info.file_size:,} bytes uncompressed; at most {limit:,} "
                                      "are allowed (a zip bomb?). Refused (nothing was written)", shown)
    return match.group(1)


def _unpack(archive, zf, entries, target):
    """Extract into a hidden staging folder beside ``target``, open it as a workspace, then rename it to ``target``.

    The staging folder holds the workspace one level down, so a kill mid-import leaves nothing the
    workspace list shows; it is removed whatever happens here."""
    staging = Path(tempfile.mkdtemp(prefix=".rerelrp-import-", dir=target.parent))
    try:
        unpacked = staging / "workspace"
        for info in entries:
            _extract(archive, zf, info, unpacked / info.filename)
        for folder in sorted({p.parent for p in unpacked.rglob("*")}, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
        _open_as_workspace(archive, unpacked)
        if os.path.lexists(target):
            raise WorkspaceError(target, "appeared while the archive was unpacked; import into a new name")
        try:
            os.rename(unpacked, target)
        except OSError as exc:
            raise WorkspaceError(target, f"cannot be created ({exc.strerror or exc}); nothing was changed") from None
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive, zf, info, out):
    """One entry, reading at most the bytes it declares (and one more, to notice a liar), fsynced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    left = info.file_size
    try:
        with zf.open(info) as src, open(out, "xb") as dst:
            while chunk := src.read(min(_CHUNK, left + 1)):
                left -= len(chunk)
                if left < 0:
                    raise ArchiveError(archive, "the entry holds more bytes than it declares (a zip bomb?); refused",
                                         printable(info.filename))
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise ArchiveError(archive, f"the entry cannot be read: the archive is damaged or truncated ({exc})",
                             printable(info.filename)) from None
    if left:
        raise ArchiveError(archive, f"the entry ends {left:,} bytes before its declared size: the archive is "
                                      "truncated", printable(info.filename))


def _open_as_workspace(archive, unpacked):
    """What any workspace gets (checksums, formats, the network against its weights), and a readable compare.json."""
    try:
        load_workspace(unpacked, device="cpu")
        if (unpacked / "compare.json").is_file():
            data = read_limited(unpacked, unpacked / "compare.json", "compare.json", MAX_JSON)
            if not isinstance(parse_workspace_json(unpacked, "compare.json", data), dict):
                raise WorkspaceError(unpacked, "does not hold a comparison", "compare.json")
        read_notes(unpacked)  # readable notes, or a WorkspaceError naming notes.json
    except WorkspaceError as exc:
        raise ArchiveError(archive, f"does not hold a valid workspace: {exc.problem}", exc.file) from None
