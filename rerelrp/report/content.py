"""What a report says, independent of its format: the sections, the content and the texts.

:func:`build_report` gathers everything once as plain data (numbers, strings, uint8/float
arrays), so that the HTML and the PDF renderers cannot disagree about a number or a sentence;
the small text helpers at the end are shared by both for the same reason. The samples are chosen
and explained in :mod:`.samples`; the data splits, per-task settings and clinical figures are
written in :mod:`.study`.
"""
from __future__ import annotations

from datetime import UTC, datetime

from rerelrp.report.samples import explain_samples
from rerelrp.report.study import clinical_figures, data_rows, task_settings
from rerelrp.run.calibration import describe_calibration
from rerelrp.run.compare import HEADER, table_rows
from rerelrp.versions import package_versions

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


def sections(content):
    """The sections a report shows: :data:`SECTIONS`, plus the comparison when there is one."""
    out = list(SECTIONS)
    if content.get("comparison"):
        out.insert(out.index(("clinical", TITLES["clinical"])) + 1, COMPARISON)
    return out


def comparison_block(result):
    """What a report shows of a comparison (:mod:`rerelrp.run.compare`): its table, what it ran on, and each
    run's final TAg and bytes stored (the HTML report draws them against each other)."""
    memory = {"methods": list(result["methods"]),  # what memory_figure reads: each run's final TAg and bytes
              "runs": [{"method": r["method"], "seed": r["seed"], "final": {"tag": r["final"]["tag"]},
                        "bytes_stored": r["bytes_stored"]} for r in result["runs"]]}
    return {"header": list(HEADER), "rows": table_rows(result), "tasks": list(result.get("tasks") or []),
            "seeds": list(result["seeds"]), "exemplars_per_class": result.get("exemplars_per_class"),
            "memory": memory}


# ------------------------------------------------------------------------------------ content
def build_report(learner, metrics, meta, samples=(), composite=None, title=None, notes=(), comparison=None,
                 task_notes=()):
    """Everything a report shows, as plain data (numbers, strings, uint8/float arrays); ``comparison``:
    a result of :func:`rerelrp.run.compare.compare` to show beside the model's own figures;
    ``task_notes``: the researcher's note on each learned task ("" for none), in task order."""
    cfg = learner.get_params()
    names = [t["name"] for t in learner.tasks_]
    m = metrics.to_dict()
    history = list(learner.history_ if learner.n_tasks else [])
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
        "task_notes": [(i, names[i], note) for i, note in enumerate(task_notes) if note and i < len(names)],
        "data": data_rows(learner, history, m),
        "settings": cfg,
        "task_settings": task_settings(cfg, history, learner.n_tasks),
        "accuracy": {
            "tag": m.get("acc_tag") or [],
            "taw": m.get("acc_taw") or [],
            "recognized": m.get("task_recognition_per_task") or [],
            "task_recognition": m.get("task_recognition") or [],
            "final": m.get("final") or {},
        },
        "clinical": clinical_figures(learner, m),
        "capacity": {"rows": learner.capacity(), "history": m.get("capacity") or [], "min_free": cfg["min_free"],
                     "grown": [h.grown for h in learner.history_], "room": [h.prune.get("room") for h in learner.history_]},
        "seconds": m.get("seconds") or [],
        "samples": [],
        "p_task_calibration": describe_calibration(learner.p_task_temperature_, metrics)
        if learner.n_tasks else "",
        "software": _software(learner, cfg, meta, composite),
    }
    if comparison:
        content["comparison"] = comparison_block(comparison)
    if samples:
        content["samples"] = explain_samples(learner, list(samples), composite)
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


def _software(learner, cfg, meta, composite):
    """The software versions the workspace was saved and the report made with, every seed and the devices."""
    return {
        "saved_with": meta.get("versions") or {},
        "report_with": package_versions(),
        "seed": cfg["seed"],
        "seeds": [
            ("configuration seed", str(cfg["seed"])),
            ("task t: torch, training order, growth", "seed x 10007 + t"),
            ("task t: sample choice (numpy)", "default_rng([seed, t])"),
            *([("recogniser m (random forest)", "seed x 7919 + m")] if cfg.get("recognizer") == "forest" else []),
            ("data splits", f"stratified by class, seed {cfg['seed']}; the unit of each task: section '{TITLES['data']}'"),
        ],
        "saved_device": meta.get("saved_device"),
        "report_device": learner.describe_device(),
        "composite": composite or cfg["composite"],
        "format_version": meta.get("format_version"),
    }


def _privacy(content, learner):
    n = len(content["samples"])
    rows = learner.store_.n_rows
    recognisers = (
        f"relevance values of {rows} rows (one per training image sampled) over the few units each recogniser "
        "reads, and the recognisers (random forests) fitted on them: numbers computed from training images, no pixels"
        if rows else "for each task and sub-network: the mean activation of each class's training images, their "
        "count and one covariance shared by all classes (statistics, no row per image, no pixels)")
    stored = [
        "network weights and BatchNorm statistics; which units each task kept (bit masks)",
        recognisers,
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


def short_name(name, n=28):
    """``name`` cut to ``n`` characters (with '…'), for narrow PDF columns; the full name goes in a legend."""
    name = str(name)
    return name if len(name) <= n else name[: n - 1] + "…"


def growth(grown, room=()):
    """Sentences on the room fine-tuning made (see ``rerelrp.method.room``) and on the units added to
    layers before each task; '' when neither happened."""
    made = [f"task {i} dropped {r['dropped']} more units and was fine-tuned {r['steps']} steps without them "
            + ("(its accuracy held, so they stay free)" if r["accepted"] else f"(accuracy {r['acc']:.1f} %, short of the "
               "cut's, so its weights went back and the short layers grew)")
            for i, r in enumerate(room) if r and r.get("dropped")]
    steps = [f"before task {i}: " + ", ".join(f"{k} +{v}" for k, v in g.items()) for i, g in enumerate(grown) if g]
    return " ".join(([("Room made: " + "; ".join(made) + ".")] if made else [])
                    + ([("Layers grown (units added): " + "; ".join(steps) + ".")] if steps else []))


def versions(software):
    """(package, version saved with, version the report was made with), every package of either side."""
    keys = list(dict.fromkeys(list(software["saved_with"]) + list(software["report_with"])))
    return [(k, str(software["saved_with"].get(k, "-")), str(software["report_with"].get(k, "-"))) for k in keys]


def seeds(software):
    """(what, value) of every seed and reproducibility setting."""
    return list(software["seeds"]) + [
        ("trained on", str(software["saved_device"])), ("heatmaps computed on", str(software["report_device"])),
        ("LRP composite", str(software["composite"])), ("workspace format", str(software["format_version"]))]
