"""Task sequences: one data set cut into groups of classes, or one task per data set.

A :class:`Task` carries local labels 0..k-1; the learner gives every task a label offset so that
the global class index is ``offset + local label``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerelrp.data.core import SPLITS, ImageDataset, LabelledSplits, Split, restrict_split_record
from rerelrp.errors import ConfigError


@dataclass
class Task(LabelledSplits):
    """One step of the sequence: a group of classes with its train/val/test images; ``source`` names its data set."""

    source: str = ""

    @property
    def warnings(self):
        """The data warnings of this task's classes (e.g. test images of patients seen in training)."""
        record = restrict_split_record(self.provenance.get("split"), self.class_names)
        return record["warnings"] if record else []

    def describe(self):
        """Metadata kept after the images are gone (workspace, metrics, reports); group codes stay out."""
        return {
            "name": self.name,
            "classes": list(self.class_names),
            "source": self.source,
            "sizes": {s: len(self.split(s)) for s in SPLITS},
            "image_shape": list(self.image_shape),
            "split": restrict_split_record(self.provenance.get("split"), self.class_names),
            "provenance": self.provenance,
        }


def class_groups(n_classes, n_tasks):
    """Consecutive class groups; the remainder goes to the first tasks (as in the paper)."""
    if not 1 <= n_tasks <= n_classes:
        raise ConfigError(f"cannot split {n_classes} classes into {n_tasks} tasks (need 1..{n_classes})")
    base, extra = divmod(n_classes, n_tasks)
    groups, start = [], 0
    for t in range(n_tasks):
        size = base + (1 if t < extra else 0)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def task_from_classes(ds: ImageDataset, classes, name=None):
    """The task made of ``classes`` of ``ds``, relabelled 0..k-1 in the order given."""
    lookup = np.full(ds.n_classes, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    parts = {}
    for s in SPLITS:
        split = ds.split(s)
        index = np.flatnonzero(lookup[split.labels] >= 0)
        kept = split.subset(index)
        parts[s] = Split(kept.images, lookup[kept.labels], kept.groups)
    names = [ds.class_names[c] for c in classes]
    return Task(
        name=name or f"{ds.name}[{','.join(names)}]",
        class_names=names,
        source=ds.name,
        provenance=ds.provenance,
        **parts,
    )


def split_into_tasks(ds: ImageDataset, n_tasks=None, groups=None):
    """Class-incremental tasks from one data set: ``n_tasks`` consecutive groups or explicit ``groups``."""
    if groups is None:
        groups = class_groups(ds.n_classes, 1 if n_tasks is None else n_tasks)
    seen = [c for g in groups for c in g]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"class groups {groups} repeat a class")
    bad = [c for c in seen if not 0 <= c < ds.n_classes]
    if bad:
        raise ConfigError(f"class groups name class(es) {bad}; {ds.name} has classes 0..{ds.n_classes - 1}")
    return [task_from_classes(ds, g, name=f"{ds.name} t{i}") for i, g in enumerate(groups)]


def tasks_per_dataset(datasets):
    """Cross-domain sequence: every data set becomes one task holding all its classes."""
    return [task_from_classes(ds, list(range(ds.n_classes)), name=ds.name) for ds in datasets]


def default_task_count(ds: ImageDataset):
    """Tasks of two classes each (the paper's splits); at least one."""
    return max(1, ds.n_classes // 2)


def build_sequence(datasets, n_tasks=None):
    """The sequence for a list of data sets: one set is split class-incrementally, several give one task each."""
    if not datasets:
        raise ConfigError("no data set given")
    if len(datasets) == 1:
        ds = datasets[0]
        return split_into_tasks(ds, default_task_count(ds) if n_tasks is None else n_tasks)
    if n_tasks not in (None, len(datasets)):
        raise ConfigError(
            f"{len(datasets)} data sets give {len(datasets)} tasks (one each); --tasks {n_tasks} applies to a single data set"
        )
    return tasks_per_dataset(datasets)
