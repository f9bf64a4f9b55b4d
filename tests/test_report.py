"""Explanation reports: self-contained HTML, a PDF with the expected sections, samples and their checks."""
import base64
import copy
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import ConfigError, DataError, WorkspaceError
from rerelrp.method.learner import ReReLRP
from rerelrp.report import SECTIONS, Sample, build_report, make_report, render_html, render_pdf, resolve_samples
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import load_workspace, save_workspace

CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8, device="cpu")
N_TASKS = 3
EXTRA = {"data": {"sources": ["demo"], "tasks": N_TASKS}}


@pytest.fixture(scope="module")
def tasks():
    return build_sequence([load_dataset("demo")], N_TASKS)


@pytest.fixture(scope="module")
def ws(tasks, tmp_path_factory):
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.run()
    path = tmp_path_factory.mktemp("report") / "ws"
    save_workspace(path, learner, run.metrics, tasks=tasks, extra=EXTRA)
    return path


@pytest.fixture(scope="module")
def png_file(tmp_path_factory, tasks):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "scan.png"
    Image.fromarray(np.kron(tasks[1].test.images[5][..., 0], np.ones((4, 4), np.uint8))).save(path)  # 32x32 gray
    return path


@pytest.fixture(scope="module")
def html_report(ws, png_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = make_report(ws, out, "html", samples=["0:1", "2:3", str(png_file)])
    return out, result


class Resources(HTMLParser):
    """Every tag and every attribute that could make a browser fetch something."""

    URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "poster", "data", "xlink:href", "background", "cite"}

    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.scripts, self.images = [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name in self.URL_ATTRS:
                self.urls.append((tag, name, value or ""))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(document):
    parser = Resources()
    parser.feed(document)
    return parser


# --------------------------------------------------------------------------- HTML
def test_html_fetches_nothing_and_inlines_plotly_once(html_report):
    """'No external URL' means: opening the file makes no request. Checked three ways:
    every resource attribute is a data: URI or an in-page anchor; no tag that loads a document,
    style sheet or frame; and apart from the plotly.js bundle (byte-identical to plotly's own,
    whose URL strings only serve map/geo traces that no figure here uses) the file holds no URL at all.
    """
    import plotly.offline

    out, result = html_report
    document = out.read_text(encoding="utf-8")
    page = parse(document)
    for tag, name, value in page.urls:
        assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:80])
    assert not {"link", "iframe", "frame", "object", "embed", "base", "audio", "video", "source"} & set(page.tags)
    bundle = plotly.offline.get_plotlyjs()
    assert sum(script == bundle for script in page.scripts) == 1  # inlined, exactly once
    assert document.count(bundle[:200]) == 1
    rest = document.replace(bundle, "")
    for needle in ("http://", "https://", "//cdn", "@import", "url(", "mathjax", "fonts.googleapis"):
        assert needle not in rest.lower(), needle
    # every figure draws only trace types that never fetch map tiles or topojson
    types = [trace.get("type") for data in figure_data(rest) for trace in data]
    assert len(types) >= 5 and set(types) <= {"heatmap", "bar", "scatter", "image"}, set(types)


def figure_data(document):
    """The trace list of every ``Plotly.newPlot(id, data, layout, config)`` call in the page."""
    decoder = json.JSONDecoder()
    out, start = [], 0
    while (start := document.find("Plotly.newPlot(", start)) >= 0:
        pos = start + len("Plotly.newPlot(")
        for _ in range(2):  # the element id, then the data
            while document[pos] in " \n\t,":
                pos += 1
            value, pos = decoder.raw_decode(document, pos)
        out.append(value)
        start = pos
    return out


def test_html_holds_exactly_the_chosen_images(html_report):
    from PIL import Image

    out, result = html_report
    page = parse(out.read_text(encoding="utf-8"))
    assert result["n_samples"] == 3
    assert len(page.images) == 3 * (1 + 2 * N_TASKS)  # per sample: input, then heatmap and overlay per sub-network
    for src in page.images:
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    document = out.read_text(encoding="utf-8")
    for title in dict(SECTIONS).values():
        assert title in document
    assert "test image 1 of task 0" in document and "file scan.png" in document


def test_html_escapes_names_from_the_data(ws, tmp_path):
    learner, metrics, meta = load_workspace(ws)
    evil = "<img src=http://evil.example/x.png onerror=alert(1)>"
    learner.tasks_[0] = copy.deepcopy(learner.tasks_[0]) | {"name": evil, "classes": [evil, "b</script>", "ç"]}
    content = build_report(learner, metrics, meta, [Sample(np.zeros((8, 8, 1), np.uint8), evil)])
    page = parse(render_html(content))
    assert all(not value.startswith("http") for _, _, value in page.urls)
    assert len(page.images) == 1 + 2 * N_TASKS


def test_html_shows_injected_markup_as_text(ws, tasks):
    """Names from the data and the title are escaped in the page, and plotly's JSON holds them as text too."""
    import html

    learner, metrics, meta = load_workspace(ws)
    script = "<script>alert(1)</script>"
    classes = [script] + learner.tasks_[1]["classes"][1:]
    learner.tasks_[1] = copy.deepcopy(learner.tasks_[1]) | {"name": f"t{script}", "classes": classes}
    sample = Sample(tasks[1].test.images[0], f"upload {script}.png", task=1, label=0)
    document = render_html(build_report(learner, metrics, meta, [sample], title="<b>x</b> report"))
    bundle = __import__("plotly.offline").offline.get_plotlyjs()
    assert document.count(bundle) == 1
    page = document.replace(bundle, "")
    assert script not in page and "<b>x</b>" not in page
    assert "alert(1)</" not in page  # not even a closing tag of the injected script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # task name, class name and origin, shown as text
    assert "<title>&lt;b&gt;x&lt;/b&gt; report</title>" in page
    assert "<h1>&lt;b&gt;x&lt;/b&gt; report</h1>" in page
    assert "upload &lt;script&gt;alert(1)&lt;/script&gt;.png" in page
    # plotly renders its strings as (limited) HTML: the figures get the escaped name, and plotly's
    # JSON writes every "<" of the page as \u003c, so nothing in it can close the <script> it sits in
    labels = [x for data in figure_data(page) for trace in data for x in (trace.get("x") or []) if isinstance(x, str)]
    assert f"1: t{html.escape(script)}" in labels
    assert not any("<script" in x for x in labels)
    assert len(parse(document).scripts) == 1 + len(figure_data(page))  # plotly.js, then one script per figure


def test_template_ships_with_the_package():
    from importlib.resources import files

    template = files("rerelrp.report") / "templates" / "report.html.j2"
    assert template.is_file() and "{{ c.title }}" in template.read_text(encoding="utf-8")
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"rerelrp.report" = ["templates/*.j2"]' in pyproject  # package-data: the wheel holds it


# --------------------------------------------------------------------------- PDF
@pytest.fixture(scope="module")
def pdf_report(ws, tmp_path_factory):
    out = tmp_path_factory.mktemp("pdf") / "report.pdf"
    result = make_report(ws, out, "pdf", samples=["0:0", "1:0", "2:0", "1:4"])
    return out, result


def test_pdf_opens_and_holds_the_sections(pdf_report):
    from pypdf import PdfReader

    out, result = pdf_report
    reader = PdfReader(out)
    text = "\n".join(page.extract_text() for page in reader.pages)
    for title in dict(SECTIONS).values():
        assert title in text, title
    assert [item.title for item in reader.outline] == [title for _, title in SECTIONS]
    for phrase in ("TAg accuracy (%)", "TAw accuracy (%)", "Forgetting", "digits t2", "sha256", "EpsilonPlusFlat",
                   "torch", "configuration seed", "does not store", "exactly the 4 sample image(s)"):
        assert phrase in text, phrase
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 4 * (1 + 2 * N_TASKS)
    assert result["n_samples"] == 4


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler-utils (pdftoppm)")
def test_pdf_first_page_renders(pdf_report, tmp_path):
    from PIL import Image

    out, _ = pdf_report
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(out), str(tmp_path / "p")], check=True)
    page = np.asarray(Image.open(next(tmp_path.glob("p*.png"))).convert("L"))
    assert page.shape[0] > page.shape[1] > 250  # A4 portrait
    assert (page < 128).mean() > 0.02  # text and the title bar, not a blank page


@pytest.mark.parametrize("unicode_font", [True, False])
def test_pdf_with_any_class_names(ws, unicode_font):
    from pypdf import PdfReader

    learner, metrics, meta = load_workspace(ws)
    learner.tasks_[1] = copy.deepcopy(learner.tasks_[1]) | {"name": "Épithélium α–β 中文 🙂",
                                                            "classes": ["naïve", "Ω", "x\u200by"]}
    data = render_pdf(build_report(learner, metrics, meta), font=unicode_font)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    assert "Épithélium" in text and "naïve" in text
    assert "Privacy statement" in text


# --------------------------------------------------------------------------- samples
def test_default_samples_and_none(ws):
    learner, _, meta = load_workspace(ws)
    samples, notes = resolve_samples(["auto"], learner, meta)
    assert len(samples) == 2 * N_TASKS and [s.task for s in samples] == [0, 0, 1, 1, 2, 2]
    assert all(s.label is not None for s in samples) and notes
    assert resolve_samples(["none"], learner, meta)[0] == []


def test_workspace_saved_by_the_app_gets_default_samples(ws, tasks, tmp_path):
    """The app saves without extra= (no data sources recorded): each task's provenance says how to reload it."""
    from pypdf import PdfReader

    learner, metrics, _ = load_workspace(ws)
    path = save_workspace(tmp_path / "app-ws", learner, metrics, tasks=tasks)
    assert not load_workspace(path)[2].get("extra")
    result = make_report(path, tmp_path / "r.pdf", "pdf", samples=["auto"])
    assert result["n_samples"] == 2 * N_TASKS and "chosen by default" in result["notes"][0]
    text = "\n".join(page.extract_text() for page in PdfReader(tmp_path / "r.pdf").pages)
    assert f"exactly the {2 * N_TASKS} sample image(s)" in text and "test image" in text


def test_recorded_sources_are_named_but_not_read_unless_asked(ws, tmp_path, monkeypatch):
    """A workspace someone sent may name any path as its data: without --samples, nothing there is read."""
    import rerelrp.report.samples as samples_module

    learner, _, meta = load_workspace(ws)
    learner.tasks_[0]["provenance"]["reload"] = {"loader": "medmnist", "source": str(tmp_path / "elsewhere.npz")}

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded source was read without being asked for")

    monkeypatch.setattr(samples_module, "learned_tasks", refuse)
    samples, notes = resolve_samples(None, learner, meta)
    assert samples == [] and "elsewhere.npz" in notes[0] and "--samples auto" in notes[0]
    result = make_report(ws, tmp_path / "r.html", "html")
    assert result["n_samples"] == 0 and "--samples auto" in result["notes"][0]


def test_bad_sample_specs(ws, tmp_path):
    learner, _, meta = load_workspace(ws)
    with pytest.raises(ConfigError, match="no task 9"):
        resolve_samples(["9:0"], learner, meta)
    with pytest.raises(ConfigError, match="test images 0.."):
        resolve_samples(["0:100000"], learner, meta)
    with pytest.raises(DataError, match="neither TASK:INDEX"):
        resolve_samples([str(tmp_path / "missing.png")], learner, meta)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError):
        resolve_samples([str(tmp_path / "notes.png")], learner, meta)


def test_samples_need_the_same_data(ws, tasks, png_file, tmp_path):
    learner, metrics, meta = load_workspace(ws)
    original = learner.tasks_
    # a task's data file was moved: default gives no samples with a note, TASK:INDEX a clear error
    learner.tasks_ = copy.deepcopy(original)
    learner.tasks_[1]["provenance"]["reload"] = {"loader": "medmnist", "source": str(tmp_path / "gone.npz")}
    moved = tmp_path / "moved"
    save_workspace(moved, learner, metrics, tasks=tasks)
    learner2, _, meta2 = load_workspace(moved)
    samples, notes = resolve_samples(["auto"], learner2, meta2)
    assert samples == [] and "not available" in notes[0] and "gone.npz" in notes[0]
    with pytest.raises(WorkspaceError, match="(cannot be|not) loaded again"):  # the file is named, not opened
        resolve_samples(["0:1"], learner2, meta2)
    assert resolve_samples([str(png_file)], learner2, meta2)[0][0].origin == "file scan.png"  # files still work
    # learned from an upload: its data were never stored
    del learner2.tasks_[1]["provenance"]["reload"]
    with pytest.raises(WorkspaceError, match="uploaded"):
        resolve_samples(["0:1"], learner2, meta2)
    # the source loads but gives other images than the workspace learned (fingerprints differ)
    other = build_sequence([load_dataset("demo", seed=1)], N_TASKS)
    learner.tasks_ = original
    changed = tmp_path / "changed"
    save_workspace(changed, learner, metrics, tasks=other, extra=EXTRA)
    learner3, _, meta3 = load_workspace(changed)
    with pytest.raises(WorkspaceError, match="fingerprint"):
        resolve_samples(["0:1"], learner3, meta3)


def test_report_writes_only_its_file(ws, tmp_path, monkeypatch):
    import tempfile

    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = sorted(p for p in Path(ws).rglob("*"))
    make_report(ws, out_dir / "r.pdf", "pdf", samples=["0:2"])
    assert [p.name for p in out_dir.iterdir()] == ["r.pdf"]
    assert not any(spare.iterdir())
    assert sorted(p for p in Path(ws).rglob("*")) == before


# --------------------------------------------------------------------------- command line
def test_cli_report(ws, tmp_path, capsys):
    from rerelrp.cli import main

    out = tmp_path / "r.pdf"
    assert main(["report", "--workspace", str(ws), "--out", str(out), "--samples", "0:0", "1:3"]) == 0
    assert out.read_bytes()[:5] == b"%PDF-" and "2 sample image(s)" in capsys.readouterr().out
    assert main(["report", "--workspace", str(ws), "--out", str(tmp_path / "r.txt")]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["report", "--workspace", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_pdf_matrix_colours_are_the_figures_viridis():
    from plotly.colors import hex_to_rgb

    from rerelrp.figures.plots import accuracy_matrix_figure
    from rerelrp.report.pdf import viridis

    scale = accuracy_matrix_figure([[50.0]], ["a"]).data[0].colorscale
    assert len(scale) >= 5
    for at, color in scale:
        assert viridis(100 * at)[0] == hex_to_rgb(color), at
    assert viridis(-5) == viridis(0) and viridis(120) == viridis(100)  # clipped to 0..100
    assert viridis(20)[1] and not viridis(90)[1]  # white text on the dark end only


def test_a_sample_of_no_learned_task_is_called_so_in_html_and_pdf(ws):
    from pypdf import PdfReader

    learner, metrics, meta = load_workspace(ws)
    content = build_report(learner, metrics, meta, [Sample(np.zeros((8, 8, 1), np.uint8), "blank.png")])
    smp = content["samples"][0]
    assert np.isfinite(smp["scope_score"]) and smp["out_of_scope"] == (smp["scope_score"] > 1)
    smp["out_of_scope"], smp["scope_score"] = True, 3.25
    html = render_html(content)
    assert "none of the learned tasks" in html and "scope score 3.25" in html
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(render_pdf(content, font=False))).pages)
    assert "NONE OF THE LEARNED TASKS (scope score 3.25 > 1)" in " ".join(text.split())
    smp["out_of_scope"], smp["scope_score"] = False, 0.5
    assert "none of the learned tasks</span>" not in render_html(content)


# --------------------------------------------------------------------------- clinical figures, per-task settings, splits
WARNING = ("class '0': 1 patient (fewer than 3): split by file instead; test figures then measure other images of the "
           "same scan of the same patient, not new patients")


def _patient_split(task, warned=None):
    """``task`` with a split record as the DICOM loader writes it: every class split by patient (7 / 2 / 2 of 11),
    except ``warned``, a class of one patient split by file with the loader's warning."""
    from rerelrp.data.core import split_record

    per_class = {}
    for name in task.class_names:
        one = name == warned
        per_class[name] = {"unit": "file" if one else "patient", "patients": 1 if one else 11,
                           "groups": {"train": 7, "val": 2, "test": 2}, "warnings": [WARNING] if one else []}
    task.provenance = copy.deepcopy(task.provenance) | {"split": split_record(per_class)}
    return task


@pytest.fixture(scope="module")
def mixed_ws(tmp_path_factory):
    """Two tasks trained with different settings (epochs 1 with the 200-step floor, then epochs 3 without a floor
    and another learning rate), task 0 with a data warning, task 1 split by patient."""
    tasks = build_sequence([load_dataset("demo")], 2)
    tasks = [_patient_split(tasks[0], warned="0"), _patient_split(tasks[1])]
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.step()
    learner.set_params(epochs=3, min_steps=0, lr=0.02)
    run.step()
    path = tmp_path_factory.mktemp("mixed") / "ws"
    save_workspace(path, learner, run.metrics, tasks=tasks)
    out = tmp_path_factory.mktemp("mixed-out")
    make_report(path, out / "r.html", "html", samples=["0:1", "1:3"])
    make_report(path, out / "r.pdf", "pdf", samples=["0:1", "1:3"])
    return path, out / "r.html", out / "r.pdf"


def pdf_text(path_or_bytes):
    from pypdf import PdfReader

    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return " ".join("\n".join(page.extract_text() for page in PdfReader(source).pages).split())


def html_text(document):
    """The page's visible text with whitespace collapsed (tags dropped, entities decoded)."""
    import html

    class Text(HTMLParser):
        parts, skip = [], False

        def handle_starttag(self, tag, attrs):
            self.skip = tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip = False

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.parts = []
    parser.feed(document)
    return html.unescape(" ".join(" ".join(parser.parts).split()))


def test_reports_carry_per_class_rows_and_intervals(mixed_ws):
    from rerelrp.run.clinical import format_accuracy, per_class_table

    path, html_file, pdf_file = mixed_ws
    _, metrics, _ = load_workspace(path)
    m = metrics.to_dict()
    document = html_file.read_text(encoding="utf-8")
    page, text = html_text(document), pdf_text(pdf_file)
    for j in range(2):
        taw = format_accuracy(m["acc_taw"][-1][j], m["taw_ci95"][j], m["n_test"][j])
        assert "95 % CI" in taw and f"{m['n_test'][j]} images" in taw
        assert f"TAw {taw}" in page and f"TAw {taw}" in text
        for row in per_class_table(m["per_class"][j]):
            cells = " ".join([row["class"], str(row["images"]), row["sensitivity"], row["specificity"], row["ppv"],
                              row["npv"], row["auroc"], row["f1"]])
            assert cells in page, cells
            assert cells in text, cells
    final = format_accuracy(m["final"]["taw"], m["final"]["taw_ci95"], sum(m["n_test"]))
    assert f"Final TAw: {final}" in page and f"Final TAw: {final}" in text
    # confusion matrices: one heatmap per task and one over all classes in the HTML, count tables in the PDF
    assert document.count("task-aware confusion matrix") == 2 and "Task-agnostic confusion matrix" in document
    first = m["confusion"]["taw"][0][0]
    assert "task-aware confusion matrix (counts)" in text
    assert "0: 0 " + " ".join(map(str, first)) in text


def test_reports_show_the_settings_of_each_task(mixed_ws):
    path, html_file, pdf_file = mixed_ws
    learner, _, _ = load_workspace(path)
    assert [h.schedule["epochs_set"] for h in learner.history_] == [1, 3]
    runs = [h.schedule["epochs"] for h in learner.history_]
    assert runs[0] > 1 and runs[1] == 3  # the step floor ran more epochs than were set for task 0
    document = html_file.read_text(encoding="utf-8")
    page, text = html_text(document), pdf_text(pdf_file)
    for row in ("epochs set 1 3", f"epochs run (step floor included) {runs[0]} 3", "lr 0.05 0.02", "min_steps 200 0",
                "batch_size 64 64"):
        assert row in page, row
        assert row in text, row
    assert '<tr class="diff"><th>epochs set</th>' in document  # a setting that differs is marked
    assert '<tr><th>batch_size</th>' in document
    # fixed settings stay in the run's table, per-task ones are not repeated there
    run_table = page.split("Settings of the whole run")[1].split("Settings per task")[0]
    assert "net lenet" in run_table and "seed 0" in run_table and "lr" not in run_table


def test_reports_show_splits_resolution_and_warnings(mixed_ws):
    _, html_file, pdf_file = mixed_ws
    document = html_file.read_text(encoding="utf-8")
    page, text = html_text(document), pdf_text(pdf_file)
    for phrase in ("split by patient: 35 / 10 / 10 patients (train / val / test)",  # task 1: 5 classes of 7 / 2 / 2
                   "split by file or patient", WARNING, "loaded at 8 px, network reads 16 px",
                   "Warnings, task 0 (digits t0)", "warning(s) about the data or the model"):
        assert phrase in page, phrase
        assert phrase in text, phrase
    assert document.count('class="warnbox"') >= 2  # the summary's pointer and task 0's block
    assert "0 file 1 7 / 2 / 2" in page and "1 patient 11 7 / 2 / 2" in text  # the split per class


def test_samples_are_marked_right_or_wrong(ws, tasks):
    learner, metrics, meta = load_workspace(ws)
    image, label = tasks[1].test.images[3], int(tasks[1].test.labels[3])
    content = build_report(learner, metrics, meta, [Sample(image, "test image", task=1, label=label)])
    smp = content["samples"][0]
    taw_class = smp["subnets"][1]["class"]
    assert smp["taw_verdict"]["right"] == (taw_class == smp["true_class"])
    assert smp["tag_verdict"]["right"] == smp["correct"]
    # the same image under a label its task's sub-network does not give: both answers are wrong
    classes = learner.tasks_[1]["classes"]
    other = next(i for i, c in enumerate(classes) if str(c) not in (taw_class, smp["pred_class"]))
    content = build_report(learner, metrics, meta, [Sample(image, "test image", task=1, label=other)])
    smp = content["samples"][0]
    assert not smp["taw_verdict"]["right"] and not smp["tag_verdict"]["right"]
    page = html_text(render_html(content))
    assert f"class {taw_class} ✗ wrong: true class {classes[other]}" in page
    for font in (True, False):  # the fallback font has no ✓ / ✗: the words alone then
        text = pdf_text(render_pdf(content, font=font))
        assert f"sub-network of the true task 1: class {taw_class}" in text
        assert f"WRONG: true class {classes[other]}" in text
        assert ("✗ WRONG" in text) == font


def test_a_file_of_no_learned_modality_is_out_of_scope(ws):
    """A DICOM file's Modality that no task has puts it out of scope, whatever its score, and the report says why."""
    learner, metrics, meta = load_workspace(ws)
    for record in learner.tasks_:  # as if every task were chest X-rays read from DICOM files
        record["provenance"] = dict(record["provenance"], kind="dicom",
                                    files=[{"class": c, "modality": "CR"} for c in record["classes"]])
    image = np.full((8, 8, 1), 90, np.uint8)
    content = build_report(learner, metrics, meta, [Sample(image, "file brain.dcm", modality="MR"),
                                                    Sample(image, "file same.png")])
    flagged, plain = content["samples"]
    assert flagged["out_of_scope"] and "modality MR" in flagged["scope_reason"]
    assert plain["scope_reason"] is None and plain["out_of_scope"] == (plain["scope_score"] > 1)
    reason = "modality MR: no learned task is MR (tasks: CR/DX/RG)"
    assert f"none of the learned tasks ({reason})" in html_text(render_html(content))
    assert f"NONE OF THE LEARNED TASKS ({reason})" in pdf_text(render_pdf(content))


def test_a_dicom_file_sample_carries_its_modality(ws):
    from conftest import shared_file

    folder = shared_file("dicom", "mr_brain_series")
    learner, _, meta = load_workspace(ws)
    samples, _ = resolve_samples([str(sorted(folder.glob("*.dcm"))[0])], learner, meta)
    assert samples[0].modality == "MR" and samples[0].image.ndim == 3


def test_report_of_a_workspace_saved_before_the_new_keys(ws, tasks, tmp_path):
    """Older workspaces hold no intervals, per-class rows, confusion matrices, split records or per-task
    settings: both formats still build and say what is not recorded."""
    learner, metrics, _ = load_workspace(ws)
    metrics.latest, metrics.final_ci95 = {}, {}
    for record in learner.tasks_:
        record.pop("split", None)
    for report in learner.history_:
        report.settings, report.schedule, report.train_curve = {}, {}, []
    old = save_workspace(tmp_path / "old", learner, metrics, tasks=tasks)
    _, m, _ = load_workspace(old)
    assert not {"taw_ci95", "per_class", "confusion", "n_test"} & set(m.to_dict())
    out = make_report(old, tmp_path / "old.html", "html", samples=["none"])
    page = html_text(Path(out["path"]).read_text(encoding="utf-8"))
    make_report(old, tmp_path / "old.pdf", "pdf", samples=["none"])
    text = pdf_text(tmp_path / "old.pdf")
    for phrase in ("split: not recorded", "Settings per task: not recorded", "Per-class figures: not recorded",
                   "Confusion matrix: not recorded", "Settings when the workspace was saved", "relevance_samples 24",
                   "95 % CI and number of images not recorded"):
        assert phrase in page, phrase
        assert phrase in text, phrase


def test_split_and_size_texts():
    from rerelrp.report.study import resolution_text, split_text

    groups = {"train": 546, "val": 78, "test": 156}
    assert split_text({"unit": "official", "groups": groups}) == \
        "MedMNIST's official splits: 546 / 78 / 156 images (train / val / test)"
    assert split_text({"unit": "study", "groups": {"train": 7, "val": 2, "test": 1}}).startswith(
        "split by study: 7 / 2 / 1 studies")
    assert split_text(None) == "split: not recorded"
    assert resolution_text([64, 64, 1], 64) == "loaded at 64 px, network reads 64 px"
    assert resolution_text([512, 512, 1], 28).startswith("loaded at 512 px, network reads 28 px (downscaled")
    assert resolution_text(None, 28) == "image size not recorded"


def test_many_long_class_names_fit_the_pdf(ws):
    """Long class names are cut in the PDF's tables and given in full in a legend."""
    learner, metrics, meta = load_workspace(ws)
    long = "immature granulocytes (myelocytes, metamyelocytes and promyelocytes)"
    classes = [f"{long} {i}" for i in range(len(learner.tasks_[0]["classes"]))]
    learner.tasks_[0] = copy.deepcopy(learner.tasks_[0]) | {"classes": classes}
    content = build_report(learner, metrics, meta)
    for row, name in zip(content["clinical"]["tasks"][0]["per_class"], classes):
        row["class"] = name
    text = pdf_text(render_pdf(content))
    assert "Full class names: " + classes[0] in text
