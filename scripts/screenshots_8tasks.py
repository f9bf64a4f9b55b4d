"""Every page of the app, and the HTML and PDF reports, at 8 learned tasks with long names (issue 25).

    .venv/bin/python scripts/screenshots_8tasks.py --out docs

1. Trains a tiny 8-task model (the bundled medical demo's blood cells in 4 tasks, its chest X-rays,
   its breast ultrasound and two tasks of the digits, each under a long name) into a workspace
   under a temporary root. **Training is minimal on purpose** (LeNet, 16 px, 1 epoch, about 15 s):
   the pictures are about layout, not accuracy.
2. Writes the PDF report of that workspace, with one test image per task and two out-of-scope
   images, to ``--out/report-8tasks.pdf`` (MedMNIST demo images, CC BY 4.0), and the HTML report to
   the temporary folder, shown as ``--out/screenshot-8tasks-html-report.png``.
3. Starts ``streamlit run app.py`` on 127.0.0.1, opens the workspace in headless Chromium, loads its
   data when asked, and saves a full-page screenshot of every page as
   ``--out/screenshot-8tasks-<page>.png`` (every request must go to the local server).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_screenshots import check_page, go, load_learned_data, settle, shrink, start_app, stop_app, wait_idle

from rerelrp.data import load_dataset, medical_demo_paths
from rerelrp.data.tasks import task_from_classes
from rerelrp.method.learner import ReReLRP
from rerelrp.report import Sample, make_report
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import save_workspace

CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
              device="cpu")
NAMES = ["Blood cell morphology, granulocyte lineage and the basophils (BloodMNIST)",
         "Paediatric chest X-ray pneumonia screening, anteroposterior projection",
         "Breast ultrasound malignancy, first site and scanner of the study",
         "Erythroblasts and immature granulocytes (myelocytes, metamyelocytes)",
         "Lymphocytes and monocytes of the peripheral blood smear, morning clinic",
         "Neutrophils and platelets (thrombocytes), afternoon clinic of the same site",
         "Handwritten digits zero and one, a control task without any medical content",
         "Handwritten digits two and three, the second control task of the sequence"]
PAGES = ("Data", "Train", "Explain", "Capacity", "Recognize", "Report", "Compare")
VIEWPORT = {"width": 1400, "height": 1000}


def eight_tasks():
    pneumonia, breast, blood = (load_dataset(p) for p in medical_demo_paths())
    digits = load_dataset("demo")
    specs = [(blood, [0, 1]), (pneumonia, [0, 1]), (breast, [0, 1]), (blood, [2, 3]), (blood, [4, 5]),
             (blood, [6, 7]), (digits, [0, 1]), (digits, [2, 3])]
    return [task_from_classes(ds, classes, name=name) for (ds, classes), name in zip(specs, NAMES)]


def train(root):
    tasks = eight_tasks()
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.run()
    save_workspace(root / "study-8", learner, run.metrics, tasks=tasks)
    rng = np.random.default_rng(0)
    samples = [Sample(t.test.images[0], f"test image 0 of task {i}", i, int(t.test.labels[0])) for i, t in enumerate(tasks)]
    samples += [Sample(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                       "file an-out-of-scope-noise-image-with-a-long-file-name-from-another-machine.png"),
                Sample(np.full((64, 64, 3), 255, np.uint8), "file white.png")]
    return root / "study-8", samples


def browse(url, out, html_report):
    from playwright.sync_api import sync_playwright

    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in
                    ("127.0.0.1", "localhost", None) and not r.url.startswith(("data:", "blob:")) else None)
            page.goto(url)
            page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=90_000)
            wait_idle(page)
            page.locator(".st-key-ws_open button:visible").first.click()
            page.get_by_text("8 of 8 planned tasks learned").wait_for(timeout=120_000)
            load_learned_data(page)
            for name in PAGES:
                go(page, name)
                if name == "Recognize" and page.get_by_role("button", name="Use test images").count():
                    page.get_by_role("button", name="Use test images").click()
                if name == "Explain":
                    page.get_by_role("button", name="Show what they respond to").click()
                    page.get_by_text("where it is most active in the task's images").first.wait_for(timeout=120_000)
                settle(page)
                check_page(page, name)
                height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": VIEWPORT["width"], "height": min(9000, max(1000, height + 40))})
                settle(page)
                path = out / f"screenshot-8tasks-{name.lower()}.png"
                page.screenshot(path=str(path), full_page=True)
                shrink(path, 600)
                page.set_viewport_size(VIEWPORT)
                print(f"wrote {path}", flush=True)
            page.goto(html_report.as_uri())
            page.wait_for_timeout(3000)
            path = out / "screenshot-8tasks-html-report.png"
            page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": 4200},
                            full_page=True)  # the summary, the tables and the accuracy matrices
            shrink(path, 600)
            print(f"wrote {path}", flush=True)
        finally:
            browser.close()
    if outside:
        sys.exit(f"requests outside this machine: {outside}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rerelrp-8tasks-") as folder:
        root = Path(folder)
        workspace, samples = train(root)
        make_report(workspace, args.out / "report-8tasks.pdf", "pdf", samples=samples)
        make_report(workspace, root / "report-8tasks.html", "html", samples=samples)  # 5 MB: shown, not kept
        proc, url = start_app(root, root)
        try:
            browse(url, args.out, root / "report-8tasks.html")
        finally:
            stop_app(proc)


if __name__ == "__main__":
    main()
