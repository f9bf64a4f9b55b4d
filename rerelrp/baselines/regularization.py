"""Baselines that protect old tasks with a regulariser and keep no images: EWC and LwF.

Both train like fine-tuning (the body and the new head, on the new task's images) plus one term.
Their constants are the defaults of FACIL (Masana et al., "Class-incremental learning: survey and
performance evaluation", TPAMI 2022), the framework the ReReLRP paper's baselines ran in.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rerelrp.baselines.learner import BaselineLearner
from rerelrp.errors import ConfigError


class EWC(BaselineLearner):
    """Elastic weight consolidation (Kirkpatrick et al., PNAS 2017): a quadratic pull of every body
    weight towards its value after earlier tasks, weighted by the diagonal Fisher information.

    Fisher of a task: squared gradients of the cross-entropy of the model's own prediction (its
    most likely class in the task's head), per batch of 64 training images, averaged; merged with
    the earlier tasks' as ``alpha * old + (1 - alpha) * new`` (FACIL's online form, ``ewc_alpha`` 0.5).
    ``ewc_lambda`` is 100, not FACIL's 5,000: with our learning rate (0.05) 5,000 makes the penalty's
    curvature ``lr * lamb * max F`` about 17 and SGD diverges (NaN loss on the digits demo's
    fourth task); 100 keeps it near 0.35 there, inside the stable range (< 1).
    """

    method = "ewc"
    extra_params = {"ewc_lambda": 100.0, "ewc_alpha": 0.5, "fisher_images": 2048}

    def _check_extra_params(self):
        _check_positive(self, "ewc_lambda", "fisher_images")
        if not 0.0 <= self.ewc_alpha <= 1.0:
            raise ConfigError(f"ewc_alpha must be in [0, 1], not {self.ewc_alpha!r}")

    def _initial_state(self):
        # body parameter name -> diagonal Fisher, and -> value after the last task
        return {"fisher_": None, "anchor_": None}

    def _penalty(self, lo):
        if self.fisher_ is None:
            return None

        def penalty(net, x, logits):
            return self.ewc_lambda / 2 * sum((self.fisher_[name] * (p - self.anchor_[name]).pow(2)).sum()
                                       for name, p in net.body.named_parameters())

        return penalty

    def _after_task(self, task, lo, hi, source):
        net = self.net_
        params = dict(net.body.named_parameters())
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        n = min(len(source), self.fisher_images)
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(self.task_seed(lo)))[:n]
        net.eval()
        for start in range(0, n, 64):
            index = order[start : start + 64]
            logits = net(source.batch(index))[:, lo:hi]
            loss = F.cross_entropy(logits, logits.argmax(1))
            net.zero_grad(set_to_none=True)
            loss.backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach().pow(2) * len(index)
        net.zero_grad(set_to_none=True)
        fisher = {name: f / n for name, f in fisher.items()}
        if self.fisher_ is not None:
            a = self.ewc_alpha
            fisher = {name: a * self.fisher_[name] + (1 - a) * f for name, f in fisher.items()}
        self.fisher_ = fisher
        self.anchor_ = {name: p.detach().clone() for name, p in params.items()}


class LwF(BaselineLearner):
    """Learning without forgetting (Li & Hoiem, TPAMI 2018): while learning a task, the old heads'
    outputs on its images are distilled from a copy of the network made before it (temperature
    ``lwf_temperature`` 2, weight ``lwf_lambda`` 1)."""

    method = "lwf"
    extra_params = {"lwf_lambda": 1.0, "lwf_temperature": 2.0}

    def _check_extra_params(self):
        _check_positive(self, "lwf_lambda", "lwf_temperature")

    def _trainable(self, t):
        return list(self.net_.parameters())  # the old heads learn too, held by the distillation

    def _penalty(self, lo):
        if lo == 0:
            return None
        old = copy.deepcopy(self.net_).eval()
        for p in old.parameters():
            p.requires_grad_(False)
        heads = [slice(int(a), int(b)) for a, b in zip(self.offsets_[:-2], self.offsets_[1:-1])]

        def penalty(net, x, logits):
            with torch.no_grad():
                target = old(x)
            return self.lwf_lambda * sum(distillation(logits[:, h], target[:, h], self.lwf_temperature) for h in heads)

        return penalty


def _check_positive(learner, *names):
    for name in names:
        value = getattr(learner, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{name} must be a positive number, not {value!r}")


def distillation(logits, target, T):
    """Cross-entropy of softened outputs against softened old outputs (Hinton et al. 2015), batch mean."""
    return -(F.softmax(target / T, 1) * F.log_softmax(logits / T, 1)).sum(1).mean()
