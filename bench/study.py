"""Where does accuracy go? Runs a sequence with given settings and measures each phase's cost in accuracy.

For every task: validation and test accuracy of the full network right after training and of the
pruned sub-network (task-aware), so the gap between TAw and 100 splits into "training" and
"pruning"; then the usual TAg / TAw / recognition after the last task. Test images only measure
here: nothing is chosen on them. Prints one JSON line per run (and appends it to --log).

    .venv/bin/python bench/study.py --data demo --seeds 0 1 2 --set min_steps=0 --set recalibrate=false

``--first 2`` learns only the first two tasks; ``--variant`` tries a change that is no setting
(the BloodMNIST task-1 study in docs/method-notes.md):

    .venv/bin/python bench/study.py --data bloodmnist --tasks 4 --first 2 --seeds 0 1 2 --variant fresh_free_units
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from recognition_study import parse_value  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rerelrp.method.learner as learner_module  # noqa: E402
from rerelrp.data import build_sequence, load_dataset  # noqa: E402
from rerelrp.method.learner import ReReLRP  # noqa: E402
from rerelrp.model.inputs import to_input  # noqa: E402
from rerelrp.run.metrics import RunMetrics, evaluate_tasks  # noqa: E402

VARIANTS = ("label_smoothing", "fresh_free_units", "relative_relevance", "channels_last")


class StudyLearner(ReReLRP):
    """ReReLRP that also measures (never chooses on) test accuracy of the full and the pruned network per task.

    ``variant`` switches on one change that is not a setting (tried, not kept; see ``VARIANTS``).
    """

    def __init__(self, tests=(), variant=None, **params):
        super().__init__(**params)
        self._tests = list(tests)
        self._variant = variant
        self.study_ = []

    def _grow(self, t):
        """fresh_free_units: the free units start the task from fresh weights, as in a new network."""
        grown = super()._grow(t)
        if self._variant == "fresh_free_units" and t > 0:
            generator = torch.Generator().manual_seed(self.seed * 7 + t)
            frozen = self.ledger_.frozen()
            with torch.no_grad():
                for layer in self.net_.unit_layers:
                    free = ~torch.as_tensor(frozen[layer.name])
                    weight = layer.module.weight
                    fresh = torch.randn(weight.shape, generator=generator) * (2.0 / weight[0].numel()) ** 0.5
                    weight[free] = fresh[free]
                    if layer.module.bias is not None:
                        layer.module.bias[free] = 0.0
                    if layer.norm is not None:
                        for tensor, value in ((layer.norm.weight, 1.0), (layer.norm.bias, 0.0),
                                              (layer.norm.running_mean, 0.0), (layer.norm.running_var, 1.0)):
                            tensor[free] = value
        return grown

    def _train(self, task, t, report):
        """label_smoothing: cross-entropy with label smoothing 0.1; channels_last: training (only) in that layout."""
        if self._variant == "channels_last":
            return self._train_channels_last(task, t, report)
        if self._variant != "label_smoothing":
            return super()._train(task, t, report)
        original = learner_module.head_loss

        def smoothed(columns, weights=None):
            def loss_fn(net, x, y, index):
                logits = net(x)[:, columns]
                weight = None if weights is None else weights.to(logits.device)
                return F.cross_entropy(logits, y, weight=weight, label_smoothing=0.1), logits
            return loss_fn

        learner_module.head_loss = smoothed
        try:
            return super()._train(task, t, report)
        finally:
            learner_module.head_loss = original

    def _train_channels_last(self, task, t, report):
        def convert(module, args):
            return (args[0].contiguous(memory_format=torch.channels_last), *args[1:]) if module.training else None

        self.net_.to(memory_format=torch.channels_last)
        handle = self.net_.register_forward_pre_hook(convert)
        try:
            return super()._train(task, t, report)
        finally:
            handle.remove()
            self.net_.to(memory_format=torch.contiguous_format)

    def _unit_scores(self, task, t, rng, report):
        """relative_relevance: a unit's relevance times its layer's width (relative to the layer's mean)."""
        scores = super()._unit_scores(task, t, rng, report)
        if self._variant == "relative_relevance":
            for sl in self.ledger_.slices.values():
                scores[sl] = scores[sl] * (sl.stop - sl.start)
        return scores

    def _test_acc(self, t, kept=None):
        images, labels = self._tests[t]
        return self._subnetworks().accuracy(to_input(images, self.input_size_), torch.as_tensor(labels), t, kept)

    def _prune(self, task, t, scores, rng, report):
        self._full = self._test_acc(t)  # before the search moves BatchNorm statistics
        return super()._prune(task, t, scores, rng, report)

    def _settle(self, task, t, kept_flat):
        full = self._full
        kept_val = super()._settle(task, t, kept_flat)
        masks = {name: torch.tensor(k, dtype=torch.float32)[None] for name, k in self.ledger_.unflat(kept_flat).items()}
        self.study_.append({"task": t, "test_full": full, "test_pruned": self._test_acc(t, masks),
                            "val_pruned": kept_val, "kept_share": float(np.mean(kept_flat))})
        return kept_val




def run(data, n_tasks, seed, settings, data_root, first=None, variant=None):
    datasets = [load_dataset(d, root=data_root, seed=seed) for d in data]
    tasks = build_sequence(datasets, n_tasks)[:first]
    learner = StudyLearner(tests=[(t.test.images, t.test.labels) for t in tasks], variant=variant, seed=seed,
                           **settings)
    metrics = RunMetrics()
    clock = time.perf_counter()
    for task in tasks:
        learner.add_task(task)
        summary = learner.history_[-1]
        learner.study_[-1]["val_full"] = summary.prune["val_acc_full"]
        eval_clock = time.perf_counter()
        row = evaluate_tasks(learner, tasks[: learner.n_tasks])
        metrics.add(summary, row, time.perf_counter() - eval_clock, learner.capacity())
    wall = time.perf_counter() - clock
    final = metrics.final()
    return {
        "data": data, "tasks": n_tasks, "first": first, "variant": variant, "seed": seed, "settings": settings,
        "tag": final["tag"], "taw": final["taw"], "recognition": metrics.task_recognition[-1],
        "recognition_per_task": metrics.recognized[-1], "taw_per_task": metrics.acc_taw[-1],
        "tag_after_each_task": metrics.tag_after_each_task(), "forgetting_taw": final["forgetting_taw"],
        "per_task": learner.study_, "seconds": metrics.seconds, "wall": wall,
        "warnings": [w for h in learner.history_ for w in h.warnings if "learned nothing" in w],
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--first", type=int, default=None, help="learn only the first N tasks of the sequence")
    parser.add_argument("--variant", choices=VARIANTS, default=None, help="one change that is not a setting")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a learner setting")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "medmnist"))
    parser.add_argument("--label", default="")
    parser.add_argument("--log", default=None, help="append each result as a JSON line to this file")
    args = parser.parse_args()
    settings = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    for seed in args.seeds:
        result = run(args.data, args.tasks, seed, settings, args.data_root, args.first, args.variant) | {
            "label": args.label}
        line = json.dumps(result)
        print(line, flush=True)
        if args.log:
            with open(args.log, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
