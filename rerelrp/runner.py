"""A task sequence being learned: learner, planned tasks, metrics, advanced one task at a time.

The CLI loops over :meth:`SequenceRun.step`; the app calls it once per "Add next task" click
from a background thread. The tasks' images stay in memory only for measuring test accuracy;
the learner itself keeps none of them.
"""
from __future__ import annotations

import platform
import sys
import time
from importlib import metadata

from rerelrp.errors import ConfigError
from rerelrp.metrics import RunMetrics, evaluate_tasks
from rerelrp.progress import Reporter

PACKAGES = ("rerelrp", "torch", "torchvision", "zennit", "scikit-learn", "numpy", "medmnist", "pydicom", "streamlit")


class SequenceRun:
    """Learn ``tasks`` in order with ``learner`` and measure after each one."""

    def __init__(self, learner, tasks=(), metrics=None):
        self.learner = learner
        self.tasks = list(tasks)
        self.metrics = metrics or RunMetrics()
        self._memos = {}  # per test split: what testing it computed, reused after the next task

    @property
    def n_learned(self):
        return self.learner.n_tasks

    @property
    def done(self):
        return self.n_learned >= len(self.tasks)

    def step(self, callback=None, stop=None):
        """Learn the next planned task, then test on every task learned so far."""
        if self.done:
            raise ConfigError("every planned task is learned; add another task first")
        i = self.n_learned
        self.learner.add_task(self.tasks[i], callback=callback, stop=stop)
        summary = self.learner.history_[-1]
        clock = time.perf_counter()
        row = evaluate_tasks(self.learner, self.tasks[: i + 1], Reporter(callback, None, task=i), self._memos)
        self.metrics.add(summary, row, time.perf_counter() - clock, self.learner.capacity())
        return summary

    def run(self, callback=None, stop=None):
        while not self.done:
            self.step(callback, stop)
        return self.metrics


def package_versions():
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
