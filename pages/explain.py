"""Explain: the LRP heatmap of every task's sub-network for one image, side by side."""
import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from pages.common import image_key, model_page, plot, show_error
from rerelrp.data.geometry import square
from rerelrp.errors import RerelrpError
from rerelrp.figures.image_figures import heatmap_figure
from rerelrp.figures.plots import task_colors
from rerelrp.lrp.concepts import concepts
from rerelrp.lrp.relevance import COMPOSITES
from rerelrp.method.modality import apply_modality, read_image_with_modality, scope_texts
from rerelrp.text import md

state = model_page(
    "Explain",
    "Which pixels make each task's sub-network predict its class: red speaks for the predicted class, "
    "blue against it (LRP).",
    "Explanations are available",
)

learner = state.learner
names = [t["name"] for t in learner.tasks_]

# ------------------------------------------------------------------------------ the input
controls, view = st.columns([1, 3], gap="medium")
image, truth, truth_task, label, modality = None, None, None, "", None
with controls:
    options = (["Test image of a task"] if state.tasks else []) + ["Upload"]  # an opened workspace may lack its data
    source = st.radio("Image", options, key="ex_source", horizontal=True)
    if source.startswith("Test"):
        tasks = state.tasks
        t = st.selectbox("Task", range(len(tasks)), format_func=lambda i: f"{i}: {tasks[i].name}", key="ex_task")
        split = tasks[t].test
        n = len(split)
        if not 0 <= st.session_state.get("ex_index", 0) < n:
            st.session_state["ex_index"] = 0
        if st.button("Random sample", key="ex_random", icon=":material/shuffle:"):
            st.session_state["ex_index"] = int(np.random.default_rng().integers(n))
        index = st.number_input(f"Sample (0–{n - 1})", 0, n - 1, key="ex_index")
        image = split.images[int(index)]
        truth, truth_task = tasks[t].class_names[int(split.labels[int(index)])], t
        label = f"task {t} ({md(tasks[t].name)}) test #{index}, true class **{md(truth)}**"
    else:
        upload = st.file_uploader("PNG, JPEG or DICOM file", key="ex_upload")
        if upload is not None:
            try:
                image, modality = read_image_with_modality(upload.getvalue(), upload.name, dicom_size=learner.input_size_)
                image = square(image)  # the learner resizes
                label = f"upload **{md(upload.name)}**"
            except RerelrpError as exc:
                show_error(exc, "Cannot use this file: ")
            except Exception as exc:  # noqa: BLE001 - a bad file never ends the session
                show_error(exc, "Cannot use this file: ")
    composite = st.selectbox("LRP composite", COMPOSITES, index=COMPOSITES.index(learner.composite),
                             key="ex_composite")
    overlay = st.toggle("Overlay on the image", value=True, key="ex_overlay")
    shared = st.toggle("One colour scale for all panels", value=False, key="ex_shared",
                       help="Off: each panel is scaled to its own largest magnitude. On: all panels share the largest, "
                            "so that a weak sub-network looks weak")
    top_k = st.slider("Most relevant units", 3, 15, 5, key="ex_topk")

if image is None:
    with view:
        st.info("Choose a test image or upload one.", icon=":material/image:")
    st.stop()

# ------------------------------------------------------------------------------ the explanation
try:
    ex = state.cached(("explain", image_key(image), composite, top_k),
                      lambda: learner.explain(image[None], composite=composite, top_k=top_k))
except RerelrpError as exc:
    show_error(exc)
    st.stop()

T = learner.n_tasks
titles = []
predicted = []
for m in range(T):
    cls = learner.tasks_[m]["classes"][int(ex.subnet_class[0, m])]
    predicted.append(cls)
    mark = "" if truth_task != m else (" ✓" if cls == truth else f" ✗ (true: {truth})")
    titles.append(f"task {m} → {cls} ({ex.subnet_prob[0, m]:.2f}){mark}")
# the task-agnostic answer from the same LRP pass; a DICOM modality no task has is out of scope (on a copy: cached)
recognised = apply_modality(dataclasses.replace(ex.prediction), [modality], learner.tasks_)
with view:
    st.markdown(f"Input: {label}. Composite **{ex.composite}**.")
    if recognised.out_of_scope[0]:
        st.error(f"**None of the learned tasks**: {md(scope_texts(recognised)[0])}. The heatmaps show what each "
                 "sub-network would look at, but no answer below is to be trusted.", icon=":material/block:")
    elif T > 1:
        r = int(recognised.task[0])
        answer = learner.tasks_[r]["classes"][int(recognised.local_class[0])]
        if truth_task is not None and truth_task < T:
            right = r == truth_task and answer == truth
            st.markdown(("✓ **Right**" if right else f"✗ **Wrong**: the true answer is task {truth_task}, class "
                         f"{md(truth)}") + " (task-agnostic answer below).")
        st.markdown(f"Without the task label the model answers **task {r} ({md(names[r])}), class "
                    f"{md(answer)}** "
                    f"(P_T = {recognised.p_task[0, r]:.2f}, scope score {recognised.scope_score[0]:.2f})"
                    + ("" if ex.composite == learner.composite else
                       f"; read with {ex.composite}, the recognisers were fitted with {learner.composite}")
                    + ".")
    chosen = None if recognised.out_of_scope[0] else int(recognised.task[0])
    plot(heatmap_figure(image, ex.heatmaps[0], titles, overlay=overlay, chosen=chosen, shared_scale=shared),
         key="ex_heatmaps")
    st.caption(("▶ and a frame mark the sub-network of the task the model recognised. " if chosen is not None else "")
               + ("One colour scale for all panels: their colours compare." if shared else
                  "Each panel is scaled to its own largest magnitude: compare where, not how strongly."))

st.subheader("Most relevant units per sub-network")
colors = task_colors(T)
cols = st.columns(min(T, 5))
for m in range(T):
    with cols[m % len(cols)]:
        st.markdown(f':color[■]{{foreground="{colors[m]}"}} **task {m}** · {md(names[m])} → {md(predicted[m])}')
        st.dataframe(pd.DataFrame(ex.top_units[0][m], columns=["layer", "unit", "relevance"]),
                     hide_index=True, width="stretch", column_config={"relevance": st.column_config.NumberColumn(format="%.4f")})

# ------------------------------------------------------------------------------ concepts (CRP)
st.subheader("What the most relevant units respond to")
st.caption("For one sub-network: each of its most relevant units with its own heatmap on this image (CRP: the "
           "explanation passed through that unit only; its pixels sum to the unit's relevance) and the patches "
           "of the task's images, loaded in this session, where the unit is most active. Computed on request, "
           "kept in memory only.")
c1, c2 = st.columns([2, 1])
concept_task = c1.selectbox("Sub-network", range(T), index=chosen if chosen is not None else 0,
                            format_func=lambda m: f"task {m}: {names[m]}", key="ex_concept_task")
own_images = state.tasks[concept_task].train.images if concept_task < len(state.tasks) else np.zeros((0, 1, 1, 1))
if c2.button("Show what they respond to", key="ex_concepts", icon=":material/lightbulb:"):
    st.session_state["ex_concepts_for"] = (image_key(image), concept_task, composite, top_k)
if st.session_state.get("ex_concepts_for") == (image_key(image), concept_task, composite, top_k):
    pairs = [(layer, unit) for layer, unit, _ in ex.top_units[0][concept_task]]
    try:
        found = state.cached(("concepts", image_key(image), concept_task, composite, top_k),
                             lambda: concepts(learner, image, concept_task, pairs, own_images[:2000], composite=composite))
    except RerelrpError as exc:
        show_error(exc)
        st.stop()
    if not len(own_images):
        st.caption("No reference patches: this task's images are not loaded in this session (Data page).")
    for concept in found:
        left, right = st.columns([2, 3])
        with left:
            st.markdown(f"**{md(concept.layer)} unit {concept.unit}** · relevance {concept.relevance:.3f}")
            plot(heatmap_figure(image, [concept.heatmap], [f"{concept.layer} #{concept.unit} on this image"],
                                overlay=overlay), key=f"ex_concept_{concept.layer}_{concept.unit}")
        if concept.references:
            right.markdown("where it is most active in the task's images")
            right.image([square(p, 96) for p in concept.references], width=96,
                        caption=[f"#{k + 1}" for k in range(len(concept.references))])
