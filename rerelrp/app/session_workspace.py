"""The workspace side of the app's state: where the session saves, opening, undoing, exporting and importing.

A mixin of :class:`rerelrp.app.session.AppState` (it uses the state's locks, run, job check and
activity log); kept apart so that each file holds one concern.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rerelrp.errors import ConfigError
from rerelrp.run.runner import SequenceRun, learned_tasks, recorded_sources
from rerelrp.store.workspace import (
    check_target,
    export_workspace,
    import_workspace,
    is_workspace,
    load_workspace,
    notes_for,
    read_notes,
    resolve_workspace,
    task_fingerprint,
    undo_last_task,
    workspace_info,
    write_note,
)
from rerelrp.text import printable
from rerelrp.versions import package_versions


class SessionWorkspace:
    """Where an :class:`~rerelrp.app.session.AppState` saves, and the workspace it opened."""

    def _fresh_workspace(self):
        """A new workspace name for this session (saved to once the first task is learned)."""
        stem = time.strftime("session-%Y%m%d-%H%M%S")
        path, k = self.workspace_root / stem, 2
        while path.exists() or path == getattr(self, "workspace", None):
            path, k = self.workspace_root / f"{stem}-{k}", k + 1
        return path

    def set_workspace(self, name):
        """Save to workspace ``name`` (a folder under the workspace root, or a path) from now on."""

        self._check_idle("change the workspace")
        path = resolve_workspace(name, self.workspace_root)
        if is_workspace(path) and path != self.workspace:
            raise ConfigError(f"workspace {path} exists already: open it to continue it, or choose another name")
        check_target(path)
        self.workspace = path
        self.activity.record(f"chose the workspace {path.name} to save to")
        return path

    def open_workspace(self, path):
        """Make the model saved in ``path`` the published run; later tasks are saved there too.

        The learned tasks' images are not loaded: the paths the workspace records are only
        suggested (:attr:`data_note`, :attr:`recorded_sources`) until the user asks for them with
        :meth:`reload_learned_data`, because a workspace someone sent may name any local path.
        Until then the workspace serves explaining, recognising and reports, not further tasks.
        """

        self._check_idle("open a workspace")
        learner, metrics, meta = load_workspace(path)
        sources = recorded_sources(learner)
        if any(sources):
            shown = ", ".join(sorted({printable(s) for s in sources if s}))
            note = f"the images of the learned tasks are not loaded; the workspace says they came from {shown}"
        else:
            note = "the images of the learned tasks were uploaded and are not stored, so they cannot be loaded again"
        with self.lock:
            with self.model_lock:
                self.run = SequenceRun(learner, [], metrics)
            self.settings = learner.get_params()
            self.workspace, self.data_note, self.workspace_meta = Path(path), note, meta
            self.generation += 1
            self.version += 1
            self.results.clear()
            self.activity.record(f"opened the workspace {Path(path).name}")
        return learner

    @property
    def recorded_sources(self):
        """The data sources the opened workspace records for its learned tasks (shown, not read)."""
        return recorded_sources(self.learner) if self.data_note else []

    def reload_learned_data(self):
        """Load the learned tasks' images again from the sources the workspace records, because the user asked.

        Each source is checked before it is read (regular file of the recorded size and hash, or a
        bounded folder holding the recorded files) and the loaded images against the saved
        fingerprints; raises :class:`~rerelrp.errors.WorkspaceError` naming the task otherwise.
        """
        self._check_idle("load the learned tasks' data")
        tasks = learned_tasks(self.learner, {**(self.workspace_meta or {}), "path": str(self.workspace)})
        with self.lock:
            self.run.tasks = tasks + self.pending
            self.data_note = None
            self.activity.record(f"loaded the learned tasks' data of {self.workspace.name} again")
        return tasks

    def undo_last_task(self):
        """Return the session's workspace to the snapshot saved one task earlier and publish that model.

        The undone task goes back into the plan as the next task (its images, if loaded, stay), so
        learning it again gives the same model bit for bit.
        """
        self._check_idle("undo the last task")
        if not is_workspace(self.workspace):
            raise ConfigError("nothing is saved in this session's workspace yet, so there is nothing to undo")
        result = undo_last_task(self.workspace)
        learner, metrics, meta = load_workspace(self.workspace)
        with self.lock:
            with self.model_lock:
                self.run = SequenceRun(learner, self.run.tasks, metrics)
            self.workspace_meta = meta
            self.version += 1
            self.results.clear()
            self.activity.record(f"undid the last task ({result['undone']})")
        return result

    def export_archive(self):
        """The session's workspace as one zip archive (bytes), for a download: the model, never an image."""
        if not is_workspace(self.workspace):
            raise ConfigError("nothing is saved in this session's workspace yet: learn a task first")
        with tempfile.TemporaryDirectory(prefix="rerelrp-export-") as folder:
            archive = Path(folder) / f"{self.workspace.name}.zip"
            export_workspace(self.workspace, archive)
            return archive.read_bytes()

    def import_archive(self, data, name):
        """Unpack an uploaded workspace archive into a new workspace under the root (validated like any), then open it."""
        self._check_idle("import a workspace")
        stem = printable(Path(str(name)).stem).strip(". ") or "imported"
        target, k = self.workspace_root / stem, 2
        while target.exists():
            target, k = self.workspace_root / f"{stem}-{k}", k + 1
        self.workspace_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rerelrp-import-") as folder:
            archive = Path(folder) / "upload.zip"
            archive.write_bytes(data)
            import_workspace(archive, target)
        return self.open_workspace(target)

    @property
    def task_notes(self):
        """The researcher's note on each learned task ("" where none), from the session's workspace."""
        names = [t["name"] for t in self.learner.tasks_] if self.n_learned else []
        return notes_for(read_notes(self.workspace), names) if is_workspace(self.workspace) else [""] * len(names)

    def set_note(self, task, text):
        """Keep the note on learned task ``task`` in the workspace (reports carry it)."""
        if not 0 <= task < self.n_learned:
            raise ConfigError(f"task {task} is not learned; notes are kept for learned tasks")
        write_note(self.workspace, task, self.learner.tasks_[task]["name"], text)
        self.activity.record(f"changed the note on task {task}")

    @property
    def can_learn(self):
        """False when an opened workspace's earlier tasks cannot be tested again (their images are gone)."""
        return self.data_note is None

    def report_meta(self):
        """What a report says about where the model is kept (the session's workspace, once saved)."""

        meta = {"name": self.workspace.name, "path": str(self.workspace), "versions": package_versions(),
                "saved_device": self.learner.describe_device()}
        if is_workspace(self.workspace):
            info = workspace_info(self.workspace)
            meta.update({k: info[k] for k in ("snapshot", "saved_at", "format_version")})
        if self.can_learn:
            meta["fingerprints"] = [task_fingerprint(t) for t in self.tasks[: self.n_learned]]
        return meta

