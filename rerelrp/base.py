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

from rerelrp import settings
from rerelrp.device import describe_device, resolve_device
from rerelrp.errors import ConfigError


@dataclass
class Prediction:
    """Task-agnostic predictions for a batch of images."""

    task: np.ndarray  # (N,) recognised task
    local_class: np.ndarray  # (N,) class inside that task
    global_class: np.ndarray  # (N,) offset of the task + local class
    p_task: np.ndarray  # (N, T) recognition confidence P_T per task
    subnet_class: np.ndarray  # (N, T) the class each sub-network (or head) predicts
    class_name: list = field(default_factory=list)
    scope_score: np.ndarray | None = None  # (N,) > 1: no learned task claims the image (rerelrp.scope); NaN: unknown
    out_of_scope: np.ndarray | None = None  # (N,) bool, scope_score > 1


class TaskSequenceLearner:
    """Settings, learned tasks (metadata only, never images) and class offsets."""

    def __init__(self, **params):
        unknown = sorted(set(params) - set(settings.SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(settings.SETTINGS)}")
        for name, value in {**settings.defaults(), **params}.items():
            setattr(self, name, value)
        self.tasks_ = []

    # ------------------------------------------------------------ settings
    def get_params(self):
        return {name: getattr(self, name) for name in settings.SETTINGS}

    def set_params(self, **params):
        """Change settings (checked by the next ``check_params`` / ``add_task``); returns self."""
        unknown = sorted(set(params) - set(settings.SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def check_params(self):
        """Validate every setting and that the device exists; raises :class:`ConfigError`, returns self."""
        for name, value in settings.check(self.get_params()).items():
            setattr(self, name, value)
        resolve_device(self.device)
        return self

    # ------------------------------------------------------------ learned tasks
    @property
    def n_tasks(self):
        return len(self.tasks_)

    @property
    def offsets_(self):
        """Global index of each task's first class (and the total at the end)."""
        return np.concatenate([[0], np.cumsum([len(t["classes"]) for t in self.tasks_])]).astype(np.int64)

    @property
    def class_names_(self):
        """Global class names, ``task name: class``."""
        return [f"{t['name']}: {c}" for t in self.tasks_ for c in t["classes"]]

    def _torch_device(self):
        return resolve_device(self.device)

    def describe_device(self):
        return describe_device(self._torch_device())

    def _check_fitted(self):
        if not self.tasks_:
            raise ConfigError("no task learned yet: add a task first")

    def _check_task(self, task):
        if task.n_classes < 2:
            raise ConfigError(f"task '{task.name}' has {task.n_classes} class; a task needs at least 2")
