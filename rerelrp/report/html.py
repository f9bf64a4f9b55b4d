"""The report as one self-contained HTML file, rendered from a Jinja2 template.

The markup lives in ``templates/report.html.j2`` and the template engine escapes every value
(``autoescape``), so a task or class name from someone's data cannot inject markup. Only what this
module made itself is marked safe: plotly.js (inlined once), the figures' ``<div>``/``<script>``
snippets (plotly escapes the strings in its JSON) and PNG ``data:`` URIs, so the file opens offline
and fetches nothing.
"""
from __future__ import annotations

import base64
from functools import cache

from markupsafe import Markup

import rerelrp.report.content as text
from rerelrp.data.images import encode_png
from rerelrp.figures import plots
from rerelrp.figures.display_images import heatmap_rgb
from rerelrp.figures.plots import task_colors
from rerelrp.report.content import sections
from rerelrp.report.samples import scope_reason, verdict
from rerelrp.report.study import NOT_RECORDED, PER_CLASS_COLUMNS

CONFIG = {"displaylogo": False, "responsive": True}


@cache
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("rerelrp.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = text.pct
    env.filters["verdict"] = verdict
    env.filters["scope_reason"] = scope_reason
    return env


def _figure(figure, **config):
    """A plotly figure as an HTML snippet that uses the page's single copy of plotly.js."""
    return Markup(figure.to_html(include_plotlyjs=False, full_html=False, config=CONFIG | config))


def _data_uri(rgb):

    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode()


def _figures(content):
    """Every plotly figure of the report, by the place it takes in the template."""

    # plotly shows its strings as (limited) HTML: rerelrp.figures.plots escapes every name from the data itself
    names = list(content["task_names"])
    acc, cap = content["accuracy"], content["capacity"]
    figures = dict.fromkeys(("tag", "taw", "capacity", "history", "timings"), "")
    if acc["tag"]:
        figures["tag"] = _figure(plots.accuracy_matrix_figure(acc["tag"], names, "TAg accuracy (%)"))
        figures["taw"] = _figure(plots.accuracy_matrix_figure(acc["taw"], names, "TAw accuracy (%)"))
    if cap["rows"]:
        figure = plots.capacity_figure(cap["rows"], names, min_free=cap["min_free"])
        figure.update_layout(legend=dict(y=-0.32))  # keep the legend clear of the axis title
        figures["capacity"] = _figure(figure)
    if cap["rows"] and len(cap["history"]) > 1:
        figures["history"] = _figure(plots.capacity_history_figure(cap["history"], names, min_free=cap["min_free"]))
    if content["seconds"]:
        figures["timings"] = _figure(plots.timings_figure(content["seconds"], names))
    clinical = content["clinical"]
    figures["confusion"] = [
        _figure(plots.confusion_heatmap(t["confusion"], t["classes"], f"Task {t['index']}: task-aware confusion matrix"))
        if t["confusion"] and len(t["confusion"]) == len(t["classes"]) else ""
        for t in clinical["tasks"]]
    figures["confusion_tag"] = ""
    if clinical["tag_confusion"]:
        figures["confusion_tag"] = _figure(plots.confusion_heatmap(
            clinical["tag_confusion"], clinical["tag_classes"], "Task-agnostic confusion matrix, all classes seen"))
    figures["memory"] = ""
    if content.get("comparison"):
        figures["memory"] = _figure(plots.memory_figure(content["comparison"]["memory"]))
    figures["recognition"] = []
    for smp in content["samples"]:
        recognition = plots.recognition_figure(smp["p_task"], names, "Task recognition P_T")
        recognition.update_layout(height=210, width=min(640, max(320, 75 * len(names) + 80)))
        figures["recognition"].append(_figure(recognition, displayModeBar=False))
    return figures


def _samples(content):
    """Per sample: the input and, per sub-network, its heatmap and overlay as data: URIs."""

    out = []
    for smp in content["samples"]:
        subnets = [sub | {"heatmap_uri": _data_uri(heatmap_rgb(sub["heatmap"])),
                          "overlay_uri": _data_uri(heatmap_rgb(sub["heatmap"], smp["input"], overlay=True)),
                          "p": smp["p_task"][sub["task"]]}
                   for sub in smp["subnets"]]
        out.append(smp | {"input_uri": _data_uri(smp["input"]), "subnets": subnets})
    return out


def render_html(content):
    """One self-contained HTML document: plotly.js inlined once, images as data: URIs, no external reference."""
    import plotly.offline


    settings = list(content["task_settings"]["run"])
    half = (len(settings) + 1) // 2
    return _environment().get_template("report.html.j2").render(
        c=content,
        sections=sections(content),
        titles=text.TITLES,
        plotlyjs=Markup(plotly.offline.get_plotlyjs()),
        figures=_figures(content),
        samples=_samples(content),
        colors=task_colors(len(content["task_names"])),
        cards=text.cards(content["summary"]),
        files=[text.short_files(t["files"]) for t in content["tasks"]],
        sizes=[text.sizes(t) for t in content["tasks"]],
        settings=(settings[:half], settings[half:]),
        growth=text.growth(content["capacity"]["grown"], content["capacity"]["room"]),
        versions=text.versions(content["software"]),
        seeds=text.seeds(content["software"]),
        forgetting=text.FORGETTING,
        samples_intro=f"{text.SAMPLES_INTRO} {content['p_task_calibration']}",
        per_class_columns=PER_CLASS_COLUMNS,
        not_recorded=NOT_RECORDED,
    )
