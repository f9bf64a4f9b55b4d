"""Reports at the size of a real study (issue 25): 8 tasks with long names and out-of-scope samples.

The PDF is read back with pdfplumber: no two words overlap and no word leaves its page. The
figures keep their plotting area: task names on axes and in legends are cut to a readable length,
and the whole name is in the hover.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rerelrp.data import load_dataset, medical_demo_paths
from rerelrp.data.tasks import task_from_classes
from rerelrp.figures.plots import TICK_CHARS, accuracy_matrix_figure, capacity_figure, recognition_figure
from rerelrp.method.learner import ReReLRP
from rerelrp.report import Sample, make_report
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import load_workspace, save_workspace

pdfplumber = pytest.importorskip("pdfplumber")

CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8, device="cpu")
NAMES = ["Blood cell morphology, granulocyte lineage and the basophils (BloodMNIST)",
         "Paediatric chest X-ray pneumonia screening, anteroposterior projection",
         "Breast ultrasound malignancy, first site and scanner of the study",
         "Erythroblasts and immature granulocytes (myelocytes, metamyelocytes)",
         "Lymphocytes and monocytes of the peripheral blood smear, morning clinic",
         "Neutrophils and platelets (thrombocytes), afternoon clinic of the same site",
         "Handwritten digits zero and one, a control task without any medical content",
         "Handwritten digits two and three, the second control task of the sequence"]
LONG_FILE = "file an-out-of-scope-noise-image-with-a-long-file-name-from-another-machine-and-folder.png"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    pneumonia, breast, blood = (load_dataset(p) for p in medical_demo_paths())
    digits = load_dataset("demo")
    specs = [(blood, [0, 1]), (pneumonia, [0, 1]), (breast, [0, 1]), (blood, [2, 3]), (blood, [4, 5]),
             (blood, [6, 7]), (digits, [0, 1]), (digits, [2, 3])]
    tasks = [task_from_classes(ds, classes, name=name) for (ds, classes), name in zip(specs, NAMES)]
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.run()
    root = tmp_path_factory.mktemp("study8")
    save_workspace(root / "ws", learner, run.metrics, tasks=tasks)
    rng = np.random.default_rng(0)
    samples = [Sample(t.test.images[0], f"test image 0 of task {i}", i, int(t.test.labels[0])) for i, t in enumerate(tasks)]
    samples += [Sample(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), LONG_FILE),
                Sample(np.full((64, 64, 3), 255, np.uint8), "file white.png")]
    make_report(root / "ws", root / "r.pdf", "pdf", samples=samples)
    return root


def _overlaps(words, tol=0.5):
    found = []
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            wide = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            high = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
            if wide > tol and high > tol:
                found.append((a["text"], b["text"]))
    return found


def test_the_pdf_of_8_long_named_tasks_has_no_overlapping_word_and_nothing_off_the_page(study):
    with pdfplumber.open(study / "r.pdf") as pdf:
        text = []
        for number, page in enumerate(pdf.pages, 1):
            words = page.extract_words()
            assert not _overlaps(words), (number, _overlaps(words)[:5])
            outside = [w["text"] for w in words if w["x0"] < 0 or w["x1"] > page.width or w["top"] < 0
                       or w["bottom"] > page.height]
            assert not outside, (number, outside)
            text.append(page.extract_text())
    joined = re.sub(r"\s+", " ", " ".join(text))
    assert all(name.split(",")[0] in joined for name in NAMES)  # each task named (wrapped where long)
    assert "NONE OF THE LEARNED TASKS" in joined.upper()


def test_figures_cut_long_task_names_on_axes_and_keep_them_whole_in_the_hover(study):
    learner, metrics, _ = load_workspace(study / "ws")
    names = [t["name"] for t in learner.tasks_]
    matrix = accuracy_matrix_figure(metrics.acc_tag, names)
    assert all(len(label) <= TICK_CHARS + 4 for label in matrix.data[0].x)  # "7: " and the ellipsis
    hover = json.dumps(matrix.to_plotly_json()["data"][0]["customdata"])
    assert all(name in hover for name in names)
    bars = recognition_figure(np.full(8, 1 / 8), names)
    assert all(len(label) <= TICK_CHARS + 4 for label in bars.data[0].x) and list(bars.data[0].customdata)[0].endswith(NAMES[0])
    capacity = capacity_figure(learner.capacity(), names, learner.min_free)
    assert all(len(trace.name) <= TICK_CHARS + 9 for trace in capacity.data)  # "task 7: ..." in the legend
    assert NAMES[3] in capacity.data[3].hovertemplate


def test_the_overlap_check_sees_two_words_printed_over_each_other(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.text(20, 20, "sub-net 0: pneumoniamnist")
    pdf.text(40, 20, "sub-net 1: breastmnist")  # starts inside the first title
    pdf.text(20, 40, "alone")
    pdf.output(str(tmp_path / "o.pdf"))
    with pdfplumber.open(tmp_path / "o.pdf") as read:
        assert _overlaps(read.pages[0].extract_words())
