"""The one optimisation loop: ReReLRP and every baseline train through :func:`train`.

SGD with momentum and weight decay, a cosine learning-rate schedule over all steps, seeded
batch order and shift augmentation. What differs between methods comes in as arguments: the
loss (cross-entropy on one head, plus a method's own terms), the parameters that may move,
and ``hooks`` that run around each optimiser step (ReReLRP's freezer zeroes the gradients of
frozen units before the step and puts them back bit for bit after it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rerelrp.inputs import random_shift


@dataclass(frozen=True)
class Schedule:
    """How long and how fast to train (the learner's settings of the same names)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment_shift: int

    @classmethod
    def of(cls, params):
        """The schedule of a settings dict (extra keys ignored)."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__})


class NoHooks:
    """Hooks around an optimiser step that do nothing (methods without frozen parameters)."""

    def before_step(self):
        pass

    def after_step(self):
        pass


def train(net, parameters, source, labels, schedule, loss_fn, generator, report=None, hooks=None, validate=None):
    """Train ``net`` on ``source`` (an :class:`~rerelrp.inputs.ImageSource`) with ``labels`` (LongTensor).

    ``loss_fn(net, x, y, index)`` returns ``(loss, logits)`` for a batch (``index``: the batch's
    positions in ``source``; logits of the classes ``y`` indexes, for the running accuracy).
    ``validate()`` (optional) returns the validation accuracy after each epoch. ``report`` receives
    progress events (phase "train"). Returns the training curve, one dict per epoch.
    """
    hooks = hooks or NoHooks()
    n = len(source)
    device = labels.device
    optimizer = torch.optim.SGD(parameters, lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(n / schedule.batch_size)))
    total = schedule.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    curve = []
    for epoch in range(schedule.epochs):
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        total_loss, correct = 0.0, 0
        for step, start in enumerate(range(0, n, schedule.batch_size)):
            index = order[start : start + schedule.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            x = random_shift(source.batch(index), schedule.augment_shift, generator)
            y = labels[index]
            loss, logits = loss_fn(net, x, y, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            hooks.before_step()
            optimizer.step()
            hooks.after_step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y).sum())
            if report:
                report("train", epoch * steps_per_epoch + step + 1, total, f"epoch {epoch + 1}/{schedule.epochs}")
        net.eval()
        point = {"epoch": epoch + 1, "loss": total_loss / n, "train_acc": 100.0 * correct / n}
        if validate is not None:
            point["val_acc"] = validate()
        curve.append(point)
        if report:
            message = f"epoch {epoch + 1}/{schedule.epochs}: loss {point['loss']:.3f}"
            if "val_acc" in point:
                message += f", val acc {point['val_acc']:.1f}%"
            report("train", (epoch + 1) * steps_per_epoch, total, message, **point)
    net.eval()
    return curve


def head_loss(columns):
    """Cross-entropy over the logits in ``columns`` (a slice of the heads side by side)."""
    import torch.nn.functional as F

    def loss_fn(net, x, y, index):
        logits = net(x)[:, columns]
        return F.cross_entropy(logits, y), logits

    return loss_fn
