"""What every page shares: the long-lived app state, error display, small drawing helpers.

The state (data sets, task plan, trained run, background job) is one
:class:`rerelrp.app.session.AppState` kept by ``st.cache_resource``, so a browser reload (a new
Streamlit session) finds the trained model again. ``RERELRP_APP_KEY`` selects another state
(tests use a fresh one); ``RERELRP_APP_SETTINGS`` (JSON) overrides learner defaults, e.g.
``{"epochs": 1}``; ``RERELRP_WORKSPACES`` is where workspaces are saved (default ``./workspaces``);
``RERELRP_APP_DEMO`` is the demo the app opens on: ``medical`` (default), ``digits`` or ``none``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import streamlit as st
from streamlit.errors import StreamlitDuplicateElementKey
from streamlit.runtime.scriptrunner import get_script_run_ctx

from rerelrp.app.session import AppState
from rerelrp.errors import RerelrpError
from rerelrp.store.workspace import is_workspace, list_workspaces
from rerelrp.text import md

PAGES = {
    "data": "pages/data.py",
    "train": "pages/train.py",
    "explain": "pages/explain.py",
    "capacity": "pages/capacity.py",
    "recognize": "pages/recognize.py",
    "report": "pages/report.py",
    "compare": "pages/compare.py",
}
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"], "toImageButtonOptions": {"format": "png"}}


def env_settings():
    text = os.environ.get("RERELRP_APP_SETTINGS", "").strip()
    return json.loads(text) if text else {}


@st.cache_resource(show_spinner="Starting ReReLRP: loading the demo data …", max_entries=4)
def _state(key: str) -> AppState:
    demo = os.environ.get("RERELRP_APP_DEMO", "medical").strip().lower()
    return AppState(settings=env_settings(), demo=None if demo in ("", "none") else demo,
                    workspace_root=os.environ.get("RERELRP_WORKSPACES") or None)


def get_state() -> AppState:
    """The one state of this app process (shared by browser tabs, kept across reloads), acting as this tab.

    The tab is named by its Streamlit session, so that what it changes is logged as its own, and
    the first call of a script run says what other tabs changed since this tab last looked
    (:mod:`rerelrp.app.activity`).
    """
    state = _state(os.environ.get("RERELRP_APP_KEY", "default"))
    ctx = get_script_run_ctx()
    state.activity.acting_as(ctx.session_id if ctx is not None else None)
    if ctx is not None:
        other_tabs_notice(state)
    return state


NOTICE_SECONDS = 30.0  # how long a notice stays after this tab first showed it: a quick click does not lose it


def other_tabs_notice(state):
    """Say what other browser tabs changed in the shared state since this tab opened, for a while after each change.

    A change is shown on every page run for ``NOTICE_SECONDS`` after its first showing. The app
    and the page both ask for the state in one run; the container's key says it once.
    """
    baseline = st.session_state.setdefault("_notice_baseline", state.activity.last)  # older ones are not news
    shown, now = st.session_state.setdefault("_notice_shown", {}), time.monotonic()
    news = [c for c in state.activity.by_others(baseline) if now - shown.setdefault(c.seq, now) < NOTICE_SECONDS]
    for seq in [seq for seq in shown if now - shown[seq] >= 10 * NOTICE_SECONDS]:
        del shown[seq]  # long said: forget it (it is also past the log's bound by then, or ignored as shown)
        st.session_state["_notice_baseline"] = max(st.session_state["_notice_baseline"], seq)
    if not news:
        return
    try:
        box = st.container(key="other_tabs_notice")
    except StreamlitDuplicateElementKey:
        return  # already said in this run
    with box:
        for change in news:
            who = "Another browser tab" if change.actor is not None else "A script"
            st.info(f"{who} {md(change.what)} at {change.clock}.", icon=":material/tab:")


def started_by(state, job):
    """Which tab started ``job`` and when, in words."""
    clock = time.strftime("%H:%M:%S", time.localtime(job.started_at)) if job.started_at else "?"
    return f"started by {state.activity.who(job.owner)} at {clock}"


def setting_widget(container, setting, value, disabled=False, choices=None):
    """The input widget of one learner setting (a :class:`rerelrp.settings.Setting`), keyed by its name."""
    common = dict(help=setting.help, disabled=disabled, key=setting.name)
    if setting.kind is bool:
        return container.toggle(setting.title, bool(value), **common)
    if setting.choices is not None:
        options = list(choices or setting.choices)
        return container.selectbox(setting.title, options, index=options.index(value) if value in options else 0,
                                   **common)
    if setting.kind is int:
        low = 0 if setting.zero_means else int(setting.low)
        return int(container.number_input(setting.title, low, int(setting.high), int(value), step=1, **common))
    high = setting.high - 1e-3 if setting.open_high else setting.high
    return float(container.number_input(setting.title, float(setting.low), float(high), float(value), format="%g",
                                        **common))


@st.cache_data(show_spinner="Timing a training step…", max_entries=16)
def _timed_step(net, input_size, batch_size, device, lr, momentum):
    from rerelrp.method.estimate import measure_step_seconds

    return measure_step_seconds({"net": net, "input_size": input_size, "batch_size": batch_size, "device": device,
                                 "lr": lr, "momentum": momentum})


def step_seconds(settings, input_size):
    """Seconds per training step of a fresh network at ``input_size`` with these settings (timed once, cached)."""
    return _timed_step(settings["net"], int(input_size), settings["batch_size"], settings["device"], settings["lr"],
                       settings["momentum"])


def show_error(exc, prefix=""):
    """A user-caused error as ``st.error``; anything else also with its traceback.

    The message names files, folders, tasks and classes, so it is shown as text, never as Markdown."""
    if isinstance(exc, RerelrpError):
        st.error(md(f"{prefix}{exc}"), icon=":material/error:")
    else:
        st.error(md(f"{prefix}{type(exc).__name__}: {exc}"), icon=":material/bug_report:")
        st.exception(exc)


def plot(fig, key=None):
    st.plotly_chart(fig, config=PLOT_CONFIG, key=key, width="stretch")


def image_key(image):
    """A short content hash of an image array (cache key of its explanation)."""
    image = np.ascontiguousarray(image)
    return hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]


def task_names(state):
    return [t["name"] for t in state.learner.tasks_]


def need_model(state, what):
    """Tell the user to train first; True when a model exists."""
    if state.n_learned:
        return True
    st.info(f"No task learned yet. {what} once the first task is trained.", icon=":material/info:")
    st.page_link(PAGES["train"], label="Go to Train", icon=":material/model_training:")
    return False


def model_page(title, caption, what):
    """The head of a page that needs a trained model; stops the page with a hint when there is none."""
    state = get_state()
    st.title(title)
    st.caption(caption)
    if not need_model(state, what):
        st.stop()
    busy_note(state)
    return state


def busy_note(state):
    if state.busy:
        job = state.job.snapshot()
        phase = f" ({job.phase})" if job.phase else ""
        st.caption(f":material/hourglass_top: Training in the background{phase}: this page uses the model "
                   f"as of task {state.n_learned - 1 if state.n_learned else '–'}; it updates when the task is done.")


def archive_controls(state):
    """Export the session's workspace as one file, or import one (validated like any workspace, then opened)."""
    left, right = st.columns(2)
    if is_workspace(state.workspace):
        if left.button("Prepare the workspace as one file", key="ws_export", icon=":material/archive:"):
            try:
                st.session_state["ws_archive"] = (state.workspace.name, state.export_archive())
            except RerelrpError as exc:
                show_error(exc)
        ready = st.session_state.get("ws_archive")
        if ready and ready[0] == state.workspace.name:
            left.download_button(f"Download {ready[0]}.zip ({len(ready[1]) / 1e6:.1f} MB)", ready[1],
                                 file_name=f"{ready[0]}.zip", mime="application/zip", key="ws_download",
                                 help="The model, its metrics and settings; no image and no patient attribute")
    upload = right.file_uploader("Import a workspace archive (.zip)", type=["zip"], key="ws_import")
    if upload is not None and right.button("Import and open", key="ws_import_open", disabled=state.busy,
                                           icon=":material/unarchive:"):
        try:
            with st.spinner("Checking and importing the archive …"):
                state.import_archive(upload.getvalue(), upload.name)
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)


def workspace_picker(state):
    """The saved workspaces (newest first) and a button to open one; says where this session saves."""

    with st.expander("Open a saved workspace", icon=":material/folder_open:", expanded=not state.n_learned):
        st.caption(f"This session saves every learned task to {md(state.workspace)}.")
        archive_controls(state)
        infos = list_workspaces(state.workspace_root)
        if not infos:
            st.caption(f"No saved workspace in {md(state.workspace_root)} yet.")
            return
        labels = {
            info["path"]: (f"{info['name']} · {info['n_tasks']} task(s) · saved {info['saved_at']}" if not info["problem"]
                           else f"{info['name']} · unreadable")
            for info in infos
        }
        choice = st.selectbox("Saved workspaces", list(labels), format_func=labels.get, key="ws_choice")
        problem = next(info["problem"] for info in infos if info["path"] == choice)
        if problem:
            st.caption(md(problem))
        if st.button("Open", key="ws_open", disabled=state.busy or bool(problem), icon=":material/file_open:",
                     help="Replaces the model of this session (the last one stays saved in its own workspace)"):
            try:
                with st.spinner("Opening the workspace …"):
                    state.open_workspace(choice)
                st.rerun()
            except RerelrpError as exc:
                show_error(exc)


def learned_data_offer(state):
    """After opening a workspace: where it says its tasks' data came from, read only if the user asks."""
    if not state.data_note or not state.n_learned:
        return
    st.info(f"Opened {md(state.workspace.name)}: {md(state.data_note)}. Explain, Capacity, Recognize and Report "
            "work without them; learning further tasks needs them.", icon=":material/info:")
    sources = state.recorded_sources
    if sources and all(sources) and st.button(
            "Load the learned tasks' data", key="ws_reload", disabled=state.busy, icon=":material/download_done:",
            help="Reads the files named above, after checking their sizes and SHA-256 against the workspace, "
                 "and checks the images against its fingerprints"):
        try:
            with st.spinner("Loading and checking the learned tasks' data …"):
                state.reload_learned_data()
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)


def job_heading(state, job, snap, title, key, help):
    """The head of a running job's progress box: its title, elapsed time and a Stop button."""
    head, stop_col = st.columns([5, 1])
    head.markdown(f"**{md(title)}** · {snap.elapsed:.0f} s · {started_by(state, job)}")
    if job.stopping:
        stop_col.button("Stopping …", disabled=True, key=f"{key}_stopping")
    else:
        stop_col.button("Stop", icon=":material/stop_circle:", key=f"{key}_stop", on_click=state.stop_training, help=help)
