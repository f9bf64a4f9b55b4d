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

from rerelrp.errors import ConfigError, DataError, RerelrpError, WorkspaceError

DEFAULT_PER_TASK = 2
DEFAULT_MAX_SAMPLES = 8
SECTIONS = (
    ("summary", "Summary"),
    ("tasks", "Task sequence and data provenance"),
    ("settings", "Settings"),
    ("accuracy", "Accuracy and forgetting"),
    ("capacity", "Capacity per layer"),
    ("samples", "Task recognition and relevance heatmaps"),
    ("software", "Software versions and seeds"),
    ("privacy", "Privacy statement"),
)
COMPARISON = ("comparison", "Comparison with baselines")  # after "accuracy", when the report has one
TITLES = dict(SECTIONS + (COMPARISON,))


def sections(content):
    """The sections a report shows: :data:`SECTIONS`, plus the comparison when there is one."""
    out = list(SECTIONS)
    if content.get("comparison"):
        out.insert(out.index(("accuracy", TITLES["accuracy"])) + 1, COMPARISON)
    return out


def comparison_block(result):
    """What a report shows of a comparison (:mod:`rerelrp.compare`): its table and what it ran on."""
    from rerelrp.compare import HEADER, table_rows

    return {"header": list(HEADER), "rows": table_rows(result), "tasks": list(result.get("tasks") or []),
            "seeds": list(result["seeds"]), "exemplars_per_class": result.get("exemplars_per_class")}
_REF_RE = re.compile(r"^(\d+):(\d+)$")


@dataclass
class Sample:
    """One image chosen for the report: uint8 (H, W, C), where it came from, and its true task/class if known."""

    image: np.ndarray
    origin: str
    task: int | None = None
    label: int | None = None


# ------------------------------------------------------------------------------------ samples
def learned_tasks(learner, meta):
    """The workspace's learned tasks, loaded again from the files they came from and checked against its hashes.

    Each learned task's provenance records how to load its data again (``reload``), whoever saved
    the workspace (``rerelrp run`` or the app). Raises :class:`WorkspaceError` when a task's data
    cannot be loaded (uploads are not stored; a moved file) or differ from what the workspace
    learned (names, sizes, file SHA-256, pixel fingerprints).
    """
    from rerelrp.data import reload_tasks
    from rerelrp.workspace import check_sequence

    path = meta.get("path", "?")
    try:
        tasks = reload_tasks(learner.tasks_)
    except DataError as exc:
        raise WorkspaceError(path, f"the data of its tasks cannot be loaded again ({exc}); put the files back, "
                                   "or give image files as samples") from None
    check_sequence(path, learner, meta, tasks)
    return tasks


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
    from rerelrp.images import read_image

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
        samples.append(Sample(read_image(file.read_bytes(), file.name, dicom_size=learner.input_size),
                              f"file {file.name}"))
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
    from rerelrp.runner import package_versions

    cfg = learner.get_params()
    names = [t["name"] for t in learner.tasks_]
    m = metrics.to_dict()
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
        "settings": cfg,
        "accuracy": {
            "tag": m.get("acc_tag") or [],
            "taw": m.get("acc_taw") or [],
            "recognized": m.get("task_recognition_per_task") or [],
            "task_recognition": m.get("task_recognition") or [],
            "final": m.get("final") or {},
        },
        "capacity": {"rows": learner.capacity(), "history": m.get("capacity") or [], "min_free": cfg["min_free"],
                     "grown": [h.get("grown", {}) for h in learner.history_]},
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
                ("data splits", f"stratified, seed {cfg['seed']}"),
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


def _explain_samples(learner, samples, composite):
    from rerelrp.images import stack_images
    from rerelrp.inputs import to_input

    size = learner.input_size
    shapes = {np.asarray(s.image).shape for s in samples}
    if len(shapes) == 1:
        batch = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    else:
        batch = stack_images([np.asarray(s.image, dtype=np.uint8) for s in samples], size)
    expl = learner.explain(batch, composite=composite)
    # recognisers read relevance of the learner's own composite: reuse the pass when it is that one
    same = composite in (None, learner.composite)
    pred = expl.prediction if same else learner.predict(batch)
    seen = to_input(batch, size).permute(0, 2, 3, 1).numpy()
    seen = np.round(seen * 255).astype(np.uint8)
    names = [t["name"] for t in learner.tasks_]
    classes = [t["classes"] for t in learner.tasks_]
    out = []
    for n, sample in enumerate(samples):
        true_task = sample.task
        t_hat = int(pred.task[n])
        record = {
            "origin": sample.origin,
            "true_task": true_task,
            "true_class": None if true_task is None else str(classes[true_task][sample.label]),
            "pred_task": t_hat,
            "pred_class": str(classes[t_hat][int(pred.local_class[n])]),
            "correct": None if true_task is None else bool(t_hat == true_task and int(pred.local_class[n]) == sample.label),
            "p_task": [float(p) for p in pred.p_task[n]],
            "scope_score": float(pred.scope_score[n]),
            "out_of_scope": bool(pred.out_of_scope[n]),
            "input": seen[n],
            "subnets": [],
        }
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
