"""Errors a user can cause. Each names the thing at fault and what to do about it.

The app shows them with ``st.error``; the CLI prints them and exits non-zero. Anything else
that escapes is a bug in rerelrp, not in the user's input.
"""


class RerelrpError(Exception):
    """Base class of every error caused by input, settings or saved state."""


class DataError(RerelrpError, ValueError):
    """A data file or folder cannot be used. ``path`` names it, ``problem`` says why."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(RerelrpError, ValueError):
    """A setting is out of range or contradicts another setting."""


class StopRequested(RerelrpError):
    """Raised inside long work when the caller asked to stop; the learner is rolled back."""


class WorkspaceError(RerelrpError):
    """A workspace cannot be saved or opened. ``path`` names it, ``file`` the file at fault, ``problem`` says why."""

    def __init__(self, path, problem, file=None):
        self.path, self.file, self.problem = str(path), None if file is None else str(file), problem
        super().__init__(f"workspace {self.path}" + (f", file {self.file}" if self.file else "") + f": {problem}")


class ArchiveError(WorkspaceError):
    """A workspace archive cannot be written or imported. ``path`` names the archive, ``file`` the entry at fault."""

    def __init__(self, path, problem, file=None):
        super().__init__(path, problem, file)
        self.args = (f"archive {self.path}" + (f", entry {self.file}" if self.file else "") + f": {problem}",)
