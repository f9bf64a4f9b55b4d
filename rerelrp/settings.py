"""Every learner setting, defined once: name, default, bounds, help text.

The learner's constructor accepts exactly these names, ``rerelrp run`` gets one option per setting
(:func:`add_options`), the app's Train page draws one widget per setting from the same table,
and :func:`check` is the one place that says why a value is refused. A new setting is one more
row in :data:`SETTINGS`.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

from rerelrp.errors import ConfigError

NETS = ("vgg", "vgg11", "lenet", "resnet18")
COMPOSITES = ("EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1Flat")
DEVICES = ("auto", "cpu", "cuda", "mps")
MIN_AUTO_INPUT = 28  # "auto" never runs the network below the size its defaults were tuned at (8 px digits run at 28)


@dataclass(frozen=True)
class Setting:
    """One setting. ``low``/``high`` are inclusive bounds unless ``open_high``; ``choices`` lists allowed values.

    ``flag`` is the command-line option (default ``--name-with-dashes``); ``group`` orders the Train
    page; ``fixed`` settings are fixed once the first task is learned (the network is built then,
    and the recognisers read relevance of one composite throughout).
    """

    name: str
    default: object
    help: str
    group: str
    low: float | None = None
    high: float | None = None
    open_high: bool = False
    choices: tuple | None = None
    pattern: str | None = None  # a regular expression of further allowed values (e.g. cuda:1)
    flag: str | None = None
    fixed: bool = False
    label: str | None = None  # what a form calls it (default: the name, capitalised)
    zero_means: str | None = None  # 0 is allowed beside the bounds and means this (e.g. "auto")
    rerelrp_only: bool = False  # what only ReReLRP does (LRP, pruning, recognisers): baselines take no such setting

    def applies_to(self, method):
        return method in ("rerelrp", "rerelrp-maxsoftmax") or not self.rerelrp_only

    @property
    def kind(self):
        return type(self.default)

    @property
    def title(self):
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def option(self):
        return "--" + (self.flag or self.name).replace("_", "-")

    def check(self, value):
        """``value`` converted to this setting's type, or a :class:`ConfigError` saying what is allowed."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be true or false, not {value!r}")
            return value
        if self.choices is not None:
            if value not in self.choices and not (self.pattern and re.fullmatch(self.pattern, str(value))):
                raise ConfigError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, not '{value}'")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise ConfigError(f"{self.name} must be a whole number, not {value!r}")
            value = int(value)
            if value == 0 and self.zero_means:
                return 0
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{self.name} must be a number, not {value!r}")
            value = float(value)
        too_low = self.low is not None and value < self.low
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if too_low or too_high:
            raise ConfigError(f"{self.name} must be {self.range_text()}, not {value}")
        return value

    def range_text(self):
        if self.zero_means:
            return f"0 ({self.zero_means}) or in [{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None and self.high is not None:
            close = ")" if self.open_high else "]"
            return f"in [{_num(self.low)}, {_num(self.high)}{close}"
        if self.low is not None:
            return f"at least {_num(self.low)}"
        return f"at most {_num(self.high)}"


def _num(v):
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


SETTINGS = {s.name: s for s in (
    # the network (fixed by the first task)
    Setting("net", "vgg", "backbone: a small VGG, the paper's VGG11, LeNet or ResNet-18 for small inputs", "network",
            choices=NETS, fixed=True, label="Network"),
    Setting("input_size", 0, "side of the square network input in pixels; images are resized to it. 0 (auto): the "
            f"side the first task's images were loaded at, at least {MIN_AUTO_INPUT}", "network",
            low=8, high=512, fixed=True, label="Input size (px, 0: auto)", zero_means="auto"),
    Setting("composite", "EpsilonPlusFlat", "zennit LRP composite for unit relevance and recognition", "network",
            choices=COMPOSITES, fixed=True, label="LRP composite", rerelrp_only=True),
    Setting("device", "auto", "auto (CUDA, else Apple MPS, else CPU), cpu, cuda or mps", "network",
            choices=DEVICES, pattern=r"cuda:\d+", fixed=True),
    Setting("seed", 0, "seed of every random choice (weights, batches, samples, forests, splits)", "network",
            low=0, high=2**32 - 1, fixed=True),
    # training, per task
    Setting("epochs", 10, "passes over each task's training images", "training", low=1, high=10_000),
    Setting("batch_size", 64, "images per optimiser step", "training", low=2, high=65_536),
    Setting("lr", 0.05, "SGD learning rate (cosine schedule to 0 over each task)", "training", low=1e-6, high=10.0,
            label="Learning rate"),
    Setting("momentum", 0.9, "SGD momentum", "training", low=0.0, high=1.0, open_high=True),
    Setting("weight_decay", 5e-4, "L2 weight decay of free units", "training", low=0.0, high=1.0),
    Setting("augment_shift", 2, "training images are shifted by up to this many pixels (0: off)", "training",
            low=0, high=64, label="Shift augmentation (px)"),
    Setting("min_steps", 200, "at least this many optimiser steps per task: small tasks get more epochs", "training",
            low=0, high=1_000_000, label="Minimum steps per task"),
    Setting("class_balance", True, "weigh the loss inversely to class frequency (imbalanced folders)", "training",
            label="Class-balanced loss"),
    Setting("best_epoch", True, "keep the weights of the epoch with the best validation accuracy (then loss); "
            "baselines other than joint training always keep the last epoch (docs/baselines.md)",
            "training", label="Best epoch"),
    Setting("recalibrate", True, "recompute BatchNorm statistics on the training images after training and for the "
            "pruned sub-network, so that evaluation sees what training saw", "training",
            label="Recompute BN stats", rerelrp_only=True),
    # keeping and freeing units
    Setting("acc_drop", 0.25, "accuracy points a task may lose when its least relevant units are dropped",
            "capacity", low=0.0, high=100.0, label="acc_drop (points)", rerelrp_only=True),
    Setting("min_free", 0.2, "share of every layer kept free for later tasks", "capacity",
            low=0.0, high=1.0, open_high=True, label="Minimum free share per layer", rerelrp_only=True),
    Setting("prune_samples", 512, "a cut of units is judged on at least this many images: the validation images, "
            "topped up with training images (0: validation images only)", "capacity", low=0, high=1_000_000,
            label="Images judging a cut", rerelrp_only=True),
    Setting("grow", True, "add units to layers whose free share falls below min_free", "capacity",
            label="Grow full layers", rerelrp_only=True),
    Setting("room_steps", 100, "when a cut judged on too few images to lose one (under 100 / acc_drop) leaves a layer "
            "short of min_free, drop the shortfall and fine-tune the task this many steps without it, kept only if "
            "the cut's accuracy holds (0: grow instead)", "capacity",
            low=0, high=1_000_000, label="Fine-tune steps to make room", rerelrp_only=True),
    # remembering and recognising tasks
    Setting("recognizer", "gaussian", "how tasks are recognised: 'gaussian' keeps class statistics of every task's "
            "activations (no per-image record; a forward pass recognises), 'forest' the paper's random forests on "
            "relevance rows of recognizer_samples training images per task", "recognition",
            choices=("gaussian", "forest"), fixed=True, label="Task recogniser", rerelrp_only=True),
    Setting("relevance_samples", 512, "training images per task whose LRP ranks the units for pruning", "recognition",
            low=1, high=1_000_000, label="Relevance samples per task", rerelrp_only=True),
    Setting("recognizer_samples", 2048, "training images per task whose relevance rows are kept for the forests",
            "recognition", low=2, high=1_000_000, label="Recogniser samples per task", rerelrp_only=True),
    Setting("n_features", 40, "relevance features (units) each forest reads", "recognition",
            low=1, high=100_000, flag="features", label="Features per recogniser", rerelrp_only=True),
    Setting("activation_features", True, "forests also read the activation of every unit the task's sub-network "
            "keeps (from the same forward pass)", "recognition", label="Unit activations as features", rerelrp_only=True),
    Setting("n_trees", 100, "trees per recogniser forest", "recognition", low=1, high=10_000, flag="trees",
            label="Trees per forest", rerelrp_only=True),
    Setting("calibrate_p_task", True, "after each task, fit one temperature to P_T on up to 256 validation images of "
            "every learned task, so that P_T = 0.8 is right about 8 times in 10 (it never changes which task is "
            "chosen)", "recognition", flag="calibrate", label="Calibrate P_T on validation images", rerelrp_only=True),
    Setting("scope_rate", 0.05, "share of a task's own validation images the out-of-scope check may call out of "
            "scope: it sets each task's threshold (changeable after training)", "recognition", low=0.0, high=0.5,
            label="Out-of-scope rejection rate", rerelrp_only=True),
)}
GROUPS = {"network": "Network (fixed by the first task)", "training": "Training", "capacity": "Capacity",
          "recognition": "Remembering and recognising tasks"}


def network_input_size(input_size, image_side):
    """The network's input side for the setting ``input_size`` (0: auto) and the first task's loaded image side."""
    if input_size:
        return int(input_size)
    return int(min(max(image_side, MIN_AUTO_INPUT), SETTINGS["input_size"].high))


def _int_or_auto(text):
    return 0 if str(text).strip().lower() == "auto" else int(text)


def defaults(method="rerelrp"):
    """Every setting that applies to ``method``, at its default."""
    return {name: s.default for name, s in SETTINGS.items() if s.applies_to(method)}


def for_method(values, method):
    """The settings of ``values`` that apply to ``method`` (a baseline takes no LRP, pruning or recogniser setting)."""
    return {name: value for name, value in values.items() if SETTINGS[name].applies_to(method)}


def check(values):
    """Every setting of ``values`` converted and checked (unknown names refused); returns a new dict."""
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    return {name: SETTINGS[name].check(value) for name, value in values.items()}


def add_options(parser):
    """One command-line option per setting, with its default and help (``--grow/--no-grow`` for switches)."""
    for s in SETTINGS.values():
        extra = f"; {s.range_text()}" if s.low is not None or s.high is not None else ""
        if s.choices:
            extra = f"; one of {', '.join(s.choices)}"
        if s.kind is bool:
            parser.add_argument(s.option, dest=s.name, action=argparse.BooleanOptionalAction, default=s.default,
                                help=s.help)
        else:  # values are checked by check(), so that every refusal says the same thing everywhere
            kind = _int_or_auto if s.zero_means else s.kind
            parser.add_argument(s.option, dest=s.name, type=kind, default=s.default, help=s.help + extra)


def from_options(args):
    """The settings an argparse namespace holds (see :func:`add_options`)."""
    return {name: getattr(args, name) for name in SETTINGS}
