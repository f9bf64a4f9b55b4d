"""Data: load data sets (demo, MedMNIST, DICOM), inspect them, and plan the task sequence."""
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import get_state, learned_data_offer, plot, show_error, step_seconds, workspace_picker
from rerelrp.data import load_dataset, load_medmnist, split_into_tasks, tasks_per_dataset
from rerelrp.data.dicom import load_dicom
from rerelrp.errors import ConfigError, RerelrpError
from rerelrp.figures.image_figures import sample_grid_figure
from rerelrp.settings import network_input_size
from rerelrp.text import md

DATA_ROOT = Path("./data")
SOURCES = {
    "demo": "Bundled demos",
    "npz_local": "MedMNIST .npz in ./data",
    "npz_upload": "Upload MedMNIST .npz",
    "download": "Download MedMNIST",
    "dicom_folder": "DICOM folder",
    "dicom_zip": "Upload DICOM .zip",
}

state = get_state()
st.title("Data")
st.caption("Load the data of the next tasks, check it, and set the order in which tasks are learned. "
           "Everything is read on this machine; nothing is uploaded anywhere.")


def _added(ds):
    name = state.add_dataset(ds)
    st.session_state["inspect"] = name
    st.success(f"Loaded **{md(name)}**: {ds.n_classes} classes, "
               f"{len(ds.train)} / {len(ds.val)} / {len(ds.test)} train / val / test images.",
               icon=":material/check_circle:")


GROUP_BY = {"auto": "auto: patient where known", "patient": "patient", "study": "study", "series": "series",
            "file": "file"}
GROUP_HELP = ("The unit whose images all go to one split, so that the test images are new patients, not more "
              "images of patients the model trained on. **auto**: per class, the patient where every file names "
              "one (PatientID), else the study, series or file; a class with fewer than 3 patients is split by a "
              "finer unit, with a warning. The patient IDs are used in memory only and are never stored.")


def _split_by(column, key):
    """The DICOM splitting unit, auto preselected."""
    return column.selectbox("Split by", list(GROUP_BY), format_func=GROUP_BY.get, key=key, help=GROUP_HELP)


# gray-level windows (centre, width in Hounsfield units for CT); the file's own window is the default
WINDOWS = {"stored in the file": "first", "full range of the data": "full", "CT soft tissue (40 / 400)": (40.0, 400.0),
           "CT lung (-600 / 1500)": (-600.0, 1500.0), "CT bone (400 / 1800)": (400.0, 1800.0),
           "CT brain (40 / 80)": (40.0, 80.0)}
WINDOW_HELP = ("How stored values become gray levels. The window stored in the file is what the scanner or the "
               "radiologist chose; files without one use their full range. For CT, a window in Hounsfield units "
               "shows the tissue of interest: with the full range, a CT shows little but bone.")


def _dicom_options(key):
    """Image size, split unit and gray-level window of a DICOM load, with what the size costs."""
    c1, c2, c3 = st.columns(3)
    size = c1.number_input("Image size (px)", 16, 512, 64, step=16, key=f"{key}_size", help=SIZE_HELP)
    group = _split_by(c2, f"{key}_group")
    window = c3.selectbox("Gray-level window", list(WINDOWS), key=f"{key}_window", help=WINDOW_HELP)
    size_cost(size)
    return int(size), group, WINDOWS[window]


def _load_dicom(source, size, group, window, name=None):
    """Load DICOM files with a progress bar that goes away whatever happens."""
    bar = st.progress(0.0, text="reading DICOM files")
    try:
        return load_dicom(source, size=size, group_by=group, window=window, name=name,
                          progress=lambda done, total: bar.progress(done / max(1, total), text=f"{done}/{total} files"))
    finally:
        bar.empty()


SIZE_HELP = ("The side DICOM images are read at (padded to a square, then resized). With the input size setting at 0 "
             "(auto) the network reads them at this size: more detail, more time per step. docs/dicom-size.md has "
             "validation accuracy and time per task at 64, 128 and 224 px on real folders.")


def size_cost(size):
    """What the chosen load size means for the network and the training time, said before loading."""
    settings = state.settings
    side = state.learner.input_size_ if state.n_learned else network_input_size(settings["input_size"], int(size))
    try:
        ms = 1000 * step_seconds(settings, side)
    except RerelrpError:
        return
    read = "reads them at that size" if side == size else f"resizes them to {side} px"
    st.caption(f"The network {read}: one training step of {settings['batch_size']} images takes about {ms:.0f} ms "
               f"on this machine (timed now); a task trains at least {settings['min_steps']} steps.")


def _medmnist_flags():
    try:
        from medmnist import INFO
    except ImportError:  # pragma: no cover - medmnist is a dependency
        return []
    return [f for f, info in INFO.items() if not f.endswith("3d") and "multi-label" not in info["task"]]


workspace_picker(state)
learned_data_offer(state)

# ------------------------------------------------------------------------------ loading
with st.container(border=True):
    st.subheader("Add a data set")
    source = st.segmented_control("Source", list(SOURCES), format_func=SOURCES.get, default="demo", key="source",
                                  required=True)
    try:
        if source == "demo":
            st.write("**Medical** (the app opens on it): real MedMNIST images, CC BY 4.0, 28×28, one task each: "
                     "chest X-rays (pneumonia or normal), breast ultrasound (malignant or not), blood-cell "
                     "microscopy (8 cell types). **Digits**: scikit-learn's handwritten digits (1,797 real 8×8 "
                     "scans) in 5 tasks of 2. Both are bundled: no file, no download. Loading one replaces the "
                     "tasks not learned yet.")
            c1, c2 = st.columns(2)
            for column, kind, label in ((c1, "medical", "Load medical demo"), (c2, "digits", "Load digits demo")):
                if column.button(label, key=f"load_demo_{kind}"):
                    for ds in state.load_demo(kind):
                        _added(ds)
        elif source == "npz_local":
            files = sorted(p.name for p in DATA_ROOT.glob("*.npz")) if DATA_ROOT.is_dir() else []
            if not files:
                st.info(f"No .npz file in {DATA_ROOT.resolve()}. Put MedMNIST files there (e.g. bloodmnist.npz), "
                        "upload one, or download one.", icon=":material/folder_open:")
            else:
                name = st.selectbox("File", files, key="npz_file")
                if st.button("Load file", key="load_npz"):
                    with st.spinner(f"Reading {md(name)} …"):
                        _added(load_dataset(str(DATA_ROOT / name)))
        elif source == "npz_upload":
            upload = st.file_uploader("MedMNIST .npz (read in memory, never stored)", type=["npz"], key="npz_upload")
            if upload is not None and st.button("Load upload", key="load_npz_upload"):
                with st.spinner(f"Reading {md(upload.name)} …"):
                    _added(load_medmnist(upload.getvalue(), name=upload.name))
        elif source == "download":
            st.warning("This is the only place the app uses the network: the file comes from the MedMNIST "
                       "server (zenodo.org) and is stored in ./data.", icon=":material/cloud_download:")
            c1, c2 = st.columns([3, 1])
            flag = c1.selectbox("Data set", _medmnist_flags(), key="dl_flag")
            size = c2.selectbox("Size", [28, 64, 128, 224], key="dl_size")
            if st.button("Download and load", key="download", icon=":material/download:"):
                from rerelrp.data.medmnist_npz import download_medmnist

                with st.spinner(f"Downloading {flag} ({size}×{size}) …"):
                    path = download_medmnist(flag, size, str(DATA_ROOT))
                    _added(load_dataset(str(path)))
        elif source == "dicom_folder":
            folder = st.text_input("Folder on this machine (one sub-folder per class, or a manifest.csv)",
                                   key="dicom_folder", placeholder="/path/to/dicom")
            size, group, window = _dicom_options("dicom")
            if folder and st.button("Load folder", key="load_dicom_folder"):
                _added(_load_dicom(folder, size, group, window))
        elif source == "dicom_zip":
            upload = st.file_uploader("DICOM .zip (one folder per class inside)", type=["zip"], key="dicom_zip")
            size, group, window = _dicom_options("dicom_zip")
            if upload is not None and st.button("Load zip", key="load_dicom_zip"):
                _added(_load_dicom(upload.getvalue(), size, group, window, name=Path(upload.name).stem))
    except RerelrpError as exc:
        show_error(exc, "Could not load: ")
    except Exception as exc:  # noqa: BLE001 - the session keeps working whatever the file holds
        show_error(exc, "Could not load: ")

def show_task_order(learned):
    """The task sequence: learned tasks (also those of an opened workspace whose data are not loaded), then the planned ones."""
    rows = []
    seen_plan, plan_now = st.session_state.get("_plan_seen"), [t.name for t in state.tasks]
    st.session_state["_plan_seen"] = plan_now
    unloaded = state.learner.tasks_[len(state.tasks):learned] if learned > len(state.tasks) else []
    for i, record in enumerate(unloaded, start=len(state.tasks)):
        sizes = record.get("sizes") or {}  # an opened workspace whose data are not loaded: what it recorded
        rows.append({"#": i, "task": record["name"], "classes": " | ".join(record["classes"]), "train": sizes.get("train"),
                     "val": sizes.get("val"), "test": sizes.get("test"), "status": "learned (data not loaded)"})
    for i, task in enumerate(state.tasks):
        if i < learned:
            status = "learned"
        else:
            status = "training" if state.busy and i == learned else ("next" if i == learned else "planned")
        rows.append({"#": i, "task": task.name, "classes": " | ".join(task.class_names), "train": len(task.train),
                     "val": len(task.val), "test": len(task.test), "status": status})
    rows.sort(key=lambda row: row["#"])
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        pending = [r["#"] for r in rows if r["status"] in ("next", "planned")]
        if pending:
            c1, c2, _ = st.columns([2, 1, 3])
            labels = [f"{i}: {state.tasks[i].name}" for i in pending]
            drop = c1.selectbox("Planned task", labels, key="drop_task", label_visibility="collapsed")
            if c2.button("Remove from plan", key="drop", disabled=state.busy):
                if seen_plan != plan_now:  # another tab changed the plan since this one was drawn: the choice may be stale
                    st.warning("The plan was changed in another browser tab since this page was drawn; check the "
                               "task and press Remove again.", icon=":material/warning:")
                else:
                    try:
                        state.drop_pending(pending[labels.index(drop)])
                        st.rerun()
                    except RerelrpError as exc:
                        show_error(exc)
    else:
        st.info("No task planned.")


# ------------------------------------------------------------------------------ inspecting
names = list(state.datasets)
if not names:
    st.info("No data set loaded for further tasks: add one above." if state.n_learned else "No data set loaded.")
    if state.n_learned:
        st.subheader("Task order")
        show_task_order(state.n_learned)
    st.stop()

st.subheader("Loaded data sets")
if st.session_state.get("inspect") not in names:
    st.session_state["inspect"] = names[-1]
inspect = st.selectbox("Inspect", names, key="inspect")
ds = state.datasets[inspect]
counts = ds.counts()
c_left, c_right = st.columns([2, 3], gap="medium")
with c_left:
    table = pd.DataFrame({"class": ds.class_names, **{s: counts[s] for s in ("train", "val", "test")}})
    table.loc[len(table)] = ["total", *(sum(counts[s]) for s in ("train", "val", "test"))]
    st.dataframe(table, hide_index=True, width="stretch", height=min(600, 35 * (len(table) + 1) + 3))
    h, w, c = ds.image_shape
    st.caption(f"{h}×{w} px, {'colour' if c == 3 else 'gray'}; source: {ds.provenance.get('kind', '?')}")
    report = ds.report
    problems = report.skipped if report else []
    if problems:
        st.warning(f"{len(problems)} file(s) skipped while loading", icon=":material/warning:")
        st.dataframe(pd.DataFrame([{"file": s.path, "reason": s.reason} for s in problems]), hide_index=True,
                     width="stretch", height=min(300, 38 + 35 * len(problems)))
    elif not (report and report.warnings):
        st.success("No problem found in the files.", icon=":material/check_circle:")
    for warning in (report.warnings if report else []):
        st.warning(warning, icon=":material/warning:")
    for note in (report.notes if report else []):
        st.caption(f":material/info: {md(note)}")
    if report and report.dropped_identifiers:
        st.caption(":material/shield: identifying DICOM attributes present and not copied: "
                   + md(", ".join(report.dropped_identifiers)))
    if st.button("Remove this data set", key="remove_ds", icon=":material/delete:"):
        state.remove_dataset(inspect)
        st.rerun()
with c_right:
    per_class = st.slider("Samples per class", 4, 16, 10, key="per_class")
    plot(sample_grid_figure(ds.train.images, ds.train.labels, ds.class_names, per_class=per_class),
         key="sample_grid")

# ------------------------------------------------------------------------------ the plan
st.subheader("Task order")
learned = state.n_learned
with st.container(border=True):
    mode = st.radio("How", ["Split one data set into N tasks", "One data set per task"], horizontal=True,
                    key="plan_mode")
    try:
        if mode.startswith("Split"):
            c1, c2, c3 = st.columns([2, 1, 2])
            base = c1.selectbox("Data set", names, key="plan_ds")
            n_classes = state.datasets[base].n_classes
            n = c2.number_input("Tasks", 1, n_classes, max(1, n_classes // 2), key="plan_n")
            groups_text = c3.text_input("or class groups (e.g. 0,1; 2,3)", key="plan_groups",
                                        help="Class indices, groups separated by ';'. Overrides the number of tasks.")

            def make():
                groups = None
                if groups_text.strip():
                    try:
                        groups = [[int(v) for v in part.split(",") if v.strip()]
                                  for part in groups_text.split(";") if part.strip()]
                    except ValueError:
                        raise ConfigError(f"class groups '{groups_text}': write class indices like 0,1; 2,3") from None
                return split_into_tasks(state.datasets[base], None if groups else int(n), groups)
        else:
            chosen = st.multiselect("Data sets, in task order", names, key="plan_many")
            make = lambda: tasks_per_dataset([state.datasets[c] for c in chosen]) if chosen else []
        b1, b2, _ = st.columns([1, 1, 3])
        replace = b1.button("Replace planned tasks", key="plan_replace", disabled=state.busy, type="primary",
                            help="Learned tasks stay; the tasks not learned yet are replaced.")
        append = b2.button("Append to plan", key="plan_append", disabled=state.busy)
        if replace or append:
            tasks = make()
            if not tasks:
                raise ConfigError("choose at least one data set")
            state.set_plan(tasks, append=append)
            st.success(f"{len(tasks)} task(s) {'appended' if append else 'planned'}: {len(state.pending)} planned in all, "
                       f"after the {learned} learned.",
                       icon=":material/check_circle:")
    except RerelrpError as exc:
        show_error(exc)

show_task_order(state.n_learned)
