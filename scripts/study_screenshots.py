"""Screenshots of the study figures (issue 24) from a real Chromium: clinical tables, per-task settings, scope, splits.

    .venv/bin/python scripts/study_screenshots.py --out docs

What it does, on this machine only (every request the page makes is recorded and must go to
127.0.0.1 / localhost):

1. Trains a pneumoniamnist -> breastmnist model with the CLI into a workspace under a temporary
   workspace root. **The training is short on purpose** (``--epochs 2 --min-steps 60``, about a minute
   and a half on 2 CPU cores): the screenshots show what the pages say about a run, not how good a
   well-trained model is, so the figures in them are those of a briefly trained model.
2. Starts ``streamlit run app.py`` on a free port with that workspace root (no demo loaded) and
   opens the workspace from the Data page's workspace picker in headless Chromium (/usr/bin/chromium).
3. Writes, under ``--out``:

   - ``screenshot-study-clinical.png``: Train, tab "Clinical figures": the TAw line with its 95 % interval
     and number of images, the per-class table with intervals, the confusion heatmaps;
   - ``screenshot-study-tasks.png``: Train, tab "Per task": the settings each task ran with
     (epochs run, steps, epochs set, min steps, ...);
   - ``screenshot-study-out-of-scope.png``: Recognize with the six brain MR DICOM slices of
     ``../shared/data/dicom/mr_brain_series`` and one PNG chest X-ray test image: the MR slices are
     "none of the learned tasks", with the modality as the scope reason;
   - ``screenshot-study-explain.png``: Explain on a test image of known class: the right / wrong mark;
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
VIEWPORT = {"width": 1400, "height": 2600}  # Streamlit scrolls inside its own container: a tall window shows it all
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
    log("trained: " + " | ".join(line.strip() for line in done.stdout.splitlines() if "TAw" in line)[-400:])
    return workspace


def test_png(folder):
    """A chest X-ray test image of pneumoniamnist (its first test image) as a PNG file."""
    import numpy as np

    from rerelrp.images import encode_png

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
    if plots and page.locator(".js-plotly-plot").count():
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)


def go(page, name):
    page.get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for(timeout=60_000)
    wait_idle(page)


def shot(page, path, top, bottom=None, max_kb=400, pad=12):
    """A screenshot of the main column from ``top``'s top to ``bottom``'s bottom (default: the page's end)."""
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


def open_workspace(page, url):
    page.goto(url)
    page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=120_000)
    wait_idle(page)
    button = page.locator(".st-key-ws_open button:visible").first  # the picker's Open button (its key is ws_open)
    if not button.is_visible():
        page.get_by_text("Open a saved workspace").click()
    page.locator('[data-testid="stSelectbox"]', has_text=f"{WORKSPACE} · 2 task(s)").wait_for(timeout=30_000)  # the one saved workspace, chosen
    button.click()
    wait_idle(page)
    page.get_by_text("2 of 2 planned tasks learned").wait_for(timeout=120_000)
    wait_idle(page)


def train_tabs(page, out, max_kb):
    go(page, "Train")
    page.get_by_text("TAg accuracy", exact=True).wait_for(timeout=60_000)
    page.get_by_role("tab", name="Clinical figures").click()
    page.get_by_text("Task-aware").first.wait_for(timeout=60_000)
    settle(page)
    page.locator('[data-testid="stTabs"] .js-plotly-plot').nth(1).wait_for(timeout=30_000)
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
    shot(page, out / "screenshot-study-out-of-scope.png", page.get_by_role("heading", name=f"{len(files)} image(s)"),
         page.locator('[data-testid="stElementContainer"]:has([data-testid="stDataFrame"])'), max_kb)


def explain(page, out, max_kb):
    go(page, "Explain")
    page.get_by_text("task 0: predicted").first.wait_for(timeout=120_000)
    settle(page)
    shot(page, out / "screenshot-study-explain.png", page.get_by_role("heading", name="Explain", exact=True),
         page.locator(".js-plotly-plot"), max_kb)


def split_warnings(page, out, max_kb):
    go(page, "Data")
    page.get_by_role("button", name="DICOM folder", exact=True).click()
    wait_idle(page)
    folder = page.get_by_role("textbox", name="Folder on this machine", exact=False)
    folder.fill(str(CT_VS_MR))
    folder.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Load folder", exact=True).click()
    page.get_by_text("Loaded data sets").wait_for(timeout=300_000)
    page.get_by_text("one patient").first.wait_for(timeout=60_000)
    settle(page)
    shot(page, out / "screenshot-study-split-warnings.png", page.get_by_text("Split by", exact=True),
         page.locator('[data-testid="stColumn"]:has([data-testid="stDataFrame"])'), max_kb)


def browse(url, out, work, png, max_kb):
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
            open_workspace(page, url)
            train_tabs(page, out, max_kb)
            recognize(page, out, png, max_kb)
            explain(page, out, max_kb)
            split_warnings(page, out, max_kb)
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
    parser.add_argument("--train-timeout", type=int, default=1800, help="seconds the CLI training may take")
    args = parser.parse_args(argv)
    for needed in (Path(CHROMIUM), MEDMNIST / "pneumoniamnist.npz", MEDMNIST / "breastmnist.npz", MR_BRAIN, CT_VS_MR):
        if not needed.exists():
            sys.exit(f"missing: {needed}")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None
    work = Path(args.work).resolve() if keep else Path(tempfile.mkdtemp(prefix="rerelrp-study-shots-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "workspaces"
    root.mkdir(exist_ok=True)
    try:
        train(root, work, args.train_timeout)
        png = test_png(work)
        proc, url = start_app(root, work)
        log(f"app at {url}")
        try:
            requests = browse(url, out, work, png, args.max_kb)
        finally:
            stop_app(proc)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    hosts = sorted({urlparse(u).hostname or "" for u in requests if not u.startswith(("data:", "blob:"))})
    foreign = sorted({u for u in requests if not u.startswith(("data:", "blob:"))
                      and urlparse(u).hostname not in LOCAL_HOSTS})
    log(f"{len(requests)} requests, hosts: {', '.join(hosts)}")
    if foreign:
        sys.exit(f"the pages requested remote resources: {foreign}")
    log("every request went to the local server")


if __name__ == "__main__":
    main()
