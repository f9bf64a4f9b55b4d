"""The one optimisation loop: ReReLRP and every baseline train through :func:`train`.

SGD with momentum and weight decay, a cosine learning-rate schedule over all steps, seeded
batch order and shift augmentation. What differs between methods comes in as arguments: the
loss (cross-entropy on one head, plus a method's own terms), the parameters that may move,
and ``hooks`` that run around each optimiser step (ReReLRP's freezer zeroes the gradients of
frozen units before the step and puts them back bit for bit after it).

Small data sets get the same care as large ones: a floor on optimiser steps (a folder of 100
images gets as many steps as it needs, not 20), class weights against imbalance, the epoch
with the best validation result, and BatchNorm statistics recomputed on the training images
(:func:`recalibrate_batchnorm`), so that evaluation sees what training saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from rerelrp.model.batching import rows_per_pass
from rerelrp.model.inputs import random_shift

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@dataclass(frozen=True)
class Schedule:
    """How long and how fast to train (the learner's settings of the same names)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment_shift: int
    min_steps: int
    best_epoch: bool

    @classmethod
    def of(cls, params):
        """The schedule of a settings dict (extra keys ignored)."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__})

    def plan(self, n):
        """What training ``n`` images will run: epochs after the step floor, steps per epoch, steps in all."""
        epochs, steps_per_epoch = epochs_for(self, n)
        return {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "steps": epochs * steps_per_epoch,
                "epochs_set": self.epochs, "min_steps": self.min_steps}


class NoHooks:
    """Hooks around an optimiser step that do nothing (methods without frozen parameters)."""

    def before_step(self):
        pass

    def after_step(self):
        pass


def epochs_for(schedule, n):
    """Epochs to run over ``n`` images: ``schedule.epochs``, more if that gives fewer than ``min_steps`` steps."""
    steps_per_epoch = max(1, int(np.ceil(n / schedule.batch_size)))
    return max(schedule.epochs, int(np.ceil(schedule.min_steps / steps_per_epoch))), steps_per_epoch


class _Stepper:
    """One pass over the training images in a seeded order: optimiser steps, the hooks around each one."""

    def __init__(self, net, source, labels, schedule, loss_fn, optimizer, scheduler, hooks, generator):
        self.net, self.source, self.labels, self.schedule, self.loss_fn = net, source, labels, schedule, loss_fn
        self.optimizer, self.scheduler, self.hooks, self.generator = optimizer, scheduler, hooks, generator

    def epoch(self, on_step=None):
        """``(summed loss weighted by batch size, correct predictions)`` of one epoch."""
        net, schedule, n = self.net, self.schedule, len(self.source)
        net.train()
        order = torch.randperm(n, generator=self.generator).to(self.labels.device)
        # kept on the device and read once per epoch: reading them every step would make a GPU
        # wait for the host once per batch
        losses, sizes, hits = [], [], []
        for step, start in enumerate(range(0, n, schedule.batch_size)):
            index = order[start : start + schedule.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            x = random_shift(self.source.batch(index), schedule.augment_shift, self.generator)
            y = self.labels[index]
            loss, logits = self.loss_fn(net, x, y, index)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.hooks.before_step()
            self.optimizer.step()
            self.hooks.after_step()
            self.scheduler.step()
            losses.append(loss.detach())
            sizes.append(len(index))
            hits.append((logits.argmax(1) == y).sum())
            if on_step:
                on_step(step + 1)
        net.eval()
        total_loss = 0.0
        for value, size in zip(torch.stack(losses).tolist() if losses else [], sizes):
            total_loss += value * size  # in Python floats, in step order: the sums of before, bit for bit
        return total_loss, int(torch.stack(hits).sum()) if hits else 0


def train(net, parameters, source, labels, schedule, loss_fn, generator, report=None, hooks=None, validate=None):
    """Train ``net`` on ``source`` (an :class:`~rerelrp.model.inputs.ImageSource`) with ``labels`` (LongTensor).

    ``loss_fn(net, x, y, index)`` returns ``(loss, logits)`` for a batch (``index``: the batch's
    positions in ``source``; logits of the classes ``y`` indexes, for the running accuracy).
    ``validate()`` (optional) returns ``{"val_acc": %, "val_loss": ...}`` after each epoch; with
    ``schedule.best_epoch`` the weights of the best epoch (accuracy, then loss) are kept.
    ``report`` receives progress events (phase "train"). Returns the training curve, one dict per epoch.
    """
    hooks = hooks or NoHooks()
    n = len(source)
    optimizer = torch.optim.SGD(parameters, lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    epochs, steps_per_epoch = epochs_for(schedule, n)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    curve, best, best_state, best_index = [], None, None, None
    step = _Stepper(net, source, labels, schedule, loss_fn, optimizer, scheduler, hooks, generator)
    for epoch in range(epochs):
        on_step = (lambda k, e=epoch: report("train", e * steps_per_epoch + k, total, f"epoch {e + 1}/{epochs}")) \
            if report else None
        loss, correct = step.epoch(on_step)
        point = {"epoch": epoch + 1, "loss": loss / n, "train_acc": 100.0 * correct / n}
        if validate is not None:
            point.update(validate())
            score = (point["val_acc"], -point.get("val_loss", 0.0))
            if schedule.best_epoch and (best is None or score >= best):  # ties: the later epoch
                best, best_index = score, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        curve.append(point)
        if report:
            message = f"epoch {epoch + 1}/{epochs}: loss {point['loss']:.3f}"
            if "val_acc" in point:
                message += f", val acc {point['val_acc']:.1f}%"
            report("train", (epoch + 1) * steps_per_epoch, total, message, **point)
    if best_state is not None:
        net.load_state_dict(best_state)
        curve[best_index]["kept"] = True
    net.eval()
    return curve


@torch.no_grad()
def recalibrate_batchnorm(net, source, hooks=None, masks=None, limit=2048, batch_size=None, generator=None):
    """Recompute BatchNorm running statistics as the average over up to ``limit`` images of ``source``.

    A few dozen optimiser steps leave running statistics far from the data (momentum 0.1), so
    evaluation would not see what training saw. Statistics of frozen units never change:
    ``hooks.after_step()`` (the freezer) puts them back after every batch. ``masks`` selects a
    sub-network (per-layer (1, units) masks), so a pruned sub-network gets its own statistics.
    Batches are of 256 images up to 28 px and fewer above (24 at 128 px), so that one batch's
    activations do not set the peak memory of a whole run.
    """

    batch_size = batch_size or min(256, rows_per_pass(source.size))

    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    if not norms or len(source) < 2:
        return
    hooks = hooks or NoHooks()
    order = torch.randperm(len(source), generator=generator)[:limit]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    hooks.after_step()
    net.train()
    try:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                continue
            x = source.batch(index)
            batch_masks = None if masks is None else {k: v.expand(len(x), -1) for k, v in masks.items()}
            with net.subnetworks(batch_masks):
                net.features(x)
            hooks.after_step()
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()


def recalibrate_if_better(net, source, freezer, generator, scores):
    """BatchNorm statistics recomputed on training images, kept only if validation agrees.

    After a few dozen steps the running statistics are far from the data (the 28 CT : 150 MR
    folder stays at the majority share without this); after hundreds of augmented steps they
    can fit the trained weights better than the plain average does (BloodMNIST task 0: 99.8 %
    validation accuracy with them, 98.2 % recomputed). ``scores()`` returns validation accuracy
    and loss; it decides (ties: recomputed).
    """
    before = scores()
    saved = {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}
    recalibrate_batchnorm(net, source, freezer, generator=generator)
    after = scores()
    if (after["val_acc"], -after["val_loss"]) >= (before["val_acc"], -before["val_loss"]):
        return True
    net.load_state_dict(saved, strict=False)
    return False


def class_weights(labels, n_classes):
    """Cross-entropy weights inverse to class frequency (scikit-learn's "balanced"; 0 for a class without images)."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.zeros(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    if len(present) < n_classes:  # sklearn spreads the images over the classes present; the absent ones count too
        weights *= len(present) / n_classes
    return torch.as_tensor(weights, dtype=torch.float32)


def head_loss(columns, weights=None):
    """Cross-entropy over the logits in ``columns`` (a slice of the heads side by side), optionally class-weighted."""
    import torch.nn.functional as F

    def loss_fn(net, x, y, index):
        logits = net(x)[:, columns]
        return F.cross_entropy(logits, y, weight=None if weights is None else weights.to(logits.device)), logits

    return loss_fn
