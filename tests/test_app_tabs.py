"""Browser tabs share one app state: each tab says what another tab changed and who started a running job.

AppTest gives every script run the same session id, so "another tab" is played by the test's own
thread acting under another name (``state.activity.acting_as``), as a second tab's script thread does.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pages.common as common  # noqa: E402
from pages.common import get_state  # noqa: E402
from rerelrp.app.activity import Activity  # noqa: E402
from rerelrp.app.session import AppState  # noqa: E402
from rerelrp.errors import ConfigError  # noqa: E402
from rerelrp.store.workspace import task_fingerprint  # noqa: E402

FAST = {"n_trees": 50, "relevance_samples": 128, "recognizer_samples": 128, "device": "cpu", "min_steps": 0,
        "prune_samples": 64, "epochs": 1, "room_steps": 0}


@pytest.fixture
def tab(start_app):
    """The app on the medical demo: a tab whose session the test shares with "another tab" acting in its thread."""
    return start_app("medical", FAST)


def infos(at):
    return [i.value for i in at.info]


def test_the_activity_log_tells_each_tab_what_the_others_did():
    activity = Activity(max_changes=3)
    activity.acting_as("A")
    activity.record("loaded the digits demo")
    seen_by_b = 0
    activity.acting_as("B")
    assert [c.what for c in activity.by_others(seen_by_b)] == ["loaded the digits demo"]
    activity.record("removed planned task 2")
    assert activity.by_others(seen_by_b) == [c for c in activity.by_others(0) if c.actor == "A"]
    assert [c.what for c in activity.by_others(0, actor="A")] == ["removed planned task 2"]
    for k in range(5):  # bounded: a tab that looked long ago sees the latest changes only
        activity.record(f"change {k}")
    assert [c.seq for c in activity.by_others(0, actor="A")] == [5, 6, 7]
    with activity.action("loaded a demo"):  # an action of several changes is one change
        activity.record("loaded the data set x")
        activity.record("replaced the task plan")
    assert [c.what for c in activity.by_others(7, actor="A")] == ["loaded a demo"]
    assert activity.who("B") == "this tab" and activity.who(None) == "a script" and "another" in activity.who("A")


def test_a_tab_is_told_what_another_tab_changed(tab, monkeypatch):
    state = get_state()
    assert not infos(tab) and [t.name for t in state.tasks][0].startswith("pneumonia")
    state.activity.acting_as("the other tab")
    state.load_demo("digits")
    tab.run()
    said = [i for i in infos(tab) if "Another browser tab" in i]
    assert len(said) == 1 and "Another browser tab loaded the digits demo and planned its tasks at" in said[0]
    tab.run()  # still said on the next run, so that a quick click does not lose it
    assert sum("Another browser tab loaded the digits demo" in i for i in infos(tab)) == 1
    kept = common.NOTICE_SECONDS
    monkeypatch.setattr(common, "NOTICE_SECONDS", 0.0)  # past its time: said no more
    tab.run()
    assert not any("Another browser tab" in i for i in infos(tab))
    monkeypatch.setattr(common, "NOTICE_SECONDS", kept)
    # its own changes are not announced to itself
    tab.switch_page("pages/data.py").run()
    next(b for b in tab.button if b.label == "Load medical demo").click().run()
    assert not tab.exception and [t.name for t in state.tasks][0].startswith("pneumonia")
    tab.run()
    assert not any("Another browser tab" in i for i in infos(tab))


def test_a_job_another_tab_started_says_so_and_blocks_plan_changes(tab, gated_steps):
    state = get_state()
    state.activity.acting_as("the other tab")
    job = state.start_training(1)  # held at its task's start: it runs until released
    tab.switch_page("pages/train.py").run()
    assert not tab.exception, [e.message for e in tab.exception]
    shown = " ".join(m.value for m in tab.markdown) + " ".join(c.value for c in tab.caption)
    assert "started by another browser tab" in shown
    state.activity.acting_as("this test")
    with pytest.raises(ConfigError, match="started by another browser tab .* at "):
        state.set_plan([])
    state.stop_training()
    gated_steps.set()
    assert job.wait(300) and job.state == "stopped"
    assert state.n_learned == 0


def test_open_workspace_reads_nothing_it_names_until_asked(tmp_path, monkeypatch):
    """A workspace someone sent may name any path as its data: opening it reads none of them."""
    import rerelrp.app.session_workspace as opened

    state = AppState(settings=FAST, demo="digits", workspace_root=tmp_path)
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    fresh = AppState(settings=FAST, demo=False, workspace_root=tmp_path)
    calls = []
    monkeypatch.setattr(opened, "learned_tasks", lambda *a, **k: calls.append(a) or [])
    fresh.open_workspace(state.workspace)
    assert calls == [] and not fresh.can_learn and fresh.recorded_sources == ["the bundled demo"]
    monkeypatch.undo()
    tasks = fresh.reload_learned_data()
    assert fresh.can_learn and [t.name for t in tasks] == [state.tasks[0].name]
    assert task_fingerprint(fresh.tasks[0]) == task_fingerprint(state.tasks[0])


def test_an_opened_workspace_without_its_data_takes_no_plan_until_they_are_loaded(tmp_path):
    state = AppState(settings=FAST, demo="digits", workspace_root=tmp_path)
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    fresh = AppState(settings=FAST, demo=False, workspace_root=tmp_path)
    fresh.open_workspace(state.workspace)
    with pytest.raises(ConfigError, match="not loaded"):
        fresh.load_demo("digits")
    assert not fresh.datasets and fresh.tasks == []  # refused whole: no data set half added
    fresh.reload_learned_data()
    fresh.load_demo("digits")
    assert fresh.n_learned == 1 and len(fresh.tasks) == 6 and fresh.tasks[0].name == state.tasks[0].name
