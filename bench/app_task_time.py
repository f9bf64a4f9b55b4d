"""Time a demo task added through the app in a real browser, beside the same job without the app.

`python bench/app_task_time.py`: starts `streamlit run app.py` on a free local port, drives Debian's
Chromium with Playwright (click *Add next task*, wait until the page shows the task learned), for
two tasks of 3 epochs at batch 16, then runs the same two tasks through `AppState` with no app.
The difference is what the live page costs on this machine.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"n_trees": 100, "epochs": 3, "batch_size": 16}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through_the_browser(n_tasks=2):
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "RERELRP_APP_KEY": "bench", "RERELRP_APP_SETTINGS": json.dumps(SETTINGS),
           "RERELRP_WORKSPACES": tempfile.mkdtemp()}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, seconds = f"http://localhost:{port}", []
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("link", name="Train", exact=True).click()
            page.get_by_role("heading", name="Train", exact=True).wait_for(timeout=120_000)
            for t in range(n_tasks):
                clock = time.perf_counter()
                page.get_by_role("button", name="Add next task").click()
                page.get_by_text(f"{t + 1} / 5").wait_for(timeout=900_000)
                seconds.append(time.perf_counter() - clock)
            browser.close()
    finally:
        proc.terminate()
    return seconds


def without_the_app(n_tasks=2):
    from rerelrp.app.session import AppState

    state, seconds = AppState(settings=SETTINGS, workspace_root=tempfile.mkdtemp()), []
    for _ in range(n_tasks):
        clock = time.perf_counter()
        state.start_training(1).wait()
        seconds.append(time.perf_counter() - clock)
    return seconds


if __name__ == "__main__":
    browser = through_the_browser()
    bare = without_the_app()
    for t, (a, b) in enumerate(zip(browser, bare)):
        print(f"task {t}: {a:.1f} s in the browser, {b:.1f} s without the app")
