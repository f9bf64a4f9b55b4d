"""Accuracy matrices (TAg, TAw), task recognition and forgetting, in the names other tools read.

Row i is measured after learning task i, column j is task j's test split (j <= i). Accuracies
average over tasks (each task counts once, as in FACIL); recognition pools all test images.
"""
from __future__ import annotations

import numpy as np


def evaluate_tasks(learner, tasks, report=None, memos=None):
    """TAg, TAw and task recognition (%) of ``learner`` on the test split of every task given.

    ``memos`` (a dict kept between calls for one learner, which must take ``predict(images, memo)``)
    lets testing after each task reuse what the earlier tests computed (see ``ReReLRP.predict``).
    """
    row = {"tag": [], "taw": [], "recognized": [], "n": []}
    for j, task in enumerate(tasks):
        if report:
            report("eval", j + 1, len(tasks), f"testing on task {j} ({task.name})")
        if memos is None:
            pred = learner.predict(task.test.images)
        else:
            pred = learner.predict(task.test.images, memo=memos.setdefault(j, {}))
        y = task.test.labels
        row["tag"].append(100.0 * float(np.mean(pred.global_class == learner.offsets_[j] + y)))
        row["taw"].append(100.0 * float(np.mean(pred.subnet_class[:, j] == y)))
        row["recognized"].append(100.0 * float(np.mean(pred.task == j)))
        row["n"].append(int(len(y)))
    return row


def forgetting(matrix):
    """FACIL's forgetting after the last row: mean over old tasks of (best earlier accuracy - final)."""
    T = len(matrix)
    if T < 2:
        return 0.0
    drops = [max(matrix[i][j] for i in range(j, T - 1)) - matrix[T - 1][j] for j in range(T - 1)]
    return float(np.mean(drops))


class RunMetrics:
    """Everything ``metrics.json`` holds, filled one task at a time."""

    def __init__(self):
        self.tasks = []
        self.acc_tag, self.acc_taw, self.recognized, self.task_recognition = [], [], [], []
        self.seconds, self.capacity, self.stored_bytes, self.prune = [], [], [], []
        self.warnings = []  # per task: what the learner warned about (a task that learned nothing, full layers)
        self.out_of_scope = []  # AUROC blocks of data sets of no task (``rerelrp run --ood``; rerelrp.scope)

    def add(self, task_summary, row, eval_seconds, capacity):
        self.tasks.append({"name": task_summary["name"], "classes": task_summary["classes"]})
        self.acc_tag.append(row["tag"])
        self.acc_taw.append(row["taw"])
        self.recognized.append(row["recognized"])
        pooled = np.dot(row["recognized"], row["n"]) / max(1, sum(row["n"]))
        self.task_recognition.append(float(pooled))
        self.seconds.append({**task_summary["seconds"], "eval": eval_seconds})
        self.capacity.append(capacity)
        self.stored_bytes.append(task_summary["stored_bytes"])
        self.prune.append(task_summary["prune"])
        self.warnings.append(list(task_summary.get("warnings", [])))

    def final(self):
        if not self.acc_tag:
            return {}
        return {
            "tag": float(np.mean(self.acc_tag[-1])),
            "taw": float(np.mean(self.acc_taw[-1])),
            "forgetting_tag": forgetting(self.acc_tag),
            "forgetting_taw": forgetting(self.acc_taw),
        }

    def tag_after_each_task(self):
        return [float(np.mean(r)) for r in self.acc_tag]

    def to_dict(self):
        return {
            "tasks": self.tasks,
            "acc_tag": self.acc_tag,
            "acc_taw": self.acc_taw,
            "task_recognition": self.task_recognition,
            "task_recognition_per_task": self.recognized,
            "tag_after_each_task": self.tag_after_each_task(),
            "final": self.final(),
            "seconds": self.seconds,
            "capacity": self.capacity,
            "stored_bytes": self.stored_bytes,
            "prune": self.prune,
            "warnings": self.warnings,
            **({"out_of_scope": self.out_of_scope} if self.out_of_scope else {}),
        }

    @classmethod
    def from_dict(cls, data):
        m = cls()
        m.tasks = data.get("tasks", [])
        m.acc_tag, m.acc_taw = data.get("acc_tag", []), data.get("acc_taw", [])
        m.recognized = data.get("task_recognition_per_task", [])
        m.task_recognition = data.get("task_recognition", [])
        m.seconds, m.capacity = data.get("seconds", []), data.get("capacity", [])
        m.stored_bytes, m.prune = data.get("stored_bytes", []), data.get("prune", [])
        m.warnings = data.get("warnings", [[] for _ in m.tasks])
        m.out_of_scope = data.get("out_of_scope", [])
        return m
