"""Notes on learned tasks (issue 25): kept in the workspace, carried into reports and archives, read safely."""
from __future__ import annotations

import io
import os

import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import ConfigError, WorkspaceError
from rerelrp.method.learner import ReReLRP
from rerelrp.report import make_report
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import export_workspace, import_workspace, notes_for, read_notes, save_workspace, write_note

CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8, device="cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tasks = build_sequence([load_dataset("demo")], 2)
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.run()
    path = tmp_path_factory.mktemp("notes") / "ws"
    save_workspace(path, learner, run.metrics, tasks=tasks)
    return path, [t.name for t in tasks]


def test_a_note_is_kept_per_task_and_a_blank_one_removes_it(saved, tmp_path):
    path, names = saved
    write_note(path, 1, names[1], "  scanner changed in March <b>sic</b>  ")
    assert notes_for(read_notes(path), names) == ["", "scanner changed in March <b>sic</b>"]
    assert notes_for(read_notes(path), ["other", "renamed"]) == ["", ""]  # a note never lands on another task
    write_note(path, 1, names[1], "   ")
    assert read_notes(path) == {}
    with pytest.raises(ConfigError, match="at most"):
        write_note(path, 0, names[0], "x" * 5000)
    with pytest.raises(ConfigError, match="learn a task first"):
        write_note(tmp_path / "nothing", 0, "t", "a note")


def test_reports_and_archives_carry_the_notes_as_text(saved, tmp_path):
    from pypdf import PdfReader

    path, names = saved
    write_note(path, 0, names[0], "pilot data <img src=https://127.0.0.1:9/x>")
    html = make_report(path, tmp_path / "r.html", "html", samples=["none"])
    text = (tmp_path / "r.html").read_text()
    assert html["n_samples"] == 0 and "Notes on the tasks" in text
    assert "pilot data &lt;img src=https://127.0.0.1:9/x&gt;" in text and "<img src=https://127.0.0.1:9" not in text
    make_report(path, tmp_path / "r.pdf", "pdf", samples=["none"])
    pdf = " ".join(p.extract_text() for p in PdfReader(io.BytesIO((tmp_path / "r.pdf").read_bytes())).pages)
    assert "pilot data" in pdf
    export_workspace(path, tmp_path / "ws.zip")
    import_workspace(tmp_path / "ws.zip", tmp_path / "copy")
    assert read_notes(tmp_path / "copy") == read_notes(path)
    write_note(path, 0, names[0], "")


@pytest.mark.timeout(60)
def test_a_hostile_notes_file_is_a_named_error_and_the_report_says_so(saved, tmp_path):
    path, _ = saved
    notes = path / "notes.json"
    for make in (lambda: os.mkfifo(notes), lambda: os.symlink("/dev/zero", notes),
                 lambda: notes.write_text("[" * 100_000), lambda: notes.write_text('{"notes": 3}')):
        notes.unlink(missing_ok=True)
        make()
        try:
            with pytest.raises(WorkspaceError, match="notes"):
                read_notes(path)
            result = make_report(path, tmp_path / "r.html", "html", samples=["none"])
            assert any("notes on the tasks are not shown" in n for n in result["notes"])
        finally:
            os.remove(notes)
