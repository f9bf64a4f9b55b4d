"""What does the pruning cut cost on images it was not judged on?

The cut is the largest one that stays within ``acc_drop`` on the images that judge it, so those
images flatter it. This holds out a stratified 15 % of each task's training images (never
trained on, never judged on), and records per task the held-out accuracy of the full network just
before pruning and of the pruned sub-network after the task. Test images are not read, so the
figures may choose a default (``acc_drop`` 0.25 was chosen this way; docs/method-notes.md).

    OMP_NUM_THREADS=1 .venv/bin/python bench/prune_holdout.py --data bloodmnist --tasks 4 --seeds 0 1 2 \
        --set acc_drop=0.5 --log /tmp/holdout.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from recognition_study import parse_value  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rerelrp.data import build_sequence, load_dataset  # noqa: E402
from rerelrp.data.core import stratified_holdout  # noqa: E402
from rerelrp.method.learner import ReReLRP  # noqa: E402
from rerelrp.model.inputs import LazyInputs  # noqa: E402

HOLDOUT = 0.15


class HoldoutLearner(ReReLRP):
    """ReReLRP that measures the full network on the held-out images of a task before pruning it."""

    def __init__(self, held_out=(), **params):
        super().__init__(**params)
        self._held_out = list(held_out)
        self.holdout_ = []

    def held_out_accuracy(self, t, masks=None):
        split = self._held_out[t]
        return self._subnetworks().accuracy(LazyInputs(split.images, self.input_size_), torch.as_tensor(split.labels),
                                       t, masks)

    def _prune(self, task, t, scores, rng, report):
        self.holdout_.append({"task": t, "n": len(self._held_out[t].labels), "full": self.held_out_accuracy(t)})
        return super()._prune(task, t, scores, rng, report)


def run(data, n_tasks, seed, settings, data_root):
    tasks = build_sequence([load_dataset(d, root=data_root, seed=seed) for d in data], n_tasks)
    trained, held_out = [], []
    for i, task in enumerate(tasks):
        keep, hold = stratified_holdout(task.train.labels, HOLDOUT, seed * 100 + i)
        held_out.append(task.train.subset(hold))
        trained.append(dataclasses.replace(task, train=task.train.subset(keep)))
    learner = HoldoutLearner(held_out, seed=seed, **settings)
    clock = time.perf_counter()
    for t, task in enumerate(trained):
        learner.add_task(task)
        prune = learner.history_[-1].prune
        learner.holdout_[-1].update(
            pruned=learner.held_out_accuracy(t, learner.ledger_.group_masks([t], learner._torch_device())),
            val_full=prune["val_acc_full"], val_pruned=prune["val_acc_kept"],
            units=int(sum(learner.ledger_.layer_sizes.values())))
    rows = learner.holdout_
    return {"data": data, "tasks": n_tasks, "seed": seed, "settings": settings, "per_task": rows,
            "full": float(np.mean([r["full"] for r in rows])), "pruned": float(np.mean([r["pruned"] for r in rows])),
            "wall": time.perf_counter() - clock, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a learner setting")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "medmnist"))
    parser.add_argument("--log", default=None, help="append each result as a JSON line to this file")
    args = parser.parse_args()
    settings = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    for seed in args.seeds:
        result = run(args.data, args.tasks, seed, settings, args.data_root)
        print(json.dumps(result), flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(result) + "\n")
        print(f"seed {seed}: held-out accuracy full {result['full']:.2f}, pruned {result['pruned']:.2f} "
              f"(cut costs {result['full'] - result['pruned']:.2f} points)", file=sys.stderr)


if __name__ == "__main__":
    main()
