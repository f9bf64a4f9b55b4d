"""Opening a workspace: every checksum verified, only data formats parsed, the network checked before it is allocated."""
from __future__ import annotations

import os
from pathlib import Path

from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.fileio import (
    sha256_bytes,
)
from rerelrp.method.learner import ReReLRP
from rerelrp.model.nets import build_net
from rerelrp.run.metrics import RunMetrics
from rerelrp.store import estimator_io
from rerelrp.store.workspace.files import (
    FILE_RE,
    MAX_CLASSES,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_JSON,
    MAX_UNITS,
    parse_workspace_json,
    read_file,
    read_pointer,
)
from rerelrp.text import printable


def verified_files(path, snapshot, manifest):
    """Every file the manifest lists, read once and checked against its SHA-256; nothing else allowed."""
    listed = manifest.get("files")
    where = f"snapshots/{snapshot.name}"
    if not isinstance(listed, dict):
        raise WorkspaceError(path, "the manifest lists no files", f"{where}/manifest.json")
    for rel in listed:
        if not isinstance(rel, str) or not FILE_RE.match(rel):
            raise WorkspaceError(path, f"the manifest lists an unexpected file {rel!r}", f"{where}/manifest.json")
    present = _snapshot_files(path, snapshot, where) - {"manifest.json"}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise WorkspaceError(path, f"holds file(s) the manifest does not list: {printable(', '.join(unlisted[:20]))} "
                                   "(the workspace was changed after it was saved)", where)
    out = {}
    for rel, entry in listed.items():
        size = entry.get("bytes") if isinstance(entry, dict) else None
        limit = MAX_JSON if rel.endswith(".json") else MAX_FILE_BYTES
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
            raise WorkspaceError(path, f"the manifest gives it a size of {size!r} bytes; at most {limit:,} are allowed",
                                 f"{where}/{rel}")
        data = read_file(path, snapshot, rel, size)
        if sha256_bytes(data) != entry.get("sha256") or len(data) != size:
            raise WorkspaceError(path, "checksum mismatch: the file is corrupt or was changed after it was saved; "
                                       "restore the workspace from a copy", f"{where}/{rel}")
        out[rel] = data
    return out


def _snapshot_files(path, snapshot, where):
    """Every entry below the snapshot folder (a bounded walk that follows no link); links and special files refused."""
    found, pending = set(), [("", snapshot)]
    while pending:
        prefix, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise WorkspaceError(path, f"cannot be listed ({exc.strerror})", f"{where}/{prefix}") from None
        for entry in entries:
            rel = prefix + entry.name
            if len(found) + len(pending) >= MAX_ENTRIES:
                raise WorkspaceError(path, f"holds more than {MAX_ENTRIES:,} entries; not a workspace snapshot", where)
            if entry.is_dir(follow_symlinks=False):
                pending.append((rel + "/", Path(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                found.add(rel)
            else:
                raise WorkspaceError(path, "is a link or a special file (FIFO, device, socket); a workspace holds only "
                                           "regular files, so it is refused", f"{where}/{printable(rel)}")
    return found


def load_workspace(path, device=None):
    """Open the workspace at ``path``: returns ``(learner, metrics, meta)``.

    ``device`` overrides the saved device setting (e.g. ``"cpu"`` for a workspace trained on a GPU).
    Every file is verified against its checksum first; a corrupt, tampered, newer- or older-format
    workspace raises :class:`~rerelrp.errors.WorkspaceError` naming the file and the problem.
    """

    path = Path(path)
    snapshot, manifest = read_pointer(path)
    files = verified_files(path, snapshot, manifest)
    where = f"snapshots/{snapshot.name}"
    for required in ("learner.json", "metrics.json", "network.safetensors", "arrays.safetensors"):
        if required not in files:
            raise WorkspaceError(path, "file missing from the manifest", f"{where}/{required}")
    record = parse_workspace_json(path, f"{where}/learner.json", files["learner.json"])
    learner = _build_learner(path, where, record, files, device)
    metrics_data = parse_workspace_json(path, f"{where}/metrics.json", files["metrics.json"])
    if not isinstance(metrics_data, dict):
        raise WorkspaceError(path, "does not hold a metrics object", f"{where}/metrics.json")
    try:
        metrics = RunMetrics.from_dict(metrics_data)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:  # a metrics object of the wrong shape
        raise WorkspaceError(path, f"does not hold readable metrics ({type(exc).__name__}: {printable(exc)})",
                             f"{where}/metrics.json") from None
    meta = {
        "path": str(path),
        "name": path.name,
        "snapshot": snapshot.name,
        "format_version": manifest["format_version"],
        "saved_at": manifest.get("saved_at"),
        "files": manifest["files"],
        "fingerprints": record.get("fingerprints") or [None] * learner.n_tasks,
        "extra": record.get("extra") or {},
        "versions": record.get("versions") or {},
        "saved_device": record.get("device"),
    }
    return learner, metrics, meta


_STATE_FILES = {"params": "learner.json", "meta": "learner.json", "tensors": "network.safetensors",
                "arrays": "arrays.safetensors", "estimators": "estimators/"}


def _build_learner(path, where, record, files, device):
    import safetensors
    import safetensors.torch


    if not isinstance(record, dict) or not isinstance(record.get("params"), dict) or not isinstance(record.get("meta"), dict):
        raise WorkspaceError(path, "does not hold the learner's settings and metadata", f"{where}/learner.json")
    name = f"{where}/network.safetensors"
    try:
        tensors = safetensors.torch.load(files["network.safetensors"])
    except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None
    _check_network(path, where, record, tensors)
    arrays = _load_arrays(path, f"{where}/arrays.safetensors", files["arrays.safetensors"])
    estimators = {}
    for rel, data in files.items():
        if rel.startswith("estimators/"):
            try:
                estimators[rel[len("estimators/"):-len(".skops")]] = estimator_io.loads(data)
            except ValueError as exc:
                raise WorkspaceError(path, str(exc), f"{where}/{rel}") from None
    state = {"params": record["params"], "meta": record["meta"], "tensors": tensors, "arrays": arrays,
             "estimators": estimators}
    try:
        return ReReLRP.from_state(state, device=device)
    except ConfigError as exc:
        part = str(exc).split(":", 1)[0]
        raise WorkspaceError(path, f"holds a learner this rerelrp cannot rebuild: {exc}",
                             f"{where}/{_STATE_FILES.get(part, 'learner.json')}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:  # metadata of the wrong shape
        raise WorkspaceError(path, f"holds a learner this rerelrp cannot rebuild ({type(exc).__name__}: "
                                   f"{printable(exc)})", f"{where}/learner.json") from None


def _check_network(path, where, record, tensors):
    """The network ``learner.json`` describes must be the one ``network.safetensors`` holds, tensor for tensor.

    It is built on PyTorch's meta device (shapes only, no memory) exactly as the learner will
    build it, so layer sizes or class counts crafted to request 640 GB are refused before anything
    is allocated: the real network is then no larger than the file that was read. Malformed
    metadata is left to the learner, which refuses it before building anything.
    """
    import torch


    meta, file = record["meta"], f"{where}/learner.json"
    sizes, tasks, arch = meta.get("layer_sizes"), meta.get("tasks"), meta.get("arch")
    size = meta.get("input_size", record["params"].get("input_size"))  # the learner's own fallback
    if not (isinstance(sizes, list) and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                                            and type(s[1]) is int for s in sizes)):
        return
    for name, n in sizes:
        if not 1 <= n <= MAX_UNITS:
            raise WorkspaceError(path, f"gives layer {printable(name)!r} {n:,} units; a layer has 1 to {MAX_UNITS:,}",
                                 file)
    if not (isinstance(tasks, list) and all(isinstance(t, dict) and isinstance(t.get("classes"), list) for t in tasks)):
        return
    heads = [len(t["classes"]) for t in tasks]
    if any(not 1 <= k <= MAX_CLASSES for k in heads):
        raise WorkspaceError(path, f"gives a task {max(heads):,} classes; a task has 1 to {MAX_CLASSES:,}", file)
    if type(size) is not int or not 8 <= size <= 512 or not isinstance(arch, str):
        return
    layer_sizes = dict(sizes)
    try:
        with torch.device("meta"):
            net = build_net(arch, size, heads)
            if net.layer_sizes != layer_sizes:
                net = build_net(arch, size, heads, layer_sizes)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    except Exception as exc:  # noqa: BLE001 - whatever the metadata holds, it is refused with its reason
        raise WorkspaceError(path, f"describes a network this rerelrp cannot build ({type(exc).__name__}: "
                                   f"{printable(exc)})", file) from None
    held = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if held != expected:
        first = next((k for k in sorted(set(expected) | set(held)) if held.get(k) != expected.get(k)), None)
        raise WorkspaceError(path, f"describes a network that network.safetensors does not hold: {printable(first)} is "
                                   f"{held.get(first, 'missing')} in the weights, {expected.get(first, 'not in')} the "
                                   "network (corrupt or crafted)", file)


def _load_arrays(path, name, data):
    import safetensors
    import safetensors.numpy

    try:
        return dict(safetensors.numpy.load(data))
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise WorkspaceError(path, f"is not a readable safetensors file ({exc})", name) from None
