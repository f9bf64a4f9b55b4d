"""Reading ``.npz`` archives without holding what is not needed, and unpacking them on request.

An ``.npz`` is a zip of ``.npy`` members. NumPy's ``np.load`` ignores ``mmap_mode`` for them and
reads a member whole; a member stored uncompressed (``np.savez``) can instead be memory-mapped
in place, so its images are read from disk only as batches use them and the operating system
may drop them again. A compressed member (``np.savez_compressed``, as MedMNIST ships) cannot be
read at random; it is decompressed straight into its one array (no second copy). ``rerelrp
unpack`` writes an uncompressed copy when the user asks, for files too large to hold.

Every member's ``.npy`` header is checked against the member's size before anything is
allocated: a header declaring 10^16 images in a small file is refused, not handed to NumPy.
"""
from __future__ import annotations

import math
import os
import shutil
import struct
import zipfile

import numpy as np

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we skip, file name length, extra length


def _read_header(stream):
    """(shape, fortran order, dtype) of the ``.npy`` at ``stream``'s position, the stream left at its data."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(stream)


def _check_declared(info, shape, dtype, header_bytes):
    """Refuse a member whose header declares more data than the member holds (ValueError naming it)."""
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header_bytes:
        raise ValueError(f"{info.filename} declares an array of shape {shape} ({declared:,} bytes) but holds "
                         f"{max(0, info.file_size - header_bytes):,} bytes; refused before reading it")


def _mapped(path, info):
    """The member as a copy-on-write memory map (writes never reach the file), or None if it cannot be."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        signature, name_length, extra_length = LOCAL_HEADER.unpack(f.read(LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            return None
        start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
        f.seek(start)
        shape, fortran, dtype = _read_header(f)
        offset = f.tell()
    _check_declared(info, shape, dtype, offset - start)
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects (pickled); refused")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C")


def read_arrays(source):
    """{name: array} of an archive (a path or a file object): stored members mapped, compressed ones read.

    Object (pickled) arrays are refused. Raises ``zipfile.BadZipFile``, ``ValueError`` or ``OSError``
    for what is not a readable archive; the caller names the file.
    """
    with zipfile.ZipFile(source) as archive:
        infos = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        arrays = {}
        for name, info in infos.items():
            mapped = _mapped(source, info) if isinstance(source, str | os.PathLike) else None
            if mapped is None:
                with archive.open(info) as member:
                    shape, _, dtype = _read_header(member)
                    _check_declared(info, shape, dtype, member.tell())
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = mapped
        return arrays


def compressed_bytes(source):
    """Uncompressed size of the archive's compressed members: what reading it costs in memory."""
    with zipfile.ZipFile(source) as archive:
        return sum(i.file_size for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED)


def unpack(source, target):
    """Copy ``source`` to ``target`` with every member stored uncompressed, streamed (never whole in memory).

    Only on the user's request (``rerelrp unpack``): it writes the images of ``source`` a second time.
    """
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
        for info in archive.infolist():
            with archive.open(info) as src, out.open(info.filename, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
