"""Screenshots of the study figures (issue 24) from a real Chromium: clinical tables, per-task settings, scope, splits.

    .venv/bin/python scripts/study_screenshots.py --out docs

What it does, on this machine only (every request the page makes is recorded and must go to
127.0.0.1 / localhost):

1. Trains a pneumoniamnist -> breastmnist model with the CLI into a workspace under a temporary
   workspace root. **The training is short on purpose** (``--epochs 2 --min-steps 60``, one to one and a
   half minutes on 2 CPU cores; the whole script about three): the screenshots show what the pages say about a run, not how good a
   well-trained model is, so the figures in them are those of a briefly trained model.
2. Starts ``streamlit run app.py`` on a free port of 127.0.0.1 with that workspace root (no demo loaded)
   and, in headless Chromium (/usr/bin/chromium, a fresh profile), first loads the DICOM folder on the Data
   page (a session with no model yet), then opens the workspace from the Data page's workspace picker.
3. Writes, under ``--out``:

   - ``screenshot-study-clinical.png``: Train, tab "Clinical figures": the TAw line with its 95 % interval
     and number of images, the per-class table with intervals, the confusion heatmaps;
   - ``screenshot-study-tasks.png``: Train, tab "Per task": the settings each task ran with
     (epochs run, steps, epochs set, min steps, ...);
   - ``screenshot-study-out-of-scope.png``: Recognize with the six brain MR DICOM slices of
     ``../shared/data/dicom/mr_brain_series`` and one PNG chest X-ray test image: the MR slices are
     "none of the learned tasks", with the modality as the scope reason;
   - ``screenshot-study-explain.png``: Explain on a test image of known class that the model gets wrong (a true
     "normal" chest X-ray called "pneumonia"): the "✗ Wrong" mark; ``screenshot-study-explain-right.png``: the
     same on one it gets right ("✓ Right");
   - ``screenshot-study-split-warnings.png``: Data, the DICOM folder ``../shared/data/dicom/ct_vs_mr``
     loaded with "Split by" auto: the warnings that each class is one patient.

Each PNG is cropped to the part of the page it is about and kept under about 400 KB (a PNG over
``--max-kb`` is re-saved with a 256-colour palette). ``--work DIR`` keeps the trained workspace and
the server log in DIR; a second run with the same DIR reuses the trained workspace instead of training
again. Needs the Debian ``chromium`` package and Playwright for Python (the project's dev extra).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
MEDMNIST = SHARED / "medmnist"
MR_BRAIN = SHARED / "dicom" / "mr_brain_series"
CT_VS_MR = SHARED / "dicom" / "ct_vs_mr"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
# Streamlit scrolls inside its own container: a tall window shows a page whole. 1800 px wide, because at 1400 the
# per-class table needs a horizontal scroll (f1, auroc hidden) and the Explain panels' titles run into each other
VIEWPORT = {"width": 1800, "height": 2600}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WORKSPACE = "chest-breast"
# short training on purpose (see the docstring): enough for the pages to have something to show
TRAIN_ARGS = ["--data", "pneumoniamnist", "--data", "breastmnist", "--epochs", "2", "--min-steps", "60", "--quiet"]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------ preparing
def train(root, work, timeout):
    """The CLI run whose workspace the app opens; reused when ``root`` already holds it."""
    workspace = root / WORKSPACE
    if (workspace / "CURRENT").exists():
        log(f"reusing the trained workspace {workspace}")
        return workspace
    command = [str(ROOT / ".venv" / "bin" / "rerelrp"), "run", *TRAIN_ARGS, "--data-root", str(MEDMNIST),
               "--workspace", str(workspace), "--out", str(work / "run")]
    if not Path(command[0]).exists():
        command[0:1] = [sys.executable, "-m", "rerelrp.cli"]
    log("training (short on purpose): " + " ".join(command))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True)
    (work / "train.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"training failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    lines = (done.stdout + done.stderr).splitlines()
    final = next((i for i, line in enumerate(lines) if line.startswith("final:")), len(lines))
    log("trained: " + " | ".join(line.strip() for line in lines[final:final + 2]))
    return workspace


def test_png(folder):
    """A chest X-ray test image of pneumoniamnist (its first test image) as a PNG file."""
    import numpy as np

    from rerelrp.data.images import encode_png

    with np.load(MEDMNIST / "pneumoniamnist.npz") as data:
        image, label = data["test_images"][0], int(data["test_labels"][0][0])
    path = folder / f"pneumoniamnist-test-0-label-{label}.png"
    path.write_bytes(encode_png(image))
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(root, work):
    """``streamlit run app.py`` on a free local port with ``root`` as its workspace root; (process, URL)."""
    port = _free_port()
    env = {**os.environ, "RERELRP_APP_KEY": "study-screenshots", "RERELRP_APP_DEMO": "none",
           "RERELRP_APP_SETTINGS": "", "RERELRP_WORKSPACES": str(root), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = open(work / "server.log", "wb")  # noqa: SIM115 - open while the server runs, closed in stop_app
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )
    proc.log_file = out
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_app(proc)
            sys.exit(f"streamlit did not come up:\n{(work / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)


def stop_app(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.log_file.close()


# ------------------------------------------------------------------------------ the browser
def wait_idle(page, timeout=120_000):
    """Wait until Streamlit has finished the current run (no running indicator)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )
    page.wait_for_timeout(500)


def settle(page, plots=True):
    """Idle, plotly figures drawn, and a moment for canvases (data frames) to paint."""
    wait_idle(page)
    if plots:  # a figure in a hidden tab is never visible: wait for those on show only
        page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')]"
                               ".every(e => !e.offsetParent || e.querySelector('.main-svg'))", timeout=30_000)
    page.wait_for_timeout(1500)


class PageError(RuntimeError):
    """A page showed a Python exception instead of its content."""


def check_page(page, where):
    """Raise :class:`PageError` with the exception's text when the page shows one."""
    error = page.locator('[data-testid="stException"]')
    if error.count():
        raise PageError(f"{where}: the page shows an exception:\n{error.first.inner_text()[:2000]}")


def go(page, name):
    page.get_by_role("link", name=name, exact=True).click()
    heading = page.get_by_role("heading", name=name, exact=True)
    heading.or_(page.locator('[data-testid="stException"]')).first.wait_for(timeout=60_000)
    check_page(page, name)
    wait_idle(page)
    check_page(page, name)


def shot(page, path, top, bottom=None, max_kb=400, pad=12):
    """A screenshot of the main column from ``top``'s top to ``bottom``'s bottom (default: the page's end)."""
    check_page(page, path.name)
    top.first.scroll_into_view_if_needed()
    top.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    first = top.first.bounding_box()
    last = (bottom.last if bottom is not None else page.locator('[data-testid="stMainBlockContainer"]')).bounding_box()
    y0 = max(0, first["y"] - pad)
    y1 = min(VIEWPORT["height"], last["y"] + last["height"] + pad)
    clip = {"x": main["x"], "y": y0, "width": main["width"], "height": max(50, y1 - y0)}
    page.screenshot(path=str(path), clip=clip)
    shrink(path, max_kb)
    log(f"wrote {path} ({path.stat().st_size // 1024} KB, {int(clip['width'])}x{int(clip['height'])})")


def shrink(path, max_kb):
    """Re-save a PNG over ``max_kb`` with a 256-colour palette (text stays sharp; gradients band a little)."""
    if path.stat().st_size <= max_kb * 1024:
        return
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def open_workspace(page):
    go(page, "Data")
    button = page.locator(".st-key-ws_open button:visible").first  # the picker's Open button (its key is ws_open)
    if not button.is_visible():
        page.get_by_text("Open a saved workspace").click()
    chosen = page.get_by_role("combobox", name="Saved workspaces").input_value()
    if not chosen.startswith(f"{WORKSPACE} · 2 task(s)"):  # the only saved workspace, preselected
        raise RuntimeError(f"the workspace picker shows {chosen!r}, not {WORKSPACE}")
    button.click()
    wait_idle(page)
    page.get_by_text("2 of 2 planned tasks learned").wait_for(timeout=120_000)
    wait_idle(page)
    load_learned_data(page)


def load_learned_data(page):
    """Press the Data page's "Load the learned tasks' data" (an opened workspace's data are read only when asked)."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Load the learned tasks' data").click()
    expect(page.get_by_role("button", name="Load the learned tasks' data")).to_have_count(0, timeout=180_000)
    wait_idle(page)


def train_tabs(page, out, max_kb):
    go(page, "Train")
    page.get_by_text("TAg accuracy", exact=True).wait_for(timeout=60_000)
    page.get_by_role("tab", name="Clinical figures").click()
    page.get_by_text("Task-aware").first.wait_for(timeout=60_000)
    settle(page)
    page.locator('[data-testid="stTabs"] .js-plotly-plot:visible').nth(1).wait_for(timeout=30_000)
    settle(page)
    shot(page, out / "screenshot-study-clinical.png", page.get_by_text("Final TAg"),
         page.locator('[data-testid="stTabs"]'), max_kb)

    page.get_by_role("tab", name="Per task").click()
    page.get_by_text("Training curve of").first.wait_for(timeout=60_000)
    settle(page)
    shot(page, out / "screenshot-study-tasks.png", page.get_by_text("Final TAg"),
         page.locator('[data-testid="stTabs"]'), max_kb)


def recognize(page, out, png, max_kb):
    go(page, "Recognize")
    files = sorted(str(p) for p in MR_BRAIN.glob("*.dcm")) + [str(png)]
    page.locator("input[type=file]").first.set_input_files(files)
    page.get_by_role("heading", name=f"{len(files)} image(s)", exact=True).wait_for(timeout=180_000)
    page.get_by_text("none of the learned tasks").first.wait_for(timeout=60_000)
    settle(page)
    page.get_by_text("Closest guess: task", exact=False).wait_for(timeout=60_000)
    # the table, then the answer and heatmap of its first image (an MR slice) under "Why"
    shot(page, out / "screenshot-study-out-of-scope.png", page.get_by_role("heading", name=f"{len(files)} image(s)"),
         page.locator(".js-plotly-plot"), max_kb)


def wrong_and_right(workspace):
    """Two pneumoniamnist test images for Explain: (index, true class) of one that task 0's sub-network gets
    wrong (a true "normal" called "pneumonia" where there is one, the case issue 24 saw unmarked) and of one
    it gets right."""
    import numpy as np
    import torch

    from rerelrp.data import load_dataset
    from rerelrp.store.workspace.loading import load_workspace

    torch.set_num_threads(1)
    learner = load_workspace(workspace)[0]
    test = load_dataset(str(MEDMNIST / "pneumoniamnist.npz")).test
    truth = np.asarray(test.labels).ravel().astype(int)
    predicted = learner.subnetwork_logits(test.images, 0).argmax(1).cpu().numpy()
    classes = learner.tasks_[0]["classes"]
    wrong = np.flatnonzero((predicted != truth) & (truth == classes.index("normal")))
    if not len(wrong):
        wrong = np.flatnonzero(predicted != truth)
    right = np.flatnonzero(predicted == truth)
    picks = {}
    if len(wrong):
        picks["wrong"] = (int(wrong[0]), classes[truth[wrong[0]]])
    if len(right):
        picks["right"] = (int(right[0]), classes[truth[right[0]]])
    return picks


def explain(page, out, picks, max_kb):
    go(page, "Explain")
    page.get_by_text("task 0 → ").first.wait_for(timeout=120_000)
    settle(page)
    for kind, (index, true_class) in picks.items():
        sample = page.get_by_role("spinbutton", name="Sample", exact=False)
        sample.fill(str(index))
        sample.press("Enter")
        wait_idle(page)
        page.get_by_text(f"test #{index}, true class {true_class}").wait_for(timeout=60_000)
        mark = "✓ right" if kind == "right" else "✗ wrong"
        page.get_by_text(mark).first.wait_for(timeout=60_000)
        settle(page)
        name = "screenshot-study-explain.png" if kind == "wrong" else "screenshot-study-explain-right.png"
        shot(page, out / name, page.get_by_role("heading", name="Explain", exact=True),
             page.locator(".js-plotly-plot"), max_kb)


def split_warnings(page, out, max_kb):
    page.get_by_role("radio", name="DICOM folder", exact=True).click()  # a segmented control's option
    wait_idle(page)
    folder = page.get_by_role("textbox", name="Folder on this machine", exact=False)
    folder.fill(str(CT_VS_MR))
    folder.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Load folder", exact=True).click()
    page.get_by_text("Loaded data sets").wait_for(timeout=300_000)
    page.get_by_text("1 patient (fewer than 3)").first.wait_for(timeout=60_000)
    settle(page)
    shot(page, out / "screenshot-study-split-warnings.png", page.get_by_text("Folder on this machine"),
         page.locator('[data-testid="stColumn"]:has([data-testid="stDataFrame"])'), max_kb)


def browse(url, out, work, png, picks, max_kb):
    """Every screenshot in one Chromium session; returns the URLs of every request the pages made."""
    from playwright.sync_api import sync_playwright

    requests = []
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=work))  # a fresh --user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport=VIEWPORT, device_scale_factor=1, accept_downloads=False)
        context.on("request", lambda r: requests.append(r.url))
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=120_000)
            wait_idle(page)
            split_warnings(page, out, max_kb)  # first, in a session with no model: the network reads the loaded size
            open_workspace(page)
            train_tabs(page, out, max_kb)
            recognize(page, out, png, max_kb)
            explain(page, out, picks, max_kb)
        except Exception:
            page.screenshot(path=str(work / "failure.png"))
            log(f"failed; the page as it was: {work / 'failure.png'}")
            raise
        finally:
            context.close()
    return requests


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs", help="where the PNGs go (default: docs)")
    parser.add_argument("--work", help="keep the workspace root, logs and profile here (reused on a second run)")
    parser.add_argument("--max-kb", type=int, default=400, help="largest PNG before it is re-saved with a palette")
    parser.add_argument("--width", type=int, default=VIEWPORT["width"], help="browser window width in px")
    parser.add_argument("--train-timeout", type=int, default=1800, help="seconds the CLI training may take")
    args = parser.parse_args(argv)
    for needed in (Path(CHROMIUM), MEDMNIST / "pneumoniamnist.npz", MEDMNIST / "breastmnist.npz", MR_BRAIN, CT_VS_MR):
        if not needed.exists():
            sys.exit(f"missing: {needed}")

    VIEWPORT["width"] = args.width
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None
    work = Path(args.work).resolve() if keep else Path(tempfile.mkdtemp(prefix="rerelrp-study-shots-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "workspaces"
    root.mkdir(exist_ok=True)
    ok = False
    try:
        workspace = train(root, work, args.train_timeout)
        png = test_png(work)
        picks = wrong_and_right(workspace)
        log(f"Explain shows pneumoniamnist test images {picks}")
        proc, url = start_app(root, work)
        log(f"app at {url}")
        try:
            requests = browse(url, out, work, png, picks, args.max_kb)
        finally:
            stop_app(proc)
        ok = True
    finally:
        if not keep and ok:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            log(f"kept {work} (server.log, train.log, failure.png)")

    hosts = sorted({urlparse(u).hostname or "" for u in requests if not u.startswith(("data:", "blob:"))})
    foreign = sorted({u for u in requests if not u.startswith(("data:", "blob:"))
                      and urlparse(u).hostname not in LOCAL_HOSTS})
    log(f"{len(requests)} requests, hosts: {', '.join(hosts)}")
    if foreign:
        sys.exit(f"the pages requested remote resources: {foreign}")
    log("every request went to the local server")


if __name__ == "__main__":
    main()
