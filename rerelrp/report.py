"""Explanation reports of a saved workspace: one self-contained HTML file or a PDF.

The content is built once (:func:`build_report`, a plain data structure) and rendered twice:
:func:`render_html` embeds the plotly figures of :mod:`rerelrp.plots` with plotly.js inlined
exactly once and every image as a ``data:`` URI, so the file opens offline and fetches nothing;
:func:`render_pdf` draws tables, bars and images with fpdf2 (no browser). The only images a
report holds are the samples the user chose (and the heatmaps computed from them); they are
never written anywhere else, not even to a temporary file.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rerelrp.errors import ConfigError, DataError, RerelrpError, WorkspaceError
from rerelrp.fileio import write_bytes_atomic

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
TITLES = dict(SECTIONS)
_REF_RE = re.compile(r"^(\d+):(\d+)$")


@dataclass
class Sample:
    """One image chosen for the report: uint8 (H, W, C), where it came from, and its true task/class if known."""

    image: np.ndarray
    origin: str
    task: int | None = None
    label: int | None = None


# ------------------------------------------------------------------------------------ samples
def workspace_tasks(learner, meta, data_root=None):
    """The workspace's tasks re-loaded from the data sources it recorded, checked against its hashes.

    ``data_root`` (where MedMNIST flags are looked up) defaults to the one the run recorded.
    Raises :class:`WorkspaceError` when no sources were recorded, a source cannot be loaded, or
    the data differ from what the workspace learned (names, sizes, file SHA-256, pixel fingerprints).
    """
    from rerelrp.data import build_sequence, load_dataset
    from rerelrp.workspace import check_sequence

    path = meta.get("path", "?")
    data = (meta.get("extra") or {}).get("data") or {}
    sources = data.get("sources")
    if not sources:
        raise WorkspaceError(path, "records no data sources (it was not made by 'rerelrp run'), so TASK:INDEX "
                                   "samples cannot be found; give image files instead")
    root = data_root or data.get("data_root") or "./data"
    try:
        datasets = [load_dataset(s, root=root, seed=learner.seed) for s in sources]
    except DataError as exc:
        raise WorkspaceError(path, f"its data source cannot be loaded ({exc}); put the file back, or give image "
                                   "files as samples") from None
    tasks = build_sequence(datasets, data.get("tasks"))
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


def resolve_samples(specs, learner, meta, data_root=None, per_task=DEFAULT_PER_TASK, limit=DEFAULT_MAX_SAMPLES):
    """Samples from command-line style specs: ``"TASK:INDEX"`` (a test image of the workspace's data),
    a PNG/JPEG/DICOM file path, or ``"none"``. ``specs=None``: a few test images per task if the
    data sources are available, else none. Returns ``(samples, notes)``.
    """
    from rerelrp.images import read_image

    notes = []
    if specs is not None and [s.lower() for s in specs] == ["none"]:
        return [], ["no sample images were asked for"]
    tasks = None
    if specs is None:
        try:
            tasks = workspace_tasks(learner, meta, data_root)
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
                tasks = workspace_tasks(learner, meta, data_root)
            samples.append(test_sample(tasks, learner, int(match[1]), int(match[2])))
            continue
        file = Path(spec)
        if not file.is_file():
            raise DataError(spec, "is neither TASK:INDEX (e.g. 0:12) nor an image file that exists")
        samples.append(Sample(read_image(file.read_bytes(), file.name, dicom_size=learner.input_size),
                              f"file {file.name}"))
    return samples, notes


def test_sample(tasks, learner, t, i):
    if not 0 <= t < learner.n_tasks:
        raise ConfigError(f"sample {t}:{i}: the workspace learned tasks 0..{learner.n_tasks - 1}, there is no task {t}")
    test = tasks[t].test
    if not 0 <= i < len(test):
        raise ConfigError(f"sample {t}:{i}: task {t} has test images 0..{len(test) - 1}")
    return Sample(test.images[i], f"test image {i} of task {t} ({tasks[t].name})", task=t, label=int(test.labels[i]))


# ------------------------------------------------------------------------------------ content
def build_report(learner, metrics, meta, samples=(), composite=None, title=None, notes=()):
    """Everything a report shows, as plain data (numbers, strings, uint8/float arrays)."""
    from rerelrp.inputs import to_input
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
    if samples:
        content["samples"] = _explain_samples(learner, list(samples), composite, to_input)
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


def _explain_samples(learner, samples, composite, to_input):
    from rerelrp.images import stack_images

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
    rows = sum(int(b.shape[0]) for rows in learner.store_.rows for b in rows.values())
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


# ------------------------------------------------------------------------------------ shared helpers
def _rgb_heatmap(h, image=None, overlay=False):
    from rerelrp.plots import heatmap_rgb

    return heatmap_rgb(h, image, overlay=overlay)


def _png(rgb, scale=1):
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _pct(value):
    return "–" if value is None else f"{value:.1f}"


def _hex(color):
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _viridis(value):
    """Colour of an accuracy 0..100 on viridis (the plotly figures' scale); dark ones need white text."""
    x = min(max(float(value) / 100.0, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    rgb = tuple(round(a + (b - a) * f) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1]))
    return rgb, x < 2.2


def _short_files(files, n=3):
    return files[:n], max(0, len(files) - n)


# ------------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
header.top{border-bottom:3px solid #4C78A8;margin-bottom:16px;padding-bottom:8px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#666;font-size:13px}
nav ol{columns:2;font-size:14px;margin:8px 0 0}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}
.card{border:1px solid #dde;border-radius:6px;padding:8px 14px;min-width:130px;background:#fafbff}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px}.two{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.sample{border:1px solid #dde;border-radius:6px;padding:10px 14px;margin:14px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.cell{width:150px;font-size:12px}.cell img{width:140px;height:140px;image-rendering:pixelated;border:1px solid #ccc;display:block;margin:2px 0}
.bar{height:7px;background:#eee;border-radius:2px;margin:2px 0 4px}.bar span{display:block;height:7px;border-radius:2px}
.head{display:flex;justify-content:space-between;align-items:flex-start;gap:12px;flex-wrap:wrap}.rec{flex:0 0 auto}.ok{color:#2e7d32;font-weight:bold}.bad{color:#c0392b;font-weight:bold}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;font-size:13px}
ul.priv li{margin:3px 0}
"""


def _data_uri(rgb):
    return "data:image/png;base64," + base64.b64encode(_png(rgb)).decode()


class _HtmlReport:
    """Renders each section of the content to HTML; every string from data or settings is escaped."""

    config = {"displaylogo": False, "responsive": True}

    def __init__(self, content):
        from rerelrp import plots

        self.c = content
        self.plots = plots
        self.names = content["task_names"]
        self.safe_names = [html.escape(n) for n in self.names]  # plotly shows its strings as (limited) HTML

    def fig(self, figure):
        return figure.to_html(include_plotlyjs=False, full_html=False, config=self.config)

    def render(self):
        import plotly.offline

        e = html.escape
        ws = self.c["workspace"]
        parts = [f"<header class='top'><h1>{e(self.c['title'])}</h1><div class='muted'>workspace "
                 f"<b>{e(str(ws.get('name')))}</b> (snapshot {e(str(ws.get('snapshot')))}, saved "
                 f"{e(str(ws.get('saved_at')))}) · report generated {e(self.c['generated_at'])}</div></header>",
                 "<nav><ol>" + "".join(f"<li><a href='#{k}'>{e(t)}</a></li>" for k, t in SECTIONS) + "</ol></nav>"]
        parts += [f"<p class='note'>{e(note)}</p>" for note in self.c["notes"]]
        for key, title in SECTIONS:
            parts.append(f"<h2 id='{key}'>{e(title)}</h2>" + getattr(self, key)())
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{e(self.c['title'])}</title><style>{_CSS}</style>"
                f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body><main>"
                + "\n".join(parts) + "</main></body></html>\n")

    def summary(self):
        s, e = self.c["summary"], html.escape
        cards = "".join(f"<div class='card'>{e(label)}<b>{e(value)}</b></div>" for label, value in _cards(s))
        return f"<div class='cards'>{cards}</div><p class='muted'>network {e(s['net'])}, trained on {e(str(s['device']))}</p>"

    def tasks(self):
        e = html.escape
        rows = []
        for t in self.c["tasks"]:
            shown, more = _short_files(t["files"])
            files = "<br>".join(f"{e(f['path'])} ({f['bytes']} B)<br><code>sha256 {e(f['sha256'])}</code>" for f in shown)
            files += f"<br>… and {more} more file(s)" if more else ""
            fp = f"<br><code>test pixels sha256 {e(t['test_fingerprint'])}</code>" if t["test_fingerprint"] else ""
            rows.append(f"<tr><td>{t['index']}</td><td>{e(t['name'])}</td><td>{e(', '.join(t['classes']))}</td>"
                        f"<td>{e(t['source'])}<br><span class='muted'>{e(t['origin'] or t['kind'])}</span></td>"
                        f"<td class='num'>{_sizes(t)}</td><td>{e(str(t['image_shape']))}</td><td>{files or '–'}{fp}</td></tr>")
        return ("<table><tr><th>#</th><th>task</th><th>classes</th><th>source</th><th>train / val / test</th>"
                "<th>image</th><th>input files and hashes</th></tr>" + "".join(rows) + "</table>")

    def settings(self):
        e = html.escape
        items = list(self.c["settings"].items())
        half = (len(items) + 1) // 2
        tables = ["<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in chunk) + "</table>"
                  for chunk in (items[:half], items[half:])]
        return f"<div class='two'>{tables[0]}{tables[1]}</div>"

    def accuracy(self):
        acc, plots = self.c["accuracy"], self.plots
        if not acc["tag"]:
            return "<p>No metrics were saved with this workspace.</p>"
        f = acc["final"]
        out = ("<p class='muted'>Row i: after learning task i; column j: test split of task j. TAg: the model "
               "recognises the task itself; TAw: the task is given.</p><div class='two'><div>"
               + self.fig(plots.accuracy_matrix_figure(acc["tag"], self.safe_names, "TAg accuracy (%)")) + "</div><div>"
               + self.fig(plots.accuracy_matrix_figure(acc["taw"], self.safe_names, "TAw accuracy (%)")) + "</div></div>"
               "<h3>Forgetting</h3><table><tr><th></th><th>final accuracy (%)</th><th>forgetting (points)</th></tr>"
               f"<tr><th>TAg</th><td class='num'>{_pct(f.get('tag'))}</td><td class='num'>{_pct(f.get('forgetting_tag'))}</td></tr>"
               f"<tr><th>TAw</th><td class='num'>{_pct(f.get('taw'))}</td><td class='num'>{_pct(f.get('forgetting_taw'))}</td></tr>"
               f"</table><p class='muted'>{_FORGETTING}</p>")
        if acc["recognized"]:
            out += ("<h3>Task recognition after the last task</h3><table><tr><th>task</th>"
                    + "".join(f"<th>{i}: {n}</th>" for i, n in enumerate(self.safe_names)) + "</tr><tr><th>recognised (%)</th>"
                    + "".join(f"<td class='num'>{_pct(v)}</td>" for v in acc["recognized"][-1]) + "</tr></table>")
        return out

    def capacity(self):
        cap, plots, e = self.c["capacity"], self.plots, html.escape
        out = ""
        if cap["rows"]:
            figure = plots.capacity_figure(cap["rows"], self.safe_names, min_free=cap["min_free"])
            figure.update_layout(legend=dict(y=-0.32))  # keep the legend clear of the axis title
            out += self.fig(figure)
            out += ("<table><tr><th>layer</th><th>units</th>" + "".join(f"<th>kept by {i}</th>" for i in range(len(self.names)))
                    + "<th>shared</th><th>free</th></tr>" + "".join(
                        f"<tr><td>{e(r['layer'])}</td><td class='num'>{r['units']}</td>"
                        + "".join(f"<td class='num'>{k}</td>" for k in r["kept_by_task"])
                        + f"<td class='num'>{r['shared']}</td><td class='num'>{r['free']} ({r['free_share']:.0%})</td></tr>"
                        for r in cap["rows"]) + "</table>")
            grown = _growth(cap["grown"])
            out += f"<p class='muted'>{e(grown)}</p>" if grown else ""
            if len(cap["history"]) > 1:
                out += self.fig(plots.capacity_history_figure(cap["history"], self.safe_names, min_free=cap["min_free"]))
        if self.c["seconds"]:
            out += self.fig(plots.timings_figure(self.c["seconds"], self.safe_names))
        return out or "<p>No capacity information.</p>"

    def samples(self):
        e = html.escape
        if not self.c["samples"]:
            return "<p>No sample images were chosen for this report.</p>"
        colors = self.plots.task_colors(len(self.names))
        out = [f"<p class='muted'>{_SAMPLES_INTRO}</p>"]
        for k, smp in enumerate(self.c["samples"]):
            verdict = ("" if smp["correct"] is None else
                       " <span class='ok'>correct</span>" if smp["correct"] else " <span class='bad'>wrong</span>")
            truth = ("" if smp["true_task"] is None else
                     f"true: task {smp['true_task']} ({e(self.names[smp['true_task']])}), class {e(smp['true_class'])} · ")
            cells = [f"<div class='cell'><b>input</b><br>as the network sees it"
                     f"<img alt='input' src='{_data_uri(smp['input'])}'></div>"]
            for sub in smp["subnets"]:
                m, p = sub["task"], smp["p_task"][sub["task"]]
                units = ", ".join(f"{e(layer)}#{u}" for layer, u, _ in sub["top_units"])
                chosen = " style='font-weight:bold'" if m == smp["pred_task"] else ""
                cells.append(
                    f"<div class='cell'><span{chosen}>sub-network {m}: {e(sub['task_name'])}</span><br>P<sub>T</sub> = "
                    f"{p:.2f}<div class='bar'><span style='width:{100 * p:.0f}%;background:{colors[m]}'></span></div>"
                    f"predicts <b>{e(sub['class'])}</b> (p {sub['prob']:.2f})"
                    f"<img alt='heatmap' src='{_data_uri(_rgb_heatmap(sub['heatmap']))}'>"
                    f"<img alt='overlay' src='{_data_uri(_rgb_heatmap(sub['heatmap'], smp['input'], True))}'>"
                    f"<span class='muted'>top units: {units}</span></div>")
            recognition = self.plots.recognition_figure(smp["p_task"], self.safe_names, "Task recognition P<sub>T</sub>")
            recognition.update_layout(height=210, width=min(640, max(320, 75 * len(self.names) + 80)))
            figure = recognition.to_html(include_plotlyjs=False, full_html=False,
                                         config=self.config | {"displayModeBar": False})
            out.append(f"<div class='sample'><div class='head'><div><h3>Sample {k + 1}: {e(smp['origin'])}</h3><p>{truth}"
                       f"predicted: task {smp['pred_task']} ({e(self.names[smp['pred_task']])}), class "
                       f"<b>{e(smp['pred_class'])}</b>{verdict}</p></div><div class='rec'>{figure}</div></div>"
                       f"<div class='grid'>{''.join(cells)}</div></div>")
        return "".join(out)

    def software(self):
        e, sw = html.escape, self.c["software"]
        return ("<div class='two'><table><tr><th>package</th><th>saved with</th><th>report made with</th></tr>"
                + "".join(f"<tr><td>{e(k)}</td><td>{e(a)}</td><td>{e(b)}</td></tr>" for k, a, b in _versions(sw))
                + "</table><table><tr><th>seed / setting</th><th>value</th></tr>"
                + "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in _seeds(sw)) + "</table></div>")

    def privacy(self):
        e, pv = html.escape, self.c["privacy"]
        return ("<p>The workspace stores:</p><ul class='priv'>" + "".join(f"<li>{e(x)}</li>" for x in pv["stored"])
                + "</ul><p>It does not store:</p><ul class='priv'>" + "".join(f"<li>{e(x)}</li>" for x in pv["not_stored"])
                + f"</ul><p><b>This report:</b> {e(pv['report'])}. It is one self-contained file: opening it loads "
                "nothing from the network.</p>")


def render_html(content):
    """One self-contained HTML document: plotly.js inlined once, images as data: URIs, no external reference."""
    return _HtmlReport(content).render()


# ------------------------------------------------------------------------------------ texts shared by both formats
_FORGETTING = ("Forgetting: mean over earlier tasks of the best accuracy before the last task minus the final "
               "accuracy (FACIL's definition).")
_SAMPLES_INTRO = ("For each image: the recognition confidence P_T of every task (the chain of recognisers; the chosen "
                  "task is outlined) and the input relevance of every sub-network, started at the class that "
                  "sub-network predicts. Red: evidence for that class, blue: against it; each heatmap is scaled to its "
                  "own largest magnitude. The overlay blends the relevance over the input.")


def _cards(s):
    final = s["final"]
    return [("tasks learned", str(s["n_tasks"])), ("final TAg", f"{_pct(final.get('tag'))} %"),
            ("final TAw", f"{_pct(final.get('taw'))} %"), ("task recognition", f"{_pct(s['task_recognition'])} %"),
            ("forgetting TAg / TAw", f"{_pct(final.get('forgetting_tag'))} / {_pct(final.get('forgetting_taw'))}")]


def _sizes(t):
    return " / ".join(str(t["sizes"].get(k, "?")) for k in ("train", "val", "test"))


def _growth(grown):
    steps = [f"before task {i}: " + ", ".join(f"{k} +{v}" for k, v in g.items()) for i, g in enumerate(grown) if g]
    return ("Layers grown (units added): " + "; ".join(steps) + ".") if steps else ""


def _versions(sw):
    keys = list(dict.fromkeys(list(sw["saved_with"]) + list(sw["report_with"])))
    return [(k, str(sw["saved_with"].get(k, "-")), str(sw["report_with"].get(k, "-"))) for k in keys]


def _seeds(sw):
    return list(sw["seeds"]) + [("trained on", str(sw["saved_device"])), ("heatmaps computed on", str(sw["report_device"])),
                                ("LRP composite", str(sw["composite"])), ("workspace format", str(sw["format_version"]))]


# ------------------------------------------------------------------------------------ PDF
_FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
    ("/Library/Fonts/Arial Unicode.ttf", "/Library/Fonts/Arial Unicode.ttf"),
    ("/System/Library/Fonts/Supplemental/Arial.ttf", "/System/Library/Fonts/Supplemental/Arial Bold.ttf"),
    ("C:/Windows/Fonts/arial.ttf", "C:/Windows/Fonts/arialbd.ttf"),
]
_ASCII = {"–": "-", "—": "-", "−": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "≤": "<=", "≥": ">=",
          "✓": "ok", "✗": "x", "→": "->", "⚠": "!", "\u00a0": " "}
ACCENT = (76, 120, 168)
GREY = (217, 217, 217)


def find_unicode_font():
    """(regular, bold) TTF paths of a Unicode font, or None (then the PDF falls back to latin-1 core fonts).

    ``RERELRP_PDF_FONT`` (and ``RERELRP_PDF_FONT_BOLD``) name a TTF to use instead.
    """
    env = os.environ.get("RERELRP_PDF_FONT")
    if env and Path(env).is_file():
        bold = os.environ.get("RERELRP_PDF_FONT_BOLD", env)
        return env, bold if Path(bold).is_file() else env
    for regular, bold in _FONT_CANDIDATES:
        if Path(regular).is_file():
            return regular, bold if Path(bold).is_file() else regular
    return None


class _Text:
    """Makes any string printable in the chosen font: unknown characters become close ASCII or '?'."""

    def __init__(self, cmap=None):
        self.cmap = cmap  # code points of the TTF font; None: latin-1 core font

    def ok(self, ch):
        if ch == "\n":
            return True
        if self.cmap is None:
            return ord(ch) < 256 and ch.isprintable()
        return ord(ch) in self.cmap and ch.isprintable()

    def __call__(self, text):
        out = []
        for ch in str(text):
            if self.ok(ch):
                out.append(ch)
                continue
            sub = _ASCII.get(ch)
            if sub is None:
                base = "".join(c for c in unicodedata.normalize("NFKD", ch) if self.ok(c) and not unicodedata.combining(c))
                sub = base or ("" if unicodedata.category(ch) in ("Cf", "Cc") else "?")
            out.append(sub)
        return "".join(out)


def _pdf_class():
    from fpdf import FPDF

    class ReportPDF(FPDF):
        header_text = ""
        font_name = "helvetica"
        t = None

        def header(self):
            if self.page_no() == 1:
                return
            self.set_font(self.font_name, "", 7.5)
            self.set_text_color(120, 120, 120)
            self.set_xy(self.l_margin, 8)
            self.cell(0, 4, self.t(self.header_text), align="R")
            self.set_draw_color(200, 200, 200)
            self.line(self.l_margin, 13, self.w - self.r_margin, 13)
            self.set_y(17)

        def footer(self):
            self.set_y(-12)
            self.set_font(self.font_name, "", 7.5)
            self.set_text_color(120, 120, 120)
            self.cell(0, 5, self.t(f"rerelrp explanation report · page {self.page_no()}/{{nb}}"), align="C")

    return ReportPDF


class _PdfReport:
    """Draws each section of the content with fpdf2 (A4 portrait, mm): tables, bars and images."""

    def __init__(self, content, font=True):
        from rerelrp import plots

        self.c = content
        pdf = self.pdf = _pdf_class()(orientation="P", unit="mm", format="A4")
        pdf.set_margins(15, 17, 15)
        pdf.set_auto_page_break(True, margin=16)
        fonts = find_unicode_font() if font else None
        if fonts:
            from fontTools.ttLib import TTFont

            pdf.add_font("body", "", fonts[0])
            pdf.add_font("body", "B", fonts[1])
            pdf.font_name = "body"
            with TTFont(fonts[0], lazy=True) as ttf:
                self.t = _Text(set(ttf.getBestCmap()))
        else:
            pdf.font_name = "helvetica"
            self.t = _Text(None)
        pdf.t = self.t
        pdf.header_text = content["title"]
        pdf.set_title(self.t(content["title"]))
        pdf.set_creator("rerelrp")
        pdf.alias_nb_pages()
        self.W = pdf.w - pdf.l_margin - pdf.r_margin
        self.names = content["task_names"]
        self.colors = [_hex(c) for c in plots.task_colors(len(self.names))]

    # ---------------------------------------------------------------- drawing helpers
    def text(self, size=9, style="", color=(34, 34, 34)):
        self.pdf.set_font(self.pdf.font_name, style, size)
        self.pdf.set_text_color(*color)

    def heading(self, title):
        pdf = self.pdf
        if pdf.get_y() > pdf.h - 60:
            pdf.add_page()
        pdf.ln(4)
        pdf.start_section(self.t(title))
        self.text(13, "B", ACCENT)
        pdf.cell(0, 8, self.t(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_draw_color(*ACCENT)
        pdf.set_line_width(0.4)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + self.W, pdf.get_y())
        pdf.set_line_width(0.2)
        pdf.ln(2.5)

    def subheading(self, title):
        self.text(10, "B")
        self.pdf.cell(0, 6, self.t(title), new_x="LMARGIN", new_y="NEXT")

    def para(self, s, size=8.5, color=(60, 60, 60), style="", align="J"):
        self.text(size, style, color)
        self.pdf.multi_cell(self.W, size * 0.47, self.t(s), align=align, new_x="LMARGIN", new_y="NEXT")

    def table(self, header, rows, widths, aligns=None, size=7.5, line=4.2):
        """A table whose cells wrap; the header is repeated after a page break."""
        pdf, t = self.pdf, self.t
        aligns = aligns or ["L"] * len(header)

        def draw(cells, bold):
            pdf.set_font(pdf.font_name, "B" if bold else "", size)
            h = 1 + line * max(max(1, len(pdf.multi_cell(w, line, t(c), dry_run=True, output="LINES", padding=(0, 1))))
                               for c, w in zip(cells, widths))
            if pdf.get_y() + h > pdf.page_break_trigger:
                pdf.add_page()
                if not bold:
                    draw(header, True)
            x0, y0 = pdf.l_margin, pdf.get_y()
            x = x0
            pdf.set_draw_color(210, 210, 210)
            pdf.set_fill_color(238, 241, 245)
            for cell, w, a in zip(cells, widths, aligns):
                pdf.rect(x, y0, w, h, style="DF" if bold else "D")
                pdf.set_xy(x, y0 + 0.5)
                self.text(size, "B" if bold else "", (34, 34, 34))
                pdf.multi_cell(w, line, t(cell), align=a, padding=(0, 1), new_x="RIGHT", new_y="TOP")
                x += w
            pdf.set_xy(x0, y0 + h)

        draw(header, True)
        for row in rows:
            draw(row, False)
        pdf.ln(2)

    def image(self, rgb, x, y, size):
        self.pdf.image(_pil(rgb), x=x, y=y, w=size, h=size)

    # ---------------------------------------------------------------- sections
    def render(self):
        self.title_block()
        for key, title in SECTIONS:
            self.heading(title)
            getattr(self, key)()
        return bytes(self.pdf.output())

    def title_block(self):
        pdf, c, t = self.pdf, self.c, self.t
        pdf.add_page()
        pdf.set_fill_color(*ACCENT)
        pdf.rect(0, 0, pdf.w, 32, style="F")
        pdf.set_xy(pdf.l_margin, 8)
        self.text(18, "B", (255, 255, 255))
        pdf.cell(self.W, 9, t(c["title"]), new_x="LMARGIN", new_y="NEXT")
        self.text(8.5, "", (230, 236, 245))
        ws = c["workspace"]
        pdf.cell(self.W, 4.5, t("ReReLRP: replay-free continual learning that remembers and recognises tasks with "
                                "layer-wise relevance propagation"), new_x="LMARGIN", new_y="NEXT")
        pdf.cell(self.W, 4.5, t(f"workspace {ws.get('name')} · snapshot {ws.get('snapshot')} saved {ws.get('saved_at')} "
                                f"· report generated {c['generated_at']}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(36)
        for note in c["notes"]:
            self.para("Note: " + note, 8, (140, 100, 0))

    def summary(self):
        pdf, s = self.pdf, self.c["summary"]
        cards = _cards(s)
        cw, y = (self.W - 3 * (len(cards) - 1)) / len(cards), pdf.get_y()
        for i, (label, value) in enumerate(cards):
            x = pdf.l_margin + i * (cw + 3)
            pdf.set_fill_color(246, 248, 252)
            pdf.set_draw_color(215, 222, 235)
            pdf.rect(x, y, cw, 16, style="DF", round_corners=True, corner_radius=1.5)
            pdf.set_xy(x + 2, y + 1.5)
            self.text(7, "", (100, 100, 100))
            pdf.cell(cw - 4, 4, self.t(label))
            pdf.set_xy(x + 2, y + 6.5)
            self.text(13, "B", (30, 30, 30))
            pdf.cell(cw - 4, 7, self.t(value))
        pdf.set_y(y + 19)
        self.para(f"Network {s['net']}, trained on {s['device']}. TAg: task-agnostic accuracy (the model recognises the "
                  "task itself, then the class); TAw: task-aware accuracy (the task is given). Both in % of the test "
                  "images, averaged over tasks.")

    def tasks(self):
        rows = []
        for r in self.c["tasks"]:
            shown, more = _short_files(r["files"], 2)
            files = "\n".join(f"{f['path']} ({f['bytes']} B)\nsha256 {f['sha256']}" for f in shown)
            files += f"\n... and {more} more file(s)" if more else ""
            if r["test_fingerprint"]:
                files += ("\n" if files else "") + f"test pixels sha256 {r['test_fingerprint']}"
            origin = r["origin"] or r["kind"]
            rows.append([str(r["index"]), r["name"], ", ".join(r["classes"]), r["source"] + (f"\n{origin}" if origin else ""),
                         _sizes(r), files or "-"])
        self.table(["#", "task", "classes", "source", "train / val / test", "input files and hashes"], rows,
                   [7, 24, 30, 38, 20, self.W - 119], ["R", "L", "L", "L", "C", "L"], size=6.8, line=3.4)

    def settings(self):
        items = [(k, str(v)) for k, v in self.c["settings"].items()]
        half = (len(items) + 1) // 2
        left, right = items[:half], items[half:] + [("", "")] * (2 * half - len(items))
        W = self.W
        self.table(["setting", "value", "setting", "value"], [[a, b, c, d] for (a, b), (c, d) in zip(left, right)],
                   [W * 0.22, W * 0.28, W * 0.22, W * 0.28])

    def accuracy(self):
        pdf, acc = self.pdf, self.c["accuracy"]
        if not acc["tag"]:
            self.para("No metrics were saved with this workspace.")
            return
        self.para("Row i: after learning task i; column j: test split of task j (%). Cell colours follow the viridis "
                  "scale of the app's figures.")
        gap, h = 6, 6
        half = (self.W - gap) / 2
        cell = min(15, (half - 16) / max(1, len(self.names)))
        y0 = pdf.get_y() + 1
        if y0 + (len(acc["tag"]) + 2) * h > pdf.page_break_trigger:
            pdf.add_page()
            y0 = pdf.get_y()
        for k, (key, label) in enumerate((("tag", "TAg"), ("taw", "TAw"))):
            self.matrix(acc[key], f"{label} accuracy (%)", pdf.l_margin + k * (half + gap), y0, cell, h)
        pdf.set_y(y0 + 5 + (len(acc["tag"]) + 1) * h + 4)
        self.subheading("Forgetting")
        f = acc["final"]
        self.table(["", "final accuracy (%)", "forgetting (points)"],
                   [["TAg", _pct(f.get("tag")), _pct(f.get("forgetting_tag"))],
                    ["TAw", _pct(f.get("taw")), _pct(f.get("forgetting_taw"))]], [20, 40, 40], ["L", "R", "R"])
        self.para(_FORGETTING, 7.5)
        if acc["recognized"]:
            last = acc["recognized"][-1]
            pdf.ln(1)
            self.subheading("Task recognition after the last task")
            w = min(28, (self.W - 30) / max(1, len(last)))
            self.table(["task"] + [f"{i}: {n}" for i, n in enumerate(self.names)],
                       [["recognised (%)"] + [_pct(v) for v in last]], [30] + [w] * len(last), ["L"] + ["R"] * len(last),
                       size=7)

    def matrix(self, matrix, title, x0, y0, cell, h):
        """A lower-triangular accuracy matrix with viridis cell colours."""
        pdf, t = self.pdf, self.t
        self.text(8.5, "B")
        pdf.set_xy(x0, y0)
        pdf.cell(cell * len(self.names) + 16, 5, t(title))
        self.text(6.5, "B", (90, 90, 90))
        for j in range(len(self.names)):
            pdf.set_xy(x0 + 16 + j * cell, y0 + 5)
            pdf.cell(cell, h, t(f"task {j}"), align="C")
        for i, row in enumerate(matrix):
            y = y0 + 5 + (i + 1) * h
            pdf.set_xy(x0, y)
            self.text(6.5, "B", (90, 90, 90))
            pdf.cell(16, h, t(f"after {i}"))
            for j, value in enumerate(row):
                x = x0 + 16 + j * cell
                rgb, white = _viridis(value)
                pdf.set_fill_color(*rgb)
                pdf.set_draw_color(255, 255, 255)
                pdf.rect(x, y, cell, h, style="DF")
                pdf.set_xy(x, y)
                self.text(6.8, "", (255, 255, 255) if white else (20, 20, 20))
                pdf.cell(cell, h, f"{value:.1f}", align="C")

    def capacity(self):
        pdf, t, cap = self.pdf, self.t, self.c["capacity"]
        rows = cap["rows"]
        if not rows:
            self.para("No capacity information.")
            return
        self.para(f"Share of each layer's units first kept (and frozen) by each task, and the free share (grey). The "
                  f"dashed line marks the minimum free share ({cap['min_free']:.0%}) below which a layer grows before the "
                  "next task.")
        label_w, bar_h, gap = 22, 5.2, 2.2
        bar_w = self.W - label_w - 52
        if pdf.get_y() + len(rows) * (bar_h + gap) + 14 > pdf.page_break_trigger:
            pdf.add_page()
        top = y = pdf.get_y() + 1
        x0 = pdf.l_margin + label_w
        for r in rows:
            self.text(7.2, "", (40, 40, 40))
            pdf.set_xy(pdf.l_margin, y)
            pdf.cell(label_w - 1, bar_h, t(r["layer"]), align="R")
            x = x0
            for k, n in enumerate(r["new_by_task"]):
                if n:
                    pdf.set_fill_color(*self.colors[k])
                    pdf.rect(x, y, bar_w * n / r["units"], bar_h, style="F")
                x += bar_w * n / r["units"]
            pdf.set_fill_color(*GREY)
            pdf.rect(x, y, x0 + bar_w - x, bar_h, style="F")
            warn = r["free_share"] < cap["min_free"]
            self.text(6.8, "B" if warn else "", (192, 57, 43) if warn else (70, 70, 70))
            pdf.set_xy(x0 + bar_w + 1.5, y)
            pdf.cell(50, bar_h, t(f"{r['units']} units · free {r['free']} ({r['free_share']:.0%}) · shared {r['shared']}"))
            y += bar_h + gap
        xm = x0 + bar_w * (1 - cap["min_free"])
        pdf.set_draw_color(192, 57, 43)
        pdf.set_dash_pattern(dash=1, gap=1)
        pdf.line(xm, top - 1, xm, y - gap + 1)
        pdf.set_dash_pattern()
        y += 1
        x = x0
        for k, name in enumerate(self.names + ["free"]):
            label = t(f"task {k}: {name}" if k < len(self.names) else "free")
            self.text(6.8, "", (60, 60, 60))
            lw = pdf.get_string_width(label) + 7
            if x + lw > pdf.l_margin + self.W:
                x, y = x0, y + 4.5
            pdf.set_fill_color(*(self.colors[k] if k < len(self.names) else GREY))
            pdf.rect(x, y + 0.8, 3, 3, style="F")
            pdf.set_xy(x + 3.8, y)
            pdf.cell(lw - 4, 4.6, label)
            x += lw
        pdf.set_y(y + 7)
        grown = _growth(cap["grown"])
        if grown:
            self.para(grown, 7.5)

    def samples(self):
        if not self.c["samples"]:
            self.para("No sample images were chosen for this report.")
            return
        self.para(_SAMPLES_INTRO)
        for k, smp in enumerate(self.c["samples"]):
            self.sample(k, smp)

    def sample(self, k, smp):
        """Header line; columns: the input, then per sub-network P_T, its class, heatmap and overlay."""
        pdf, t, W = self.pdf, self.t, self.W
        T = len(self.names)
        per_row = min(T, 5)
        col = min(30, (W - 30) / max(1, per_row))
        img = col - 3
        row_h = 14 + 2 * img + 4
        n_rows = (T + per_row - 1) // per_row
        if pdf.get_y() + 10 + n_rows * row_h > pdf.page_break_trigger:
            pdf.add_page()
        y = pdf.get_y() + 1
        pdf.set_draw_color(215, 222, 235)
        pdf.set_fill_color(246, 248, 252)
        pdf.rect(pdf.l_margin, y, W, 6.5, style="DF")
        pdf.set_xy(pdf.l_margin + 2, y + 0.6)
        self.text(8.5, "B")
        pdf.cell(W * 0.45, 5.3, t(f"Sample {k + 1}: {smp['origin']}"))
        verdict = "" if smp["correct"] is None else ("  (correct)" if smp["correct"] else "  (wrong)")
        truth = "" if smp["true_task"] is None else f"true: task {smp['true_task']}, class {smp['true_class']} · "
        color = (60, 60, 60) if smp["correct"] is None else (46, 125, 50) if smp["correct"] else (192, 57, 43)
        self.text(7.5, "B" if smp["correct"] is False else "", color)
        pdf.set_xy(pdf.l_margin + W * 0.45, y + 0.6)
        pdf.cell(W * 0.55 - 2, 5.3, t(f"{truth}predicted: task {smp['pred_task']}, class {smp['pred_class']}{verdict}"),
                 align="R")
        y += 8.5
        x = pdf.l_margin
        self.text(7, "B", (60, 60, 60))
        pdf.set_xy(x, y)
        pdf.cell(28, 3.6, t("input"))
        self.text(6.2, "", (110, 110, 110))
        pdf.set_xy(x, y + 3.8)
        size = smp["input"].shape
        pdf.multi_cell(28, 3, t(f"as the network sees it ({size[0]} x {size[1]} px)"), align="L")
        self.image(smp["input"], x, y + 14, img)
        self.relevance_key(x, y + 14 + img + 1, img)
        for m, sub in enumerate(smp["subnets"]):
            r, c = divmod(m, per_row)
            self.subnet(sub, smp["p_task"][m], m == smp["pred_task"], smp["input"],
                        pdf.l_margin + 30 + c * col, y + r * row_h, img)
        pdf.set_y(y + n_rows * row_h)

    def subnet(self, sub, p, chosen, image, x, y, img):
        pdf, t, m = self.pdf, self.t, sub["task"]
        self.text(6.8, "B", (30, 30, 30))
        pdf.set_xy(x, y)
        pdf.cell(img, 3.6, t(f"sub-net {m}: {sub['task_name']}"))
        self.text(6.4, "B" if chosen else "", (30, 30, 30))
        pdf.set_xy(x, y + 3.8)
        pdf.cell(img, 3.2, t(f"P_T = {p:.2f}"))
        pdf.set_fill_color(235, 235, 235)
        pdf.rect(x, y + 7.3, img, 2, style="F")
        if p > 0:
            pdf.set_fill_color(*self.colors[m])
            pdf.rect(x, y + 7.3, img * p, 2, style="F")
        if chosen:
            pdf.set_draw_color(30, 30, 30)
            pdf.rect(x, y + 7.3, img, 2, style="D")
        self.text(6.4, "", (50, 50, 50))
        pdf.set_xy(x, y + 10)
        pdf.cell(img, 3.2, t(f"predicts {sub['class']} (p {sub['prob']:.2f})"))
        self.image(_rgb_heatmap(sub["heatmap"]), x, y + 14, img)
        self.image(_rgb_heatmap(sub["heatmap"], image, True), x, y + 14 + img + 1, img)

    def relevance_key(self, x, y, w):
        """What the two image rows show, and the colour key of relevance, under the input."""
        pdf, t = self.pdf, self.t
        self.text(6.2, "", (110, 110, 110))
        pdf.set_xy(x, y)
        pdf.multi_cell(w, 2.9, t("above: relevance heatmap\nbelow: heatmap over the input\n\nrelevance colour key"),
                       align="L")
        key = np.linspace(-1, 1, 101)[None, :].repeat(6, 0)
        pdf.image(_pil(_rgb_heatmap(key), enlarge=False), x=x, y=pdf.get_y() + 0.5, w=w, h=3)
        pdf.set_xy(x, pdf.get_y() + 3.8)
        for label, align in (("-max", "L"), ("0", "C"), ("+max", "R")):
            pdf.cell(w / 3, 3, t(label), align=align)

    def software(self):
        W = self.W
        self.table(["package", "saved with", "report made with"], [list(v) for v in _versions(self.c["software"])],
                   [W * 0.22, W * 0.39, W * 0.39], size=7)
        self.table(["seed / setting", "value"], [list(v) for v in _seeds(self.c["software"])], [W * 0.4, W * 0.6], size=7)

    def privacy(self):
        pv = self.c["privacy"]
        self.para("The workspace stores:", 8.5, (30, 30, 30), "B")
        for x in pv["stored"]:
            self.para("•  " + x, 8, align="L")
        self.pdf.ln(1)
        self.para("It does not store:", 8.5, (30, 30, 30), "B")
        for x in pv["not_stored"]:
            self.para("•  " + x, 8, align="L")
        self.pdf.ln(1)
        self.para("This report: " + pv["report"] + ". The PDF was made without a browser and written in one piece; no "
                  "image was written anywhere else.", 8, (30, 30, 30))


def render_pdf(content, font=True):
    """The report as PDF bytes (fpdf2, no browser). ``font=False`` forces latin-1 core fonts."""
    return _PdfReport(content, font).render()


def _pil(rgb, enlarge=True):
    """A PIL image for fpdf2, enlarged with nearest neighbours so that viewers show sharp pixels."""
    from PIL import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    image = Image.fromarray(rgb)
    scale = max(1, int(round(160 / max(rgb.shape[:2])))) if enlarge else 1
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


# ------------------------------------------------------------------------------------ one call
def make_report(workspace, out, fmt="html", samples=None, composite=None, device=None, data_root=None, title=None,
                per_task=DEFAULT_PER_TASK, limit=DEFAULT_MAX_SAMPLES):
    """Open ``workspace``, pick the samples, build and write the report to ``out`` (atomically).

    ``samples``: None (a few test images per task when the data sources are available), a list of
    specs (``"TASK:INDEX"``, image paths, ``["none"]``) or a list of :class:`Sample`. Returns a summary dict.
    """
    from rerelrp.workspace import load_workspace, resolve_workspace

    if fmt not in ("html", "pdf"):
        raise ConfigError(f"report format must be html or pdf, not '{fmt}'")
    clock = time.perf_counter()
    path = resolve_workspace(workspace)
    learner, metrics, meta = load_workspace(path, device=device)
    if samples is not None and all(isinstance(s, Sample) for s in samples):
        chosen, notes = list(samples), []
    else:
        chosen, notes = resolve_samples(samples, learner, meta, data_root, per_task, limit)
    content = build_report(learner, metrics, meta, chosen, composite=composite, title=title, notes=notes)
    data = render_html(content).encode("utf-8") if fmt == "html" else render_pdf(content)
    write_bytes_atomic(out, data)
    return {"path": str(out), "workspace": str(path), "format": fmt, "bytes": len(data), "n_samples": len(chosen),
            "notes": notes, "seconds": time.perf_counter() - clock}
