"""How far P_T can be read as a probability: reliability of the recognised task's P_T on validation images.

The recognisers' chain gives each image a P_T per task, and the app and reports show the largest
as the model's confidence in the task. Whether "P_T = 0.8" means "right 8 times in 10" is
measured here, on each learned task's validation images (never the test images): images are
binned by their largest P_T, and each bin's share of correctly recognised tasks is set against its
mean P_T. The expected calibration error (ECE) is the mean gap, weighted by the bin's images.
scikit-learn's ``calibration_curve`` gives the curve but neither the counts nor the ECE, so the
binning is written here (equal-width bins, as ``calibration_curve``'s ``"uniform"``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerelrp.run.clinical import wilson_interval


@dataclass
class Reliability:
    """Per bin of the largest P_T: its edges, images, mean P_T and share recognised (with a 95 % interval)."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,)
    confidence: np.ndarray  # (bins,) mean largest P_T, NaN where empty
    accuracy: np.ndarray  # (bins,) share of images whose task was recognised, NaN where empty
    intervals: list  # (bins,) Wilson 95 % interval of the share, None where empty
    ece: float
    n: int
    recognised: float  # share of all images whose task was recognised


def reliability(confidence, correct, bins=10):
    """Reliability of ``confidence`` (N,) in [0, 1] against ``correct`` (N,) bools, in ``bins`` equal bins."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(index, confidence, bins) / counts
        acc = np.bincount(index, correct.astype(float), bins) / counts
    intervals = [wilson_interval(int(round(a * c)), int(c)) if c else None for a, c in zip(acc, counts)]
    gaps = np.where(counts > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(conf)), 0.0)
    n = int(counts.sum())
    return Reliability(edges, counts, conf, acc, intervals, float((gaps * counts).sum() / n) if n else float("nan"),
                       n, float(correct.mean()) if n else float("nan"))


def task_reliability(learner, tasks, split="val", bins=10):
    """:func:`reliability` of the largest P_T on the ``split`` images of each learned task of ``tasks``."""
    confidence, correct = [], []
    for t, task in enumerate(tasks[: learner.n_tasks]):
        images = task.split(split).images
        if not len(images):
            continue
        p_task = learner.predict(images).p_task
        confidence.append(p_task.max(1))
        correct.append(p_task.argmax(1) == t)
    if not confidence:
        return reliability(np.zeros(0), np.zeros(0, bool), bins)
    return reliability(np.concatenate(confidence), np.concatenate(correct), bins)
