"""Saving a learner as a workspace's new snapshot, atomically: a crash at any moment leaves the previous snapshot current."""
from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.fileio import (
    fsync_dir,
    json_bytes,
    sha256_bytes,
    write_bytes_atomic,
    write_bytes_durable,
)
from rerelrp.method.learner import ReReLRP
from rerelrp.run.metrics import RunMetrics
from rerelrp.store import estimator_io
from rerelrp.store.workspace.data_checks import check_task, task_fingerprint
from rerelrp.store.workspace.files import (
    FORMAT,
    FORMAT_VERSION,
    KEEP_SNAPSHOTS,
    SNAPSHOT_RE,
    abandoned_snapshots,
    check_target,
    workspace_lock,
)
from rerelrp.versions import package_versions


def checkpoint(stage):
    """A named point of the save sequence; tests replace it to kill a save exactly there."""


def save_workspace(path, learner, metrics=None, *, tasks=None, extra=None, keep=KEEP_SNAPSHOTS):
    """Save ``learner`` (and the run's ``metrics``) as the workspace's new current snapshot.

    ``tasks``: the Task objects of the run (at least those learned); only their fingerprints
    (hashes of pixels and labels) are stored, so that samples and continued runs can be checked
    against the data later. ``extra``: JSON-able notes kept as they are (e.g. the data sources
    a run was made from). Returns the workspace path.
    """

    path = Path(path)
    if not isinstance(learner, ReReLRP):
        raise WorkspaceError(path, f"only a ReReLRP learner can be saved, not {type(learner).__name__}")
    if not learner.n_tasks:
        raise WorkspaceError(path, "the learner has not learned a task yet; nothing to save")
    check_target(path)
    files = _serialise(learner, metrics, tasks, extra, path)
    path.mkdir(parents=True, exist_ok=True)
    snapshots = path / "snapshots"
    snapshots.mkdir(exist_ok=True)
    with workspace_lock(path):  # the lock undo and export take too
        for leftover in [*snapshots.glob(".tmp-*"), *abandoned_snapshots(path)]:  # from a save or undo that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        numbers = [int(m.group(1)) for p in snapshots.iterdir() if (m := SNAPSHOT_RE.match(p.name))]
        name = f"snap-{max(numbers, default=0) + 1:06d}"
        tmp = snapshots / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_tasks": learner.n_tasks,
            "task_names": [t["name"] for t in learner.tasks_],
            "files": {rel: {"sha256": sha256_bytes(data), "bytes": len(data)} for rel, data in sorted(files.items())},
        }
        for rel, data in files.items():
            target = tmp / rel
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True)
            write_bytes_durable(target, data)
            checkpoint("file")
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        write_bytes_durable(tmp / "manifest.json", manifest_bytes)
        if (tmp / "estimators").is_dir():
            fsync_dir(tmp / "estimators")
        fsync_dir(tmp)
        checkpoint("snapshot-written")
        os.rename(tmp, snapshots / name)
        fsync_dir(snapshots)
        checkpoint("snapshot-renamed")
        pointer = {"format": FORMAT, "format_version": FORMAT_VERSION, "snapshot": name,
                   "manifest_sha256": sha256_bytes(manifest_bytes)}
        write_bytes_atomic(path / "CURRENT", json.dumps(pointer, indent=2).encode())
        fsync_dir(path)
        checkpoint("current-switched")
        ordered = sorted((p for p in snapshots.iterdir() if SNAPSHOT_RE.match(p.name)), key=lambda p: p.name)
        for old in ordered[: max(0, len(ordered) - max(1, keep))]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _serialise(learner, metrics, tasks, extra, path):
    """Every file of a snapshot as bytes, computed before anything is written."""
    import safetensors.numpy
    import safetensors.torch


    T = learner.n_tasks
    fingerprints = [None] * T
    if tasks is not None:
        tasks = list(tasks)
        if len(tasks) < T:
            raise WorkspaceError(path, f"{len(tasks)} task(s) given but the learner has learned {T}")
        for i in range(T):
            check_task(path, i, learner.tasks_[i], tasks[i], None)
            fingerprints[i] = task_fingerprint(tasks[i])
    try:
        state = learner.export_state()
    except ConfigError as exc:
        raise WorkspaceError(path, str(exc)) from None
    record = {
        "params": state["params"],
        "meta": state["meta"],
        "fingerprints": fingerprints,
        "extra": extra or {},
        "versions": package_versions(),
        "device": learner.describe_device(),
    }
    try:
        learner_json, metrics_json = json_bytes(record), json_bytes((metrics or RunMetrics()).to_dict())
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(path, f"the learner's metadata cannot be written as JSON ({exc}); extra= must hold "
                                   "only JSON values") from None
    files = {
        "learner.json": learner_json,
        "metrics.json": metrics_json,
        "network.safetensors": safetensors.torch.save(state["tensors"]),
        "arrays.safetensors": safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in state["arrays"].items()}),
    }
    for name, estimator in state["estimators"].items():
        files[f"estimators/{name}.skops"] = estimator_io.dumps(estimator)
    return files
