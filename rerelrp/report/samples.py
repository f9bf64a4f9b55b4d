"""The sample images of a report: choosing them, explaining them, and saying whether the model was right.

A sample is a test image of one of the workspace's own tasks (``"TASK:INDEX"`` or ``"auto"``,
re-loaded, when the user asks, from where the task's data came from and checked against the saved
hashes) or an image file given by
the user (PNG, JPEG or DICOM). :func:`explain_samples` turns them into the plain data both report
formats show: the answer, P_T, the scope score and every sub-network's heatmap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerelrp.data.images import stack_images
from rerelrp.errors import ConfigError, DataError, RerelrpError
from rerelrp.method.modality import apply_modality, read_image_with_modality
from rerelrp.model.inputs import to_input
from rerelrp.run.runner import learned_tasks, recorded_sources
from rerelrp.text import printable

DEFAULT_PER_TASK = 2
DEFAULT_MAX_SAMPLES = 8
_REF_RE = re.compile(r"^(\d+):(\d+)$")


@dataclass
class Sample:
    """One image chosen for the report: uint8 (H, W, C), where it came from, its true task/class if known,
    and the DICOM Modality its file says it shows (None for PNG/JPEG and test images)."""

    image: np.ndarray
    origin: str
    task: int | None = None
    label: int | None = None
    modality: str | None = None


# ------------------------------------------------------------------------------------ choosing
def default_sample_refs(tasks, learner, per_task, limit):
    """``(task, index)`` of a few test images: the first test image of ``per_task`` classes of each task."""
    refs = []
    for t in range(learner.n_tasks):
        labels = tasks[t].test.labels
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
        refs += [(t, i) for i in firsts[:per_task]]
    return refs[:limit]


def resolve_samples(specs, learner, meta, per_task=DEFAULT_PER_TASK, limit=DEFAULT_MAX_SAMPLES):
    """Samples from command-line style specs: ``"TASK:INDEX"`` (a test image of the workspace's data),
    ``"auto"`` (a few test images per task), a PNG/JPEG/DICOM file path, or ``"none"``. Returns ``(samples, notes)``.

    ``specs=None`` gives no samples and a note naming the data the workspace records: a workspace
    someone sent may name any local path, so its data are read only when the user asks for them
    (``auto`` or ``TASK:INDEX``).
    """
    notes = []
    lowered = [s.lower() for s in specs] if specs is not None else None
    if lowered is None or lowered == ["none"]:
        sources = sorted({printable(s) for s in recorded_sources(learner) if s})
        recorded = f" (the workspace records them at {', '.join(sources)})" if sources else ""
        asked = "no sample images were asked for" if specs is not None else "no sample images"
        return [], [f"{asked}: give --samples auto or TASK:INDEX to explain test images of the learned tasks' "
                    f"data{recorded}, or image files"]
    tasks = None
    if lowered == ["auto"]:
        try:
            tasks = learned_tasks(learner, meta)
        except RerelrpError as exc:
            return [], [f"no sample images: the test images of the workspace's data are not available ({exc})"]
        refs = default_sample_refs(tasks, learner, per_task, limit)
        notes.append(f"samples: {len(refs)} test images chosen by default (the first of {per_task} classes per task)")
        return [test_sample(tasks, learner, t, i) for t, i in refs], notes
    samples = []
    for spec in specs:
        match = _REF_RE.match(spec)
        if match:
            if tasks is None:
                tasks = learned_tasks(learner, meta)
            samples.append(test_sample(tasks, learner, int(match[1]), int(match[2])))
            continue
        file = Path(spec)
        if not file.is_file():
            raise DataError(spec, "is neither TASK:INDEX (e.g. 0:12) nor an image file that exists")
        image, modality = read_image_with_modality(file.read_bytes(), file.name, dicom_size=learner.input_size_)
        samples.append(Sample(image, f"file {file.name}", modality=modality))
    return samples, notes


def test_sample(tasks, learner, t, i):
    """Test image ``i`` of task ``t`` as a :class:`Sample` that knows its true task and class."""
    if not 0 <= t < learner.n_tasks:
        raise ConfigError(f"sample {t}:{i}: the workspace learned tasks 0..{learner.n_tasks - 1}, there is no task {t}")
    test = tasks[t].test
    if not 0 <= i < len(test):
        raise ConfigError(f"sample {t}:{i}: task {t} has test images 0..{len(test) - 1}")
    return Sample(test.images[i], f"test image {i} of task {t} ({tasks[t].name})", task=t, label=int(test.labels[i]))


# ------------------------------------------------------------------------------------ explaining
def explain_samples(learner, samples, composite):
    """Per sample, what the report shows of it: the answer and its verdicts, P_T, the scope score, the
    input as the network sees it and, per sub-network, its class, probability, heatmap and top units."""
    batch = _batch(learner, samples)
    expl = learner.explain(batch, composite=composite)
    # recognisers read relevance of the learner's own composite: reuse the pass when it is that one
    same = composite in (None, learner.composite)
    pred = expl.prediction if same else learner.predict(batch)
    modalities = [s.modality for s in samples]
    if any(modalities):  # a DICOM file says what it shows: no task of that modality, no task claims it
        apply_modality(pred, modalities, learner.tasks_)
    reasons = pred.scope_reason or [None] * len(samples)  # what a rule beyond the score decided (modality)
    seen = to_input(batch, learner.input_size_).permute(0, 2, 3, 1).numpy()
    seen = np.round(seen * 255).astype(np.uint8)
    names = [t["name"] for t in learner.tasks_]
    classes = [t["classes"] for t in learner.tasks_]
    out = []
    for n, sample in enumerate(samples):
        record = _record(sample, n, pred, classes, reasons[n], seen[n])
        record["tag_verdict"], record["taw_verdict"] = _verdicts(record, names, classes, sample, expl.subnet_class[n])
        record["subnets"] = [_subnet(expl, n, m, names, classes) for m in range(learner.n_tasks)]
        out.append(record)
    return out


def _batch(learner, samples):
    """The samples' images as one uint8 batch: as they are when they share a shape, else squared and resized."""
    shapes = {np.asarray(s.image).shape for s in samples}
    if len(shapes) == 1:
        return np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    return stack_images([np.asarray(s.image, dtype=np.uint8) for s in samples], learner.input_size_)


def _record(sample, n, pred, classes, reason, seen):
    """What the report shows of sample ``n``'s task-agnostic answer (its sub-networks are added after)."""
    true_task = sample.task
    t_hat = int(pred.task[n])
    local = int(pred.local_class[n])
    return {
        "origin": sample.origin,
        "true_task": true_task,
        "true_class": None if true_task is None else str(classes[true_task][sample.label]),
        "pred_task": t_hat,
        "pred_class": str(classes[t_hat][int(pred.local_class[n])]),
        "correct": None if true_task is None else bool(t_hat == true_task and local == sample.label),
        "p_task": [float(p) for p in pred.p_task[n]],
        "scope_score": float(pred.scope_score[n]),
        "out_of_scope": bool(pred.out_of_scope[n]),
        "scope_reason": reason,
        "modality": sample.modality,
        "input": seen,
        "subnets": [],
    }


def _subnet(expl, n, m, names, classes):
    """What sub-network ``m`` says of sample ``n``: its class and probability, heatmap and three top units."""
    return {
        "task": m,
        "task_name": names[m],
        "class": str(classes[m][int(expl.subnet_class[n, m])]),
        "prob": float(expl.subnet_prob[n, m]),
        "heatmap": expl.heatmaps[n, m],
        "top_units": [(layer, int(u), float(r)) for layer, u, r in expl.top_units[n][m][:3]],
    }


# ------------------------------------------------------------------------------------ verdicts
def _verdicts(record, names, classes, sample, subnet_class):
    """Whether the task-agnostic answer and the true task's sub-network are right (None when the truth is unknown)."""
    true_task = sample.task
    if true_task is None or sample.label is None:
        return None, None
    true_class = record["true_class"]
    if record["pred_task"] != true_task:
        detail = f"true task {true_task} ({names[true_task]}), class {true_class}"
    else:
        detail = f"true class {true_class}"
    taw_right = int(subnet_class[true_task]) == sample.label
    return ({"right": bool(record["correct"]), "detail": detail},
            {"right": bool(taw_right), "detail": f"true class {true_class}", "task": true_task,
             "class": str(classes[true_task][int(subnet_class[true_task])])})


def verdict(v, marks=True, shout=False):
    """'✓ right' / '✗ wrong: true class X' of a sample's answer (``marks=False``: without the signs), '' if unknown."""
    if not v:
        return ""
    if v["right"]:
        return ("✓ " if marks else "") + "right"
    return ("✗ " if marks else "") + ("WRONG" if shout else "wrong") + ": " + v["detail"]


def scope_reason(smp):
    """Why a sample is out of scope, as :func:`rerelrp.method.modality.scope_texts` says it: the modality rule's
    reason, else its scope score."""
    return smp.get("scope_reason") or f"scope score {smp['scope_score']:.2f} > 1"
