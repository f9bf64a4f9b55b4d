"""Long work in a background thread, watched from a front end.

:class:`Job` runs a function in a thread, keeps the latest progress event of every phase, a
short log, a stop flag and whatever went wrong, and hands out consistent snapshots of all that
for drawing. It knows nothing about models or the app (see :mod:`rerelrp.app.session`).
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field

from rerelrp.errors import RerelrpError, StopRequested
from rerelrp.progress import PHASES, Progress


@dataclass
class JobSnapshot:
    """A consistent copy of a job's state for drawing (taken under the job's lock)."""

    name: str
    state: str
    events: dict  # phase -> latest Progress
    phase: str | None
    task: int
    log: list
    curve: list  # epoch values of the task being trained
    error: str | None
    trace: str | None
    elapsed: float
    results: list = field(default_factory=list)

    @property
    def running(self):
        return self.state == "running"


class Job:
    """``target(callback, stop)`` in a daemon thread, with progress, stop and error capture.

    ``callback`` receives :class:`~rerelrp.progress.Progress` events; ``stop`` is a
    :class:`threading.Event` that ``target`` must honour (the learner checks it between
    batches). A :class:`StopRequested` ends the job as ``stopped``, a
    :class:`~rerelrp.errors.RerelrpError` as ``failed`` with its message, anything else as
    ``failed`` with the traceback kept for display.
    """

    def __init__(self, target, name="job", max_log=200, owner=None):
        self.target = target
        self.name = name
        self.owner = owner  # who started it (an opaque label: the app's browser tab)
        self.started_at = None  # wall-clock time of start, for display
        self.stop_event = threading.Event()
        self.state = "idle"
        self.events = OrderedDict()
        self.phase = None
        self.task = -1
        self.log = []
        self.curve = []
        self.results = []
        self.error = None
        self.trace = None
        self.result = None
        self.max_log = max_log
        self.started = None
        self.finished = None
        self._lock = threading.Lock()
        self._thread = None

    # ------------------------------------------------------------ control
    def start(self):
        if self._thread is not None:
            raise RuntimeError("a job starts once")
        self.state = "running"
        self.started, self.started_at = time.perf_counter(), time.time()
        self._thread = threading.Thread(target=self._run, name=f"rerelrp-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Ask the job to stop at the next batch boundary."""
        self.stop_event.set()

    def wait(self, timeout=None):
        """Block until the job ends (or ``timeout`` seconds pass); True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self):
        return self.state == "running"

    @property
    def stopping(self):
        return self.running and self.stop_event.is_set()

    # ------------------------------------------------------------ inside the thread
    def callback(self, event: Progress):
        with self._lock:
            if event.task != self.task:
                self.task = event.task
                self.events.clear()
                self.curve = []
            previous = self.events.get(self.phase) if self.phase != event.phase else None
            if previous is not None and previous.phase != "train":
                self._append_log(f"task {previous.task} {previous.phase}: {previous.message}")
            self.events[event.phase] = event
            self.phase = event.phase
            if event.phase == "train" and "val_acc" in event.values:
                self.curve.append(dict(event.values))
                self._append_log(f"task {event.task} train: {event.message}")

    def note(self, message):
        with self._lock:
            self._append_log(message)

    def add_result(self, value):
        with self._lock:
            self.results.append(value)

    def _append_log(self, message):
        self.log.append(message)
        del self.log[: -self.max_log]

    def _run(self):
        try:
            result = self.target(self.callback, self.stop_event)
            with self._lock:
                self.result = result
                self.state = "done"
        except StopRequested as exc:
            with self._lock:
                self.error = str(exc)
                self.state = "stopped"
        except RerelrpError as exc:
            with self._lock:
                self.error = str(exc)
                self.state = "failed"
        except BaseException as exc:  # noqa: BLE001 - shown to the user, never lost in a thread
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self.trace = traceback.format_exc()
                self.state = "failed"
        finally:
            self.finished = time.perf_counter()

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            end = self.finished if self.finished is not None else time.perf_counter()
            return JobSnapshot(
                name=self.name,
                state=self.state,
                events=dict(self.events),
                phase=self.phase,
                task=self.task,
                log=list(self.log),
                curve=list(self.curve),
                error=self.error,
                trace=self.trace,
                elapsed=(end - self.started) if self.started is not None else 0.0,
                results=list(self.results),
            )


def phase_fraction(event: Progress):
    """Progress of one event in [0, 1]."""
    if event is None or not event.total:
        return 0.0
    return min(1.0, max(0.0, event.step / event.total))


def ordered_phases(events):
    """The phases of ``events`` in the learner's order (then any others)."""
    known = [p for p in PHASES if p in events]
    return known + [p for p in events if p not in known]
