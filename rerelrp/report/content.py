"""What a report says, independent of its format: the samples, the content and the texts.

:func:`build_report` gathers everything once as plain data (numbers, strings, uint8/float
arrays), so that the HTML and the PDF renderers cannot disagree about a number or a sentence;
the small text helpers at the end are shared by both for the same reason. Samples are chosen
here too: test images of the workspace's own tasks, re-loaded from where each task's data came
from and checked against the saved hashes, or image files given by the user.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rerelrp.errors import ConfigError, DataError, RerelrpError
from rerelrp.runner import learned_tasks

DEFAULT_PER_TASK = 2
DEFAULT_MAX_SAMPLES = 8
SECTIONS = (
    ("summary", "Summary"),
    ("tasks", "Task sequence and data provenance"),
    ("data", "Data splits, image size and warnings"),
    ("settings", "Settings"),
    ("accuracy", "Accuracy and forgetting"),
    ("clinical", "Clinical figures per task, with 95 % intervals"),
    ("capacity", "Capacity per layer"),
    ("samples", "Task recognition and relevance heatmaps"),
    ("software", "Software versions and seeds"),
    ("privacy", "Privacy statement"),
)
COMPARISON = ("comparison", "Comparison with baselines")  # after "clinical", when the report has one
TITLES = dict(SECTIONS + (COMPARISON,))
NOT_RECORDED = "not recorded"  # what a report says of a figure an older workspace did not save


def sections(content):
    """The sections a report shows: :data:`SECTIONS`, plus the comparison when there is one."""
    out = list(SECTIONS)
    if content.get("comparison"):
        out.insert(out.index(("clinical", TITLES["clinical"])) + 1, COMPARISON)
    return out


def comparison_block(result):
    """What a report shows of a comparison (:mod:`rerelrp.compare`): its table and what it ran on."""
    from rerelrp.compare import HEADER, table_rows

    return {"header": list(HEADER), "rows": table_rows(result), "tasks": list(result.get("tasks") or []),
            "seeds": list(result["seeds"]), "exemplars_per_class": result.get("exemplars_per_class")}
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


# ------------------------------------------------------------------------------------ samples
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
    a PNG/JPEG/DICOM file path, or ``"none"``. ``specs=None``: a few test images per task if the
    tasks' data can be loaded again, else none. Returns ``(samples, notes)``.
    """
    from rerelrp.modality import read_image_with_modality

    notes = []
    if specs is not None and [s.lower() for s in specs] == ["none"]:
        return [], ["no sample images were asked for"]
    tasks = None
    if specs is None:
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


# ------------------------------------------------------------------------------------ content
def build_report(learner, metrics, meta, samples=(), composite=None, title=None, notes=(), comparison=None):
    """Everything a report shows, as plain data (numbers, strings, uint8/float arrays); ``comparison``:
    a result of :func:`rerelrp.compare.compare` to show beside the model's own figures."""
    from rerelrp.versions import package_versions

    cfg = learner.get_params()
    names = [t["name"] for t in learner.tasks_]
    m = metrics.to_dict()
    history = list(getattr(learner, "history_", None) or [])
    content = {
        "title": title or f"Explanation report: {meta.get('name', 'workspace')}",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workspace": {k: meta.get(k) for k in ("name", "path", "snapshot", "saved_at", "format_version")},
        "task_names": names,
        "notes": list(notes),
        "summary": {
            "n_tasks": learner.n_tasks,
            "final": m.get("final") or {},
            "task_recognition": (m.get("task_recognition") or [None])[-1],
            "net": cfg["net"],
            "device": meta.get("saved_device"),
        },
        "tasks": [_task_row(i, t, (meta.get("fingerprints") or [None] * learner.n_tasks)[i])
                  for i, t in enumerate(learner.tasks_)],
        "data": _data_rows(learner, history, m),
        "settings": cfg,
        "task_settings": _task_settings(cfg, history, learner.n_tasks),
        "accuracy": {
            "tag": m.get("acc_tag") or [],
            "taw": m.get("acc_taw") or [],
            "recognized": m.get("task_recognition_per_task") or [],
            "task_recognition": m.get("task_recognition") or [],
            "final": m.get("final") or {},
        },
        "clinical": _clinical(learner, m),
        "capacity": {"rows": learner.capacity(), "history": m.get("capacity") or [], "min_free": cfg["min_free"],
                     "grown": [h.grown for h in learner.history_]},
        "seconds": m.get("seconds") or [],
        "samples": [],
        "software": {
            "saved_with": meta.get("versions") or {},
            "report_with": package_versions(),
            "seed": cfg["seed"],
            "seeds": [
                ("configuration seed", str(cfg["seed"])),
                ("task t: torch, training order, growth", "seed x 10007 + t"),
                ("task t: sample choice (numpy)", "default_rng([seed, t])"),
                ("recogniser m (random forest)", "seed x 7919 + m"),
                ("data splits", f"stratified by class, whole split units (patients, ...) kept together, seed {cfg['seed']}"),
            ],
            "saved_device": meta.get("saved_device"),
            "report_device": learner.describe_device(),
            "composite": composite or cfg["composite"],
            "format_version": meta.get("format_version"),
        },
    }
    if comparison:
        content["comparison"] = comparison_block(comparison)
    if samples:
        content["samples"] = _explain_samples(learner, list(samples), composite)
    content["summary"]["final_taw"] = content["clinical"]["final_taw"]
    content["summary"]["final_tag"] = content["clinical"]["final_tag"]
    content["summary"]["n_warnings"] = sum(len(row["warnings"]) for row in content["data"])
    content["privacy"] = _privacy(content, learner)
    return content


def _task_row(i, info, fingerprint):
    prov = info.get("provenance") or {}
    files = [f for f in prov.get("files", []) if isinstance(f, dict)]
    return {
        "index": i,
        "name": info["name"],
        "classes": list(info["classes"]),
        "source": info.get("source", ""),
        "kind": prov.get("kind", ""),
        "origin": prov.get("source") if isinstance(prov.get("source"), str) else "",
        "sizes": info.get("sizes") or {},
        "image_shape": info.get("image_shape"),
        "files": [{"path": str(f.get("path", "")), "bytes": f.get("bytes"), "sha256": f.get("sha256", "")} for f in files],
        "test_fingerprint": (fingerprint or {}).get("test"),
    }


# ------------------------------------------------------------------------------------ data, settings, clinical figures
SPLIT_UNITS = {"patient": ("patient", "patients"), "study": ("study", "studies"), "series": ("series", "series"),
               "file": ("file", "files")}
SCHEDULE_ROWS = (("epochs set", "epochs_set"), ("epochs run (step floor included)", "epochs"),
                 ("steps per epoch", "steps_per_epoch"), ("optimiser steps run", "steps"))
PER_CLASS_COLUMNS = (("class", "class"), ("images", "images"), ("sensitivity", "sensitivity"),
                     ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"), ("auroc", "AUROC"), ("f1", "F1"))


def _at(seq, j):
    """``seq[j]`` of a list that may be absent or shorter (older workspaces), else None."""
    return seq[j] if isinstance(seq, list) and 0 <= j < len(seq) else None


def _units(unit):
    return SPLIT_UNITS.get(unit, (str(unit), str(unit)))[1]


def split_text(split):
    """How a task's images were split, in one line: 'split by patient: 7 / 2 / 2 patients (train / val / test)'."""
    if not isinstance(split, dict) or not split.get("unit"):
        return f"split: {NOT_RECORDED}"
    unit, groups = split["unit"], split.get("groups") or {}
    counts = " / ".join(str(groups.get(s, "?")) for s in ("train", "val", "test"))
    if unit == "official":
        text = f"MedMNIST's official splits: {counts} images (train / val / test)"
    elif unit == "manifest":
        text = f"split as the manifest's split column says: {counts} files (train / val / test)"
    elif unit == "mixed":
        units = sorted({str(e.get("unit")) for e in (split.get("per_class") or {}).values() if isinstance(e, dict)})
        text = f"split by {' or '.join(units)}, by class (see the table): {counts} groups (train / val / test)"
    else:
        text = f"split by {unit}: {counts} {_units(unit)} (train / val / test)"
    return text + (f"; {split['note']}" if split.get("note") else "")


def resolution_text(shape, net_side):
    """'loaded at 64 px, network reads 28 px (downscaled: ...)' for a task's image shape and the network input."""
    if not shape or net_side is None:
        return f"image size {NOT_RECORDED}"
    h, w = int(shape[0]), int(shape[1])
    text = f"loaded at {h} px, network reads {net_side} px" if h == w else \
        f"loaded at {h} × {w} px, network reads {net_side} × {net_side} px"
    if max(h, w) > net_side:
        text += f" (downscaled: detail finer than {net_side} px is not seen)"
    elif max(h, w) < net_side:
        text += " (upscaled)"
    return text


def _split_classes(split):
    """(class, unit, patients, 'train / val / test' units) of every class of a split record."""
    rows = []
    for name, entry in ((split or {}).get("per_class") or {}).items():
        if not isinstance(entry, dict):
            continue
        groups = entry.get("groups") or {}
        patients = entry.get("patients")
        rows.append((str(name), str(entry.get("unit", "?")), "–" if patients is None else str(patients),
                     " / ".join(str(groups.get(s, "?")) for s in ("train", "val", "test"))))
    return rows


def _data_rows(learner, history, m):
    """Per task: how it was split, the size its images were loaded at and the network reads, and every warning."""
    net = learner.input_size_ if learner.n_tasks else None
    rows = []
    for i, info in enumerate(learner.tasks_):
        split = info.get("split") if isinstance(info.get("split"), dict) else None
        report = _at(history, i)
        said = [*(report.warnings if report is not None else []), *((split or {}).get("warnings") or []),
                *(_at(m.get("warnings"), i) or [])]
        per_class = _split_classes(split)
        grouped = bool(split) and (split.get("unit") in ("mixed", "manifest", "patient", "study", "series")
                                   or any(r[2] != "–" for r in per_class))
        rows.append({"index": i, "name": info["name"], "split": split_text(split),
                     "unit": (split or {}).get("unit") or NOT_RECORDED,
                     "resolution": resolution_text(info.get("image_shape"), net),
                     "per_class": per_class if grouped else [],
                     "warnings": list(dict.fromkeys(str(w) for w in said))})
    return rows


def _value(v):
    return NOT_RECORDED if v is None else str(v)


def _task_settings(cfg, history, n_tasks):
    """The run's fixed settings, and per task the settings it trained with and the schedule that ran.

    A setting is per task unless :data:`rerelrp.settings.SETTINGS` marks it fixed (set by the first
    task). Rows: the schedule (epochs set, epochs run with the step floor, steps), the epoch whose
    weights were kept, then every per-task setting; ``differs`` marks rows whose tasks disagree.
    Workspaces saved before per-task settings were kept have none: ``recorded`` is False and the run
    table holds the learner's settings at saving.
    """
    from rerelrp.settings import SETTINGS

    def fixed(name):
        return name in SETTINGS and SETTINGS[name].fixed

    reports = [_at(history, i) for i in range(n_tasks)]
    if not any(r is not None and r.settings for r in reports):
        return {"recorded": False, "run": [(k, str(v)) for k, v in cfg.items()], "tasks": [], "rows": []}
    names = list(dict.fromkeys([*cfg, *(k for r in reports if r is not None for k in r.settings)]))
    rows = []
    for label, key in SCHEDULE_ROWS:
        values = []
        for r in reports:
            schedule, used = (r.schedule, r.settings) if r is not None else ({}, {})
            values.append(_value(schedule.get(key, used.get("epochs") if key == "epochs_set" else None)))
        rows.append((label, values))
    rows.append(("epoch kept (best_epoch)", [_kept_epoch(r) for r in reports]))
    for name in names:
        if not fixed(name) and name != "epochs":  # "epochs set" is the epochs setting
            rows.append((name, [_value((r.settings if r is not None else {}).get(name)) for r in reports]))
    return {"recorded": True, "run": [(k, str(cfg[k])) for k in names if fixed(k) and k in cfg],
            "tasks": [f"task {i}" for i in range(n_tasks)],
            "rows": [{"name": label, "values": values, "differs": len(set(values)) > 1} for label, values in rows]}


def _kept_epoch(report):
    curve = report.train_curve if report is not None else []
    kept = [row.get("epoch") for row in curve if isinstance(row, dict) and row.get("kept")]
    return str(kept[-1]) if kept else ("last" if curve else NOT_RECORDED)


CI_UNIT_TEXT = {"image": "each test image counted as independent", "group": "whole {units} resampled (cluster bootstrap)"}


def accuracy_text(acc, ci, n):
    """'88.9 % (95 % CI 56.5–98.0, 9 images)' (:func:`rerelrp.clinical.format_accuracy`), or what is not recorded."""
    from rerelrp.clinical import format_accuracy

    if acc is None:
        return NOT_RECORDED
    if not n:
        return f"{acc:.1f} % (95 % CI and number of images {NOT_RECORDED})"
    text = format_accuracy(acc, ci, n)
    return text if ci is not None else text + f"; 95 % CI {NOT_RECORDED}"


def _clinical(learner, m):
    """Per task (after the last task): TAw and TAg with their intervals, balanced accuracy, the per-class
    rows and the task-aware confusion matrix; over all classes seen: the task-agnostic confusion matrix."""
    from rerelrp.clinical import per_class_table

    n_test, confusion = m.get("n_test"), m.get("confusion") or {}
    last_taw, last_tag = (m.get("acc_taw") or [[]])[-1], (m.get("acc_tag") or [[]])[-1]
    tasks = []
    for j, info in enumerate(learner.tasks_):
        n, rows, unit = _at(n_test, j), _at(m.get("per_class"), j), _at(m.get("ci_unit"), j)
        balanced = _at(m.get("balanced_accuracy_taw"), j)
        split_unit = ((info.get("split") or {}) if isinstance(info.get("split"), dict) else {}).get("unit")
        units = _units(split_unit) if split_unit in ("patient", "study", "series") else "groups (patients, studies or series)"
        tasks.append({
            "index": j, "name": info["name"], "classes": [str(c) for c in info["classes"]], "n": n,
            "taw": accuracy_text(_at(last_taw, j), _at(m.get("taw_ci95"), j), n),
            "tag": accuracy_text(_at(last_tag, j), _at(m.get("tag_ci95"), j), n),
            "balanced_taw": (NOT_RECORDED if "balanced_accuracy_taw" not in m
                             else "–" if balanced is None else f"{balanced:.1f} %"),
            "ci_unit": CI_UNIT_TEXT[unit].format(units=units) if unit in CI_UNIT_TEXT else NOT_RECORDED,
            "per_class": per_class_table(rows) if rows else [],
            "confusion": _at(confusion.get("taw"), j),
        })
    tag = confusion.get("tag")
    names = list(learner.class_names_)
    final = m.get("final") or {}
    total = sum(n_test) if isinstance(n_test, list) and n_test else None
    return {"recorded": any(t["per_class"] for t in tasks), "tasks": tasks,
            "final_taw": accuracy_text(final.get("taw"), final.get("taw_ci95"), total),
            "final_tag": accuracy_text(final.get("tag"), final.get("tag_ci95"), total),
            "tag_confusion": tag,
            "tag_classes": names if tag and len(tag) == len(names) else [str(i) for i in range(len(tag or []))]}


def verdict(v, marks=True, shout=False):
    """'✓ right' / '✗ wrong: true class X' of a sample's answer (``marks=False``: without the signs), '' if unknown."""
    if not v:
        return ""
    if v["right"]:
        return ("✓ " if marks else "") + "right"
    return ("✗ " if marks else "") + ("WRONG" if shout else "wrong") + ": " + v["detail"]


def scope_reason(smp):
    """Why a sample is out of scope, as :func:`rerelrp.modality.scope_texts` says it: the modality rule's
    reason, else its scope score."""
    return smp.get("scope_reason") or f"scope score {smp['scope_score']:.2f} > 1"


def short_name(name, n=28):
    """``name`` cut to ``n`` characters (with '…'), for narrow PDF columns; the full name goes in a legend."""
    name = str(name)
    return name if len(name) <= n else name[: n - 1] + "…"


def _explain_samples(learner, samples, composite):
    from rerelrp.images import stack_images
    from rerelrp.inputs import to_input

    size = learner.input_size_
    shapes = {np.asarray(s.image).shape for s in samples}
    if len(shapes) == 1:
        batch = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    else:
        batch = stack_images([np.asarray(s.image, dtype=np.uint8) for s in samples], size)
    expl = learner.explain(batch, composite=composite)
    # recognisers read relevance of the learner's own composite: reuse the pass when it is that one
    same = composite in (None, learner.composite)
    pred = expl.prediction if same else learner.predict(batch)
    modalities = [getattr(s, "modality", None) for s in samples]
    if any(modalities):  # a DICOM file says what it shows: no task of that modality, no task claims it
        from rerelrp.modality import apply_modality

        apply_modality(pred, modalities, learner.tasks_)
    reasons = pred.scope_reason or [None] * len(samples)  # what a rule beyond the score decided (modality)
    seen = to_input(batch, size).permute(0, 2, 3, 1).numpy()
    seen = np.round(seen * 255).astype(np.uint8)
    names = [t["name"] for t in learner.tasks_]
    classes = [t["classes"] for t in learner.tasks_]
    out = []
    for n, sample in enumerate(samples):
        true_task = sample.task
        t_hat = int(pred.task[n])
        local = int(pred.local_class[n])
        record = {
            "origin": sample.origin,
            "true_task": true_task,
            "true_class": None if true_task is None else str(classes[true_task][sample.label]),
            "pred_task": t_hat,
            "pred_class": str(classes[t_hat][int(pred.local_class[n])]),
            "correct": None if true_task is None else bool(t_hat == true_task and local == sample.label),
            "p_task": [float(p) for p in pred.p_task[n]],
            "scope_score": float(pred.scope_score[n]),
            "out_of_scope": bool(pred.out_of_scope[n]),
            "scope_reason": reasons[n],
            "modality": getattr(sample, "modality", None),
            "input": seen[n],
            "subnets": [],
        }
        record["tag_verdict"], record["taw_verdict"] = _verdicts(record, names, classes, sample, expl.subnet_class[n])
        for m in range(learner.n_tasks):
            record["subnets"].append({
                "task": m,
                "task_name": names[m],
                "class": str(classes[m][int(expl.subnet_class[n, m])]),
                "prob": float(expl.subnet_prob[n, m]),
                "heatmap": expl.heatmaps[n, m],
                "top_units": [(layer, int(u), float(r)) for layer, u, r in expl.top_units[n][m][:3]],
            })
        out.append(record)
    return out


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


def _privacy(content, learner):
    n = len(content["samples"])
    rows = learner.store_.n_rows
    stored = [
        "network weights and BatchNorm statistics; which units each task kept (bit masks)",
        f"relevance values of {rows} rows over the few units each recogniser reads, and the recognisers (random "
        "forests) fitted on them: numbers computed from training images, no pixels",
        "for each task: its name, class names, split sizes and image shape",
        "data provenance: input file names as given, their sizes and SHA-256 hashes, and SHA-256 fingerprints of "
        "each split's pixels and labels (hashes cannot be turned back into images)",
        "settings, metrics, training history, software versions and the device name",
    ]
    not_stored = [
        "no image, thumbnail or pixel of any data set, in the workspace or in this report's making",
        "no patient attribute: names, IDs, birth dates, study dates and other DICOM tags are dropped by the loader "
        "before anything is kept (file names are kept as given: rename files whose names identify a patient)",
    ]
    report = (f"this report contains exactly the {n} sample image(s) shown in section "
              f"'{TITLES['samples']}', chosen by the user, and the heatmaps computed from them; no other image"
              if n else "this report contains no image")
    return {"stored": stored, "not_stored": not_stored, "report": report}


# ------------------------------------------------------------------------------------ texts shared by both formats
FORGETTING = ("Forgetting: mean over earlier tasks of the best accuracy before the last task minus the final "
              "accuracy (FACIL's definition).")
SAMPLES_INTRO = ("For each image: the recognition confidence P_T of every task (the chain of recognisers; the chosen "
                 "task is outlined) and the input relevance of every sub-network, started at the class that "
                 "sub-network predicts. Red: evidence for that class, blue: against it; each heatmap is scaled to its "
                 "own largest magnitude. The overlay blends the relevance over the input. The scope score compares "
                 "the image with each task's own training images: above 1, none of the learned tasks claims it.")


def pct(value):
    """A percentage with one decimal, or a dash when there is none."""
    return "–" if value is None else f"{value:.1f}"


def cards(summary):
    """(label, value) of the summary's headline numbers."""
    final = summary["final"]
    return [("tasks learned", str(summary["n_tasks"])), ("final TAg", f"{pct(final.get('tag'))} %"),
            ("final TAw", f"{pct(final.get('taw'))} %"), ("task recognition", f"{pct(summary['task_recognition'])} %"),
            ("forgetting TAg / TAw", f"{pct(final.get('forgetting_tag'))} / {pct(final.get('forgetting_taw'))}")]


def sizes(task_row):
    """'train / val / test' image counts of a task."""
    return " / ".join(str(task_row["sizes"].get(k, "?")) for k in ("train", "val", "test"))


def short_files(files, n=3):
    """The first ``n`` input files, and how many more there are."""
    return files[:n], max(0, len(files) - n)


def growth(grown):
    """One sentence on the units added to layers before each task, or '' when no layer grew."""
    steps = [f"before task {i}: " + ", ".join(f"{k} +{v}" for k, v in g.items()) for i, g in enumerate(grown) if g]
    return ("Layers grown (units added): " + "; ".join(steps) + ".") if steps else ""


def versions(software):
    """(package, version saved with, version the report was made with), every package of either side."""
    keys = list(dict.fromkeys(list(software["saved_with"]) + list(software["report_with"])))
    return [(k, str(software["saved_with"].get(k, "-")), str(software["report_with"].get(k, "-"))) for k in keys]


def seeds(software):
    """(what, value) of every seed and reproducibility setting."""
    return list(software["seeds"]) + [
        ("trained on", str(software["saved_device"])), ("heatmaps computed on", str(software["report_device"])),
        ("LRP composite", str(software["composite"])), ("workspace format", str(software["format_version"]))]
