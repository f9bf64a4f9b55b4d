"""Recognize: which task does an image belong to, which class, and the heatmap behind the answer."""
import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from pages.common import image_key, model_page, plot, show_error
from rerelrp.data.images import network_inputs, stack_images
from rerelrp.errors import RerelrpError
from rerelrp.figures.image_figures import heatmap_figure
from rerelrp.figures.plots import recognition_figure, reliability_figure
from rerelrp.method.modality import apply_modality, read_image_with_modality, scope_texts
from rerelrp.run.calibration import describe_calibration, task_reliability
from rerelrp.text import md

state = model_page(
    "Recognize",
    "Without being told the task, the recognisers' chain gives every task a confidence P_T; the most "
    "confident task's sub-network names the class. The scope score asks whether the image belongs to any "
    "learned task at all: above 1, none of the learned tasks claims it.",
    "Recognition is available",
)

learner = state.learner
T = learner.n_tasks
with st.expander("What P_T and the scope score mean", icon=":material/help:"):
    rate = learner.scope_rate
    st.markdown(
        "**P_T** is how sure the model is that an image belongs to task T. After each task, a recogniser learned "
        "to tell that task's images from those of the tasks after it. The recognisers are asked in task order: "
        "task 0's takes its share, task 1's a share of the rest, and so on; the newest task takes what is left. "
        "The P_T of all tasks add up to 1. The answer is the class that the most probable task's sub-network "
        "predicts. A P_T near 1 means one task clearly claims the image; several middling values mean the "
        "recognisers disagree, and the answer is a guess between those tasks.\n\n"
        f"{describe_calibration(learner.p_task_temperature_, state.run.metrics)}\n\n"
        f"**The scope score** asks whether the image looks like any learned task at all. For each task, it is "
        f"how far the image lies from that task's own images (the activations of the task's kept units, and "
        f"simple image statistics), divided by the distance that only {rate:.0%} of the "
        f"task's validation images exceed. The score is the smallest of these over the tasks. At 0.95 the image "
        f"is as close to its nearest task as most of that task's own images. At 1.05 it is a little further than "
        f"all but {rate:.0%} of them, so it is called *none of the learned tasks*. Near 1, either way, the call is "
        f"close. Far above 1 (2, 5) no task has seen anything like it. By design, about {rate:.0%} of a task's own "
        "images also score above 1."
    )
    if T > 1 and len(state.tasks) >= T and st.button("Measure how well P_T is calibrated", key="rec_calibrate",
                                                     icon=":material/straighten:",
                                                     help="On the validation images of every learned task"):
        st.session_state["rec_calibration"] = state.version
    if st.session_state.get("rec_calibration") == state.version:
        rel = state.cached(("calibration",), lambda: task_reliability(learner, state.tasks, "val"))
        st.markdown(f"On {rel.n} validation images of the {T} learned tasks, the task is recognised for "
                    f"{rel.recognised:.1%}. Expected calibration error (ECE) of the largest P_T: **{rel.ece:.3f}**. "
                    "It is the mean gap between a bin's P_T and how often its task is right, weighted by the "
                    "bin's images: 0 would mean P_T = 0.8 is right 8 times in 10. Bars above the line: P_T is "
                    "too modest there; below it, too sure. Bars carry their 95 % interval (Wilson).")
        plot(reliability_figure(rel), key="rec_reliability")
names = [t["name"] for t in learner.tasks_]
size = learner.input_size_

# ------------------------------------------------------------------------------ inputs
left, right = st.columns([3, 2], gap="medium")
with left:
    uploads = st.file_uploader("PNG, JPEG or DICOM images (one or many)", accept_multiple_files=True, key="rec_upload")
with right:
    st.markdown("**or** try test images of the planned tasks")
    if not state.tasks:
        st.caption(md(state.data_note or "No task data loaded."))
    else:
        n_test = st.slider("How many", 1, 64, 8, key="rec_n")
        learned_only = st.checkbox("Only tasks learned so far", value=True, key="rec_learned")
        if st.button("Use test images", key="rec_test", icon=":material/casino:"):
            rng = np.random.default_rng()
            pool = min(T, len(state.tasks)) if learned_only else len(state.tasks)
            picks = []
            for _ in range(n_test):
                t = int(rng.integers(pool))
                i = int(rng.integers(len(state.tasks[t].test)))
                picks.append((t, i))
            st.session_state["rec_picks"] = picks
        if st.session_state.get("rec_picks") and st.button("Clear test images", key="rec_clear"):
            st.session_state["rec_picks"] = []

items = []  # (label, image, true task, true class name)
modalities = []  # per item: its DICOM header's Modality; None for PNG, JPEG and test images
for upload in uploads or []:
    try:
        image, modality = read_image_with_modality(upload.getvalue(), upload.name, dicom_size=learner.input_size_)
        items.append((upload.name, image, None, None))
        modalities.append(modality)
    except RerelrpError as exc:
        show_error(exc, "Skipped: ")
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the others
        show_error(exc, f"Skipped {upload.name}: ")
for t, i in st.session_state.get("rec_picks", []):
    if t < len(state.tasks) and i < len(state.tasks[t].test):
        task = state.tasks[t]
        items.append((f"test {t}:{i}", task.test.images[i], t, task.class_names[int(task.test.labels[i])]))
        modalities.append(None)

if not items:
    st.info("Upload images or use test images.", icon=":material/image_search:")
    st.stop()

# ------------------------------------------------------------------------------ recognition
NONE_OF_THEM = "none of the learned tasks"
batch = stack_images([im for _, im, _, _ in items], size)  # for display
inputs = network_inputs([im for _, im, _, _ in items], size)  # each image resized on its own: the same answer in any company


def explain_one(image):
    """Heatmaps (and, from the same LRP pass, the prediction) of one image, cached per model version."""
    return state.cached(("explain", image_key(image), learner.composite, 5),
                        lambda: learner.explain(image[None], top_k=5))


try:
    single = explain_one(inputs[0]) if len(inputs) == 1 else None
    if single is not None and getattr(single, "prediction", None) is not None:
        pred = single.prediction  # one image: one pass gives both the heatmaps and the recognition
    else:
        pred = state.cached(("predict", image_key(inputs)), lambda: learner.predict(inputs))
except RerelrpError as exc:
    show_error(exc)
    st.stop()
# an image whose DICOM header names a modality no learned task has is out of scope (on a copy: the cache keeps its own)
pred = apply_modality(dataclasses.replace(pred), modalities, learner.tasks_)
reasons = scope_texts(pred)


def verdict(flagged, learned, task_right, class_right):
    """Right or wrong for a test image (true task and class known); a task not learned yet should be flagged."""
    if not learned:
        return "✓ right (flagged: task not learned)" if flagged else "✗ not flagged (task not learned)"
    if flagged:
        return "✗ flagged out of scope"
    if not task_right:
        return "✗ wrong task"
    return "✓ right" if class_right else "✗ wrong class"


rows = []
for k, (label, _, true_task, true_class) in enumerate(items):
    t = int(pred.task[k])
    row = {
        "file": label,
        "answer": NONE_OF_THEM if pred.out_of_scope[k] else f"task {t}",
        "scope score": round(float(pred.scope_score[k]), 2),
        "scope reason": reasons[k],
        "task": t,
        "task name": names[t],
        "class": learner.tasks_[t]["classes"][int(pred.local_class[k])],
        "P_T": round(float(pred.p_task[k, t]), 3),
        **{f"P_T {m}": round(float(pred.p_task[k, m]), 3) for m in range(T)},
    }
    if true_task is not None:
        row["true task"] = true_task
        row["true class"] = true_class
        row["result"] = verdict(bool(pred.out_of_scope[k]), true_task < T, t == true_task, row["class"] == true_class)
    rows.append(row)
table = pd.DataFrame(rows)
KEY_COLUMNS = ["file", "answer", "class", "P_T", "result", "true task", "true class", "scope score", "scope reason",
               "task", "task name"]  # what is read first stays left of the wide per-task columns
table = table[[c for c in KEY_COLUMNS if c in table] + [c for c in table if c not in KEY_COLUMNS]]

st.subheader(f"{len(items)} image(s)")
if "true task" in table:
    known = table.dropna(subset=["true task"])
    learned_rows = known[known["true task"] < T]
    if len(learned_rows):
        hit = (learned_rows["true task"] == learned_rows["task"]).mean()
        st.caption(f"Test images of learned tasks: task recognised for {hit:.0%} of {len(learned_rows)}.")
flagged = int(pred.out_of_scope.sum())
if flagged:
    st.warning(f"{flagged} of {len(items)} image(s): **{NONE_OF_THEM}** (scope score above 1, or a DICOM modality "
               "no learned task has). Their task and class below are only the closest guess; do not trust them.",
               icon=":material/help:")
elif np.isnan(pred.scope_score).all():
    st.caption("No scope check: this model was saved without it (rerelrp 0.2.0) or without activation features.")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"task name": st.column_config.TextColumn("task name", width="medium"),
                            **{f"P_T {m}": st.column_config.ProgressColumn(f"P_T {m}", min_value=0.0, max_value=1.0,
                                                                           format="%.2f") for m in range(T)}})
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="recognition.csv",
                   mime="text/csv", icon=":material/download:", key="rec_csv")

# ------------------------------------------------------------------------------ one image in detail
st.subheader("Why")
choice = st.selectbox("Image", range(len(items)), format_func=lambda k: items[k][0], key="rec_choice") \
    if len(items) > 1 else 0
if choice >= len(items):
    choice = 0
t = int(pred.task[choice])
cls = rows[choice]["class"]
c1, c2 = st.columns([2, 3], gap="medium")
with c1:
    score = float(pred.scope_score[choice])
    if pred.out_of_scope[choice]:
        why = (f"{reasons[choice]}; scope score {score:.2f}" if pred.scope_reason[choice] else
               f"scope score {score:.2f} > 1: no learned task's sub-network has seen images like it")
        st.error(f"**{md(items[choice][0])}**: **{NONE_OF_THEM}** ({md(why)}). "
                 f"Closest guess: task {t}: {md(names[t])}, class {md(cls)}.", icon=":material/block:")
    else:
        st.markdown(f"**{md(items[choice][0])}** → task **{t}: {md(names[t])}**, class **{md(cls)}** "
                    f"(P_T = {pred.p_task[choice, t]:.2f}, scope score {score:.2f})")
    plot(recognition_figure(pred.p_task[choice], names), key="rec_bars")
with c2:
    image = batch[choice]
    overlay = st.toggle("Overlay on the image", value=True, key="rec_overlay")
    try:
        ex = explain_one(inputs[choice])
        p = ex.subnet_prob[0, t]
        plot(heatmap_figure(image, [ex.heatmaps[0, t]], [f"task {t} → {cls} ({p:.2f})"], overlay=overlay),
             key="rec_heatmap")
    except RerelrpError as exc:
        show_error(exc)
