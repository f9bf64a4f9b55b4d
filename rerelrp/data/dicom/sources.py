"""Where DICOM files come from: a folder on disk, or a zip read in memory and never extracted.

The rest of the loader sees its input as a *source tree*: files named by root-relative POSIX paths
("rel", "" is the root). :class:`FolderTree` reads files from disk where they are; :class:`ZipTree`
reads a zip's entries into memory one at a time, so nothing of an archive is ever written anywhere.
Both offer the same operations:

* ``files(report)``  every regular file (walk order: a folder's files, then its sub-folders);
  ignored folders and other problems go to the report
* ``listdir(rel)``   (sorted sub-folder names, sorted file names) directly in the folder rel
* ``is_file(rel)``   whether rel names a file of the tree
* ``identity(rel)``  equal for two paths that name the same file (links resolved)
* ``handle(rel)``    what an item keeps to read the file later: an object with ``open("rb")``
* ``where(rel)``     how a message names the file

Zip safety lives here too: names that escape the root (absolute, drive letters, ``..``, NUL),
links, encrypted and duplicate entries are refused one by one; the file count and the declared
uncompressed size are capped from the directory, and the bytes actually read are counted against
the size cap again (a zip-bomb guard that does not trust the directory).
"""
from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rerelrp.data.core import SkippedFile
from rerelrp.data.dicom.skips import Skip, add_listed, human, short
from rerelrp.errors import DataError
from rerelrp.fileio import sha256_stream


def describe_source(source, name):
    """How the report names the source: its path, or the upload's name."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return name or getattr(source, "name", None) or "uploaded zip"


@contextmanager
def open_source(source, name, max_files, max_total_bytes, report):
    """Yield (source tree, provenance of the source, data set name); a zip stays open while it is read."""
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        label = report.source
        stream = _seekable(source)
        record = {"path": label, **_digest(stream)}
        with _open_zip(stream, label) as zf:
            yield ZipTree(zf, label, max_files, max_total_bytes, report), record, name or Path(str(label)).stem or "upload"
        return
    path = Path(source)
    if not path.exists():
        raise DataError(path, "not found: give a folder with one sub-folder per class, or a .zip of one")
    if path.is_dir():
        yield FolderTree(path), {"path": str(path)}, name or path.resolve().name
        return
    if zipfile.is_zipfile(path):
        with open(path, "rb") as stream:
            record = {"path": str(path), **_digest(stream)}
            with _open_zip(stream, str(path)) as zf:
                yield ZipTree(zf, str(path), max_files, max_total_bytes, report), record, name or path.stem
        return
    if path.suffix.lower() == ".zip":
        raise DataError(path, "not a readable zip archive (damaged or not a zip); re-create the archive")
    raise DataError(
        path,
        "a single file cannot be a data set: give a folder with one sub-folder per class "
        "(or a manifest.csv with path,label columns), or a .zip of such a folder",
    )


def _seekable(upload):
    """A seekable binary stream over an upload (bytes or a file object), in memory if it must be copied."""
    if isinstance(upload, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(upload))
    if hasattr(upload, "seekable") and upload.seekable() and hasattr(upload, "readinto"):
        return upload  # hashed and read from its start (see _digest)
    return io.BytesIO(upload.read())


def _digest(stream):
    """Size and SHA-256 of a binary stream from its start; the stream is left at its start."""
    sha256, size = sha256_stream(stream)
    return {"bytes": size, "sha256": sha256}


def _open_zip(stream, label):
    """The archive's directory, read from ``stream`` (entries are read later, one at a time)."""
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(label, f"not a readable zip archive ({exc}); re-create the archive") from exc


def join_rel(*parts):
    """Root-relative POSIX path of ``parts`` joined ('' and '.' parts dropped; '..' kept as given)."""
    return "/".join(PurePosixPath(*parts).parts)


def _ignored_folder(rel, n_files):
    kind = "macOS metadata" if rel.rsplit("/", 1)[-1] == "__MACOSX" else "hidden"
    return SkippedFile(rel + "/", f"{kind} folder ignored ({n_files} files)")


class FolderTree:
    """A folder on disk; its files are read from where they are."""

    is_archive = False

    def __init__(self, root):
        self.root = root

    def files(self, report):
        """Every regular file (sorted, links followed once); hidden/macOS folders and loops reported."""
        out, visited = [], set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            folder = Path(dirpath)
            real = os.path.realpath(dirpath)
            if real in visited:
                dirnames[:] = []
                report.skipped.append(SkippedFile(self._rel(folder) + "/", "folder link loop: not read again"))
                continue
            visited.add(real)
            keep = []
            for d in sorted(dirnames):
                if is_ignored_dir(d):
                    n = sum(len(f) for _, _, f in os.walk(folder / d))
                    report.skipped.append(_ignored_folder(self._rel(folder / d), n))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                p = folder / f
                if p.is_file():
                    out.append(self._rel(p))
                else:
                    report.skipped.append(SkippedFile(self._rel(p), "not a regular file (broken link or device)"))
        return out

    def _rel(self, path):
        return path.relative_to(self.root).as_posix()

    def listdir(self, rel):
        folder = self.root / rel
        children = sorted(folder.iterdir()) if folder.is_dir() else []
        return [c.name for c in children if c.is_dir()], [c.name for c in children if c.is_file()]

    def is_file(self, rel):
        return (self.root / rel).is_file()

    def identity(self, rel):
        return (self.root / rel).resolve()

    def handle(self, rel):
        return self.root / rel  # a Path: open("rb") reads it from disk

    def where(self, rel):
        return self.root / rel


@dataclass(frozen=True)
class ZipEntry:
    """One entry of a zip, read into memory (whole, within the size cap) when it is opened."""

    tree: ZipTree
    info: zipfile.ZipInfo

    def open(self, mode="rb"):
        if mode != "rb":
            raise ValueError(f"zip entries are read only in binary mode, not {mode!r}")
        return io.BytesIO(self.tree.read(self.info))


class ZipTree:
    """A zip archive read in memory: nothing is extracted, nothing is written.

    All checks on names, links, encryption, duplicates, the file count and the declared sizes run over
    the whole directory first; every refused entry goes to the report. The bytes actually read are
    counted again entry by entry (:meth:`read`), so an entry that lies about its size stops at the cap.
    """

    is_archive = True

    def __init__(self, zf, label, max_files, max_total_bytes, report):
        self.zf, self.label, self.max_total_bytes = zf, label, max_total_bytes
        self.bytes_read = 0
        entries, over_cap, declared = {}, [], 0
        for info in zf.infolist():
            if info.is_dir():
                continue
            why = unsafe_member(info.filename)
            rel = "" if why else join_rel(info.filename.replace("\\", "/"))
            if why is None and not rel:
                why = "empty entry name"
            if why is None and info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
                why = "symbolic link entry: links are not followed"
            if why is None and info.flag_bits & 0x1:
                why = "encrypted entry: password-protected archives are not supported"
            if why is None and rel in entries:
                why = "duplicate entry name: only the first copy is used"
            if why is not None:
                report.skipped.append(SkippedFile(info.filename, why))
                continue
            if len(entries) >= max_files:
                over_cap.append((info.filename, f"zip bomb guard: more than max_files={max_files} files in the archive"))
                continue
            if declared + info.file_size > max_total_bytes:
                over_cap.append(
                    (
                        info.filename,
                        f"zip bomb guard: {human(info.file_size)} uncompressed would take the archive past "
                        f"max_total_bytes={human(max_total_bytes)}",
                    )
                )
                continue
            declared += info.file_size
            entries[rel] = info
        add_listed(report, over_cap, "archive entries")
        if over_cap:
            report.notes.append(
                f"{len(over_cap)} zip entries were not read because a cap was reached "
                f"(max_files={max_files}, max_total_bytes={human(max_total_bytes)})"
            )
        # the order FolderTree.files gives for a folder: a folder's files, then its sub-folders
        self.entries = dict(sorted(entries.items(), key=lambda kv: _walk_key(kv[0])))
        self.children = {"": (set(), [])}  # folder -> (sub-folder names, file names)
        for rel in self.entries:
            parts = rel.split("/")
            for k in range(len(parts) - 1):
                self.children.setdefault("/".join(parts[: k + 1]), (set(), []))
                self.children["/".join(parts[:k])][0].add(parts[k])
            self.children["/".join(parts[:-1])][1].append(parts[-1])

    def files(self, report):
        """Every accepted entry outside hidden/macOS folders (each such folder is reported once)."""
        out, ignored = [], {}
        for rel in self.entries:
            parts = rel.split("/")
            hidden = next((k for k, part in enumerate(parts[:-1]) if is_ignored_dir(part)), None)
            if hidden is None:
                out.append(rel)
            else:
                folder = "/".join(parts[: hidden + 1])
                ignored[folder] = ignored.get(folder, 0) + 1
        for folder, n in ignored.items():
            report.skipped.append(_ignored_folder(folder, n))
        return out

    def listdir(self, rel):
        dirs, files = self.children.get(join_rel(rel), ((), ()))
        return sorted(dirs), sorted(files)

    def is_file(self, rel):
        return join_rel(rel) in self.entries

    def identity(self, rel):
        return join_rel(rel)

    def handle(self, rel):
        return ZipEntry(self, self.entries[join_rel(rel)])

    def where(self, rel):
        return f"{self.label}/{join_rel(rel)}"

    def read(self, info):
        """The bytes of one entry, read into memory; at most the declared size and what the cap leaves."""
        limit = min(info.file_size, self.max_total_bytes - self.bytes_read)
        try:
            with self.zf.open(info) as src:
                data = src.read(limit + 1)
        except Exception as exc:  # bad CRC, zlib.error, unsupported method, OSError: the entry is skipped
            raise Skip(f"cannot read this zip entry: {short(exc)}") from exc
        if len(data) > limit:
            raise Skip(
                "zip bomb guard: the entry decompresses to more than it declares "
                f"({human(info.file_size)}) or past max_total_bytes={human(self.max_total_bytes)}; reading stopped"
            )
        self.bytes_read += len(data)
        return data


def _walk_key(rel):
    """Sort key of a path in the order of os.walk over sorted names: a folder's files before its sub-folders."""
    parts = rel.split("/")
    return [(1, p) for p in parts[:-1]] + [(0, parts[-1])]


def unsafe_member(name):
    """Why a zip entry name (or a manifest path) escapes its root, or None if it stays inside."""
    if "\x00" in name:
        return "the name holds a NUL byte"
    clean = name.replace("\\", "/")
    if clean.startswith("/"):
        return "absolute path ('/' at the start): it escapes the archive root"
    if re.match(r"^[A-Za-z]:", clean):
        return f"absolute path with a drive letter ('{clean[:2]}'): it escapes the archive root"
    if ".." in PurePosixPath(clean).parts:
        return "path escapes the archive root ('..')"
    return None


def is_ignored_dir(name):
    """Hidden folders and macOS metadata are never read as classes or data."""
    return name.startswith(".") or name == "__MACOSX"

