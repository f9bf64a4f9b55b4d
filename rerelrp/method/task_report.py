"""What learning one task produced: the one typed record every learner returns and every reader uses.

ReReLRP and the baselines append a :class:`TaskReport` to ``history_`` for each learned task;
metrics, comparisons, the app and reports read its attributes, and a workspace saves
:meth:`TaskReport.to_dict`. Each report keeps the settings the task was trained with and the
schedule that actually ran (the step floor can add epochs), so an archived run says how every
task was trained, not only the last one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TaskReport:
    """One learned task: timings, training curve, settings and schedule that ran, pruning, warnings."""

    task: int
    name: str
    classes: list
    seconds: dict = field(default_factory=dict)  # per phase: train, relevance, prune, recognizer
    train_curve: list = field(default_factory=list)  # one dict per epoch
    settings: dict = field(default_factory=dict)  # the learner's settings while this task trained
    schedule: dict = field(default_factory=dict)  # what ran: epochs (after the step floor), steps, batches per epoch
    stored_bytes: int = 0  # what the method keeps of this task (relevance rows, exemplars)
    stored_images: int = 0
    grown: dict = field(default_factory=dict)  # units added per layer before this task (ReReLRP)
    recalibrated: bool | None = None  # BatchNorm statistics recomputed on training images (ReReLRP)
    prune: dict = field(default_factory=dict)  # the kept-set search (ReReLRP)
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """A report from :meth:`to_dict` output, or from a workspace written before reports were typed
        (unknown keys are ignored, missing ones take their defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(data).items() if k in known})
