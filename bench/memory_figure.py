"""TAg against bytes stored from one or more ``compare.json`` files of the same protocol (README, docs/baselines.md).

    .venv/bin/python bench/memory_figure.py OUT.png runs/a/compare.json runs/b/compare.json [...]

The runs are merged (files of other tasks or settings are refused; ReReLRP's own recogniser and
room settings may differ, and its runs are then labelled with them) and drawn with
:func:`rerelrp.figures.plots.memory_figure`, the figure the Compare page, ``compare.html`` and
the HTML report show; the PNG is a screenshot of it in headless Chromium (/usr/bin/chromium).
The merged comparison is written beside the PNG as JSON (per-run figures only, no image).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from rerelrp.figures.plots import memory_figure
from rerelrp.run.compare import read_comparison

BY_STORE = ("rerelrp", "replay-equal-bytes")  # methods whose bytes follow ReReLRP's settings
BEFORE = {"recognizer": "forest", "room_steps": 0}  # ReReLRP-only settings, as runs made before each existed behave


def _protocol(result):
    """The settings that must agree between merged files: all but ReReLRP's own, which the labels tell apart."""
    return {k: v for k, v in (result.get("settings") or {}).items() if k not in BEFORE}


def _own(result):
    settings = result.get("settings") or {}
    return {k: settings.get(k, default) for k, default in BEFORE.items()}


def merged(paths):
    """The runs of ``paths`` in one comparison. ReReLRP's runs (and the replay given their bytes) from a file
    whose ReReLRP-only settings differ from the first file's are labelled with those settings."""
    results = [read_comparison(p) for p in paths]
    first = results[0]
    for path, r in zip(paths, results):
        if r["tasks"] != first["tasks"] or _protocol(r) != _protocol(first):
            sys.exit(f"{path}: another task sequence or other settings than {paths[0]}")
    runs = []
    for r in results:
        differ = ", ".join(f"{k} {v}" for k, v in _own(r).items() if v != _own(first)[k])
        runs += [{**run, "method": f"{run['method']} ({differ})"} if differ and run["method"] in BY_STORE else run
                 for run in r["runs"]]
    methods = list(dict.fromkeys(run["method"] for run in runs))
    seeds = sorted({run["seed"] for run in runs})
    return {**first, "methods": methods, "runs": runs, "seeds": seeds}


def screenshot(fig, png):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "figure.html"
        page_file.write_text(fig.to_html(include_plotlyjs=True, full_html=True))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 900, "height": 440})
            page.goto(page_file.as_uri())
            page.wait_for_selector(".main-svg")
            page.screenshot(path=str(png), full_page=True)
            browser.close()


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    png, paths = Path(argv[0]), argv[1:]
    result = merged(paths)
    title = f"BloodMNIST 4 × 2: final TAg against bytes kept ({len(result['seeds'])} seeds)" \
        if result["tasks"] and result["tasks"][0].startswith("bloodmnist") else None
    fig = memory_figure(result, **({"title": title} if title else {}))
    fig.update_layout(width=880)
    screenshot(fig, png)
    png.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{png} and {png.with_suffix('.json')}: {len(result['runs'])} runs of {', '.join(result['methods'])}")


if __name__ == "__main__":
    main(sys.argv[1:])
