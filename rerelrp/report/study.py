"""What a report says of how the study was run: data splits, image sizes, per-task settings and the
clinical figures (accuracies with 95 % intervals, per-class figures, confusion matrices).

Older workspaces did not save every figure: what is missing is said as :data:`NOT_RECORDED`, never
left out silently.
"""
from __future__ import annotations

from rerelrp.run.clinical import format_accuracy, per_class_table
from rerelrp.settings import SETTINGS

NOT_RECORDED = "not recorded"  # what a report says of a figure an older workspace did not save
SPLIT_UNITS = {"patient": ("patient", "patients"), "study": ("study", "studies"), "series": ("series", "series"),
               "file": ("file", "files")}
SCHEDULE_ROWS = (("epochs set", "epochs_set"), ("epochs run (step floor included)", "epochs"),
                 ("steps per epoch", "steps_per_epoch"), ("optimiser steps run", "steps"))
PER_CLASS_COLUMNS = (("class", "class"), ("images", "images"), ("sensitivity", "sensitivity"),
                     ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"), ("auroc", "AUROC"), ("f1", "F1"))
CI_UNIT_TEXT = {"image": "each test image counted as independent", "group": "whole {units} resampled (cluster bootstrap)"}


def _at(seq, j):
    """``seq[j]`` of a list that may be absent or shorter (older workspaces), else None."""
    return seq[j] if isinstance(seq, list) and 0 <= j < len(seq) else None


def _units(unit):
    return SPLIT_UNITS.get(unit, (str(unit), str(unit)))[1]


# ------------------------------------------------------------------------------------ data splits and image size
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


def data_rows(learner, history, m):
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


# ------------------------------------------------------------------------------------ settings per task
def _value(v):
    return NOT_RECORDED if v is None else str(v)


def task_settings(cfg, history, n_tasks):
    """The run's fixed settings, and per task the settings it trained with and the schedule that ran.

    A setting is per task unless :data:`rerelrp.settings.SETTINGS` marks it fixed (set by the first
    task). Rows: the schedule (epochs set, epochs run with the step floor, steps), the epoch whose
    weights were kept, then every per-task setting; ``differs`` marks rows whose tasks disagree.
    Workspaces saved before per-task settings were kept have none: ``recorded`` is False and the run
    table holds the learner's settings at saving.
    """

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


# ------------------------------------------------------------------------------------ clinical figures
def accuracy_text(acc, ci, n):
    """'88.9 % (95 % CI 56.5–98.0, 9 images)' (:func:`rerelrp.run.clinical.format_accuracy`), or what is not recorded."""
    if acc is None:
        return NOT_RECORDED
    if not n:
        return f"{acc:.1f} % (95 % CI and number of images {NOT_RECORDED})"
    text = format_accuracy(acc, ci, n)
    return text if ci is not None else text + f"; 95 % CI {NOT_RECORDED}"


def clinical_figures(learner, m):
    """Per task (after the last task): TAw and TAg with their intervals, balanced accuracy, the per-class
    rows and the task-aware confusion matrix; over all classes seen: the task-agnostic confusion matrix."""
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
