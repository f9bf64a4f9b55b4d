"""P_T calibration (issue 25): the reliability bins and ECE against a hand count, on a trained learner, and its
correction by one temperature fitted on validation images after each task."""
from __future__ import annotations

import numpy as np
import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import ConfigError
from rerelrp.figures.plots import reliability_figure
from rerelrp.method.learner import ReReLRP
from rerelrp.method.temperature import check_temperature, fit_temperature, tempered
from rerelrp.run.calibration import describe_calibration, reliability, task_reliability
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import load_workspace


def test_reliability_bins_and_ece_by_hand():
    confidence = np.array([0.05, 0.15, 0.95, 0.92, 0.55, 0.58, 1.0])
    correct = np.array([False, False, True, False, True, True, True])
    rel = reliability(confidence, correct, bins=10)
    assert rel.counts.tolist() == [1, 1, 0, 0, 0, 2, 0, 0, 0, 3] and rel.n == 7
    assert rel.accuracy[9] == pytest.approx(2 / 3) and rel.confidence[9] == pytest.approx((0.95 + 0.92 + 1.0) / 3)
    gaps = [1 * 0.05, 1 * 0.15, 2 * abs(1 - 0.565), 3 * abs(2 / 3 - 2.87 / 3)]
    assert rel.ece == pytest.approx(sum(gaps) / 7)
    assert np.isnan(rel.accuracy[3]) and rel.intervals[3] is None and rel.intervals[9][0] < 2 / 3 < rel.intervals[9][1]
    perfect = reliability(np.array([0.25] * 4 + [0.75] * 4), np.array([1, 0, 0, 0, 1, 1, 1, 0], bool), bins=2)
    assert perfect.ece == pytest.approx(0.0)


def test_task_reliability_reads_validation_images_of_each_learned_task():
    tasks = build_sequence([load_dataset("demo")], 3)
    learner = ReReLRP(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
                      device="cpu")
    SequenceRun(learner, tasks[:2]).run()
    rel = task_reliability(learner, tasks, "val")
    assert rel.n == len(tasks[0].val) + len(tasks[1].val)  # the third task is not learned: not counted
    p = np.concatenate([learner.predict(t.val.images).p_task for t in tasks[:2]])
    truth = np.concatenate([np.full(len(t.val), k) for k, t in enumerate(tasks[:2])])
    assert rel.recognised == pytest.approx(float((p.argmax(1) == truth).mean()))
    assert 0 <= rel.ece <= 1
    fig = reliability_figure(rel)
    assert len(fig.data[0].x) == int((rel.counts > 0).sum())


def test_fit_temperature_recovers_the_temperature_the_probabilities_were_sharpened_by():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20000, 4))
    truth_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.array([rng.choice(4, p=row) for row in truth_p])
    shown = tempered(truth_p, 0.5)  # squared: too sure, and a temperature of 2 undoes it
    assert fit_temperature(shown, truth) == pytest.approx(2.0, rel=0.05)
    assert np.array_equal(shown.argmax(1), truth_p.argmax(1)) and np.allclose(shown.sum(1), 1.0)
    assert np.array_equal(tempered(truth_p, 1.0), truth_p)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, 100.0, True, "1", None])
def test_a_saved_temperature_outside_the_bounds_is_refused(bad):
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(bad)


def _tiny(**extra):
    return ReReLRP(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
                   device="cpu", **extra)


def test_the_run_calibrates_p_task_after_each_task_without_moving_an_accuracy(tmp_path):
    tasks = build_sequence([load_dataset("demo")], 3)
    raw, calibrated = _tiny(calibrate_p_task=False), _tiny()
    raw_metrics = SequenceRun(raw, tasks).run().to_dict()
    run_metrics = SequenceRun(calibrated, tasks, workspace=tmp_path / "ws").run()
    metrics = run_metrics.to_dict()
    for key in ("acc_tag", "acc_taw", "task_recognition_per_task"):
        assert metrics[key] == raw_metrics[key]  # the largest P_T is the same task
    assert metrics["p_task_calibration"][0] is None and raw_metrics["p_task_calibration"] == [None] * 3
    record = metrics["p_task_calibration"][-1]
    assert record["n_val"] == sum(min(len(t.val), 256) for t in tasks)
    assert record["temperature"] == pytest.approx(calibrated.p_task_temperature_, abs=1e-4) != 1.0
    assert 0 <= record["val_ece"] <= 1 and 0 <= record["val_ece_raw"] <= 1  # NLL is fitted, not ECE: either may be lower
    said = describe_calibration(calibrated.p_task_temperature_, run_metrics)
    assert f"temperature ({calibrated.p_task_temperature_:.2f})" in said and f"{record['n_val']} validation" in said
    assert f"ECE of the P_T shown is {metrics['p_task_ece'][-1]:.3f}" in said
    assert not said.startswith("P_T is shown raw") and describe_calibration(1.0, run_metrics).startswith("P_T is shown raw")
    images = tasks[1].test.images
    assert np.array_equal(calibrated.predict(images).task, raw.predict(images).task)
    assert not np.allclose(calibrated.predict(images).p_task, raw.predict(images).p_task)
    loaded, _, _ = load_workspace(tmp_path / "ws")
    assert loaded.p_task_temperature_ == calibrated.p_task_temperature_
    assert np.array_equal(loaded.predict(images).p_task, calibrated.predict(images).p_task)
    calibrated.add_task(build_sequence([load_dataset("demo")], 4)[3])  # learnt outside a run: nothing fits it
    assert calibrated.p_task_temperature_ == 1.0


def test_a_workspace_with_a_bad_temperature_names_it():
    tasks = build_sequence([load_dataset("demo")], 2)
    learner = _tiny()
    SequenceRun(learner, tasks).run()
    state = learner.export_state()
    state["meta"]["p_task_temperature"] = -3
    with pytest.raises(ConfigError, match="meta: the P_T temperature -3"):
        ReReLRP.from_state(state)
