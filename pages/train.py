"""Train: add the next task in the background, follow its phases live, see the accuracy matrices."""
import numpy as np
import pandas as pd
import streamlit as st

from pages.common import get_state, job_heading, plot, setting_widget, show_error, step_seconds, task_names
from rerelrp.device import available_devices
from rerelrp.errors import RerelrpError
from rerelrp.figures.plots import accuracy_matrix_figure, confusion_heatmap, timings_figure, train_curve_figure
from rerelrp.method.estimate import describe_plan, training_plan
from rerelrp.progress import PHASES
from rerelrp.run.clinical import format_accuracy, per_class_table
from rerelrp.run.jobs import ordered_phases, phase_fraction
from rerelrp.settings import GROUPS, SETTINGS, network_input_size
from rerelrp.text import md

LIVE_REFRESH_S = 2.0
PHASE_TITLES = {
    "train": "Training",
    "relevance": "Unit relevance (LRP)",
    "prune": "Pruning search",
    "recognizer": "Recognisers",
    "eval": "Testing",
    "done": "Done",
}

state = get_state()
st.title("Train")


def _room(room):
    """The task table's cell for making room (``rerelrp.method.room``)."""
    if not room or not room.get("dropped"):
        return "–"
    return f"{room['dropped']} units freed" if room["accepted"] else f"tried, undone ({room['acc']:.1f} %)"


def ece_caption(metrics, n_test):
    """The test ECE of the P_T the model shows, and whether it was calibrated ("" for an older metrics.json)."""
    ece = metrics.p_task_ece[-1] if metrics.p_task_ece else None
    if ece is None:
        return ""
    record = metrics.calibration[-1] if metrics.calibration else None
    how = f"calibrated on validation images, temperature {record['temperature']:.2f}" if record else "raw"
    return (f" P_T ({how}): expected calibration error {ece:.3f} on the {n_test} test images (0: a P_T of 0.8 "
            "is right 8 times in 10).")


def input_side(task):
    """The side the network reads: fixed once a task is learned, else from the setting and this task's images."""
    return state.learner.input_size_ if state.n_learned else network_input_size(state.settings["input_size"],
                                                                                   task.train.images.shape[1])


def plan_for(task):
    """The schedule the next task will run with the saved settings, and its time estimate."""
    p, history = state.settings, state.learner.history_ if state.n_learned else []
    try:
        timed = None if history else step_seconds(p, input_side(task))
    except RerelrpError:
        timed = None
    return training_plan(p, len(task.train), history, timed)


learned, planned = state.n_learned, len(state.tasks)
next_task = state.pending[0] if state.pending else None
c1, c2, c3 = st.columns([2, 1, 3])
c1.metric("Device", state.describe_device())
c2.metric("Tasks learned", f"{learned} / {planned}")
c3.metric("Next task", f"{learned}: {md(next_task.name)}" if next_task else "none planned",
          help=f"classes {md(' | '.join(next_task.class_names))}" if next_task else "Plan more tasks on the Data page")
if next_task:
    loaded = next_task.train.images.shape[1]
    side = input_side(next_task)
    resized = "as loaded" if side == loaded else f"resized from {loaded} px"
    st.caption(f"Next: **{md(next_task.name)}**, classes {md(' | '.join(next_task.class_names))} "
               f"({len(next_task.train)} training images of {loaded} px); the network reads {side} px ({resized}); "
               "what it costs is in the estimate below.")

# ------------------------------------------------------------------------------ workspace
busy = state.busy
w1, w2 = st.columns([3, 2])
if learned == 0 and not busy:
    name = w1.text_input("Workspace", state.workspace.name, key="ws_name",
                         help="Every learned task is saved here (under ./workspaces), so a closed tab or a restart "
                              "loses nothing. Open saved workspaces on the Data page.")
    if name != state.workspace.name:
        try:
            state.set_workspace(name)
        except RerelrpError as exc:
            show_error(exc)
else:
    w1.markdown(f"**Workspace** {md(state.workspace)}: every learned task is saved here.")
if not state.can_learn:
    st.warning(f"This workspace cannot learn more tasks yet: {md(state.data_note)}. Explain, Capacity, Recognize and "
               "Report work as usual; where the files are named, the Data page loads them when you ask.",
               icon=":material/warning:")

# ------------------------------------------------------------------------------ settings
# one widget per learner setting, drawn from rerelrp.settings (the CLI's options come from the same table)
s = state.settings
locked = learned > 0
PER_ROW = 5
devices = available_devices()
with st.form("settings", border=True):
    st.markdown("**Settings**" + (" · the network settings are fixed by the first task" if locked else ""))
    values = {}
    for group, title in GROUPS.items():
        members = [x for x in SETTINGS.values() if x.group == group]
        place = st if group in ("network", "training") else st.expander(title)
        for row in range(0, len(members), PER_ROW):  # rows of at most PER_ROW widgets stay readable
            chunk = members[row : row + PER_ROW]
            for column, setting in zip(place.columns(PER_ROW), chunk):
                choices = devices if setting.name == "device" else None
                values[setting.name] = setting_widget(column, setting, s[setting.name], locked and setting.fixed,
                                                      choices)
    if next_task:
        st.caption("Next task: " + describe_plan(plan_for(next_task)))
    f1, f2, f3, _ = st.columns([1, 1, 1, 2])
    add_one = f1.form_submit_button("Add next task", type="primary", icon=":material/add_circle:",
                                    disabled=busy or next_task is None or not state.can_learn)
    add_all = f2.form_submit_button("Learn all remaining", icon=":material/fast_forward:",
                                    disabled=busy or next_task is None or not state.can_learn)
    check = f3.form_submit_button("Apply and estimate", icon=":material/timer:", disabled=busy,
                                  help="Keep these settings and show what the next task will run and how long it takes")

if add_one or add_all or check:
    try:
        if locked:
            values = {k: v for k, v in values.items() if not SETTINGS[k].fixed}
        state.update_settings(**values)
        if not check:
            state.start_training(1 if add_one else None)
        st.session_state["_train_watch"] = True
    except RerelrpError as exc:
        show_error(exc)
    else:
        st.rerun()  # redraw with the buttons disabled and the live progress shown


# ------------------------------------------------------------------------------ live progress
# Polling is kept slow and light: on a 2-core machine every redraw competes with training for the CPU
# and the interpreter lock (a redraw every 0.7 s with a live chart made a demo task 6x slower).
@st.fragment(run_every=LIVE_REFRESH_S if state.busy else None)
def live_progress():
    job = state.job
    if job is None:
        return
    if state.job_kind != "train":
        if job.running:
            st.info("A comparison of methods is running (Compare page); tasks can be added when it ends.",
                    icon=":material/compare_arrows:")
        return
    snap = job.snapshot()
    if snap.running:
        st.session_state["_train_watch"] = True
        with st.container(border=True):
            task = state.tasks[snap.task] if 0 <= snap.task < len(state.tasks) else None
            job_heading(state, job, snap, f"Training task {snap.task}: {task.name}" if task else "Preparing", "train",
                        "Stops between batches; the model stays exactly as before this task")
            seen = ordered_phases(snap.events)
            current = seen.index(snap.phase) if snap.phase in seen else -1
            for phase in list(PHASES) + [p for p in seen if p not in PHASES and p != "done"]:
                event = snap.events.get(phase)
                title = PHASE_TITLES.get(phase, phase)
                if event is None:
                    st.progress(0.0, text=f"{title}: waiting")
                    continue
                done = phase in seen and seen.index(phase) < current
                st.progress(1.0 if done else phase_fraction(event),
                            text=f"{title}: {event.message or f'{event.step}/{event.total}'}")
            if snap.curve:
                last = snap.curve[-1]
                st.caption(f"Epoch {last['epoch']}: loss {last['loss']:.3f}, train acc {last['train_acc']:.1f} %, "
                           f"val acc {last['val_acc']:.1f} % (the curve is shown when the task is done)")
        return
    if st.session_state.pop("_train_watch", False):
        st.rerun()  # the job just ended: draw the results of the new model
    if snap.state == "stopped":
        st.warning(f"Stopped. {md(snap.error)}. Tasks learned: {state.n_learned}.", icon=":material/stop_circle:")
    elif snap.state == "failed":
        st.error(f"Training failed: {md(snap.error)}", icon=":material/error:")
        if snap.trace:
            with st.expander("Details"):
                st.code(snap.trace)
    elif snap.state == "done" and snap.results:
        last = snap.results[-1]
        st.success(f"Learned task {last.task} ({md(last.name)}) in {sum(last.seconds.values()):.1f} s.",
                   icon=":material/check_circle:")
    if snap.log:
        with st.expander("Log of the last job"):
            st.code("\n".join(snap.log[-60:]), language=None)


live_progress()

# ------------------------------------------------------------------------------ results
if not learned:
    st.info("Nothing learned yet: press **Add next task**. The line above the buttons says what the next task will "
            "run and about how long it takes on this machine.", icon=":material/info:")
    st.stop()

metrics = state.run.metrics
names = task_names(state)
final = metrics.final()
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("TAg accuracy", f"{final['tag']:.1f} %", help="Task-agnostic: the model recognises the task itself")
m2.metric("TAw accuracy", f"{final['taw']:.1f} %", help="Task-aware: the true task's sub-network decides")
m3.metric("Forgetting (TAg)", f"{final['forgetting_tag']:.1f}", help="Mean drop from the best earlier accuracy")
m4.metric("Forgetting (TAw)", f"{final['forgetting_taw']:.1f}",
          help="0 means old sub-networks are preserved bit for bit")
m5.metric("Task recognition", f"{metrics.task_recognition[-1]:.1f} %", help="Test images whose task is recognised")
n_test = sum(metrics.latest.get("n_test", []))
st.caption(f"Final TAg {format_accuracy(final['tag'], final.get('tag_ci95'), n_test)}; TAw "
           f"{format_accuracy(final['taw'], final.get('taw_ci95'), n_test)}. Intervals: Wilson per task, a seeded "
           "bootstrap for the mean over tasks (resampling patients where the split is by patient)."
           + ece_caption(metrics, n_test))

tab_acc, tab_clinical, tab_tasks, tab_time = st.tabs(["Accuracy matrices", "Clinical figures", "Per task", "Timings"])
with tab_clinical:
    if not metrics.latest.get("per_class"):
        st.info("This run was saved before per-class figures existed; learn another task to see them.",
                icon=":material/info:")
    else:
        latest = metrics.latest
        j = st.selectbox("Task", range(learned), index=learned - 1, format_func=lambda i: f"{i}: {names[i]}",
                         key="clinical_task")
        st.markdown(f"**Task-aware** (task {j}'s sub-network on its own test images): TAw "
                    f"{format_accuracy(metrics.acc_taw[-1][j], latest['taw_ci95'][j], latest['n_test'][j])}, "
                    f"balanced accuracy {latest['balanced_accuracy_taw'][j]:.1f} %.")
        left, right = st.columns([2, 3])
        classes = state.learner.tasks_[j]["classes"]
        with left:
            plot(confusion_heatmap(latest["confusion"]["taw"][j], classes, f"Task {j}: true × predicted"),
                 key="confusion_taw")
        with right:
            st.dataframe(pd.DataFrame(per_class_table(latest["per_class"][j])), hide_index=True, width="stretch")
            st.caption("Per class, one against the rest, with 95 % intervals (Wilson; AUROC by bootstrap; F1 is shown "
                       "without one). PPV and NPV depend on how common each class is in this test set.")
        all_classes = [f"{t['name']}: {c}" for t in state.learner.tasks_ for c in t["classes"]]
        st.markdown("**Task-agnostic** (the model also recognises the task): every class seen so far.")
        plot(confusion_heatmap(latest["confusion"]["tag"], all_classes, "All tasks: true × predicted"),
             key="confusion_tag")
with tab_acc:
    left, right = st.columns(2)
    with left:
        plot(accuracy_matrix_figure(metrics.acc_tag, names, "TAg accuracy (%)"), key="tag_matrix")
    with right:
        plot(accuracy_matrix_figure(metrics.acc_taw, names, "TAw accuracy (%)"), key="taw_matrix")
    recog = metrics.recognized[-1] if metrics.recognized else []
    st.caption("Row *i*: after learning task *i*; column *j*: tested on task *j*. Task recognition of the last row: "
               + ", ".join(f"{md(names[j])} {v:.0f} %" for j, v in enumerate(recog)))
with tab_tasks:
    rows = []
    for h in state.learner.history_:
        prune, ran = h.prune, h.schedule
        rows.append({
            "#": h.task,
            "task": h.name,
            "val acc (%)": round(prune["val_acc_full"], 1),
            "after pruning (%)": round(prune["val_acc_kept"], 1),
            "epochs run": ran.get("epochs"),
            "steps": ran.get("steps"),
            "epochs set": h.settings.get("epochs"),
            "min steps": h.settings.get("min_steps"),
            "lr": h.settings.get("lr"),
            "batch": h.settings.get("batch_size"),
            "units kept": sum(prune["kept_units"].values()),
            "grown": ", ".join(f"{k} +{v}" for k, v in h.grown.items()) or "–",
            "made room": _room(prune.get("room")),
            "seconds": round(sum(h.seconds.values()), 1),
            "stored KiB": round(h.stored_bytes / 1024, 1),
            "classes": " | ".join(h.classes),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    *earlier, last = state.learner.history_
    for w in last.warnings:
        st.warning(f"Task {last.task} ({md(last.name)}): {md(w)}", icon=":material/warning:")
    older = sum(len(h.warnings) for h in earlier)
    if older:
        with st.expander(f"Warnings of the earlier tasks ({older})"):
            for h in earlier:
                for w in h.warnings:
                    st.markdown(f"- task {h.task} ({md(h.name)}): {md(w)}")
    choice = st.selectbox("Training curve of", range(learned), index=learned - 1,
                          format_func=lambda i: f"{i}: {names[i]}", key="curve_task")
    curve = state.learner.history_[choice].train_curve
    if curve:
        plot(train_curve_figure(curve, title=f"Task {choice}: {names[choice]}"), key="curve")
with tab_time:
    plot(timings_figure(metrics.seconds, names), key="timings")
    total = np.sum([sum(s.values()) for s in metrics.seconds])
    st.caption(f"Total {total:.1f} s on {state.describe_device()}; eval = testing on every learned task.")

with st.expander("Notes on the learned tasks"):
    st.caption("Your own words on a task (why it was added, what was odd about its data). They are kept in the "
               "workspace and carried into reports; they are never read by the model.")
    c1, c2 = st.columns([1, 3])
    noted = c1.selectbox("Task", range(learned), format_func=lambda i: f"{i}: {names[i]}", key="note_task")
    current = state.task_notes[noted]
    text = c2.text_area("Note", current, key=f"note_text_{noted}", max_chars=4000)
    if st.button("Save note", key="note_save", icon=":material/edit_note:", disabled=text == current):
        try:
            state.set_note(noted, text)
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)

with st.expander("Undo the last task"):
    st.write("Return the model to what it was before the last task was learned: the snapshot the workspace saved "
             "then, bit for bit. The undone task becomes the next planned task again.")
    if st.button("Undo last task", key="undo", disabled=busy or learned < 2, icon=":material/undo:",
                 help="Needs two learned tasks; the first task is undone with Start over"):
        try:
            result = state.undo_last_task()
            st.success(f"Undid {md(result['undone'])}: {result['n_tasks']} task(s) learned.", icon=":material/undo:")
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)

with st.expander("Start over"):
    st.write("Forget the trained model and start a new run over the same task plan (data stay loaded).")
    if st.button("New run", key="reset", disabled=busy, icon=":material/restart_alt:"):
        try:
            state.reset()
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)
