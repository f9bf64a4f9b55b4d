"""Files: written so that a crash never leaves half of one behind (temporary name, then rename), and hashed.

SHA-256 is how provenance, workspaces and manifests prove a file is the one they describe; the
three hash helpers here are the only place it is computed.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path


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
