"""What every learner of a task sequence shares: ReReLRP and each baseline.

The scikit-learn habit (``../shared/architecture.md``): the constructor stores the settings of
:mod:`rerelrp.settings` under their own names and does nothing else; ``get_params`` /
``set_params`` read and change them; ``check_params`` validates them (``add_task`` calls it);
fitted state lives in attributes ending in ``_``. Predictions of every learner are a
:class:`Prediction`, so one evaluation measures them all alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import rerelrp.settings as settings
from rerelrp.device import describe_device, resolve_device
from rerelrp.errors import ConfigError
from rerelrp.model.nets import build_net


@dataclass
class Prediction:
    """Task-agnostic predictions for a batch of images."""

    task: np.ndarray  # (N,) recognised task
    local_class: np.ndarray  # (N,) class inside that task
    global_class: np.ndarray  # (N,) offset of the task + local class
    p_task: np.ndarray  # (N, T) recognition confidence P_T per task
    subnet_class: np.ndarray  # (N, T) the class each sub-network (or head) predicts
    class_name: list = field(default_factory=list)
    scope_score: np.ndarray | None = None  # (N,) > 1: no learned task claims the image (rerelrp.method.scope); NaN: unknown
    out_of_scope: np.ndarray | None = None  # (N,) bool, scope_score > 1
    scope_reason: list | None = None  # (N,) str or None: a rule beyond the score decided it (rerelrp.method.modality)
    subnet_proba: np.ndarray | None = None  # (N, T, widest head) softmax of each head's logits, 0 past its classes

    def global_proba(self, offsets):
        """(N, classes) probability of every global class: P_T of its task times the softmax of that
        task's head at the class (rows sum to 1); None without ``subnet_proba``. A baseline's P_T is
        the one-hot of the task it chose, so its row is the chosen head's softmax."""
        if self.subnet_proba is None:
            return None
        offsets = np.asarray(offsets)
        task_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        local = np.arange(offsets[-1]) - offsets[task_of]
        return self.p_task[:, task_of] * self.subnet_proba[:, task_of, local]


class TaskSequenceLearner:
    """Settings, learned tasks (metadata only, never images) and class offsets.

    A learner takes the rows of :mod:`rerelrp.settings` that apply to its ``method`` plus its own
    ``extra_params``, and nothing else: a ReReLRP-only setting given to a baseline is refused, not
    ignored. Fitted attributes (``tasks_``, ``history_``, ``device_``, ``net_``, ...) appear with the
    first learned task; before it, using the model raises a :class:`ConfigError`.
    """

    method = "rerelrp"
    extra_params = {}  # the method's own parameters (name -> default), beside the shared settings

    def __init__(self, **params):
        defaults = self.param_defaults()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(unknown)} for {self.method}; its settings: {', '.join(defaults)}")
        for name, default in defaults.items():
            setattr(self, name, params.get(name, default))

    # ------------------------------------------------------------ settings
    @classmethod
    def param_defaults(cls):
        """Every constructor parameter of this method with its default."""
        return {**settings.defaults(cls.method), **cls.extra_params}

    def get_params(self):
        return {name: getattr(self, name) for name in self.param_defaults()}

    def set_params(self, **params):
        """Change settings (checked by the next ``check_params`` / ``add_task``); returns self."""
        unknown = sorted(set(params) - set(self.param_defaults()))
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(unknown)} for {self.method}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def check_params(self):
        """Validate every setting and that the device exists; raises :class:`ConfigError`, returns self."""
        shared = {name: getattr(self, name) for name in settings.defaults(self.method)}
        for name, value in settings.check(shared).items():
            setattr(self, name, value)
        self._check_extra_params()
        resolve_device(self.device)
        return self

    def _check_extra_params(self):
        """Validate ``extra_params`` (a method with its own parameters overrides this)."""

    # ------------------------------------------------------------ learned tasks
    @property
    def n_tasks(self):
        return len(self.__dict__.get("tasks_", ()))  # 0 before the first task: ``tasks_`` does not exist yet

    @property
    def offsets_(self):
        """Global index of each task's first class (and the total at the end)."""
        return np.concatenate([[0], np.cumsum([len(t["classes"]) for t in self.tasks_])]).astype(np.int64)

    @property
    def class_names_(self):
        """Global class names, ``task name: class``."""
        return [f"{t['name']}: {c}" for t in self.tasks_ for c in t["classes"]]

    @property
    def input_size_(self):
        """The side the network reads (fixed by the first task; the ``input_size`` setting may say 0, auto)."""
        self._check_fitted()
        return self.net_.input_size

    def _new_net(self, task):
        """The network for the first task: built at the setting's size, or at the task's image side (auto)."""
        return build_net(self.net, settings.network_input_size(self.input_size, task.train.images.shape[1]))

    def task_seed(self, t):
        """The seed of everything random while task ``t`` (or the task whose first class is ``t``) is learned."""
        return self.seed * 10007 + int(t)

    def _begin(self, task):
        """The fitted state every learner starts its first task with: device, network, task records."""
        self.device_ = resolve_device(self.device)
        self.net_ = self._new_net(task).to(self.device_)
        self.tasks_, self.history_ = [], []

    def describe_device(self):
        return describe_device(self.device_ if self.n_tasks else resolve_device(self.device))

    def _check_fitted(self):
        if not self.n_tasks:
            raise ConfigError(f"no task learned yet by this {self.method} learner: add a task first")

    def _check_task(self, task):
        if task.n_classes < 2:
            raise ConfigError(f"task '{task.name}' has {task.n_classes} class; a task needs at least 2")
