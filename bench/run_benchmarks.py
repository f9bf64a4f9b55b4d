"""`make bench`: the measured runs behind the README's tables.

Runs, with default settings on whatever device `auto` picks:
  1. the digits demo (5 tasks of 2 digits),
  2. the real MedMNIST files as a cross-domain sequence (pneumonia -> breast -> retina),
  3. class-incremental splits (RetinaMNIST into 2 tasks, digits into 5) beside fine-tuning
     (lower bound) and joint training (upper bound) with the same epochs,
  4. inference latency per image (forward + LRP on every sub-network + the chain) at batch 1 and 256.
Each run's metrics.json and run.json go to bench/out/<run>/; the tables go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from rerelrp.baselines import BaselineLearner
from rerelrp.data import build_sequence, load_dataset
from rerelrp.fileio import write_json_atomic
from rerelrp.learner import ReReLRP
from rerelrp.runner import SequenceRun, run_record

HERE = Path(__file__).resolve().parent
MEDMNIST = HERE.parent.parent / "shared" / "data" / "medmnist"
CROSS_DOMAIN = [MEDMNIST / f"{name}.npz" for name in ("pneumoniamnist", "breastmnist", "retinamnist")]


def learn(name, sources, method="rerelrp", n_tasks=None, **config):
    datasets = [load_dataset(s) for s in sources]
    tasks = build_sequence(datasets, n_tasks)
    learner = ReReLRP(**config) if method == "rerelrp" else BaselineLearner(method, **config)
    run = SequenceRun(learner, tasks)
    clock = time.perf_counter()
    run.run()
    wall = time.perf_counter() - clock
    out = HERE / "out" / name
    write_json_atomic(out / "metrics.json", run.metrics.to_dict() | {"wall_seconds": wall})
    write_json_atomic(out / "run.json", run_record(learner, tasks, [str(s) for s in sources], method=method))
    print(f"{name}: {wall:.1f}s, final {run.metrics.final()}", flush=True)
    return run, wall


def latency(learner, images, repeats):
    """Median seconds per image of predict() on a batch of ``images``."""
    learner.predict(images)  # warm-up
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        learner.predict(images)
        times.append(time.perf_counter() - clock)
    return float(np.median(times)) / len(images)


def pct(values):
    return " / ".join(f"{v:.1f}" for v in values)


def phase_table(rows):
    lines = ["| run | task | train | relevance | prune | recognizer | eval |", "|---|---|---|---|---|---|---|"]
    for name, run in rows:
        for i, s in enumerate(run.metrics.seconds):
            lines.append(f"| {name} | {i} | " + " | ".join(f"{s[p]:.1f}" for p in
                                                          ("train", "relevance", "prune", "recognizer", "eval")) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    cfg = {"device": args.device}
    if not all(p.exists() for p in CROSS_DOMAIN):
        sys.exit(f"the real MedMNIST files are needed in {MEDMNIST} (see ../shared/data/SOURCES.md)")

    demo, demo_wall = learn("demo", ["demo"], **cfg)
    cross, cross_wall = learn("medmnist_cross_domain", CROSS_DOMAIN, **cfg)
    cil = {}
    for data, sources, n_tasks in (("retinamnist", [CROSS_DOMAIN[2]], 2), ("digits", ["demo"], 5)):
        for method in ("finetune", "rerelrp", "joint"):
            run = demo if (data, method) == ("digits", "rerelrp") else learn(f"{data}_{method}", sources, method,
                                                                               n_tasks, **cfg)[0]
            cil[data, method] = run

    device = demo.learner.describe_device()
    lines = [f"# Benchmarks (`make bench`, {device}, default settings)", ""]
    lines += ["## Runs", "", "| run | tasks | final TAg | final TAw | TAw forgetting | TAg forgetting | "
              "task recognition after last task | TAg after each task | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, run, wall in (("digits demo", demo, demo_wall), ("MedMNIST pneumonia→breast→retina", cross, cross_wall)):
        f = run.metrics.final()
        lines.append(f"| {name} | {len(run.tasks)} | {f['tag']:.2f} | {f['taw']:.2f} | {f['forgetting_taw']:.2f} | "
                     f"{f['forgetting_tag']:.2f} | {run.metrics.task_recognition[-1]:.1f} % | "
                     f"{pct(run.metrics.tag_after_each_task())} | {wall:.0f} |")
    lines += ["", "## Class-incremental: TAg after each task beside the bounds (same epochs)", "",
              "| data set | fine-tuning (lower) | ReReLRP | joint (upper) |", "|---|---|---|---|"]
    for data in ("retinamnist", "digits"):
        lines.append(f"| {data} | " + " | ".join(pct(cil[data, m].metrics.tag_after_each_task())
                                                  for m in ("finetune", "rerelrp", "joint")) + " |")
    lines += ["", "## Phase timings (seconds)", ""] + phase_table([("digits demo", demo), ("MedMNIST", cross)])
    lines += ["", "## Inference latency per image (forward + LRP on every sub-network + chain)", "",
              "| model | batch 1 | batch 256 |", "|---|---|---|"]
    for name, run in (("digits demo, 5 tasks", demo), ("MedMNIST, 3 tasks", cross)):
        images = np.concatenate([t.test.images if t.test.images.shape[-1] == 3 else np.repeat(t.test.images, 3, -1)
                                 for t in run.tasks])[:256]
        one = latency(run.learner, images[:1], repeats=20)
        many = latency(run.learner, images, repeats=3)
        lines.append(f"| {name} | {one * 1e3:.1f} ms | {many * 1e3:.2f} ms |")
    lines += ["", "Commands: `make bench` (this file); single runs: `rerelrp run --data demo --out runs/demo`, "
              "`rerelrp run --data pneumoniamnist --data breastmnist --data retinamnist --data-root ../shared/data/medmnist "
              "--out runs/cross`, `rerelrp run --data retinamnist --tasks 2 --method finetune|joint ...`.", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
