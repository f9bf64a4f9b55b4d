"""How far P_T can be read as a probability: reliability of the recognised task's P_T on validation images.

The recognisers' chain gives each image a P_T per task, and the app and reports show the largest
as the model's confidence in the task. Whether "P_T = 0.8" means "right 8 times in 10" is
measured here, on each learned task's validation images (never the test images): images are
binned by their largest P_T, and each bin's share of correctly recognised tasks is set against its
mean P_T. The expected calibration error (ECE) is the mean gap, weighted by the bin's images.
scikit-learn's ``calibration_curve`` gives the curve but neither the counts nor the ECE, so the
binning is written here (equal-width bins, as ``calibration_curve``'s ``"uniform"``).

:func:`calibrate_p_task` corrects it: one temperature (:mod:`rerelrp.method.temperature`) fitted
after each task on a fixed sample of every learned task's validation images, which the run holds
for testing. It changes how sure P_T says it is, never which task it picks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerelrp.method.temperature import fit_temperature, tempered
from rerelrp.run.clinical import wilson_interval

VALIDATION_PER_TASK = 256  # validation images per task the temperature is fitted on: one number needs few


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


def calibrate_p_task(learner, tasks, memos=None, per_task=VALIDATION_PER_TASK):
    """Fit and set ``learner``'s P_T temperature on up to ``per_task`` validation images of each learned task.

    ``tasks``: the learned tasks, in order. ``memos`` (kept by the run between tasks, as for testing)
    let the same images reuse the earlier sub-networks' LRP. Returns what ``metrics.json`` keeps
    (the temperature, the images, the validation ECE before and after), or None (P_T left raw)
    with fewer than two tasks or no validation image.
    """
    learner.set_p_task_temperature(1.0)
    p_task, truth = [], []
    for j, task in enumerate(tasks[: learner.n_tasks] if learner.n_tasks > 1 else []):
        val = task.split("val")
        if not len(val):
            continue
        index = np.sort(np.random.default_rng([learner.seed, j]).permutation(len(val))[:per_task])
        memo = None if memos is None else memos.setdefault(("val", j), {})
        p_task.append(learner.predict(val.subset(index).images, memo=memo).p_task)
        truth.append(np.full(len(index), j))
    if not p_task:
        return None
    p_task, truth = np.concatenate(p_task), np.concatenate(truth)
    temperature = fit_temperature(p_task, truth)
    learner.set_p_task_temperature(temperature)
    before, after = (reliability(p.max(1), p.argmax(1) == truth) for p in (p_task, tempered(p_task, temperature)))
    return {"temperature": round(temperature, 4), "n_val": int(len(truth)), "val_ece_raw": round(before.ece, 4),
            "val_ece": round(after.ece, 4)}


def describe_calibration(temperature, metrics):
    """What a page or report says of the P_T it shows: tempered by what fit, or raw and why; with the
    test ECE of the P_T shown, from the run's ``metrics`` (:class:`~rerelrp.run.metrics.RunMetrics`)."""
    record = metrics.calibration[-1] if metrics.calibration else None
    ece = metrics.p_task_ece[-1] if metrics.p_task_ece else None
    n_test = sum(metrics.latest.get("n_test", []))
    tested = f" On the {n_test} test images, the ECE of the P_T shown is {ece:.3f}." if ece is not None else ""
    if temperature == 1.0:
        return ("P_T is shown raw, as the recognisers' chain gives it: a score, not a calibrated probability of "
                "being right (calibration is off, or there was one task or no validation image to fit it on)." + tested)
    fitted = (f" on {record['n_val']} validation images of the learned tasks, which brought their expected "
              f"calibration error (ECE) from {record['val_ece_raw']:.3f} to {record['val_ece']:.3f}") if record else ""
    return (f"P_T is calibrated: after the last task, one temperature ({temperature:.2f}) was fitted{fitted}. It "
            "changes how sure P_T says it is, never which task it picks." + tested)
