"""Baselines that keep training images of earlier tasks (exemplars): experience replay and iCaRL.

Both keep exemplars of every class as uint8 arrays and train each new task on its images plus every
exemplar, with the loss over every head (class-incremental). The memory either grows by
``exemplars_per_class`` images per class (20 by default, LifeLonger's budget for MedMNIST), or,
with ``memory_size``, is a fixed number of images from the first task on, shared equally among the
classes seen: early tasks keep more exemplars and give up their last ones as classes arrive (iCaRL's
fixed memory; Avalanche's ``mem_size``). They report what they keep (:meth:`stored`), so a table can
set their bytes beside ReReLRP's relevance rows.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from rerelrp.baselines.learner import BaselineLearner
from rerelrp.errors import ConfigError
from rerelrp.model.inputs import to_input


class Replay(BaselineLearner):
    """Experience replay (Chaudhry et al., "On tiny episodic memories in continual learning", 2019):
    a class-balanced memory of randomly chosen training images; every step of a later task sees as
    many memory images as new ones (the memory is repeated to the size of the task's training set,
    like drawing a memory batch beside each new batch); cross-entropy over all classes seen so far.

    Mixing the memory in once instead (20 images per class beside thousands of new ones) left
    BloodMNIST 4x2 at fine-tuning's TAg (25.0 %): the new classes swamp the old ones.
    """

    method = "replay"
    all_heads = True
    extra_params = {"exemplars_per_class": 20, "memory_size": 0}  # memory_size 0: the memory grows per class

    def _check_extra_params(self):
        for name, low in (("exemplars_per_class", 1), ("memory_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number ≥ {low}, not {value!r}")

    def _per_class(self, n_classes):
        """Exemplars each class keeps once ``n_classes`` are seen."""
        return max(1, self.memory_size // n_classes) if self.memory_size else self.exemplars_per_class

    def _initial_state(self):
        return {"memory_": {}}  # global class -> uint8 exemplar images

    def _memory_set(self, n_new):
        """The memory as (images, labels) pairs, each class repeated so that all of it about matches ``n_new``."""
        total = sum(len(m) for m in self.memory_.values())
        repeats = max(1, round(n_new / total)) if total else 1
        return [(np.concatenate([images] * repeats), np.full(len(images) * repeats, c, np.int64))
                for c, images in sorted(self.memory_.items())]

    def _training_set(self, task, lo):
        return [(task.train.images, task.train.labels + lo)] + self._memory_set(len(task.train))

    def _after_task(self, task, lo, hi, source):
        rng = np.random.default_rng(self.task_seed(lo))
        per_class = self._per_class(hi)
        for c in list(self.memory_):  # a fixed memory: older classes give up their last exemplars
            self.memory_[c] = self.memory_[c][:per_class]
        for c in range(task.n_classes):
            where = np.flatnonzero(task.train.labels == c)
            chosen = self._select(task, where, c, rng, min(len(where), per_class))
            self.memory_[lo + c] = np.ascontiguousarray(task.train.images[chosen])

    def _select(self, task, where, c, rng, n):
        """Positions of ``n`` exemplars of class ``c`` among ``where`` (its training images), the ones to keep
        longest first (a fixed memory keeps a prefix); a growing memory keeps them in file order."""
        chosen = rng.choice(where, n, replace=False)
        return chosen if self.memory_size else np.sort(chosen)

    def stored(self):
        return sum(len(m) for m in self.memory_.values()), sum(m.nbytes for m in self.memory_.values())


class ICaRL(Replay):
    """iCaRL (Rebuffi et al., CVPR 2017): exemplars chosen by herding in feature space, a network
    trained with sigmoid cross-entropy whose old-class targets are the previous network's outputs
    (distillation), and a nearest-mean-of-exemplars classifier on L2-normalised features.

    As in LifeLonger, the memory keeps a fixed number per class rather than a fixed total; class
    means are taken without the flipped copies of the original (our training does not flip).
    """

    method = "icarl"

    def _training_set(self, task, lo):  # the original: new images and exemplars once each
        return [(task.train.images, task.train.labels + lo)] + [
            (images, np.full(len(images), c, np.int64)) for c, images in sorted(self.memory_.items())]

    def _initial_state(self):
        return {**super()._initial_state(), "means_": None}  # (classes, features) normalised class means

    def _loss(self, lo, hi, weights):
        old = copy.deepcopy(self.net_).eval() if lo else None

        def loss_fn(net, x, y, index):
            logits = net(x)[:, :hi]
            target = F.one_hot(y, hi).float()
            if old is not None:
                with torch.no_grad():
                    target[:, :lo] = torch.sigmoid(old(x)[:, :lo])
            return F.binary_cross_entropy_with_logits(logits, target), logits

        return loss_fn

    @torch.no_grad()
    def _features(self, images):
        device = self.device_
        x = to_input(images, self.input_size_)
        self.net_.eval()
        f = torch.cat([self.net_.features(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
        return F.normalize(f, dim=1)

    def _select(self, task, where, c, rng, n):
        """Herding: greedily the image that brings the exemplars' mean feature closest to the class mean (in
        that order, so that a prefix is the best smaller set)."""
        f = self._features(task.train.images[where])
        target = f.mean(0)
        chosen, total = [], torch.zeros_like(target)
        for k in range(1, n + 1):
            gap = ((target - (total + f) / k) ** 2).sum(1)
            if chosen:
                gap[chosen] = float("inf")
            best = int(gap.argmin())
            chosen.append(best)
            total += f[best]
        return where[chosen]

    def _after_task(self, task, lo, hi, source):
        super()._after_task(task, lo, hi, source)
        means = [F.normalize(self._features(self.memory_[c]).mean(0), dim=0) for c in range(hi)]
        self.means_ = torch.stack(means)

    def _scores(self, x):
        if self.means_ is None or len(self.means_) < self.offsets_[-1]:  # while a task is being learned
            return self.net_(x)
        f = F.normalize(self.net_.features(x), dim=1)
        return -torch.cdist(f, self.means_.to(f.device))
