"""Reference points for a sequence: fine-tuning (the lower bound) and joint training (the upper).

Both use the same backbone, heads, training loop (:func:`rerelrp.training.train`) and settings
as ReReLRP and answer ``predict`` the same way, so :func:`rerelrp.metrics.evaluate_tasks`
measures all three alike. Task-agnostic prediction here is the arg-max over every head's
logits side by side.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from rerelrp.base import Prediction, TaskSequenceLearner
from rerelrp.device import flush_denormals
from rerelrp.errors import ConfigError
from rerelrp.inputs import ImageSource, to_input
from rerelrp.nets import build_net
from rerelrp.progress import Reporter
from rerelrp.training import Schedule, head_loss, train

METHODS = ("finetune", "joint")


class BaselineLearner(TaskSequenceLearner):
    """``finetune``: train each task on its own data only; ``joint``: on all data seen so far."""

    def __init__(self, method="finetune", **params):
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not '{method}'")
        super().__init__(**params)
        self.method = method
        self.net_ = None
        self.history_ = []
        self._seen = []  # joint only: (images, global labels) of every task so far

    def capacity(self):
        return []

    def add_task(self, task, callback=None, stop=None):
        """Learn ``task``; returns self (its report is ``history_[-1]``)."""
        self.check_params()
        self._check_task(task)
        t, device = self.n_tasks, self._torch_device()
        report = Reporter(callback, stop, task=t)
        torch.manual_seed(self.seed * 10007 + t)
        if self.net_ is None:
            self.net_ = build_net(self.net, self.input_size).to(device)
        self.net_.add_head(task.n_classes)
        self.tasks_.append(task.describe())
        lo, hi = self.offsets_[t], self.offsets_[t + 1]
        if self.method == "joint":
            self._seen.append((task.train.images, task.train.labels + lo))
            parts, columns = self._seen, slice(0, hi)
        else:
            parts, columns = [(task.train.images, task.train.labels)], slice(lo, hi)
        clock = time.perf_counter()
        source = ImageSource([images for images, _ in parts], self.input_size, device)
        labels = torch.as_tensor(np.concatenate([labels for _, labels in parts]), device=device)
        generator = torch.Generator().manual_seed(self.seed * 10007 + t)
        with flush_denormals():
            curve = train(self.net_, list(self.net_.parameters()), source, labels, Schedule.of(self.get_params()),
                          head_loss(columns), generator, report)
        self.history_.append({
            "task": t, "name": task.name, "classes": list(task.class_names), "train_curve": curve,
            "seconds": {"train": time.perf_counter() - clock},
            "stored_bytes": int(sum(images.nbytes for images, _ in self._seen)), "prune": {}, "warnings": []})
        return self

    @torch.no_grad()
    def predict(self, images):
        self._check_fitted()
        x = to_input(images, self.input_size)
        device = self._torch_device()
        logits = torch.cat([self.net_(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
        offsets = self.offsets_
        glob = logits.argmax(1).numpy()
        task = np.searchsorted(offsets, glob, side="right") - 1
        subnet = np.stack([logits[:, offsets[m] : offsets[m + 1]].argmax(1).numpy() for m in range(self.n_tasks)], 1)
        names = self.class_names_
        p_task = np.eye(self.n_tasks)[task]
        return Prediction(task, glob - offsets[task], glob, p_task, subnet, [names[g] for g in glob])
