"""Progress events of long work, so the CLI can draw a bar and the app a progress widget."""
from __future__ import annotations

from dataclasses import dataclass, field

from rerelrp.errors import StopRequested

PHASES = ("train", "relevance", "prune", "recognizer", "eval")


@dataclass
class Progress:
    """One step of one phase. ``values`` carries numbers worth showing (loss, accuracy, units kept)."""

    phase: str
    step: int
    total: int
    message: str = ""
    task: int = -1
    values: dict = field(default_factory=dict)


class Reporter:
    """Sends events to an optional callback and honours an optional stop flag between batches."""

    def __init__(self, callback=None, stop=None, task=-1):
        self.callback = callback
        self.stop = stop
        self.task = task

    def __call__(self, phase, step, total, message="", **values):
        self.check_stop()
        if self.callback is not None:
            self.callback(Progress(phase, step, total, message, self.task, values))

    def check_stop(self):
        if self.stop is not None and self.stop.is_set():
            raise StopRequested("stopped on request; the model is as it was before this task")
