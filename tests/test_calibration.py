"""P_T calibration (issue 25): the reliability bins and ECE against a hand count, and on a trained learner."""
from __future__ import annotations

import numpy as np
import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.figures.plots import reliability_figure
from rerelrp.method.learner import ReReLRP
from rerelrp.run.calibration import reliability, task_reliability
from rerelrp.run.runner import SequenceRun


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
