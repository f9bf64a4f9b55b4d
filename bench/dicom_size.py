"""Which side should DICOM folders be loaded at? Validation accuracy and time per task at several sizes.

Each size loads the folder at that side (the network then reads it as loaded: input_size auto) and
learns it as one task with default settings, once per seed. Validation accuracy is the learner's
own (before pruning, the figure the pruning search starts from); test images are not looked at.

    .venv/bin/python bench/dicom_size.py                       # ../shared/data/dicom/ct_vs_mr, 64/128/224, seeds 0-2
    .venv/bin/python bench/dicom_size.py --data scans/ --sizes 64,128 --seeds 0
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rerelrp.data import build_sequence  # noqa: E402
from rerelrp.data.dicom import load_dicom  # noqa: E402
from rerelrp.method.learner import ReReLRP  # noqa: E402


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dicom" / "ct_vs_mr"))
    parser.add_argument("--sizes", default="64,128,224")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for size in map(int, args.sizes.split(",")):
        for seed in map(int, args.seeds.split(",")):
            clock = time.perf_counter()
            ds = load_dicom(args.data, size=size, seed=seed)
            load_s = time.perf_counter() - clock
            task = build_sequence([ds], 1)[0]
            learner = ReReLRP(seed=seed, device="cpu").add_task(task)
            report = learner.history_[-1]
            rows.append({"size": size, "seed": seed, "input_size": learner.input_size_, "n_val": len(task.val),
                         "val_acc": report.prune["val_acc_full"], "val_acc_kept": report.prune["val_acc_kept"],
                         "load_s": load_s, "task_s": sum(report.seconds.values()), "train_s": report.seconds["train"],
                         "steps": report.schedule["steps"]})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.data}; {cpu_model()}, {torch.get_num_threads()} torch threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n")
    print("| load size | network input | val images | val acc % (mean ± sd) | task s (mean ± sd) | train s/step |")
    print("|---|---|---|---|---|---|")
    for size in sorted({r["size"] for r in rows}):
        part = [r for r in rows if r["size"] == size]
        acc, sec = np.array([r["val_acc"] for r in part]), np.array([r["task_s"] for r in part])
        per_step = np.mean([r["train_s"] / r["steps"] for r in part])
        sd = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
        print(f"| {size} | {part[0]['input_size']} | {part[0]['n_val']} | {acc.mean():.1f} ± {sd(acc):.1f} "
              f"| {sec.mean():.0f} ± {sd(sec):.0f} | {per_step:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
