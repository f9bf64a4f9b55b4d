"""The app's workspace actions: undo the last task, export the workspace as one file, import one (issue 25)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pages.common import get_state  # noqa: E402
from rerelrp.errors import ConfigError, WorkspaceError  # noqa: E402

FAST = {"n_trees": 50, "relevance_samples": 128, "recognizer_samples": 128, "device": "cpu", "min_steps": 0,
        "prune_samples": 64, "epochs": 1, "room_steps": 0}


def _weights(learner):
    return {k: v.detach().clone() for k, v in learner.net_.state_dict().items()}


@pytest.fixture
def tab(start_app):
    """The app on the digits demo, nothing learned yet (tests train through the state, as the Train page does)."""
    return start_app("digits", FAST)


def test_undo_from_the_train_page_returns_the_model_of_the_task_before(tab):
    state = get_state()
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    after_first, images = _weights(state.learner), state.tasks[0].test.images[:32]
    expected = state.learner.predict(images)
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    second = state.tasks[1].name
    tab.switch_page("pages/train.py").run()
    next(b for b in tab.button if b.label == "Undo last task").click().run()
    assert not tab.exception, [e.message for e in tab.exception]
    assert not [e.value for e in tab.error], [e.value for e in tab.error]
    assert state.n_learned == 1 and state.pending[0].name == second  # the undone task is next again
    now = _weights(state.learner)
    assert now.keys() == after_first.keys() and all(torch.equal(now[k], after_first[k]) for k in now)
    got = state.learner.predict(images)
    assert np.array_equal(got.global_class, expected.global_class) and np.array_equal(got.p_task, expected.p_task)
    assert len(state.run.metrics.acc_tag) == 1
    with pytest.raises(WorkspaceError):  # the first task is undone with Start over, not Undo
        state.undo_last_task()


def test_export_then_import_in_another_session_gives_the_same_model(tab, tmp_path):
    state = get_state()
    with pytest.raises(ConfigError, match="nothing is saved"):
        state.export_archive()
    assert state.start_training(2).wait(600) and state.job.state == "done", state.job.error
    data = state.export_archive()
    images = state.tasks[1].test.images[:32]
    expected = state.learner.predict(images)

    from rerelrp.app.session import AppState

    other = AppState(settings=FAST, demo=None, workspace_root=tmp_path / "elsewhere")
    learner = other.import_archive(data, "../../shared study.zip")  # the upload's name cannot lead out of the root
    assert other.workspace.parent == tmp_path / "elsewhere" and other.workspace.name == "shared study"
    assert learner.n_tasks == 2 and not other.can_learn  # its data are named, not read
    got = learner.predict(images)
    assert np.array_equal(got.global_class, expected.global_class) and np.array_equal(got.p_task, expected.p_task)
    with pytest.raises(WorkspaceError):
        other.import_archive(b"not a zip", "broken.zip")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["shared study"]  # nothing half made


def test_a_note_on_a_task_is_kept_in_the_workspace_and_shown_in_the_report(tab):
    state = get_state()
    with pytest.raises(ConfigError, match="not learned"):
        state.set_note(0, "too early")
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    tab.switch_page("pages/train.py").run()
    tab.text_area(key="note_text_0").set_value("pilot: the first 40 images were rescanned").run()
    next(b for b in tab.button if b.label == "Save note").click().run()
    assert not tab.exception, [e.message for e in tab.exception]
    assert state.task_notes == ["pilot: the first 40 images were rescanned"]
    assert "rescanned" in (state.workspace / "notes.json").read_text()


def test_recognize_measures_how_well_p_t_is_calibrated(tab):
    state = get_state()
    assert state.start_training(2).wait(600) and state.job.state == "done", state.job.error
    tab.switch_page("pages/recognize.py").run()
    next(b for b in tab.button if b.label == "Measure how well P_T is calibrated").click().run()
    assert not tab.exception, [e.message for e in tab.exception]
    said = " ".join(m.value for m in tab.markdown)
    assert "Expected calibration error" in said and "validation images of the 2 learned tasks" in said


def test_explain_shows_what_the_most_relevant_units_respond_to(tab):
    state = get_state()
    assert state.start_training(2).wait(600) and state.job.state == "done", state.job.error
    tab.switch_page("pages/explain.py").run()
    next(b for b in tab.button if b.label == "Show what they respond to").click().run()
    assert not tab.exception, [e.message for e in tab.exception]
    said = " ".join(m.value for m in tab.markdown)
    assert said.count("· relevance") == 5 and "most active in the task's images" in said  # the top 5 units
    assert sum(len(i.value) for i in tab.get("image")) >= 5  # reference patches shown
