"""Background jobs (rerelrp.run.jobs) and the app state (rerelrp.app.session), without Streamlit."""
import threading

import pytest
import torch

from rerelrp.app.session import AppState
from rerelrp.errors import ConfigError, DataError, StopRequested
from rerelrp.progress import Progress
from rerelrp.run.jobs import Job, ordered_phases, phase_fraction

FAST = {"epochs": 1, "min_steps": 0, "room_steps": 0, "prune_samples": 64,
        "n_trees": 20, "relevance_samples": 64, "recognizer_samples": 64, "device": "cpu"}


def test_job_keeps_latest_event_per_phase_curve_and_result():
    def target(callback, stop):
        for step in range(1, 4):
            callback(Progress("train", step, 3, f"batch {step}", task=0))
        callback(Progress("train", 3, 3, "epoch 1/1", task=0, values={"epoch": 1, "loss": 0.5, "val_acc": 90.0}))
        callback(Progress("prune", 1, 2, "dropping", task=0))
        callback(Progress("prune", 2, 2, "dropping more", task=0))
        return "result"

    job = Job(target, "t").start()
    assert job.wait(10)
    snap = job.snapshot()
    assert snap.state == "done" and job.result == "result"
    assert list(snap.events) == ["train", "prune"]
    assert snap.events["prune"].message == "dropping more"
    assert snap.curve == [{"epoch": 1, "loss": 0.5, "val_acc": 90.0}]
    assert any("epoch 1/1" in line for line in snap.log)
    assert phase_fraction(snap.events["prune"]) == 1.0
    assert ordered_phases({"prune": 1, "train": 2, "other": 3}) == ["train", "prune", "other"]


def test_job_new_task_clears_the_phases_of_the_previous_one():
    def target(callback, stop):
        callback(Progress("eval", 1, 1, "", task=0))
        callback(Progress("train", 1, 5, "", task=1))

    job = Job(target).start()
    job.wait(10)
    snap = job.snapshot()
    assert list(snap.events) == ["train"] and snap.task == 1


def test_job_stop_and_errors_are_captured():
    started, release = threading.Event(), threading.Event()

    def slow(callback, stop):
        started.set()
        assert release.wait(30)  # the test decides when the job may see its stop flag
        if stop.is_set():
            raise StopRequested("stopped on request")
        return "finished"

    job = Job(slow).start()
    assert started.wait(30)
    assert job.running and not job.stopping
    job.stop()
    assert job.running and job.stopping  # asked to stop, not stopped yet: the target has not looked
    release.set()
    assert job.wait(30)
    assert job.state == "stopped" and "stopped" in job.error and not job.stopping

    job = Job(lambda cb, stop: (_ for _ in ()).throw(DataError("x.npz", "broken"))).start()
    job.wait(10)
    assert job.state == "failed" and job.error == "x.npz: broken" and job.trace is None

    def bug(callback, stop):
        raise ZeroDivisionError("oops")

    job = Job(bug).start()
    job.wait(10)
    assert job.state == "failed" and "ZeroDivisionError" in job.error and "Traceback" in job.trace
    with pytest.raises(RuntimeError):
        job.start()


@pytest.fixture(scope="module")
def trained():
    """An app state with the demo planned and its first task learned (fast settings)."""
    state = AppState(settings=FAST, demo="digits")
    state.start_training(1)
    assert state.job.wait(600)
    assert state.job.state == "done", state.job.error
    return state


def test_app_state_starts_on_the_medical_demo_with_nothing_trained():
    state = AppState(settings=FAST)
    assert list(state.datasets) == ["pneumoniamnist", "breastmnist", "bloodmnist"]
    assert [t.name for t in state.tasks] == ["pneumoniamnist", "breastmnist", "bloodmnist"]
    assert [t.n_classes for t in state.tasks] == [2, 2, 8] and state.n_learned == 0 and not state.busy
    assert state.tasks[0].class_names == ["normal", "pneumonia"]  # MedMNIST's own class names
    assert state.describe_device().startswith("CPU")
    state.load_demo("digits")  # one click away: the plan becomes the digits'
    assert [t.name for t in state.tasks] == [f"digits t{i}" for i in range(5)]
    with pytest.raises(ConfigError, match="unknown demo"):
        state.load_demo("cats")


def test_settings_are_validated_and_first_task_settings_lock(trained):
    with pytest.raises(ConfigError, match="epochs"):
        trained.update_settings(epochs=0)
    with pytest.raises(ConfigError, match="cannot change after the first task"):
        trained.update_settings(net="lenet")
    trained.update_settings(epochs=1, lr=0.01)  # per-task settings may change
    assert trained.settings["lr"] == 0.01
    trained.update_settings(lr=FAST.get("lr", 0.05))


def _params(learner):
    return {k: v.detach().clone() for k, v in learner.net_.state_dict().items()}


def test_stop_leaves_the_published_model_exactly_as_before(trained, gated_steps):
    before_run = trained.run
    before = _params(trained.learner)
    version = trained.version
    job = trained.start_training(1)  # held at the start of its task until released
    with pytest.raises(ConfigError, match="while training of the next task is running"):
        trained.set_plan([])
    with pytest.raises(ConfigError):
        trained.start_training(1)
    trained.stop_training()
    gated_steps.set()  # the task starts with Stop pressed: it must end at its first batch
    assert job.wait(120)
    assert job.state == "stopped"
    assert trained.run is before_run and trained.version == version
    assert trained.n_learned == 1 and len(trained.learner.history_) == 1
    assert len(trained.run.metrics.acc_tag) == 1
    after = _params(trained.learner)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cached_results_are_keyed_by_model_version(trained):
    calls = []
    assert trained.cached(("k",), lambda: calls.append(1) or 42) == 42
    assert trained.cached(("k",), lambda: calls.append(1) or 43) == 42
    assert len(calls) == 1
    trained.version += 1
    assert trained.cached(("k",), lambda: 44) == 44
    trained.version -= 1


def test_plan_edits_keep_learned_tasks(trained):
    from rerelrp.data import split_into_tasks

    ds = trained.datasets["digits"]
    original = list(trained.tasks)
    try:
        trained.set_plan(split_into_tasks(ds, 2))
        assert trained.tasks[0] is original[0] and len(trained.tasks) == 3
        trained.set_plan(split_into_tasks(ds, 5)[:1], append=True)
        assert len(trained.tasks) == 4
        with pytest.raises(ConfigError, match="learned already"):
            trained.drop_pending(0)
        trained.drop_pending(3)
        assert len(trained.tasks) == 3
    finally:
        trained.run.tasks = original


def test_learn_all_remaining_publishes_each_task():
    state = AppState(settings=FAST)
    state.set_plan(state.tasks[:2])
    job = state.start_training(None)
    assert job.wait(600) and job.state == "done", job.error
    assert state.n_learned == 2 and state.run.done and len(job.results) == 2
    assert [r.task for r in job.results] == [0, 1]
    assert len(state.run.metrics.acc_tag) == 2 and state.version == 2
    with pytest.raises(ConfigError, match="every planned task is learned"):
        state.start_training(1)
    state.reset()
    assert state.n_learned == 0 and len(state.tasks) == 2


def test_a_running_job_refuses_reset_and_workspace_changes(trained):
    started, release = threading.Event(), threading.Event()
    trained.job = Job(lambda callback, stop: (started.set(), release.wait(30))).start()
    try:
        assert started.wait(30)
        version = trained.version
        for change in (trained.reset, lambda: trained.set_workspace("other"), lambda: trained.update_settings(lr=0.01)):
            with pytest.raises(ConfigError, match=r"while job is running \(started by a script"):
                change()
        assert trained.version == version and trained.n_learned == 1
    finally:
        release.set()
        trained.job.wait(30)


def test_a_workspace_learned_from_an_upload_opens_without_its_data(tmp_path):
    """Uploads are never stored: the model explains and recognises, but cannot learn further tasks."""
    import io

    import numpy as np

    from rerelrp.data import build_sequence, load_dataset, load_medmnist

    demo = load_dataset("demo")
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{s}_images": demo.split(s).images[..., 0] for s in ("train", "val", "test")},
             **{f"{s}_labels": demo.split(s).labels[:, None] for s in ("train", "val", "test")})
    upload = load_medmnist(buffer.getvalue(), name="digits_upload.npz")
    state = AppState(settings=FAST, demo=False, workspace_root=tmp_path)
    state.add_dataset(upload)
    state.set_plan(build_sequence([upload], 5)[:1])
    assert state.start_training(1).wait(600) and state.job.state == "done", state.job.error
    saved = state.workspace

    fresh = AppState(settings=FAST, demo=False, workspace_root=tmp_path)
    learner = fresh.open_workspace(saved)
    assert learner.n_tasks == 1 and fresh.n_learned == 1
    assert not fresh.can_learn and "uploaded" in fresh.data_note and fresh.tasks == []
    prediction = learner.predict(demo.test.images[:4])
    assert prediction.p_task.shape == (4, 1)
    with pytest.raises(ConfigError, match="every planned task is learned"):
        fresh.start_training(1)


def test_jobs_hold_with_a_trainer_that_finishes_at_once(monkeypatch, tmp_path, gated_steps):
    """On a machine (or GPU) fast enough that training takes no time, the job rules still hold."""
    import rerelrp.method.learner

    monkeypatch.setattr(rerelrp.method.learner, "train", lambda *args, **kwargs: [])  # no optimiser step at all
    state = AppState(settings=FAST, demo="digits", workspace_root=tmp_path)
    job = state.start_training(1)  # held at its task's start: busy however fast the rest is
    with pytest.raises(ConfigError, match="while training of the next task is running"):
        state.set_plan([])
    gated_steps.set()
    assert job.wait(300) and job.state == "done", job.error
    assert state.n_learned == 1 and not state.busy and state.learner.history_[0].train_curve == []
    second = state.start_training(1)
    state.stop_training()  # pressed before the task's first batch... or after it ended: either outcome is whole
    assert second.wait(300) and second.state in ("stopped", "done")
    assert state.n_learned == (1 if second.state == "stopped" else 2) == len(state.run.metrics.acc_tag)
