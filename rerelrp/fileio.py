"""Files: written so that a crash never leaves half of one behind (temporary name, then rename), read with limits,
and hashed.

SHA-256 is how provenance, workspaces and manifests prove a file is the one they describe; the
hash helpers here are the only place it is computed. Files someone else made (a workspace sent by
mail, a recorded data source) are read with :func:`read_regular`: a link, a FIFO or a device is
refused before it is opened for reading, and a file larger than its limit before a byte is read.
"""
import hashlib
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

MAX_JSON_DEPTH = 100  # nesting levels; rerelrp's own files use fewer than 10
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class RefusedFile(OSError):
    """A file refused without reading it: a link, not a regular file, or larger than allowed (the message says which)."""


def file_kind(mode):
    """What an ``st_mode`` is, in words ("a named pipe (FIFO)", "a character device", ...)."""
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path, max_bytes=None, follow_links=False):
    """The regular file at ``path`` opened for binary reading; anything else raises :class:`RefusedFile`.

    ``lstat`` decides before the file is opened (a FIFO would block, a device would never end),
    ``O_NOFOLLOW``/``O_NONBLOCK`` and a second check on the open file catch a swap in between.
    ``follow_links``: a link to a regular file is read (for paths the user gave), never one to a device.
    """
    info = os.stat(path) if follow_links else os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise RefusedFile(f"is {file_kind(info.st_mode)}, not a regular file; refused without reading it")
    if max_bytes is not None and info.st_size > max_bytes:
        raise RefusedFile(f"is {info.st_size:,} bytes, more than the {max_bytes:,} allowed; refused without reading it")
    fd = os.open(path, _OPEN_FLAGS & ~getattr(os, "O_NOFOLLOW", 0) if follow_links else _OPEN_FLAGS)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise RefusedFile("was replaced while it was opened; refused")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, max_bytes, follow_links=False):
    """All bytes of the regular file at ``path``, refused (:class:`RefusedFile`) beyond ``max_bytes`` or if not regular."""
    with open_regular(path, max_bytes, follow_links) as handle:
        data = handle.read(os.fstat(handle.fileno()).st_size + 1)  # one more: a file growing while read is noticed
    if len(data) > max_bytes:
        raise RefusedFile(f"grew past the {max_bytes:,} bytes allowed while it was read; refused")
    return data


def parse_json(data, max_depth=MAX_JSON_DEPTH):
    """JSON from UTF-8 bytes, nested at most ``max_depth`` levels; raises ValueError saying what is wrong.

    Deeper nesting (100,000 lists in a crafted file) would exhaust the recursion of json and of
    every reader after it, so it is refused here, iteratively.
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        raise ValueError(str(exc)) from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= max_depth:
                    raise ValueError(f"nested deeper than {max_depth} levels")
                stack.append((child, depth + 1))
    return value


def _default_mode():
    """The mode ``open()`` would give a new file (mkstemp's own 0600 would hide results from the user's group)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path, data: bytes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def replaced_when_done(path):
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends without an error and
    is removed otherwise, so ``path`` is never left half written (the old file, if any, stays until then)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _default_mode())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path, data):
    write_bytes_atomic(path, json_bytes(data))


def _jsonable(value):
    """numpy scalars and arrays as plain numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fsync_dir(path):
    """Make a rename or a new entry in folder ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough for our purpose
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_durable(path, data: bytes):
    """Write a new file and fsync it (for files inside a folder that is itself renamed into place)."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def json_bytes(data):
    """``data`` as the indented UTF-8 JSON that :func:`write_json_atomic` writes (numpy values as numbers)."""
    return json.dumps(data, indent=2, default=_jsonable).encode()


def sha256_bytes(data):
    """SHA-256 (hex) of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream):
    """SHA-256 (hex) and size of a binary stream from its start; the stream is left at its start."""
    stream.seek(0)
    digest = hashlib.file_digest(stream, "sha256")
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    return digest.hexdigest(), size


def sha256_file(path):
    """SHA-256 (hex) of a file on disk, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_regular(path, max_bytes=None):
    """SHA-256 (hex) of the regular file at ``path``, read in chunks; a link, FIFO or device raises :class:`RefusedFile`."""
    with open_regular(path, max_bytes) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
