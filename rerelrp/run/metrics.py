"""Accuracy matrices (TAg, TAw), task recognition and forgetting, in the names other tools read.

Row i is measured after learning task i, column j is task j's test split (j <= i). Accuracies
average over tasks (each task counts once, as in FACIL); recognition pools all test images.
The latest test (after the last learned task) also gives what a clinical reader needs
(:mod:`rerelrp.run.clinical`): confusion matrices, per-class sensitivity, specificity, PPV, NPV
and AUROC, and 95 % intervals of every accuracy.
"""
from __future__ import annotations

import numpy as np

import rerelrp.run.clinical as clinical
from rerelrp.run.calibration import reliability

# what RunMetrics keeps of the latest test only, under the names metrics.json gives them
LATEST = ("taw_ci95", "tag_ci95", "balanced_accuracy_taw", "ci_unit", "confusion", "per_class")


def evaluate_tasks(learner, tasks, report=None, memos=None):
    """TAg, TAw and task recognition (%) of ``learner`` on the test split of every task given.

    ``memos`` (a dict kept between calls for one learner, which must take ``predict(images, memo)``)
    lets testing after each task reuse what the earlier tests computed (see ``ReReLRP.predict``).
    """
    row = {"tag": [], "taw": [], "recognized": [], "n": [], "taw_ci95": [], "tag_ci95": [], "balanced_accuracy_taw": [],
           "ci_unit": [], "confusion": {"taw": []}, "per_class": []}
    tag_true, tag_pred, draws, confidence, recognised = [], [], [], [], []
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
        draws.append(_clinical_figures(row, j, task, pred, learner.offsets_))
        tag_true.append(learner.offsets_[j] + y)
        tag_pred.append(pred.global_class)
        confidence.append(pred.p_task.max(1))
        recognised.append(pred.task == j)
    n_seen = int(learner.offsets_[len(tasks)])  # over every class seen, global indices
    row["confusion"]["tag"] = clinical.confusion(np.concatenate(tag_true), np.concatenate(tag_pred), n_seen).tolist()
    row["p_task_ece"] = clinical.json_safe(reliability(np.concatenate(confidence), np.concatenate(recognised)).ece)
    row["final_ci95"] = {key: _percent(_final_interval([d[:, col] for d in draws], row[key], row["n"]))
                         for col, key in enumerate(("taw", "tag"))}
    return row


def _final_interval(draws, accuracies, sizes):
    """The interval of the mean over tasks; where every resample agrees (no error seen, or no hit), the
    bootstrap says nothing about uncertainty, so the Wilson interval of the pooled images stands in."""
    lo, hi = clinical.mean_interval(draws)
    if np.isfinite(lo) and lo < hi:
        return lo, hi
    correct = int(round(sum(a / 100.0 * n for a, n in zip(accuracies, sizes))))
    return clinical.wilson_interval(correct, int(sum(sizes)))


def _percent(ci):
    return clinical.json_safe([100.0 * v for v in ci])


def _clinical_figures(row, j, task, pred, offsets):
    """Task j's task-aware confusion matrix and per-class rows, and its TAw / TAg intervals (%), into ``row``.

    Patients (``task.test.groups``) are resampled where several images share one. Returns the
    bootstrap draws (n_boot, 2) of its TAw and TAg accuracy, for the interval of their mean over tasks.
    """
    y, groups, k = task.test.labels, task.test.groups, task.n_classes
    taw_pred = pred.subnet_class[:, j]
    correct = np.stack([taw_pred == y, pred.global_class == offsets[j] + y], 1)
    draws = clinical.accuracy_draws(correct, groups, seed=j)
    for col, key in enumerate(("taw", "tag")):
        row[f"{key}_ci95"].append(_percent(clinical.accuracy_interval(correct[:, col], groups, draws=draws[:, col])))
    row["balanced_accuracy_taw"].append(clinical.json_safe(100.0 * clinical.balanced_accuracy(y, taw_pred)))
    row["ci_unit"].append("group" if clinical.clustered(groups, len(y)) else "image")
    row["confusion"]["taw"].append(clinical.confusion(y, taw_pred, k).tolist())
    proba = None if pred.subnet_proba is None else pred.subnet_proba[:, j, :k]
    row["per_class"].append(clinical.per_class_rows(y, taw_pred, proba, k, list(task.class_names), groups, seed=j))
    return draws


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
        self.out_of_scope = []  # AUROC blocks of data sets of no task (``rerelrp run --ood``; rerelrp.method.scope)
        self.latest = {}  # the latest test's figures of LATEST, and its test images per task ("n_test")
        self.final_ci95 = {}  # {"taw", "tag"}: 95 % interval (%) of the final mean accuracy
        self.p_task_ece = []  # per task: ECE of the largest P_T (as shown) on the test images (rerelrp.run.calibration)
        self.calibration = []  # per task: the P_T temperature fitted on validation images, or None (raw P_T)

    def add(self, task_summary, row, eval_seconds, capacity, calibration=None):
        self.tasks.append({"name": task_summary.name, "classes": task_summary.classes})
        self.acc_tag.append(row["tag"])
        self.acc_taw.append(row["taw"])
        self.recognized.append(row["recognized"])
        pooled = np.dot(row["recognized"], row["n"]) / max(1, sum(row["n"]))
        self.task_recognition.append(float(pooled))
        self.seconds.append({**task_summary.seconds, "eval": eval_seconds})
        self.capacity.append(capacity)
        self.stored_bytes.append(task_summary.stored_bytes)
        self.prune.append(task_summary.prune)
        self.warnings.append(list(task_summary.warnings))
        self.latest = {"n_test": row["n"], **{key: row[key] for key in LATEST}}
        self.final_ci95 = row["final_ci95"]
        self.p_task_ece.append(row["p_task_ece"])
        self.calibration.append(calibration)

    def final(self):
        if not self.acc_tag:
            return {}
        return {
            "tag": float(np.mean(self.acc_tag[-1])),
            "taw": float(np.mean(self.acc_taw[-1])),
            "forgetting_tag": forgetting(self.acc_tag),
            "forgetting_taw": forgetting(self.acc_taw),
            **{f"{key}_ci95": ci for key, ci in self.final_ci95.items()},
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
            "p_task_ece": self.p_task_ece,
            "p_task_calibration": self.calibration,
            **({"out_of_scope": self.out_of_scope} if self.out_of_scope else {}),
            **self.latest,
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
        m.p_task_ece = data.get("p_task_ece", [None] * len(m.tasks))  # absent from older metrics.json
        m.calibration = data.get("p_task_calibration", [None] * len(m.tasks))
        m.latest = {key: data[key] for key in ("n_test", *LATEST) if key in data}  # absent from older metrics.json
        final = data.get("final", {})
        m.final_ci95 = {key: final[f"{key}_ci95"] for key in ("taw", "tag") if f"{key}_ci95" in final}
        return m
