"""Reference points for a sequence: fine-tuning (the lower bound) and joint training (the upper).

Both use the same backbone, heads, optimiser and epochs as ReReLRP and answer ``predict`` the
same way, so :func:`rerelrp.metrics.evaluate_tasks` measures all three alike. Task-agnostic
prediction here is the arg-max over every head's logits side by side.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from rerelrp.data.core import Split
from rerelrp.inputs import random_shift, to_input
from rerelrp.learner import Prediction, TaskSequenceLearner
from rerelrp.nets import build_net
from rerelrp.progress import Reporter

METHODS = ("finetune", "joint")


class BaselineLearner(TaskSequenceLearner):
    """``finetune``: train each task on its own data only; ``joint``: on all data seen so far."""

    def __init__(self, method="finetune", **config):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        super().__init__(**config)
        self.method = method
        self._seen = []  # joint only: (images, global labels) of every task so far

    def get_params(self):
        return {"method": self.method, **super().get_params()}

    def capacity(self):
        return []

    def add_task(self, task, callback=None, stop=None):
        cfg, t = self.config, self.n_tasks
        report = Reporter(callback, stop, task=t)
        torch.manual_seed(cfg.seed * 10007 + t)
        if self.net_ is None:
            self.net_ = build_net(cfg.net, cfg.input_size).to(self.device)
        self.net_.add_head(task.n_classes)
        self.tasks_.append(task.describe())
        lo, hi = self.offsets_[t], self.offsets_[t + 1]
        if self.method == "joint":
            self._seen.append(Split(task.train.images, task.train.labels + lo))
            images = np.concatenate([to_input(s.images, cfg.input_size).numpy() for s in self._seen])
            x, y, cols = torch.from_numpy(images), torch.from_numpy(np.concatenate([s.labels for s in self._seen])), slice(0, hi)
        else:
            x, y, cols = to_input(task.train.images, cfg.input_size), torch.as_tensor(task.train.labels), slice(lo, hi)
        clock = time.perf_counter()
        x, y = x.to(self.device), y.to(self.device)
        optimizer = torch.optim.SGD(self.net_.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        steps = max(1, int(np.ceil(len(x) / cfg.batch_size)))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps)
        generator = torch.Generator().manual_seed(cfg.seed * 10007 + t)
        for epoch in range(cfg.epochs):
            self.net_.train()
            order = torch.randperm(len(x), generator=generator).to(self.device)
            for step, start in enumerate(range(0, len(x), cfg.batch_size)):
                index = order[start : start + cfg.batch_size]
                if len(index) < 2:
                    continue
                loss = F.cross_entropy(self.net_(random_shift(x[index], cfg.augment_shift, generator))[:, cols], y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                report("train", epoch * steps + step + 1, cfg.epochs * steps, f"epoch {epoch + 1}/{cfg.epochs}")
        self.net_.eval()
        return {"task": t, "name": task.name, "classes": list(task.class_names),
                "seconds": {"train": time.perf_counter() - clock}, "stored_bytes": int(sum(s.images.nbytes for s in self._seen)),
                "prune": {}}

    @torch.no_grad()
    def predict(self, images):
        x = to_input(images, self.config.input_size)
        logits = torch.cat([self.net_(x[i : i + 512].to(self.device)).cpu() for i in range(0, len(x), 512)])
        offsets = self.offsets_
        glob = logits.argmax(1).numpy()
        task = np.searchsorted(offsets, glob, side="right") - 1
        subnet = np.stack([logits[:, offsets[m] : offsets[m + 1]].argmax(1).numpy() for m in range(self.n_tasks)], 1)
        names = self.class_names_
        p_task = np.eye(self.n_tasks)[task]
        return Prediction(task, glob - offsets[task], glob, p_task, subnet, [names[g] for g in glob])
