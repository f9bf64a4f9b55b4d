"""Report: export the current model as a self-contained HTML or PDF explanation report.

The report is built in memory and handed to the browser as a download: the images chosen here
are the only images it holds, and nothing is written on this machine unless you save it.
"""
import time

import numpy as np
import streamlit as st

from pages.common import model_page, show_error
from rerelrp.errors import RerelrpError
from rerelrp.lrp.relevance import COMPOSITES
from rerelrp.method.modality import read_image_with_modality
from rerelrp.report import DEFAULT_MAX_SAMPLES, Sample, build_report, default_sample_refs, render_html, render_pdf, test_sample
from rerelrp.text import md

MIME = {"html": "text/html", "pdf": "application/pdf"}
CANDIDATES_PER_CLASS = 5

state = model_page(
    "Report",
    "Task sequence and data provenance, settings, accuracy matrices and forgetting, capacity per layer, "
    "recognition confidence and relevance heatmaps of the images you choose, software versions, seeds and a "
    "privacy statement: one HTML file that opens offline, or a PDF.",
    "Reports can be exported",
)
learner = state.learner

left, right = st.columns([3, 2], gap="medium")
with left:
    refs = []
    if state.tasks:
        candidates = [(t, int(i)) for t in range(learner.n_tasks)  # the first few test images of every class
                      for c in np.unique(state.tasks[t].test.labels)
                      for i in np.flatnonzero(state.tasks[t].test.labels == c)[:CANDIDATES_PER_CLASS]]
        default = default_sample_refs(state.tasks, learner, per_task=2, limit=DEFAULT_MAX_SAMPLES)

        def describe(ref):
            t, i = ref
            task = state.tasks[t]
            return f"task {t} ({task.name}) test #{i}, class {task.class_names[int(task.test.labels[i])]}"

        refs = st.multiselect("Test images", candidates, default=[r for r in default if r in candidates],
                              format_func=describe, key="rep_refs")
    else:
        st.caption(md(state.data_note or "No task data loaded: add images by upload."))
    uploads = st.file_uploader("Your own images (PNG, JPEG or DICOM)", accept_multiple_files=True, key="rep_uploads")
with right:
    fmt = st.radio("Format", ["html", "pdf"], horizontal=True, key="rep_format",
                   format_func=lambda f: {"html": "HTML (interactive, self-contained)", "pdf": "PDF"}[f])
    composite = st.selectbox("LRP composite of the heatmaps", COMPOSITES,
                             index=COMPOSITES.index(learner.composite), key="rep_composite")
    title = st.text_input("Title", f"Explanation report: {state.workspace.name}", key="rep_title")
    build = st.button("Build report", type="primary", icon=":material/description:", key="rep_build")

if build:
    samples = [test_sample(state.tasks, learner, t, i) for t, i in refs]
    for upload in uploads or []:
        try:
            image, modality = read_image_with_modality(upload.getvalue(), upload.name, dicom_size=learner.input_size_)
            samples.append(Sample(image, f"file {upload.name}", modality=modality))
        except RerelrpError as exc:
            show_error(exc, "Skipped: ")
    try:
        clock = time.perf_counter()
        with st.spinner(f"Explaining {len(samples)} image(s) and writing the {fmt.upper()} …"):
            task_notes = tuple(state.task_notes)
            content = state.cached(("report", fmt, composite, title, tuple(refs), tuple(u.file_id for u in uploads or []),
                                    id(state.comparison), task_notes),
                                   lambda: build_report(learner, state.run.metrics, state.report_meta(), samples,
                                                        task_notes=task_notes,
                                                        composite=composite, title=title,
                                                        comparison=state.comparison))
            data = render_html(content).encode("utf-8") if fmt == "html" else render_pdf(content)
        st.session_state["rep_file"] = (fmt, data, len(samples), time.perf_counter() - clock)
    except RerelrpError as exc:
        show_error(exc)

ready = st.session_state.get("rep_file")
if ready:
    fmt_done, data, n, seconds = ready
    st.success(f"Report ready: {len(data) / 1024:.0f} KiB, {n} sample image(s), built in {seconds:.1f} s.",
               icon=":material/check_circle:")
    st.download_button(f"Download report.{fmt_done}", data, file_name=f"{state.workspace.name}-report.{fmt_done}",
                       mime=MIME[fmt_done], icon=":material/download:", key="rep_download")
