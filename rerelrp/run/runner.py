"""A task sequence being learned: learner, planned tasks, metrics, advanced one task at a time.

The one learn -> evaluate -> save loop: the CLI loops over :meth:`SequenceRun.step`; the app
calls it once per "Add next task" click from a background thread. With a ``workspace`` every
step saves the model there before it returns. The tasks' images stay in memory only for
measuring test accuracy; the learner itself keeps none of them.
"""
from __future__ import annotations

import time

from rerelrp.data import reload_tasks
from rerelrp.errors import ConfigError, DataError, WorkspaceError
from rerelrp.progress import Reporter
from rerelrp.run.calibration import calibrate_p_task
from rerelrp.run.metrics import RunMetrics, evaluate_tasks
from rerelrp.store.workspace import check_reload, check_sequence, save_workspace
from rerelrp.versions import package_versions


class SequenceRun:
    """Learn ``tasks`` in order with ``learner`` and measure after each one."""

    def __init__(self, learner, tasks=(), metrics=None, workspace=None, extra=None):
        self.learner = learner
        self.tasks = list(tasks)
        self.metrics = metrics or RunMetrics()
        self.workspace = workspace  # a folder saved to after every task, or None
        self.extra = extra  # what the workspace records about how the run was made (the CLI's data options)
        self._memos = {}  # per test split: what testing it computed, reused after the next task

    @property
    def n_learned(self):
        return self.learner.n_tasks

    @property
    def done(self):
        return self.n_learned >= len(self.tasks)

    def step(self, callback=None, stop=None):
        """Learn the next planned task, calibrate P_T (when the setting says so), test on every task learned so
        far, save; returns its TaskReport."""
        if self.done:
            raise ConfigError("every planned task is learned; add another task first")
        i = self.n_learned
        self.learner.add_task(self.tasks[i], callback=callback, stop=stop)
        summary = self.learner.history_[-1]
        summary.warnings = list(self.tasks[i].warnings) + summary.warnings
        clock = time.perf_counter()
        calibration = None
        if getattr(self.learner, "calibrate_p_task", False):
            calibration = calibrate_p_task(self.learner, self.tasks[: i + 1], self._memos)
        row = evaluate_tasks(self.learner, self.tasks[: i + 1], Reporter(callback, None, task=i), self._memos)
        self.metrics.add(summary, row, time.perf_counter() - clock, self.learner.capacity(), calibration)
        if self.workspace is not None:
            save_workspace(self.workspace, self.learner, self.metrics, tasks=self.tasks[: i + 1], extra=self.extra)
        return summary

    def run(self, callback=None, stop=None):
        while not self.done:
            self.step(callback, stop)
        return self.metrics


def learned_tasks(learner, meta):
    """The workspace's learned tasks, loaded again from the files they came from and checked against its hashes.

    Each learned task's provenance records how to load its data again (``reload``), whoever saved
    the workspace (``rerelrp run`` or the app). Raises :class:`WorkspaceError` when a task's data
    cannot be loaded (uploads are not stored; a moved file) or differ from what the workspace
    learned (names, sizes, file SHA-256, pixel fingerprints).
    """
    path = meta.get("path", "?")
    check_reload(path, learner.tasks_)  # a workspace someone sent may name "/" or any local file as its source
    try:
        tasks = reload_tasks(learner.tasks_)
    except DataError as exc:
        raise WorkspaceError(path, f"the data of its tasks cannot be loaded again ({exc}); put the files back, "
                                   "or give image files as samples") from None
    check_sequence(path, learner, meta, tasks)
    return tasks


def recorded_sources(learner):
    """Where each learned task's data came from, as its provenance records it (None: an upload).

    Shown to the user as a suggestion: nothing is read from these paths until the user asks
    (:func:`learned_tasks`), since a workspace someone sent may name any local path.
    """
    sources = []
    for record in learner.tasks_:
        spec = (record.get("provenance") or {}).get("reload") or {}
        source = spec.get("source") if spec.get("loader") in ("medmnist", "dicom") else None
        sources.append("the bundled demo" if spec.get("loader") == "demo" else source if isinstance(source, str) else None)
    return sources


def input_files(tasks):
    """Every input file behind the tasks, once, with its SHA-256 (from the loaders' provenance)."""
    seen = {}
    for task in tasks:
        for record in task.provenance.get("files", []):
            seen.setdefault(record["sha256"] + record["path"], record)
    return list(seen.values())


def run_record(learner, tasks, sources, argv=None, method="rerelrp"):
    """What ``run.json`` holds: config, data sources and their hashes, versions, device."""
    return {
        "method": method,
        "config": learner.get_params(),
        "device": learner.describe_device(),
        "data": {
            "sources": list(sources),
            "tasks": [t.describe() | {"provenance": None} for t in tasks],
            "files": input_files(tasks),
        },
        "versions": package_versions(),
        "argv": list(argv) if argv is not None else None,
    }
