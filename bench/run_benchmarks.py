"""`make bench`: the measured runs behind the README's tables (bench/RESULTS.md).

Parts (all by default; ``--part`` picks some):
  runs      the issue-13 acceptance runs, default settings, seeds 0, 1, 2: the real CT-vs-MR DICOM
            folder, the digits demo, BloodMNIST in 4 tasks (the paper's protocol) and the real
            MedMNIST files as a cross-domain sequence (pneumonia -> breast -> retina)
  ablation  each change of issue 13 switched off alone, digits demo and BloodMNIST 4x2, seed 0
  compare   `rerelrp compare` on the digits demo and BloodMNIST 4x2, seeds 0, 1, 2: ReReLRP, its
            max-softmax ablation, fine-tune, EWC, LwF, iCaRL, replay, joint (bench/COMPARE.md, beside
            the paper's published rows)
  latency   inference per image (forward + LRP on every sub-network + the chain), batch 1 and 256
  scope     "none of the learned tasks": AUROC of the scope score, test images of the learned tasks
            against data sets of none of them (pneumonia -> breast against retina and blood cells,
            seeds 0-2; BloodMNIST 4x2 against pneumonia, seed 0)

Every run appends one JSON line to bench/out/results.jsonl (and keeps its metrics.json under
bench/out/<part>/<run>/); ``--report`` rebuilds RESULTS.md from that file alone, so parts can be
run on different days or in parallel (``--threads 1`` each; the thread count is recorded).
The compare part keeps bench/out/compare/<run>/compare.json instead (seeds run apart are merged)
and ``--report`` also rebuilds bench/COMPARE.md from those files.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rerelrp.baselines import make_baseline
from rerelrp.data import build_sequence, load_dataset, medical_demo_paths
from rerelrp.fileio import write_json_atomic
from rerelrp.method.learner import ReReLRP
from rerelrp.method.scope import evaluate_scope
from rerelrp.run import compare
from rerelrp.run.runner import SequenceRun
from rerelrp.settings import for_method

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
MEDMNIST = SHARED / "medmnist"
RESULTS = HERE / "out" / "results.jsonl"
SEEDS = (0, 1, 2)
RUNS = {  # name: (sources, number of tasks or None for one task per source)
    "ct_vs_mr": ([SHARED / "dicom" / "ct_vs_mr"], None),
    "digits": (["demo"], None),
    "blood4x2": ([MEDMNIST / "bloodmnist.npz"], 4),
    "cross_domain": ([MEDMNIST / f"{n}.npz" for n in ("pneumoniamnist", "breastmnist", "retinamnist")], None),
    "medical_demo": (medical_demo_paths(), None),  # bundled: what `make run` opens on
    "pneumonia_breast": ([MEDMNIST / f"{n}.npz" for n in ("pneumoniamnist", "breastmnist")], None),  # scope part only
}
SCOPE = {  # run: (seeds, data sets of none of its tasks)
    "pneumonia_breast": (SEEDS, [MEDMNIST / "retinamnist.npz", MEDMNIST / "bloodmnist.npz"]),
    "blood4x2": ((0,), [MEDMNIST / "pneumoniamnist.npz"]),
}
ABLATION = {  # label: the settings that switch one change off
    "defaults": {},
    "no step floor": {"min_steps": 0},
    "no class-balanced loss": {"class_balance": False},
    "no best epoch": {"best_epoch": False},
    "no BatchNorm recalibration": {"recalibrate": False},
    "pruning judged on validation only": {"prune_samples": 0},
    "acc_drop 0.5 (the old default)": {"acc_drop": 0.5},
    "relevance features only": {"activation_features": False},
    "512 recogniser rows": {"recognizer_samples": 512},
}
COMPARE_RUNS = ("digits", "blood4x2")
PAPER = {  # the ReReLRP paper's BloodMNIST 4x2 table (VGG11, its own epochs and machine): TAg, TAw
    "rerelrp": (59.76, 93.71), "icarl": (58.33, 92.52), "ewc": (24.92, 67.86), "lwf": (18.09, 57.21),
    "joint": (66.48, 96.40)}


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def learn(part, name, run, seed, method="rerelrp", ood=(), **settings):
    """One run; its metrics and phase timings (and AUROC blocks against ``ood``) go to results.jsonl."""
    sources, n_tasks = RUNS[run]
    tasks = build_sequence([load_dataset(str(s), seed=seed) for s in sources], n_tasks)
    config = {"seed": seed, **settings}
    learner = ReReLRP(**config) if method == "rerelrp" else make_baseline(method, **for_method(config, method))
    sequence = SequenceRun(learner, tasks)
    clock = time.perf_counter()
    sequence.run()
    wall = time.perf_counter() - clock
    m = sequence.metrics
    record = {"part": part, "name": name, "run": run, "seed": seed, "method": method, "settings": settings,
              **m.final(), "recognition": m.task_recognition[-1] if m.task_recognition else None,
              "tag_after_each_task": m.tag_after_each_task(), "wall_seconds": wall, "seconds": m.seconds,
              "warnings": [w for h in getattr(learner, "history_", []) for w in h.warnings],
              "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if ood:
        foreign = {Path(s).stem: load_dataset(str(s), seed=seed).test.images for s in ood}
        m.out_of_scope = record["out_of_scope"] = evaluate_scope(learner, tasks, foreign)
    write_json_atomic(HERE / "out" / part / f"{name}-s{seed}".replace(" ", "_") / "metrics.json", m.to_dict())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")
    print(f"{part} {name} seed {seed}: TAg {record['tag']:.2f} TAw {record['taw']:.2f} recognition "
          f"{record['recognition'] or 0:.1f} wall {wall:.0f}s", flush=True)
    return sequence


def part_compare(run, seeds, methods=compare.METHODS):
    """Every method of ``rerelrp compare`` on ``run`` for ``seeds``; merged into the run's compare.json."""
    sources, n_tasks = RUNS[run]
    out = HERE / "out" / "compare" / run
    result = compare.compare(lambda seed: build_sequence([load_dataset(str(s), seed=seed) for s in sources], n_tasks),
                             methods, seeds, {}, on_run=lambda r: print(
                                 f"compare {run} {r['method']} seed {r['seed']}: TAg {r['final']['tag']:.2f} TAw "
                                 f"{r['final']['taw']:.2f} ({r['seconds']:.0f} s)", flush=True))
    old = compare.read_comparison(out / "compare.json") if (out / "compare.json").is_file() else None
    if old:  # runs of other methods or seeds (another process, another day) are kept
        fresh = {(r["method"], r["seed"]) for r in result["runs"]}
        kept = [r for r in old["runs"] if (r["method"], r["seed"]) not in fresh]
        result["runs"] = sorted(kept + result["runs"], key=lambda r: (compare.METHODS.index(r["method"]), r["seed"]))
        result["seeds"] = sorted(set(old["seeds"]) | set(seeds))
        result["methods"] = [m for m in compare.METHODS if any(r["method"] == m for r in result["runs"])]
    result["machine"] = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    compare.write_comparison(result, out)


def compare_report():
    """bench/COMPARE.md from bench/out/compare/<run>/compare.json."""
    lines = ["# Comparison with baselines (`make bench`, part compare)", ""]
    for run in COMPARE_RUNS:
        path = HERE / "out" / "compare" / run / "compare.json"
        if not path.is_file():
            continue
        result = compare.read_comparison(path)
        machine = result.get("machine", {})
        lines += [f"## {run}: {' → '.join(result['tasks'])}", "",
                  f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} torch thread(s); default settings; "
                  f"exemplars per class {result['exemplars_per_class']}; seeds {', '.join(map(str, result['seeds']))}.", "",
                  compare.markdown(result)]
        if run == "blood4x2":
            lines += ["The paper's published rows (VGG11, its epochs and machine; TAg / TAw): "
                      + "; ".join(f"{m} {a:.2f} / {b:.2f}" for m, (a, b) in PAPER.items()) + ".", ""]
    (HERE / "COMPARE.md").write_text("\n".join(lines))
    print("\n".join(lines))


def latency(learner, images, repeats):
    """Median wall and CPU seconds per image of predict() on a batch of ``images`` (on a shared
    machine the CPU time moves less with the other work running)."""
    learner.predict(images)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        clock, used = time.perf_counter(), time.process_time()
        learner.predict(images)
        wall.append(time.perf_counter() - clock)
        cpu.append(time.process_time() - used)
    return float(np.median(wall)) / len(images), float(np.median(cpu)) / len(images)


def part_latency():
    """Batch 1 and 256 at one torch thread, whatever ``--threads`` says (issue 26 sets its goals there)."""
    sequence = learn("latency", "digits", "digits", 0)
    images = np.concatenate([t.test.images for t in sequence.tasks])[:256]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (b1, b1_cpu), (b256, b256_cpu) = latency(sequence.learner, images[:1], 100), latency(sequence.learner, images, 7)
    finally:
        torch.set_num_threads(threads)
    record = {"part": "latency", "name": "digits demo, 5 tasks", "batch1_ms": 1e3 * b1, "batch1_cpu_ms": 1e3 * b1_cpu,
              "batch256_ms": 1e3 * b256, "batch256_cpu_ms": 1e3 * b256_cpu, "cpu": cpu_name(), "threads": 1,
              "load_average": os.getloadavg()[0]}
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")


def mean_sd(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def report():
    """RESULTS.md from results.jsonl (the latest record of every part, name and seed)."""
    latest = {}
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        latest[r["part"], r["name"], r.get("seed"), r.get("method")] = r
    records = list(latest.values())
    machines = sorted({f"{r['cpu']}, {r['threads']} thread(s)" for r in records})
    lines = ["# Benchmarks (`make bench`, CPU, default settings)", "",
             "Machines: " + "; ".join(machines) + ". Runs are deterministic on one CPU and thread count; on another "
             "CPU the same seed lands elsewhere (see the README).", ""]
    runs = [r for r in records if r["part"] == "runs"]
    if runs:
        lines += ["## Runs: mean ± sd over seeds", "",
                  "| run | seeds | TAg | TAw | TAw forgetting | task recognition | wall s | seed 0: TAg / TAw / recognition |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in (n for n in RUNS if n != "pneumonia_breast"):
            rs = sorted((r for r in runs if r["name"] == name), key=lambda r: r["seed"])
            if not rs:
                continue
            s0 = next((r for r in rs if r["seed"] == 0), None)
            first = f"{s0['tag']:.2f} / {s0['taw']:.2f} / {s0['recognition'] or 0:.1f}" if s0 else "–"
            lines.append(f"| {name} | {len(rs)} | {mean_sd([r['tag'] for r in rs])} | {mean_sd([r['taw'] for r in rs])} | "
                         f"{mean_sd([r['forgetting_taw'] for r in rs])} | {mean_sd([r['recognition'] for r in rs])} | "
                         f"{mean_sd([r['wall_seconds'] for r in rs])} | {first} |")
        lines += ["", "### Phase seconds, seed 0 (summed over tasks)", "",
                  "| run | train | relevance | prune | recognizer | eval |", "|---|---|---|---|---|---|"]
        for r in sorted((r for r in runs if r["seed"] == 0), key=lambda r: list(RUNS).index(r["name"])):
            sums = {p: sum(s.get(p, 0.0) for s in r["seconds"]) for p in ("train", "relevance", "prune", "recognizer", "eval")}
            lines.append(f"| {r['name']} | " + " | ".join(f"{v:.1f}" for v in sums.values()) + " |")
    ablation = [r for r in records if r["part"] == "ablation"]
    if ablation:
        lines += ["", "## Ablation: each change switched off alone (seed 0)", "",
                  "| setting | digits TAg | digits TAw | digits recognition | Blood TAg | Blood TAw | Blood recognition |",
                  "|---|---|---|---|---|---|---|"]
        for label in ABLATION:
            cells = []
            for run in ("digits", "blood4x2"):
                r = next((r for r in ablation if r["name"] == f"{run}: {label}"), None) if ABLATION[label] else next(
                    (r for r in runs if r["name"] == run and r["seed"] == 0), None)
                cells += [f"{r['tag']:.2f}", f"{r['taw']:.2f}", f"{r['recognition'] or 0:.1f}"] if r else ["–"] * 3
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    scope = [r for r in records if r["part"] == "scope"]
    if scope:
        lines += ["", "## None of the learned tasks: the scope score (mean ± sd over seeds)", "",
                  "| run | out-of-scope set | seeds | AUROC | out-of-scope flagged (%) | in-scope test images flagged (%) |",
                  "|---|---|---|---|---|---|"]
        for run in SCOPE:
            rs = [r for r in scope if r["name"] == run]
            for source in (rs[0]["out_of_scope"] if rs else []):
                blocks = [b for r in rs for b in r["out_of_scope"] if b["source"] == source["source"]]
                lines.append(f"| {run} | {source['source']} | {len(blocks)} | {mean_sd([b['auroc'] for b in blocks], 4)} | "
                             f"{mean_sd([100 * b['flagged_out_of_scope'] for b in blocks])} | "
                             f"{mean_sd([100 * b['flagged_in_scope'] for b in blocks])} |")
    for r in (r for r in records if r["part"] == "latency" and "batch1_ms" in r):
        cpu = (f" (CPU time {r['batch1_cpu_ms']:.1f} and {r['batch256_cpu_ms']:.2f} ms; {r['threads']} thread, "
               f"load average {r['load_average']:.2f})") if "batch1_cpu_ms" in r else ""
        lines += ["", "## Inference latency per image (forward + LRP on every sub-network + chain)", "",
                  f"{r['name']}: {r['batch1_ms']:.1f} ms at batch 1, {r['batch256_ms']:.2f} ms at batch 256{cpu}."]
    lines += ["", "Commands: `make bench` (everything); `python bench/run_benchmarks.py --part runs --threads 1` (one "
              "part); `python bench/run_benchmarks.py --report` (this file from bench/out/results.jsonl).", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", choices=["runs", "ablation", "compare", "latency", "scope"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--report", action="store_true", help="only rebuild RESULTS.md from bench/out/results.jsonl")
    parser.add_argument("--runs", nargs="*", choices=list(RUNS),
                        help="runs, ablation, scope, compare parts: only these runs (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS), help="runs part: seeds (default: 0 1 2)")
    parser.add_argument("--methods", nargs="*", choices=compare.METHODS, help="compare part: only these (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report:
        missing = [str(s) for sources, _ in RUNS.values() for s in sources if s != "demo" and not Path(s).exists()]
        missing += [str(s) for _, ood in SCOPE.values() for s in ood if not Path(s).exists()]
        if missing:
            sys.exit(f"benchmark data missing (see ../shared/data/SOURCES.md): {', '.join(missing)}")
        parts = args.part or ["runs", "ablation", "compare", "latency", "scope"]
        if "runs" in parts:
            for seed in args.seeds:
                for run in args.runs or [r for r in RUNS if r != "pneumonia_breast"]:
                    learn("runs", run, run, seed)
        if "scope" in parts:
            for run, (seeds, ood) in SCOPE.items():
                for seed in seeds:
                    if args.runs is None or run in args.runs:
                        learn("scope", run, run, seed, ood=ood)
        if "ablation" in parts:
            for run in (r for r in ("digits", "blood4x2") if args.runs is None or r in args.runs):
                for label, settings in ABLATION.items():
                    if settings:  # "defaults" is the seed-0 run of the runs part
                        learn("ablation", f"{run}: {label}", run, 0, **settings)
        if "compare" in parts:
            for run in args.runs or COMPARE_RUNS:
                if run in COMPARE_RUNS:
                    part_compare(run, args.seeds, args.methods or compare.METHODS)
        if "latency" in parts:
            part_latency()
    if RESULTS.is_file():
        report()
    compare_report()


if __name__ == "__main__":
    main()
