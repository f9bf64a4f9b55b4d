"""One method, one seed: learn the whole task sequence and keep its figures as a run record.

What every comparison run does, wherever it runs (this process, a worker process, a Dask worker):
build the method's learner, learn each task, test after each one, and return the record
``rerelrp compare`` writes (``method``, ``seed``, ``final``, ``images_stored``, ``bytes_stored``,
``seconds``, the accuracy matrices). :class:`TaskRecipe` is how a worker loads the tasks itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import rerelrp.settings as settings
from rerelrp.baselines import BASELINES
from rerelrp.data import MEDICAL_DEMO_SOURCE, build_sequence, expand_sources, load_dataset
from rerelrp.method.base import Prediction
from rerelrp.method.learner import ReReLRP
from rerelrp.progress import Reporter
from rerelrp.run.metrics import RunMetrics, evaluate_tasks

METHODS = ("rerelrp", "rerelrp-maxsoftmax", "finetune", "ewc", "lwf", "icarl", "replay", "replay-equal-bytes", "joint")
ABLATION = "rerelrp-maxsoftmax"
EQUAL_BYTES = "replay-equal-bytes"  # replay with a memory of as many bytes as ReReLRP's store (rerelrp.run.compare)


@dataclass(frozen=True)
class TaskRecipe:
    """What a worker needs to load the task sequence itself: the ``--data`` sources, ``--tasks``,
    ``--data-root``, ``--group-by`` and ``--download``. Called with a seed it returns the tasks,
    exactly as ``rerelrp compare`` loads them in one process."""

    sources: tuple
    n_tasks: int | None = None
    data_root: str = "./data"
    group_by: str = "auto"
    download: bool = False

    @classmethod
    def of(cls, sources, n_tasks=None, data_root="./data", group_by="auto", download=False):
        """A recipe whose files and folders that exist here are absolute paths (a worker may run in
        another working directory; a cluster's workers must see them at the same path)."""
        def where(source):
            source = str(source)
            if source not in ("demo", MEDICAL_DEMO_SOURCE) and Path(source).exists():
                return str(Path(source).resolve())
            return source  # a name (demo, a MedMNIST flag) or a path only the workers see

        return cls(tuple(where(s) for s in sources), n_tasks, str(Path(data_root).resolve()), group_by, bool(download))

    def __call__(self, seed):
        datasets = [load_dataset(s, root=self.data_root, download=self.download, seed=seed, group_by=self.group_by)
                    for s in expand_sources(list(self.sources))]
        return build_sequence(datasets, self.n_tasks)


class MostConfidentSubnetwork:
    """A trained ReReLRP model whose task is the sub-network with the highest softmax probability
    for its own class (no recognisers): the ``rerelrp-maxsoftmax`` ablation."""

    def __init__(self, learner, first=None):
        self.learner, self.first = learner, first  # ``first``: read only the first sub-networks (None: all)

    @property
    def offsets_(self):
        return self.learner.offsets_

    def predict(self, images):
        learner = self.learner
        logits = [learner.subnetwork_logits(images, m) for m in range(self.first or learner.n_tasks)]
        confidence = torch.stack([torch.softmax(lg, 1).max(1).values for lg in logits], 1).numpy()
        subnet = np.stack([lg.argmax(1).numpy() for lg in logits], 1)
        task = confidence.argmax(1)
        local = subnet[np.arange(len(task)), task]
        glob = learner.offsets_[task] + local
        names = learner.class_names_
        width = max(lg.shape[1] for lg in logits)
        proba = torch.stack([F.pad(torch.softmax(lg, 1), (0, width - lg.shape[1])) for lg in logits], 1).numpy()
        return Prediction(task, local, glob, confidence / confidence.sum(1, keepdims=True), subnet,
                          [names[g] for g in glob], subnet_proba=proba)


def learner_for(method, params, exemplars_per_class, n_classes):
    """The learner of ``method`` with the shared settings that apply to it, and, where it keeps images, a fixed
    memory of ``exemplars_per_class`` images per class of the ``n_classes`` the sequence has, used in full
    from the first task on (as iCaRL's paper and Avalanche's ``mem_size`` do)."""
    if method == "rerelrp":
        return ReReLRP(**params)
    cls = BASELINES["replay" if method == EQUAL_BYTES else method]
    extra = {"exemplars_per_class": exemplars_per_class, "memory_size": exemplars_per_class * n_classes} \
        if "memory_size" in cls.extra_params else {}
    return cls(**settings.for_method(params, method), **extra)


def stored(method, learner):
    """``(images, bytes)`` a method keeps after the last task."""
    if method in ("rerelrp", ABLATION):
        return 0, int(sum(h.stored_bytes for h in learner.history_))  # relevance rows of every task
    return learner.stored()


def record(method, seed, metrics, learner, seconds):
    images, nbytes = stored(method, learner)
    data = metrics.to_dict()
    budget = {"exemplars_per_class": learner.exemplars_per_class} if method == EQUAL_BYTES else {}
    return {"method": method, "seed": seed, **budget, "final": metrics.final(), "images_stored": int(images),
            "bytes_stored": int(nbytes), "seconds": float(seconds),
            "tag_after_each_task": data["tag_after_each_task"], "acc_tag": data["acc_tag"],
            "acc_taw": data["acc_taw"], "task_recognition": data["task_recognition"]}


def run_method(method, tasks, params, seed, exemplars_per_class=20, also_ablation=False, callback=None, stop=None,
               on_task=None):
    """Learn ``tasks`` with ``method`` and ``seed``; returns its run record (two with ``also_ablation``:
    ``rerelrp`` then ``rerelrp-maxsoftmax`` from the same model). ``on_task(k)`` with the number of
    tasks learned: 0 at the start, then after each task."""
    trained = "rerelrp" if method == ABLATION else method
    learner = learner_for(trained, {**params, "seed": seed}, exemplars_per_class,
                          sum(t.n_classes for t in tasks)).check_params()
    views = {ABLATION: MostConfidentSubnetwork(learner)} if method == ABLATION else {method: learner}
    if also_ablation:
        views[ABLATION] = MostConfidentSubnetwork(learner)
    metrics = {name: RunMetrics() for name in views}
    clock = time.perf_counter()
    if on_task:
        on_task(0)
    for i, task in enumerate(tasks):
        learner.add_task(task, callback=callback, stop=stop)
        summary = learner.history_[-1]
        for name, view in views.items():
            eval_clock = time.perf_counter()
            row = evaluate_tasks(view, tasks[: i + 1], Reporter(callback, stop, task=i))
            metrics[name].add(summary, row, time.perf_counter() - eval_clock, learner.capacity())
        if on_task:
            on_task(i + 1)
    seconds = time.perf_counter() - clock
    return [record(name, seed, metrics[name], learner, seconds) for name in views]


def trained_records(learner, metrics, tasks, also_ablation=False):
    """The records :func:`run_method` would give for a ReReLRP model already trained on ``tasks``, from its
    ``metrics``: what the Compare page reuses instead of training the model again.

    The ablation's row after task i reads the final model's first i + 1 sub-networks, which later
    tasks left exact (their units are frozen), so it is the row the model after task i gives.
    ``seconds`` is the training run's, not the time it took to read it here.
    """
    seconds = float(sum(sum(part.values()) for part in metrics.seconds))
    records = [record("rerelrp", learner.seed, metrics, learner, seconds) | {"reused": True}]
    if also_ablation:
        ablation = RunMetrics()
        for i in range(len(tasks)):
            row = evaluate_tasks(MostConfidentSubnetwork(learner, i + 1), tasks[: i + 1])
            ablation.add(learner.history_[i], row, metrics.seconds[i]["eval"], metrics.capacity[i])
        records.append(record(ABLATION, learner.seed, ablation, learner, seconds) | {"reused": True})
    return records
