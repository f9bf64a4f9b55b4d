"""The Streamlit app through streamlit.testing's AppTest: every page, bad uploads, the demo end to end.

The end-to-end test runs a whole demo session (two tasks, explain, recognise, capacity, report,
a reload) with every outbound network connection forbidden, and prints how long each page
takes to answer. Training uses the UI's own settings with ``epochs = 1``.
"""
from __future__ import annotations

import io
import json
import socket
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conftest import no_network  # noqa: E402
from pages.common import get_state  # noqa: E402
from rerelrp.data.images import encode_png  # noqa: E402

PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
FAST = {"n_trees": 50, "relevance_samples": 128, "recognizer_samples": 128, "device": "cpu", "min_steps": 0,
        "room_steps": 0, "prune_samples": 64}
PAGES = ["data", "train", "explain", "capacity", "recognize", "report"]


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def app(start_app):
    """A fresh app on its first page, on the digits demo (the quickest to train; the browser test opens on the
    medical one)."""
    return start_app("digits", FAST)


def no_exception(at):
    assert not at.exception, [e.message for e in at.exception]


def goto(at, page):
    at.switch_page(f"pages/{page}.py")
    at.run()
    no_exception(at)


def button(at, label):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in at.button]}; errors {errors(at)}; exc {at.exception}"
    return found[0]


def errors(at):
    return [e.value for e in at.error]


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def plotly_array(value):
    """A plotly JSON array: a plain list, or plotly's typed array {dtype, bdata (base64), shape}."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return array.reshape([int(v) for v in str(shape).split(",")]) if shape else array
    return np.array(value, dtype=float)


def chart_text(at):
    return json.dumps([c.get("layout", {}) for c in charts(at)], ensure_ascii=False)


def train_next(at, epochs=1):
    goto(at, "train")
    at.number_input(key="epochs").set_value(epochs)
    button(at, "Add next task").click()
    at.run()
    no_exception(at)
    assert not errors(at), errors(at)
    job = get_state().job
    assert job is not None
    assert job.wait(600), "training did not finish"
    assert job.state == "done", job.error
    at.run()
    no_exception(at)


def png(image):
    return encode_png(image)


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_network_guard_catches_outbound_connections():
    with no_network() as attempts:
        with pytest.raises(OSError):
            socket.create_connection(("198.51.100.7", 443), timeout=0.1)
        s = socket.socket()
        try:
            with pytest.raises(OSError, match="forbidden"):
                s.connect(("203.0.113.9", 80))
        finally:
            s.close()
        with pytest.raises(OSError):
            socket.getaddrinfo("example.org", 443)
    assert len(attempts) == 3


# ------------------------------------------------------------------------------ pages
def test_every_page_renders_on_the_demo_before_training(app):
    assert app.title[0].value == "Data"
    assert "CPU" in " ".join(m.value for m in app.sidebar.markdown)
    plan = app.dataframe[-1].value
    assert list(plan["task"]) == [f"digits t{i}" for i in range(5)]
    assert set(plan["status"]) == {"next", "planned"}
    counts = app.dataframe[0].value
    assert list(counts["class"])[:10] == [str(d) for d in range(10)] and counts["train"].iloc[-1] > 1000
    grid = [c for c in charts(app) if c["data"][0]["type"] == "image"]  # the sample grid: one row per class
    assert len(grid) == 1 and grid[0]["layout"]["yaxis"]["ticktext"] == [str(d) for d in range(10)]
    for page in PAGES[1:]:
        goto(app, page)
        assert app.title[0].value == page.capitalize()
    goto(app, "train")
    assert app.metric[0].label == "Device" and app.metric[0].value.startswith("CPU")
    assert app.metric[1].value == "0 / 5"
    goto(app, "explain")
    assert "No task learned yet" in app.info[0].value


def test_train_page_says_what_the_step_floor_makes_of_epochs_before_training(app):
    goto(app, "train")
    app.number_input(key="epochs").set_value(2)
    app.number_input(key="min_steps").set_value(200)
    button(app, "Apply and estimate").click()
    app.run()
    no_exception(app)
    state = get_state()
    task = state.pending[0]
    steps_per_epoch = -(-len(task.train) // state.settings["batch_size"])
    epochs = max(2, -(-200 // steps_per_epoch))
    plan = " ".join(c.value for c in app.caption)
    assert f"{epochs} epoch(s) × {steps_per_epoch} steps" in plan and "Epochs is 2; the floor of 200 steps adds" in plan
    assert "ms per step" in plan and state.settings["epochs"] == 2 and not state.busy  # estimated, not started


def test_data_page_bad_npz_uploads_give_errors_and_the_session_goes_on(app):
    app.segmented_control(key="source").set_value("npz_upload").run()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(2), 10)[:, None]
    cases = [
        ("corrupt.npz", b"PK\x03\x04 this is not a real archive", "not a readable .npz"),
        ("text.npz", b"hello", "not an .npz file"),
        ("multilabel.npz", npz_bytes(train_images=images, train_labels=rng.integers(0, 2, (20, 3)),
                                     test_images=images, test_labels=rng.integers(0, 2, (20, 3))), "multi-label"),
        ("volumes.npz", npz_bytes(train_images=rng.integers(0, 255, (20, 8, 28, 28), dtype=np.uint8),
                                  train_labels=labels, test_images=images, test_labels=labels), "3D"),
        ("channels.npz", npz_bytes(train_images=rng.integers(0, 255, (20, 28, 28, 2), dtype=np.uint8),
                                   train_labels=labels, test_images=images, test_labels=labels), "shape"),
        ("nolabels.npz", npz_bytes(train_images=images, test_images=images), "missing key"),
    ]
    for name, data, reason in cases:
        app.file_uploader(key="npz_upload").set_value((name, data, "application/octet-stream"))
        app.run()
        button(app, "Load upload").click()
        app.run()
        no_exception(app)
        assert any(reason in e and name in e for e in errors(app)), (name, errors(app))
    assert list(get_state().datasets) == ["digits"]
    # a good upload still works afterwards, and the other pages too
    good = npz_bytes(train_images=images, train_labels=labels, val_images=images[:6], val_labels=labels[:6],
                     test_images=images, test_labels=labels)
    app.file_uploader(key="npz_upload").set_value(("tiny.npz", good, "application/octet-stream"))
    app.run()
    button(app, "Load upload").click()
    app.run()
    no_exception(app)
    assert not errors(app)
    assert "tiny" in get_state().datasets
    assert any("Loaded **tiny**" in s.value for s in app.success)
    goto(app, "train")


def test_data_page_plans_tasks_from_one_or_several_data_sets(app):
    app.number_input(key="plan_n").set_value(2)
    button(app, "Replace planned tasks").click()
    app.run()
    no_exception(app)
    plan = app.dataframe[-1].value
    assert len(plan) == 2 and plan["classes"].iloc[0] == "0 | 1 | 2 | 3 | 4"
    app.text_input(key="plan_groups").set_value("0,9; 3,4,5")
    button(app, "Replace planned tasks").click()
    app.run()
    plan = app.dataframe[-1].value
    assert list(plan["classes"]) == ["0 | 9", "3 | 4 | 5"]
    app.text_input(key="plan_groups").set_value("0,1; x")
    button(app, "Replace planned tasks").click()
    app.run()
    assert any("class groups" in e for e in errors(app))
    app.text_input(key="plan_groups").set_value("0,1; 1,2")
    button(app, "Replace planned tasks").click()
    app.run()
    assert any("repeat a class" in e for e in errors(app))
    app.radio(key="plan_mode").set_value("One data set per task").run()
    app.multiselect(key="plan_many").set_value(["digits"])
    button(app, "Append to plan").click()
    app.run()
    no_exception(app)
    plan = app.dataframe[-1].value
    assert len(plan) == 3 and plan["task"].iloc[-1] == "digits"


@pytest.mark.skipif(not (SHARED / "medmnist" / "breastmnist.npz").exists(), reason="../shared/data/medmnist is absent")
def test_data_page_real_medmnist_upload_shows_class_names(app):
    data = (SHARED / "medmnist" / "breastmnist.npz").read_bytes()
    app.segmented_control(key="source").set_value("npz_upload").run()
    app.file_uploader(key="npz_upload").set_value(("breastmnist.npz", data, "application/octet-stream"))
    app.run()
    button(app, "Load upload").click()
    app.run()
    no_exception(app)
    counts = app.dataframe[0].value
    assert list(counts["class"]) == ["malignant", "normal, benign", "total"]
    assert list(counts.iloc[-1][["train", "val", "test"]]) == [546, 78, 156]


@pytest.mark.skipif(not (SHARED / "dicom").is_dir(), reason="../shared/data/dicom is absent")
def test_data_page_dicom_zip_lists_the_skipped_files(app):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted((SHARED / "dicom" / "mr_brain_series").glob("*.dcm")):
            z.write(path, f"brain/{path.name}")
        for path in sorted((SHARED / "dicom" / "single").glob("*.dcm")):
            z.write(path, f"other/{path.name}")
        z.write(SHARED / "dicom" / "mr_epi_pair" / "README-Series.txt", "other/README-Series.txt")
    app.segmented_control(key="source").set_value("dicom_zip").run()
    app.file_uploader(key="dicom_zip").set_value(("scans.zip", buffer.getvalue(), "application/zip"))
    app.run()
    button(app, "Load zip").click()
    app.run()
    no_exception(app)
    assert not errors(app), errors(app)
    assert "scans" in get_state().datasets
    assert list(app.dataframe[0].value["class"])[:2] == ["brain", "other"]
    assert any("skipped" in w.value for w in app.warning)
    skipped = app.dataframe[1].value
    assert any("README-Series.txt" in f for f in skipped["file"]) and skipped["reason"].str.contains("DICOM").any()


def test_download_touches_the_network_only_on_click(app):
    with no_network() as attempts:
        app.segmented_control(key="source").set_value("download").run()
        no_exception(app)
        app.selectbox(key="dl_flag").set_value("breastmnist").run()
        assert not attempts, "choosing a download must not touch the network"
        if (ROOT / "data" / "breastmnist.npz").exists():
            pytest.skip("data/breastmnist.npz exists; the download would not be tried")
        button(app, "Download and load").click()
        app.run()
        no_exception(app)
    assert attempts, "the download button did not try to reach the MedMNIST server"
    assert any("download failed" in e for e in errors(app)), errors(app)
    assert list(get_state().datasets) == ["digits"]


def test_stop_button_leaves_nothing_half_applied(app, gated_steps):
    goto(app, "train")
    app.number_input(key="epochs").set_value(3)
    button(app, "Add next task").click()
    app.run()
    no_exception(app)
    state = get_state()
    assert state.busy  # the job waits at the start of its task until released
    assert button(app, "Add next task").disabled  # one job at a time
    button(app, "Stop").click()
    app.run()
    no_exception(app)
    assert state.job.stop_event.is_set()
    gated_steps.set()
    assert state.job.wait(120)
    app.run()
    no_exception(app)
    assert state.job.state == "stopped"
    assert any("Stopped" in w.value for w in app.warning)
    assert app.metric[1].value == "0 / 5" and state.n_learned == 0
    assert not button(app, "Add next task").disabled


def test_a_setting_error_inside_the_job_is_shown(app):
    goto(app, "train")
    app.selectbox(key="net").set_value("lenet")
    app.number_input(key="input_size").set_value(8)
    button(app, "Add next task").click()
    app.run()
    assert get_state().job.wait(120)
    app.run()
    no_exception(app)
    assert any("lenet needs inputs of at least 16 px" in e for e in errors(app)), errors(app)
    assert get_state().n_learned == 0


# ------------------------------------------------------------------------------ end to end
def test_demo_end_to_end_without_network(app):
    with no_network() as attempts:
        train_next(app)
        assert app.metric[1].value == "1 / 5"
        train_next(app)
        assert app.metric[1].value == "2 / 5"
        labels = [m.label for m in app.metric]
        for label in ("TAg accuracy", "TAw accuracy", "Forgetting (TAg)", "Task recognition"):
            assert label in labels
        text = chart_text(app)
        assert "TAg accuracy" in text and "TAw accuracy" in text and "Time per phase" in text
        matrix = [c for c in charts(app) if "TAg accuracy" in json.dumps(c.get("layout", {}))][0]
        z = plotly_array(matrix["data"][0]["z"])
        assert z.shape == (2, 2) and np.isnan(z[0, 1]) and not np.isnan(z[1, 0])  # lower-triangular
        state = get_state()
        assert state.n_learned == 2 and len(state.run.metrics.acc_tag) == 2

        # a click on each page after training, twice (the first answer computes, the second is cached)
        for page in PAGES:
            goto(app, page)
            goto(app, page)

        # Explain: test sample, every sub-network side by side, overlay toggle, another composite
        goto(app, "explain")
        text = chart_text(app)
        assert "task 0 → " in text and "task 1 → " in text
        heat = charts(app)[0]
        assert sum(1 for d in heat["data"] if d["type"] == "image") == 3  # input + 2 sub-networks
        assert len(app.dataframe) == 2  # most relevant units of each sub-network
        app.toggle(key="ex_overlay").set_value(False).run()
        no_exception(app)
        app.selectbox(key="ex_composite").set_value("EpsilonGammaBox").run()
        no_exception(app)
        assert "EpsilonGammaBox" in " ".join(m.value for m in app.markdown)
        app.number_input(key="ex_index").set_value(5).run()
        no_exception(app)
        # Explain an upload; a bad upload gives an error and the page goes on
        app.radio(key="ex_source").set_value("Upload").run()
        image = state.tasks[1].test.images[0]
        app.file_uploader(key="ex_upload").set_value(("two.png", png(image), "image/png")).run()
        no_exception(app)
        assert "task 1 → " in chart_text(app)
        app.file_uploader(key="ex_upload").set_value(("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")).run()
        no_exception(app)
        assert any("broken.png" in e and "corrupt" in e for e in errors(app))

        # Capacity
        goto(app, "capacity")
        text = chart_text(app)
        assert "Units per layer" in text and "Free share after each task" in text
        table = app.dataframe[0].value
        assert {"kept by 0", "kept by 1", "shared", "free"} <= set(table.columns)
        low = [r["layer"] for r in state.learner.capacity() if r["free_share"] < state.learner.min_free]
        shown = " ".join(w.value for w in app.warning)
        assert all(f"**{layer}**" in shown for layer in low) and (bool(low) == ("below the minimum" in shown))

        # Recognize: test images, uploads (one bad), table, CSV, heatmap behind the answer
        goto(app, "recognize")
        app.slider(key="rec_n").set_value(6)
        button(app, "Use test images").click().run()
        no_exception(app)
        table = app.dataframe[0].value
        assert len(table) == 6 and {"file", "task", "class", "P_T 0", "P_T 1", "true task"} <= set(table.columns)
        assert np.allclose(table[["P_T 0", "P_T 1"]].sum(axis=1), 1.0, atol=0.01)
        uploads = [(f"img{k}.png", png(state.tasks[k % 2].test.images[k]), "image/png") for k in range(3)]
        uploads.append(("notes.txt", b"not an image", "text/plain"))
        uploads.append(("empty.png", b"", "image/png"))
        uploads.append(("ct.dcm", (PYDICOM_FILES / "CT_small.dcm").read_bytes(), "application/dicom"))
        uploads.append(("cine.dcm", (PYDICOM_FILES / "SC_rgb_rle_2frame.dcm").read_bytes(), "application/dicom"))
        app.file_uploader(key="rec_upload").set_value(uploads).run()
        no_exception(app)
        problems = errors(app)
        assert any("notes.txt" in e and "not a PNG, JPEG or DICOM" in e for e in problems), problems
        assert any("empty.png" in e and "empty" in e for e in problems), problems
        assert any("cine.dcm" in e and "multi-frame" in e for e in problems), problems
        table = app.dataframe[0].value
        assert len(table) == 10 and list(table["file"][:4]) == ["img0.png", "img1.png", "img2.png", "ct.dcm"]
        assert app.get("download_button"), "no CSV download"
        text = chart_text(app)
        assert "Task recognition P_T" in text and " → " in text
        app.selectbox(key="rec_choice").set_value(2).run()
        no_exception(app)

        # every learned task was saved to the session's workspace
        from rerelrp.store.workspace import workspace_info

        assert workspace_info(state.workspace)["n_tasks"] == 2

        # Report: default samples, HTML built in memory and offered as a download
        goto(app, "report")
        assert len(app.multiselect(key="rep_refs").value) == 4  # two test images of each task by default
        button(app, "Build report").click().run()
        no_exception(app)
        fmt, data, n_samples, _ = app.session_state["rep_file"]
        html = data.decode("utf-8")
        assert fmt == "html" and n_samples == 4 and html.lstrip().lower().startswith("<!doctype html")
        assert "TAg" in html and html.count("data:image/png;base64,") >= 4 * 3
        assert app.get("download_button"), "no report download"
        app.radio(key="rep_format").set_value("pdf").run()
        button(app, "Build report").click().run()
        no_exception(app)
        assert app.session_state["rep_file"][1][:5] == b"%PDF-"

        # a browser reload is a new session: the trained model is still there
        again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        again.run()
        goto(again, "train")
        assert again.metric[1].value == "2 / 5"
        goto(again, "explain")
        assert "task 1 → " in chart_text(again)

    assert not attempts, f"outbound network attempts: {attempts}"


def test_a_new_session_opens_a_saved_workspace_and_predicts_the_same(app, monkeypatch):
    train_next(app)
    first = get_state()
    images = first.tasks[0].test.images[:16]
    expected = first.learner.predict(images)

    monkeypatch.setenv("RERELRP_APP_KEY", f"test-{uuid.uuid4().hex}")  # another app process, same workspace root
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    other.run()  # opens on the Data page, which lists the saved workspaces
    choice = other.selectbox(key="ws_choice")
    assert str(first.workspace) in choice.options[0] or choice.value == str(first.workspace)
    choice.set_value(str(first.workspace))
    button(other, "Open").click()
    other.run()
    no_exception(other)
    assert not errors(other), errors(other)
    opened = get_state()
    assert opened is not first and opened.n_learned == 1 and not opened.can_learn  # nothing it names is read unasked
    assert "the bundled demo" in opened.data_note
    button(other, "Load the learned tasks' data").click()
    other.run()
    no_exception(other)
    assert not errors(other), errors(other)
    assert opened.can_learn and len(opened.tasks) == 1
    got = opened.learner.predict(images)
    assert np.array_equal(got.global_class, expected.global_class) and np.array_equal(got.p_task, expected.p_task)
    goto(other, "train")
    assert other.metric[1].value == "1 / 1"
