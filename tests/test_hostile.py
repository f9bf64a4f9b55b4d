"""Hostile inputs (issue 27): crafted workspaces, names, image bombs and .npz files.

Every case must end in rerelrp's own error naming the file and the reason (or a kept row), never a
hang, a traceback or all the memory: cases that could hang run under pytest-timeout, cases that
could allocate run in a child process whose peak memory is measured.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import WorkspaceError
from rerelrp.fileio import RefusedFile, parse_json, read_regular
from rerelrp.method.learner import ReReLRP
from rerelrp.run.runner import SequenceRun
from rerelrp.store import estimator_io
from rerelrp.store.workspace import check_reload, list_workspaces, load_workspace, save_workspace
from rerelrp.text import csv_cell, md, printable

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
              device="cpu")
GIB = 1 << 30


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pristine one-task workspace (tests copy it before changing anything)."""
    tasks = build_sequence([load_dataset("demo")], 5)
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.step()
    root = tmp_path_factory.mktemp("hostile")
    save_workspace(root / "one", learner, run.metrics, tasks=tasks[:1])
    return root / "one"


@pytest.fixture()
def ws(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "ws")
    return tmp_path / "ws"


def snapshot_dir(path):
    return path / "snapshots" / json.loads((path / "CURRENT").read_text())["snapshot"]


def rehash(path):
    """What a forger does after changing a file: every checksum recomputed so that they match again."""
    snap = snapshot_dir(path)
    manifest = json.loads((snap / "manifest.json").read_text())
    for rel, entry in manifest["files"].items():
        data = (snap / rel).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    data = json.dumps(manifest).encode()
    (snap / "manifest.json").write_bytes(data)
    pointer = json.loads((path / "CURRENT").read_text())
    pointer["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "CURRENT").write_text(json.dumps(pointer))


def edit_learner_json(path, change):
    snap = snapshot_dir(path)
    record = json.loads((snap / "learner.json").read_text())
    change(record)
    (snap / "learner.json").write_text(json.dumps(record))
    rehash(path)


def peak_rss_of(code, timeout=120):
    """Run ``code`` in a fresh interpreter; returns (its output, its own peak resident memory in bytes).

    The child reports its peak itself: RUSAGE_CHILDREN would give the largest of every child this
    test process ever had (a browser or a worker of an earlier test)."""
    marker = "PEAK_RSS_KIB="
    tail = f"\nimport resource as _r\nprint('{marker}' + str(_r.getrusage(_r.RUSAGE_SELF).ru_maxrss))\n"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + tail], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out, _, peak = done.stdout.rpartition(marker)
    return out, int(peak) * 1024  # ru_maxrss is in KiB on Linux


# --------------------------------------------------------------------------- names shown in the app
@pytest.mark.parametrize("name", [
    "<img src=https://127.0.0.1:9/x.png>", "![x](http://127.0.0.1:9/a.png)", "[click](javascript:alert(1))",
    ":red[red]", ":material/home:", "$x^2$", "**bold** _it_", "`code`", "# heading", "1. list", "- item",
    "<https://127.0.0.1:9/>", "www.example.org", "a\nb\r\x1b[31m", "bad\udcffname", "\u202eevil",
])
def test_markdown_escaping_leaves_no_markup(name):
    escaped = md(name)
    escaped.encode("utf-8")  # protobuf needs valid UTF-8: a lone surrogate would end the app's script
    assert "\n" not in escaped and "\r" not in escaped and "\x1b" not in escaped and "\u202e" not in escaped
    unescaped = [i for i, c in enumerate(escaped) if c in "<>[]`*$~|" and (i == 0 or escaped[i - 1] != "\\")]
    assert not unescaped, (name, escaped)
    assert not re.search(r"(?<!\\):[A-Za-z/]", escaped), (name, escaped)  # :red[..], :material/..:, https://
    assert "www." not in escaped, escaped
    assert not escaped.startswith(("#", "-", "1.")), escaped


def test_markdown_escaping_keeps_plain_names_as_they_are():
    for name in ("digits t0", "bloodmnist", "train_images", "multi-label", "CT (axial) 2.5 mm", "Skipped: x.png"):
        assert md(name) == name


def test_printable_names_bytes_that_are_not_utf8():
    name = os.fsdecode(b"scan\xff\xfe.png")
    assert printable(name) == "scan\\xff\\xfe.png"
    assert printable("ok.png") == "ok.png"


def test_no_page_renders_html():
    """The app's pages and sidebar draw with Streamlit's own elements only (issue 27: names made the browser fetch)."""
    for file in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        text = file.read_text()
        assert "unsafe_allow_html" not in text and "st.html(" not in text and "components.html" not in text, file.name


def test_csv_cells_starting_a_formula_are_neutralised():
    assert [csv_cell(v) for v in ("=1+1.png", "+x", "-2", "@SUM(A1)", "\tx", "\rx")] == [
        "'=1+1.png", "'+x", "'-2", "'@SUM(A1)", "'\\tx", "'\\rx"]
    assert csv_cell("scan.png") == "scan.png" and csv_cell(3) == 3 and csv_cell(-0.5) == -0.5


# --------------------------------------------------------------------------- reading files with limits
def test_read_regular_refuses_links_fifos_devices_and_large_files(tmp_path):
    (tmp_path / "ok").write_bytes(b"12345")
    assert read_regular(tmp_path / "ok", 5) == b"12345"
    with pytest.raises(RefusedFile, match="more than the 4 allowed"):
        read_regular(tmp_path / "ok", 4)
    os.symlink("/dev/zero", tmp_path / "zero")
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_regular(tmp_path / "zero", GIB)
    with pytest.raises(RefusedFile, match="character device"):
        read_regular("/dev/zero", GIB)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(RefusedFile, match="FIFO"):
        read_regular(tmp_path / "fifo", GIB)


@pytest.mark.timeout(60)
def test_deeply_nested_json_is_a_named_error_not_a_recursion_error():
    with pytest.raises(ValueError, match="nested deeper than 100"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="nested deeper than 100"):
        parse_json(b"[" * 101 + b"]" * 101)
    assert isinstance(parse_json(b"[" * 100 + b"]" * 100), list)  # 100 levels are allowed
    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    with pytest.raises(ValueError, match="digits|limit"):
        parse_json(b"1" * 10_000)


# --------------------------------------------------------------------------- crafted workspaces
@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel", ["network.safetensors", "metrics.json", "estimators"])
def test_workspace_file_as_a_link_to_dev_zero_is_refused(ws, rel):
    target = snapshot_dir(ws) / rel
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.symlink("/dev/zero" if rel != "estimators" else "/", target)
    with pytest.raises(WorkspaceError, match="link or a special file") as err:
        load_workspace(ws)
    assert rel in str(err.value)


@pytest.mark.timeout(60)
def test_workspace_file_as_a_fifo_does_not_hang(ws):
    target = snapshot_dir(ws) / "metrics.json"
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(WorkspaceError, match="special file") as err:
        load_workspace(ws)
    assert "metrics.json" in str(err.value)


@pytest.mark.timeout(60)
def test_current_pointer_as_a_link_or_fifo(ws):
    (ws / "CURRENT").unlink()
    os.symlink("/dev/zero", ws / "CURRENT")
    with pytest.raises(WorkspaceError, match="symbolic link") as err:
        load_workspace(ws)
    assert "CURRENT" in str(err.value)
    (ws / "CURRENT").unlink()
    os.mkfifo(ws / "CURRENT")
    with pytest.raises(WorkspaceError, match="FIFO"):
        load_workspace(ws)
    assert list_workspaces(ws.parent) == []  # not listed as a workspace, and listing does not hang


def test_snapshot_folder_as_a_link_is_refused(ws, tmp_path):
    snap = snapshot_dir(ws)
    shutil.move(snap, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", snap)
    with pytest.raises(WorkspaceError, match="link or not a folder"):
        load_workspace(ws)


def test_manifest_sizes_beyond_the_limits_are_refused_before_reading(ws):
    snap = snapshot_dir(ws)
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["files"]["network.safetensors"]["bytes"] = 640 * GIB
    data = json.dumps(manifest).encode()
    (snap / "manifest.json").write_bytes(data)
    pointer = json.loads((ws / "CURRENT").read_text())
    pointer["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (ws / "CURRENT").write_text(json.dumps(pointer))
    with pytest.raises(WorkspaceError, match="at most") as err:
        load_workspace(ws)
    assert "network.safetensors" in str(err.value)


@pytest.mark.timeout(60)
def test_deeply_nested_metrics_json_is_a_named_error(ws):
    (snapshot_dir(ws) / "metrics.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    rehash(ws)
    with pytest.raises(WorkspaceError, match="nested deeper") as err:
        load_workspace(ws)
    assert "metrics.json" in str(err.value)


@pytest.mark.timeout(120)
def test_huge_layer_sizes_are_refused_before_anything_is_allocated(ws, saved):
    def grow(record, n):
        record["meta"]["layer_sizes"] = [[name, n if name == "fc1" else k] for name, k in record["meta"]["layer_sizes"]]

    edit_learner_json(ws, lambda r: grow(r, 10**9))
    with pytest.raises(WorkspaceError, match="1 to 65,536") as err:
        load_workspace(ws)
    assert "learner.json" in str(err.value)
    # within the per-layer bound, but with conv layers of 60,000 channels the network would take hundreds of GB:
    # refused because network.safetensors does not hold it, measured in a child process
    edit_learner_json(ws, lambda r: r["meta"].update(layer_sizes=[[n, 60_000] for n, _ in r["meta"]["layer_sizes"]]))
    load = """
        from rerelrp.errors import WorkspaceError
        from rerelrp.store.workspace import load_workspace
        try:
            load_workspace({!r})
        except WorkspaceError as exc:
            print(exc)
    """
    out, peak = peak_rss_of(load.format(str(ws)))
    _, pristine = peak_rss_of(load.format(str(saved)))  # the same interpreter and imports, loading the real workspace
    assert "does not hold" in out and "learner.json" in out, out
    assert peak < pristine + GIB // 2, (peak, pristine)  # hundreds of GB requested, nothing of it allocated


def test_huge_class_count_is_refused(ws):
    edit_learner_json(ws, lambda r: r["meta"]["tasks"][0].update(classes=[str(i) for i in range(200_000)]))
    with pytest.raises(WorkspaceError, match="classes"):
        load_workspace(ws)


def test_params_of_the_wrong_shape_are_a_named_error(ws):
    edit_learner_json(ws, lambda r: r["params"].update(not_a_setting=1))
    with pytest.raises(WorkspaceError) as err:
        load_workspace(ws)
    assert "learner.json" in str(err.value)


def test_recogniser_zip_bomb_is_refused_before_skops_reads_it(monkeypatch):
    monkeypatch.setattr(estimator_io, "MAX_UNPACKED", 64 << 20)  # the same check, with less to compress here
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", "{}")
        with zf.open("big.npy", "w", force_zip64=True) as member:
            chunk = bytes(1 << 24)
            for _ in range((estimator_io.MAX_UNPACKED >> 24) + 1):
                member.write(chunk)
    data = buffer.getvalue()
    assert len(data) < 1 << 20
    with pytest.raises(ValueError, match="would unpack to"):
        estimator_io.loads(data)
    with pytest.raises(ValueError, match="not a skops file"):
        estimator_io.loads(b"not a zip")


# --------------------------------------------------------------------------- sources a workspace names
def _dicom_record(folder, files, **spec):
    return {"name": "t", "classes": ["a"], "provenance": {
        "kind": "dicom", "files": files, "reload": {"loader": "dicom", "source": str(folder), **spec}}}


def _file_entry(folder, rel):
    data = (folder / rel).read_bytes()
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["/", str(Path.home()), "relative/folder"])
def test_reload_never_walks_a_root_or_the_home_folder(tmp_path, source):
    with pytest.raises(WorkspaceError, match="task 0 names") as err:
        check_reload(tmp_path, [_dicom_record(source, [{"path": "x.dcm", "bytes": 1, "sha256": "0" * 64}])])
    assert "root" in str(err.value) or "absolute" in str(err.value)


def test_reload_of_a_dicom_folder_needs_its_recorded_files_and_few_entries(tmp_path, monkeypatch):
    folder = tmp_path / "scans"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.dcm").write_bytes(b"DICM" * 10)
    files = [_file_entry(folder, "a/x.dcm")]
    check_reload(tmp_path, [_dicom_record(folder, files)])  # the folder it was trained on: fine
    with pytest.raises(WorkspaceError, match="recorded size"):
        check_reload(tmp_path, [_dicom_record(folder, [{**files[0], "bytes": 7}])])
    with pytest.raises(WorkspaceError, match="leaves the folder"):
        check_reload(tmp_path, [_dicom_record(folder, [{**files[0], "path": "../../etc/passwd"}])])
    with pytest.raises(WorkspaceError, match="manifest"):
        check_reload(tmp_path, [_dicom_record(folder, files, manifest="/etc/passwd")])
    monkeypatch.setattr("rerelrp.store.workspace.data_checks.DATA_FOLDER_ENTRIES", 20)
    for k in range(25):
        (folder / "a" / f"other{k}.txt").write_bytes(b"")
    with pytest.raises(WorkspaceError, match="more than 20 entries"):
        check_reload(tmp_path, [_dicom_record(folder, files)])


def test_reload_reads_only_the_npz_file_it_recorded(tmp_path):
    good, other = tmp_path / "good.npz", tmp_path / "other.npz"
    good.write_bytes(b"PK" + bytes(100))
    other.write_bytes(b"PK" + bytes(99) + b"x")
    entry = {"path": "good.npz", "bytes": 102, "sha256": hashlib.sha256(good.read_bytes()).hexdigest()}

    def record(source):
        return {"name": "t", "classes": ["a"], "provenance": {
            "kind": "medmnist", "files": [entry], "reload": {"loader": "medmnist", "source": str(source)}}}

    check_reload(tmp_path, [record(good), {"provenance": {"reload": {"loader": "demo"}}}, {"provenance": {}}])
    with pytest.raises(WorkspaceError, match="SHA-256"):
        check_reload(tmp_path, [record(other)])
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(WorkspaceError, match="size|FIFO"):
        check_reload(tmp_path, [record(tmp_path / "fifo.npz")])
    os.symlink(good, tmp_path / "link.npz")
    with pytest.raises(WorkspaceError, match="size|link"):
        check_reload(tmp_path, [record(tmp_path / "link.npz")])
    with pytest.raises(WorkspaceError, match="unknown loader"):
        check_reload(tmp_path, [{"provenance": {"reload": {"loader": "pickle", "source": str(good)}}}])


def test_reload_check_passes_the_sources_real_loaders_record():
    from rerelrp.data import medical_demo_paths, split_into_tasks

    ds = load_dataset(str(medical_demo_paths()[1]))
    records = [task.describe() for task in split_into_tasks(ds, 1)]
    assert records[0]["provenance"]["reload"]["loader"] == "medmnist"
    check_reload("ws", records)


def test_reload_check_passes_a_real_dicom_folder():
    folder = ROOT.parent / "shared" / "data" / "dicom" / "ct_vs_mr"
    if not folder.is_dir():
        pytest.skip("the CT/MR DICOM folder of ../shared/data is not here")
    from rerelrp.data import split_into_tasks
    from rerelrp.data.dicom import load_dicom

    records = [task.describe() for task in split_into_tasks(load_dicom(folder, size=16), 1)]
    assert records[0]["provenance"]["reload"]["loader"] == "dicom"
    check_reload("ws", records)


# --------------------------------------------------------------------------- rerelrp predict
@pytest.fixture(scope="module")
def learner(saved):
    return load_workspace(saved)[0]


def _png(side, channels=1, seed=0):
    from rerelrp.data.images import encode_png

    return encode_png(np.random.default_rng(seed).integers(0, 256, (side, side, channels), dtype=np.uint8))


def test_predict_names_fifos_link_loops_and_broken_links(tmp_path):
    from rerelrp.run.batch_predict import collect

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.png").write_bytes(_png(20))
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink("nowhere.png", folder / "gone.png")
    os.symlink(folder, folder / "back")
    items, skipped = collect([folder, tmp_path / "in" / "loop.png"], dicom_size=16)
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert [Path(i.source).name for i in items] == ["ok.png"]
    assert "FIFO" in reasons["pipe.png"] and "not read" in reasons["pipe.png"]
    assert "link loop" in reasons["loop.png"] and "broken link" in reasons["gone.png"]
    assert "already searched" in reasons["back"]


@pytest.mark.timeout(120)
def test_predict_writes_names_that_are_not_utf8_and_neutralises_formulas(learner, tmp_path, monkeypatch):
    from rerelrp.run.batch_predict import collect, predict_files

    monkeypatch.chdir(tmp_path)
    Path(os.fsdecode(b"scan\xff\xfe.png")).write_bytes(_png(20))
    Path("=1+1.png").write_bytes(_png(20, seed=1))
    Path(os.fsdecode(b"bad\xff.txt")).write_bytes(b"not an image")
    items, skipped = collect([os.fsdecode(b"scan\xff\xfe.png"), "=1+1.png", os.fsdecode(b"bad\xff.txt")], dicom_size=16)
    assert [s.path for s in skipped] == ["bad\\xff.txt"]
    skipped[0].path.encode("utf-8")
    monkeypatch.setattr(learner, "tasks_", [{**t, "classes": ["=HYPERLINK(1)", "@x"]} for t in learner.tasks_])
    rows = predict_files(learner, items, tmp_path / "out.csv", explain_dir=tmp_path / "maps")
    assert len(rows) == 2 and len(list((tmp_path / "maps").iterdir())) == 2 * learner.n_tasks
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        written = list(__import__("csv").DictReader(handle))
    assert [r["source"] for r in written] == ["scan\\xff\\xfe.png", "'=1+1.png"]
    assert all(r["class_name"] in ("'=HYPERLINK(1)", "'@x") for r in written)


def test_predict_never_leaves_a_truncated_csv(learner, tmp_path, monkeypatch):
    from rerelrp.run import batch_predict

    out = tmp_path / "out.csv"
    out.write_text("the previous result\n")
    items = [batch_predict.Item(f"{k}.png", 0, np.zeros((20, 20, 1), np.uint8)) for k in range(3)]
    calls = []

    def predict(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill or an error after the first batch was written
        return type(learner).predict(learner, images)

    monkeypatch.setattr(batch_predict, "BATCH", 1)
    monkeypatch.setattr(learner, "predict", predict)
    with pytest.raises(KeyboardInterrupt):
        batch_predict.predict_files(learner, items, out)
    assert out.read_text() == "the previous result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# --------------------------------------------------------------------------- small files, all the memory
def test_an_image_gives_the_same_input_alone_and_beside_other_sizes():
    from rerelrp.data.images import network_inputs, read_image, stack_images
    from rerelrp.model.inputs import to_input

    small, large = read_image(_png(64, 3), "a.png", 28), read_image(_png(100, 3, seed=1), "b.png", 28)
    alone, beside = network_inputs([small], 28), network_inputs([large, small], 28)
    assert np.array_equal(alone[0], beside[1])
    assert np.array_equal(stack_images([small, large], 28)[0], stack_images([large, small], 28)[1])
    # a batch of one side: exactly what the learner gets for its test images (the path before this change)
    same = np.stack([read_image(_png(64, 3, seed=s), "c.png", 28) for s in range(5)])
    assert np.array_equal(network_inputs(list(same), 28), to_input(same, 28).numpy())
    assert np.array_equal(to_input(network_inputs(list(same), 28), 28).numpy(), to_input(same, 28).numpy())
    gray = np.stack([read_image(_png(40, 1, seed=s), "g.png", 28) for s in range(3)])
    assert np.array_equal(network_inputs(list(gray), 28), to_input(gray, 28).numpy())


def test_huge_images_are_reduced_on_read():
    from PIL import Image

    from rerelrp.data.images import MAX_PIXELS, read_image
    from rerelrp.errors import DataError

    buffer = io.BytesIO()
    Image.new("L", (4000, 3000), 128).save(buffer, format="PNG")
    image = read_image(buffer.getvalue(), "big.png", dicom_size=64)
    assert 256 <= max(image.shape[:2]) < 512 and image.shape[2] == 1 and image[100, 100, 0] == 128
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 4000), (200, 10, 10)).save(buffer, format="JPEG")
    image = read_image(buffer.getvalue(), "big.jpg", dicom_size=64)
    assert 256 <= max(image.shape[:2]) < 512 and image.shape[2] == 3
    assert max(read_image(_png(300), "ok.png", dicom_size=64).shape[:2]) == 300  # below 8 network sides: as it is
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")
    with pytest.raises(DataError, match=f"limit {MAX_PIXELS:,}"):
        read_image(buffer.getvalue(), "bomb.png", dicom_size=64)


@pytest.mark.timeout(300)
def test_three_8000_pixel_pngs_cost_little_memory_in_predict(tmp_path):
    from PIL import Image

    image = Image.new("L", (8000, 8000))
    image.putpixel((5, 5), 255)
    image.save(tmp_path / "big.png", optimize=True)
    assert (tmp_path / "big.png").stat().st_size < 200_000
    (tmp_path / "small.png").write_bytes(_png(20))
    code = """
        import resource, sys
        from rerelrp.run.batch_predict import collect
        from rerelrp.data.images import network_inputs
        items, skipped = collect(sys.argv[1:], dicom_size=64)
        network_inputs([item.image for item in items], 64)
        print(len(items), len(skipped), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """

    def peak(*files):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, files)], cwd=ROOT,
                              capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        n, n_skipped, rss = map(int, done.stdout.split())
        assert n == len(files) and n_skipped == 0
        return rss

    base, big = peak(tmp_path / "small.png"), peak(*[tmp_path / "big.png"] * 3)
    assert big - base < 400 << 20, (base, big)  # one decoded image (64 MB) and its reduction, not 3 x 1 GB


# --------------------------------------------------------------------------- crafted .npz files
def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _splits(images=None, labels=None, test_labels=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 12, 12), dtype=np.uint8) if images is None else images
    labels = np.repeat(np.arange(2), 10) if labels is None else labels
    return dict(train_images=images, train_labels=labels, test_images=images,
                test_labels=labels if test_labels is None else test_labels)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("arrays, message", [
    (_splits(labels=np.full(20, 2**62)), "more than 10,000 classes"),
    (_splits(images=np.zeros((20, 1, 1), np.uint8)), "1x1 pixels: too small"),
    (_splits(images=np.zeros((20, 12, 12), bool)), "booleans"),
    (_splits(images=np.zeros((20, 12, 12, 2), np.uint8)), "2 channels per pixel"),
    (_splits(test_labels=np.r_[np.zeros(19, int), 99]), r"the test split holds label\(s\) 99 that no training image"),
])
def test_crafted_npz_arrays_get_a_named_error(arrays, message):
    from rerelrp.data import load_medmnist
    from rerelrp.errors import DataError

    with pytest.raises(DataError, match=message) as err:
        load_medmnist(_npz(**arrays), name="crafted.npz")
    assert "crafted.npz" in str(err.value) and "3D" not in str(err.value)


def _npz_declaring(shape, compression):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        zf.writestr("train_images.npy", header.getvalue() + bytes(64))
        for key, value in _splits().items():
            if key != "train_images":
                member = io.BytesIO()
                np.save(member, value)
                zf.writestr(f"{key}.npy", member.getvalue())
    return buffer.getvalue()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npy_header_declaring_1e16_images_is_refused_and_predict_skips_only_that_file(learner, tmp_path, compression):
    from rerelrp.data import load_medmnist
    from rerelrp.errors import DataError
    from rerelrp.run.batch_predict import collect

    (tmp_path / "huge.npz").write_bytes(_npz_declaring((10**16, 28, 28), compression))
    with pytest.raises(DataError, match="declares an array of shape") as err:
        load_medmnist(str(tmp_path / "huge.npz"))
    assert "huge.npz" in str(err.value)
    (tmp_path / "ok.png").write_bytes(_png(20))
    items, skipped = collect([tmp_path / "huge.npz", tmp_path / "ok.png"], dicom_size=16)
    assert [Path(i.source).name for i in items] == ["ok.png"]
    assert "declares an array" in skipped[0].reason


# --------------------------------------------------------------------------- the app on a workspace with hostile names
HOSTILE_TASKS = ["<img src=https://127.0.0.1:9/t.png>", "![t](https://127.0.0.1:9/t.png)"]
HOSTILE_CLASSES = [":red[c0]<b>x</b>", "[c1](https://127.0.0.1:9/)", "$c^2$", "**c3** `x`"]
HOSTILE_FILE = "<img src=https://127.0.0.1:9/f.png>.png"


def _shown_text(at):
    """Every body the app rendered as Markdown, and every widget label and tooltip (they take Markdown too)."""
    bodies = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "subheader", "title"):
        bodies += [element.value for element in getattr(at, kind)]
    for element in at.metric:
        bodies += [element.label, element.value, element.proto.help]
    return bodies


@pytest.mark.timeout(600)
def test_pages_show_hostile_names_as_text(tmp_path, monkeypatch):
    """Names someone chose (task, class, file, workspace) reach no Markdown element as markup on any page."""
    import dataclasses
    import uuid

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rerelrp.data.tasks import task_from_classes

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages.common import get_state

    ds = load_dataset("demo")
    ds = dataclasses.replace(ds, class_names=HOSTILE_CLASSES + ds.class_names[4:])
    tasks = [task_from_classes(ds, [0, 1], name=HOSTILE_TASKS[0]), task_from_classes(ds, [2, 3], name=HOSTILE_TASKS[1])]
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.step()
    run.step()
    root = tmp_path / "workspaces"
    save_workspace(root / "*evil*_[ws](x)", learner, run.metrics, tasks=tasks)

    monkeypatch.setenv("RERELRP_APP_KEY", f"test-{uuid.uuid4().hex}")
    monkeypatch.setenv("RERELRP_WORKSPACES", str(root))
    monkeypatch.setenv("RERELRP_APP_SETTINGS", json.dumps({"device": "cpu"}))
    monkeypatch.setenv("RERELRP_APP_DEMO", "none")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.run()
        get_state().open_workspace(root / "*evil*_[ws](x)")
        shown = []
        for page in ("data", "train", "explain", "capacity", "recognize", "report", "compare"):
            at.switch_page(f"pages/{page}.py")
            at.run()
            if page in ("explain", "recognize"):
                key = "ex_upload" if page == "explain" else "rec_upload"
                upload = (HOSTILE_FILE, _png(20, 3), "image/png")
                at.file_uploader(key=key).set_value(upload if page == "explain" else [upload, upload]).run()
            assert not at.exception, [e.message for e in at.exception]
            shown += _shown_text(at)
    finally:
        st.cache_resource.clear()
    text = "\n".join(shown)
    for name in (HOSTILE_TASKS[0], HOSTILE_TASKS[1], HOSTILE_FILE):  # the pages did show them, as text
        assert md(name) in text, name
    for name in HOSTILE_TASKS + HOSTILE_CLASSES + [HOSTILE_FILE, "*evil*_[ws](x)"]:
        assert name not in text, name
    for body in shown:
        assert not re.search(r"(?<!\\)(<img|<b>|!\[|\]\(|:red\[|\$c)", body), body


def test_a_workspace_whose_first_save_was_killed_says_nothing_was_learned(tmp_path):
    (tmp_path / "ws" / "snapshots" / ".tmp-snap-000001-99").mkdir(parents=True)
    with pytest.raises(WorkspaceError, match="nothing learned yet"):
        load_workspace(tmp_path / "ws")


# --------------------------------------------------------------------------- pydicom's own output, every test file
SECRET = "Zorblax^Hostilewitz"


def _hostile_dicom(path, pixels=True):
    """A DICOM file (no preamble) whose patient name pydicom would quote in its warnings and logs."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    with pydicom.config.disable_value_validation():
        ds.PatientName = SECRET
        ds.PatientID = SECRET + "\n"  # a trailing newline is invalid for LO
        ds.PatientBirthDate = SECRET  # not a date: "Invalid value for VR DA: '...'"
        ds.StudyInstanceUID = SECRET  # not a UID
        ds.SOPInstanceUID = SECRET + "\x01"
        ds.Modality = SECRET  # not a code string
        ds.BodyPartExamined = SECRET  # kept in the provenance, so scrubbed there
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = (np.arange(64, dtype=np.uint8) * 4).tobytes()
    ds.save_as(path, enforce_file_format=False)


@pytest.mark.timeout(120)
def test_pydicom_warnings_and_logs_never_show_a_patient_name(tmp_path, capfd):
    import logging

    import pydicom

    from rerelrp.data.dicom import load_dicom

    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(3):
            _hostile_dicom(tmp_path / c / f"{i}.dcm")
        _hostile_dicom(tmp_path / c / "nopixels.dcm", pixels=False)
    capfd.readouterr()
    root = logging.getLogger()
    handler = logging.StreamHandler()  # an application that prints every log record, pydicom's included
    root.addHandler(handler)
    pydicom.config.debug(True)  # pydicom logs every element it reads, values and all
    try:
        ds = load_dicom(tmp_path)
    finally:
        pydicom.config.debug(False)
        root.removeHandler(handler)
    out, err = capfd.readouterr()
    said = json.dumps(ds.report.to_dict()) + json.dumps(ds.provenance, default=str)
    assert ds.report.notes and any("pydicom warned" in note and "[value]" in note for note in ds.report.notes), \
        ds.report.notes
    assert len(ds.report.skipped) == 2, ds.report.skipped
    for part in ("Zorblax", "Hostilewitz"):
        assert part not in out + err and part not in said, part
    assert not logging.getLogger("pydicom").disabled  # quiet only while a file is read


def test_scrub_leaves_kept_words_but_not_a_value_that_spans_them():
    import pydicom

    from rerelrp.data.dicom.identifiers import scrub

    ds = pydicom.Dataset()
    ds.StudyDescription, ds.PatientName = "ECG", "ECG^Smithers"
    where = [(ds, element.tag) for element in ds]
    text = "12-lead ECG Waveform Storage (modality ECG); ECG Smithers; ECG"
    assert scrub(text, where, keep=("12-lead ECG Waveform Storage", "ECG")) == \
        "12-lead ECG Waveform Storage (modality ECG); [removed]; ECG"
    assert scrub(text, where) == "12-lead [removed] Waveform Storage (modality [removed]); [removed]; [removed]"


@pytest.mark.timeout(120)
def test_an_ecg_waveform_is_skipped_with_a_reason_that_says_what_it_is(tmp_path):
    from pydicom.data import get_testdata_file

    from rerelrp.data.dicom import load_dicom

    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(3):
            shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / c / f"{i}.dcm")
    shutil.copy(get_testdata_file("waveform_ecg.dcm"), tmp_path / "a" / "ecg.dcm")
    ds = load_dicom(tmp_path)
    [skip] = ds.report.to_dict()["skipped"]
    assert skip == {"path": "a/ecg.dcm",
                    "reason": "a waveform object (12-lead ECG Waveform Storage), not an image; modality ECG"}


def _pydicom_test_files(folder):
    """Every pydicom test file (deduplicated by content, none over 20 MB) in class folders a and b, alternating."""
    from pydicom.data import get_testdata_files

    seen, names = set(), []
    for c in "ab":
        (folder / c).mkdir(parents=True)
    for path in sorted(map(Path, get_testdata_files())):
        if not path.is_file() or path.stat().st_size > 20 * 1024 * 1024:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        target = folder / "ab"[len(names) % 2] / f"{len(names):03d}_{path.name}"
        shutil.copy(path, target)
        names.append(target)
    return names


@pytest.mark.timeout(300)
def test_every_pydicom_test_file_through_run_and_predict(tmp_path, capfd):
    """No traceback, exit status 0 or 2 (a user error), and predict writes a row for every file it could read."""
    import csv

    from rerelrp.cli import main

    tiny = ["--epochs", "1", "--min-steps", "0", "--prune-samples", "64", "--relevance-samples", "64",
            "--recognizer-samples", "64", "--trees", "8", "--quiet", "--net", "lenet", "--input-size", "16",
            "--device", "cpu"]
    files = _pydicom_test_files(tmp_path / "data")
    assert len(files) > 100
    capfd.readouterr()
    rc = main(["run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *tiny])
    _, err = capfd.readouterr()
    assert rc in (0, 2) and "Traceback" not in err, err[-3000:]
    assert main(["run", "--data", "demo", "--tasks", "1", "--out", str(tmp_path / "demo"),
                 "--workspace", str(tmp_path / "ws"), *tiny]) == 0
    capfd.readouterr()
    rc = main(["predict", "--workspace", str(tmp_path / "ws"), str(tmp_path / "data"), "--out", str(tmp_path / "p.csv"),
               "--quiet"])
    _, err = capfd.readouterr()
    assert rc in (0, 2) and "Traceback" not in err, err[-3000:]
    assert "UserWarning" not in err and "valuerep" not in err, err[-3000:]  # pydicom's warnings stay inside
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predicted = {row["source"] for row in rows}
    skipped = {line.split(": ")[0].removeprefix("skipped ") for line in err.splitlines() if line.startswith("skipped ")}
    assert len(rows) == len(predicted) > 30  # one row per readable file
    assert predicted | skipped == {str(f) for f in files} and not predicted & skipped  # every file: a row or a reason


def test_a_workspace_compare_json_that_is_a_fifo_or_huge_is_noted_not_read(ws, tmp_path):
    """The report of a workspace whose compare.json is a FIFO or a link to /dev/zero: a note, no hang, no read."""
    from rerelrp.report import make_report

    os.mkfifo(ws / "compare.json")
    result = make_report(ws, tmp_path / "r.html", "html", samples=["none"])
    assert any("comparison is not shown" in n and "FIFO" in n for n in result["notes"])
    os.remove(ws / "compare.json")
    os.symlink("/dev/zero", ws / "compare.json")
    result = make_report(ws, tmp_path / "r.html", "html", samples=["none"])
    assert any("comparison is not shown" in n and "link" in n for n in result["notes"])
