"""Who changed the shared app state, so that every browser tab can say what another tab did.

The app keeps one :class:`~rerelrp.app.session.AppState` for all tabs (one model, one GPU, and a
reload finds the trained model again). Sharing is honest only if each tab learns what the others
did: each Streamlit script run names its tab (:meth:`Activity.acting_as`, a thread-local, since a
script run is one thread), every change of the plan, data, settings, workspace or job is logged
with that name, and a tab asks for the changes made by others since it last looked.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

MAX_CHANGES = 64  # a tab that looks less often than this many changes sees the latest ones


@dataclass(frozen=True)
class Change:
    """One change of the shared state: its number, wall-clock time, the tab that made it, what it was."""

    seq: int
    when: float
    actor: str | None
    what: str

    @property
    def clock(self):
        return time.strftime("%H:%M:%S", time.localtime(self.when))


class Activity:
    """The log of changes to the shared state and the name of the tab acting in this thread."""

    def __init__(self, max_changes=MAX_CHANGES):
        self._lock = threading.Lock()
        self._local = threading.local()
        self._changes = deque(maxlen=max_changes)
        self.last = 0  # number of the latest change (0: none yet)

    def acting_as(self, actor):
        """Name the tab whose script runs in this thread (None: a script or test, not a tab)."""
        self._local.actor = actor

    @property
    def actor(self):
        return getattr(self._local, "actor", None)

    def record(self, what):
        if getattr(self._local, "inside", 0):
            return  # part of a larger action, which is recorded as one change
        with self._lock:
            self.last += 1
            self._changes.append(Change(self.last, time.time(), self.actor, what))

    @contextmanager
    def action(self, what):
        """Record the changes made inside as one change, ``what``, if the block completes."""
        self._local.inside = getattr(self._local, "inside", 0) + 1
        try:
            yield
        finally:
            self._local.inside -= 1
        self.record(what)

    def by_others(self, since, actor=None):
        """The changes after number ``since`` made by anyone but ``actor`` (default: this thread's tab)."""
        actor = self.actor if actor is None else actor
        with self._lock:
            return [c for c in self._changes if c.seq > since and c.actor != actor]

    def who(self, actor):
        """How a tab names the tab ``actor``: this tab, another tab, or a script."""
        if actor is None:
            return "a script"
        return "this tab" if actor == self.actor else "another browser tab (or this one before a reload)"
