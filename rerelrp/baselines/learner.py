"""What every baseline shares, and the two reference bounds: fine-tuning and joint training.

A baseline is one network with a head per task (as ReReLRP's, heads side by side), trained by
:func:`rerelrp.method.training.train` with the same schedule, step floor and class weights. Only joint
training keeps its best epoch (:attr:`BaselineLearner.chooses_epoch`). A method differs only in what it trains on
(:meth:`BaselineLearner._training_set`), its loss (:meth:`BaselineLearner._loss`), what it keeps
after a task (:meth:`BaselineLearner._after_task`) and how it scores classes
(:meth:`BaselineLearner._scores`). Task-agnostic prediction is the arg-max over every class of
every head; task-aware prediction the arg-max inside a task's own classes.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from rerelrp.device import flush_denormals
from rerelrp.method.base import Prediction, TaskSequenceLearner
from rerelrp.method.task_report import TaskReport
from rerelrp.method.training import Schedule, class_weights, train
from rerelrp.model.inputs import ImageSource, to_input
from rerelrp.progress import Reporter


class BaselineLearner(TaskSequenceLearner):
    """Fine-tuning: each task trains the shared body and its own head on its own images only."""

    method = "finetune"
    all_heads = False  # True: the loss spans every head seen so far (class-incremental training)
    chooses_epoch = False  # True: ``best_epoch`` applies (its validation images judge every task seen)

    def capacity(self):
        return []

    # ------------------------------------------------------------ what a method changes
    def _initial_state(self):
        """The method's own fitted attributes before its first task (a Fisher matrix, an exemplar memory)."""
        return {}

    def _training_set(self, task, lo):
        """``[(uint8 images, global labels), ...]`` to train task ``t`` on."""
        return [(task.train.images, task.train.labels + lo)]

    def _loss(self, lo, hi, weights):
        """``loss_fn(net, x, y, index) -> (loss, logits of the classes y indexes)`` for :func:`train`:
        cross-entropy over the trained heads plus the method's :meth:`_penalty`."""
        first = 0 if self.all_heads else lo
        penalty = self._penalty(lo)

        def loss_fn(net, x, y, index):
            every = net(x)
            logits = every[:, first:hi]
            loss = F.cross_entropy(logits, y - first, weight=weights[first:hi].to(logits.device))
            return (loss if penalty is None else loss + penalty(net, x, every)), logits

        return loss_fn

    def _penalty(self, lo):
        """``penalty(net, x, logits of every head) -> loss term`` while learning the task whose first
        class is ``lo``, or None."""
        return None

    def _after_task(self, task, lo, hi, source):
        """Keep what the method needs from task ``t`` once it is learned (a Fisher matrix, exemplars)."""

    def _scores(self, x):
        """Per-class scores (N, classes so far) of float inputs: the heads' logits side by side."""
        return self.net_(x)

    def stored(self):
        """``(images, bytes)`` of training images the method keeps."""
        return 0, 0

    # ------------------------------------------------------------ the shared loop
    def _trainable(self, t):
        """Parameters the optimiser moves: the body and the heads the loss reaches (weight decay
        would otherwise shrink old heads that no loss protects)."""
        heads = self.net_.heads if self.all_heads else self.net_.heads[t:]
        return list(self.net_.body.parameters()) + [p for h in heads for p in h.parameters()]

    def add_task(self, task, callback=None, stop=None):
        """Learn ``task``; returns self (its report is ``history_[-1]``)."""
        self.check_params()
        self._check_task(task)
        t = self.n_tasks
        report = Reporter(callback, stop, task=t)
        torch.manual_seed(self.task_seed(t))
        if not t:
            self._begin(task)
            self.__dict__.update(self._initial_state())
        device = self.device_
        self.net_.add_head(task.n_classes)
        self.tasks_.append(task.describe())
        lo, hi = int(self.offsets_[t]), int(self.offsets_[t + 1])
        parts = self._training_set(task, lo)
        clock = time.perf_counter()
        source = ImageSource([images for images, _ in parts], self.input_size_, device)
        labels = torch.as_tensor(np.concatenate([labels for _, labels in parts]), device=device)
        weights = torch.ones(hi)
        if self.class_balance:
            weights[lo:hi] = class_weights(task.train.labels, task.n_classes)
        generator = torch.Generator().manual_seed(self.task_seed(t))
        x_val, y_val, first = self._validation_set(task, lo)
        with flush_denormals():
            curve = train(self.net_, self._trainable(t), source, labels, self._schedule(),
                          self._loss(lo, hi, weights), generator, report,
                          validate=lambda: self._validate(x_val, y_val, first, hi))
            self._after_task(task, lo, hi, source)
        images, nbytes = self.stored()
        params = self.get_params()
        self.history_.append(TaskReport(
            task=t, name=task.name, classes=list(task.class_names), seconds={"train": time.perf_counter() - clock},
            train_curve=curve, settings=params, schedule=Schedule.of(params).plan(len(source)),
            stored_bytes=int(nbytes), stored_images=int(images)))
        return self

    def _schedule(self):
        """The training schedule, run to its end unless the method :attr:`chooses_epoch`.

        A method whose earlier tasks live in the weights the new task trains has only the new task's
        validation images to judge epochs by (earlier tasks' are not kept), and they choose the epoch
        that serves the new task against the old ones. ReReLRP's frozen units make that choice safe;
        here the last epoch of the cosine schedule is kept, as Avalanche's strategies keep it.
        """
        schedule = Schedule.of(self.get_params())
        return schedule if self.chooses_epoch else dataclasses.replace(schedule, best_epoch=False)

    def _validation_set(self, task, lo):
        """``(float images, labels, first class)`` that choose the best epoch: the new task's validation
        images, judged inside its own classes."""
        return to_input(task.val.images, self.input_size_), task.val.labels, lo

    @torch.no_grad()
    def _validate(self, x_val, y_val, first, hi):
        """Accuracy and loss over classes ``first:hi`` from the heads' logits (the best-epoch choice)."""
        if len(x_val) == 0:
            return {"val_acc": 0.0}
        self.net_.eval()
        device = self.device_
        logits = torch.cat([self.net_(x_val[i : i + 512].to(device)).cpu() for i in range(0, len(x_val), 512)])
        logits, y = logits[:, first:hi], torch.as_tensor(y_val)
        return {"val_acc": 100.0 * float((logits.argmax(1) == y).float().mean()),
                "val_loss": float(F.cross_entropy(logits, y))}

    @torch.no_grad()
    def _all_scores(self, x):
        device = self.device_
        self.net_.eval()
        return torch.cat([self._scores(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)])

    def predict(self, images, memo=None):
        """Task-agnostic prediction from all heads at once. ``memo`` (see ``ReReLRP.predict``) is
        ignored: a baseline's whole network moves with every task, so no earlier pass can be reused."""
        self._check_fitted()
        scores = self._all_scores(to_input(images, self.input_size_))
        offsets = self.offsets_
        glob = scores.argmax(1).numpy()
        task = np.searchsorted(offsets, glob, side="right") - 1
        subnet = np.stack([scores[:, offsets[m] : offsets[m + 1]].argmax(1).numpy() for m in range(self.n_tasks)], 1)
        proba = np.zeros((len(glob), self.n_tasks, int(np.diff(offsets).max())), dtype=np.float32)
        for m in range(self.n_tasks):  # each head's softmax on its own classes (iCaRL: of minus the distances)
            proba[:, m, : offsets[m + 1] - offsets[m]] = torch.softmax(scores[:, offsets[m] : offsets[m + 1]], 1).numpy()
        names = self.class_names_
        return Prediction(task, glob - offsets[task], glob, np.eye(self.n_tasks)[task], subnet, [names[g] for g in glob],
                          subnet_proba=proba)


Finetune = BaselineLearner


class Joint(BaselineLearner):
    """Joint training, the upper bound: each task retrains on every image seen so far, all heads at once."""

    method = "joint"
    all_heads = True
    chooses_epoch = True

    def _initial_state(self):
        # (images, global labels) of every task so far, training and validation: joint training keeps every image
        return {"seen_": [], "seen_val_": []}

    def _training_set(self, task, lo):
        self.seen_.append((task.train.images, task.train.labels + lo))
        return list(self.seen_)

    def _validation_set(self, task, lo):
        """Every task's validation images so far, judged over all classes (what joint training is for)."""
        self.seen_val_.append((to_input(task.val.images, self.input_size_), task.val.labels + lo))
        return torch.cat([x for x, _ in self.seen_val_]), np.concatenate([y for _, y in self.seen_val_]), 0

    def stored(self):
        return sum(len(images) for images, _ in self.seen_), sum(images.nbytes for images, _ in self.seen_)
