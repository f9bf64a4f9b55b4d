"""Explanation reports of a saved workspace: one self-contained HTML file or a PDF.

The content is built once (:mod:`.content`, plain data) and rendered twice, so both formats say
the same: :mod:`.html` fills a Jinja2 template that inlines plotly.js once and every image as a
``data:`` URI, so the file opens offline and fetches nothing; :mod:`.pdf` draws tables, bars and
images with fpdf2 (no browser). The only images a report holds are the samples the user chose
(and the heatmaps computed from them); they are never written anywhere else, not even to a
temporary file. :func:`make_report` does it all in one call (the ``rerelrp report`` command).
"""
from __future__ import annotations

import os
import time

from rerelrp.errors import ConfigError, DataError, WorkspaceError
from rerelrp.fileio import write_bytes_atomic
from rerelrp.report.content import SECTIONS, TITLES, build_report
from rerelrp.report.fonts import find_unicode_font
from rerelrp.report.html import render_html
from rerelrp.report.pdf import render_pdf
from rerelrp.report.samples import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_PER_TASK,
    Sample,
    default_sample_refs,
    resolve_samples,
    test_sample,
)
from rerelrp.run.compare import read_comparison
from rerelrp.store.workspace import load_workspace, notes_for, read_notes, resolve_workspace

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_PER_TASK",
    "SECTIONS",
    "TITLES",
    "Sample",
    "build_report",
    "default_sample_refs",
    "find_unicode_font",
    "make_report",
    "render_html",
    "render_pdf",
    "resolve_samples",
    "test_sample",
]


def make_report(workspace, out, fmt="html", samples=None, composite=None, device=None, title=None,
                per_task=DEFAULT_PER_TASK, limit=DEFAULT_MAX_SAMPLES, comparison=None):
    """Open ``workspace``, pick the samples, build and write the report to ``out`` (atomically).

    ``samples``: None (no images; a note names the data the workspace records), a list of specs
    (``"TASK:INDEX"``, ``["auto"]``, image paths, ``["none"]``) or a list of :class:`Sample`.
    Returns a summary dict. Each learned task records the file its data came from (see
    :func:`rerelrp.data.reload_tasks`): it is read, checked against its hashes, only for
    ``TASK:INDEX`` and ``auto``. ``comparison``: a
    ``compare.json`` to show (default: the workspace's own, written by the app's Compare page).
    """

    if fmt not in ("html", "pdf"):
        raise ConfigError(f"report format must be html or pdf, not '{fmt}'")
    clock = time.perf_counter()
    path = resolve_workspace(workspace)
    learner, metrics, meta = load_workspace(path, device=device)
    if samples is not None and all(isinstance(s, Sample) for s in samples):
        chosen, notes = list(samples), []
    else:
        chosen, notes = resolve_samples(samples, learner, meta, per_task, limit)

    shown = read_comparison(comparison) if comparison else None
    if shown is None and os.path.lexists(path / "compare.json"):  # the workspace's own: a file someone sent
        try:
            shown = read_comparison(path / "compare.json", follow_links=False)
        except DataError as exc:
            notes = [*notes, f"the workspace's comparison is not shown: {exc}"]
    try:
        task_notes = notes_for(read_notes(path), [t["name"] for t in learner.tasks_])
    except WorkspaceError as exc:
        task_notes, notes = (), [*notes, f"the notes on the tasks are not shown: {exc}"]
    content = build_report(learner, metrics, meta, chosen, composite=composite, title=title, notes=notes,
                           comparison=shown, task_notes=task_notes)
    data = render_html(content).encode("utf-8") if fmt == "html" else render_pdf(content)
    write_bytes_atomic(out, data)
    return {"path": str(out), "workspace": str(path), "format": fmt, "bytes": len(data), "n_samples": len(chosen),
            "notes": notes, "seconds": time.perf_counter() - clock}
