"""Clinical figures: intervals, confusion matrices, per-class rows, and what metrics.json gains from them."""
import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import FAST
from rerelrp.figures import plots
from rerelrp.method.base import Prediction
from rerelrp.run import clinical
from rerelrp.run.metrics import RunMetrics

# a hand-checkable 2-class problem: for class 1, TP 3, FN 1, FP 2, TN 4
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
Y_PRED = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])


def test_wilson_interval_of_8_of_9_and_of_no_trials():
    lo, hi = clinical.wilson_interval(8, 9)
    assert lo == pytest.approx(0.565, abs=5e-4) and hi == pytest.approx(0.980, abs=5e-4)
    assert all(math.isnan(v) for v in clinical.wilson_interval(0, 0))
    assert clinical.wilson_interval(9, 9)[1] == 1.0 and clinical.wilson_interval(9, 9)[0] < 0.75  # not zero width


def test_confusion_and_per_class_rows_of_a_hand_counted_2x2():
    np.testing.assert_array_equal(clinical.confusion(Y_TRUE, Y_PRED, 2), [[4, 2], [1, 3]])
    np.testing.assert_array_equal(clinical.confusion(Y_TRUE, Y_PRED, 3), [[4, 2, 0], [1, 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(clinical.confusion([], [], 2), np.zeros((2, 2)))
    normal, sick = clinical.per_class_rows(Y_TRUE, Y_PRED, n_classes=2, class_names=["normal", "sick"])
    assert sick["class"] == "sick" and sick["n"] == 4 and normal["n"] == 6
    assert sick["sensitivity"] == 3 / 4 and sick["specificity"] == 4 / 6  # TP/(TP+FN), TN/(TN+FP)
    assert sick["ppv"] == 3 / 5 and sick["npv"] == 4 / 5  # TP/(TP+FP), TN/(TN+FN)
    assert sick["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert sick["sensitivity_ci95"] == list(clinical.wilson_interval(3, 4))
    assert sick["npv_ci95"] == list(clinical.wilson_interval(4, 5))
    assert normal["sensitivity"] == sick["specificity"] and normal["ppv"] == sick["npv"]  # one-vs-rest of 2 classes
    assert sick["auroc"] is None and sick["auroc_ci95"] == [None, None]  # no probabilities given
    assert clinical.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_auroc_of_a_perfect_and_a_reversed_score_and_of_an_absent_class():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    good = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1, np.zeros(7)], 1)  # class 2 never occurs
    rows = clinical.per_class_rows(y, good.argmax(1), good, 3)
    assert rows[1]["auroc"] == 1.0 and rows[1]["auroc_ci95"] == [1.0, 1.0]
    assert rows[0]["auroc"] == 1.0
    absent = rows[2]
    assert absent["n"] == 0 and absent["sensitivity"] is None and absent["sensitivity_ci95"] == [None, None]
    assert absent["auroc"] is None and absent["auroc_ci95"] == [None, None]
    assert absent["specificity"] == 1.0 and absent["ppv"] is None  # never predicted: no PPV
    reversed_ = clinical.per_class_rows(y, 1 - y, good[:, [1, 0, 2]], 3)
    assert reversed_[1]["auroc"] == 0.0 and reversed_[1]["auroc_ci95"] == [0.0, 0.0]
    assert math.isnan(clinical.auroc(np.ones(4, bool), np.arange(4.0)))  # one label only


def test_bootstrap_auroc_of_each_resample_equals_sklearns_weighted_auroc_with_ties():
    rng = np.random.default_rng(3)
    y, score = rng.integers(0, 2, 300).astype(bool), np.round(rng.random(300), 1)  # many tied scores
    weights = next(clinical._weight_chunks(300, None, 6, seed=1))
    draws = clinical._auroc_draws(clinical._auroc_ranks(y, score), weights)
    expected = [roc_auc_score(y, score, sample_weight=w) for w in weights]
    np.testing.assert_allclose(draws, expected, rtol=1e-12)
    ones = clinical._auroc_draws(clinical._auroc_ranks(y, score), np.ones((1, 300), dtype=np.int64))
    assert ones[0] == pytest.approx(roc_auc_score(y, score), rel=1e-12)


def test_patients_all_right_or_all_wrong_widen_the_interval():
    groups = np.repeat(np.arange(10), 10)  # 10 patients of 10 images
    correct = np.repeat([True, False] * 5, 10)  # every patient all right or all wrong
    per_image = clinical.accuracy_interval(correct)
    assert per_image == clinical.wilson_interval(50, 100)
    per_patient = clinical.accuracy_interval(correct, groups)
    image_bootstrap = clinical._interval(clinical.accuracy_draws(correct), 0.95)
    widths = [hi - lo for lo, hi in (per_patient, per_image, image_bootstrap)]
    assert widths[0] > 2 * widths[1] and widths[0] > 2 * widths[2]
    assert per_patient[0] < 0.5 < per_patient[1]
    assert clinical.clustered(groups, 100) and not clinical.clustered(np.arange(100), 100)
    # one image per group is the ordinary case: Wilson again
    assert clinical.accuracy_interval(correct, np.arange(100)) == per_image
    # the same holds for sensitivity: patients 0-4 are sick, 0, 2 and 4 of them found
    y_true = np.repeat([1] * 5 + [0] * 5, 10)
    y_pred = np.where(correct, y_true, 1 - y_true)
    alone = clinical.per_class_rows(y_true, y_pred, n_classes=2)[1]
    by_patient = clinical.per_class_rows(y_true, y_pred, n_classes=2, groups=groups)[1]
    assert alone["sensitivity"] == by_patient["sensitivity"] == 0.6
    assert alone["sensitivity_ci95"] == list(clinical.wilson_interval(30, 50))
    assert np.diff(by_patient["sensitivity_ci95"])[0] > 1.5 * np.diff(alone["sensitivity_ci95"])[0]


def test_bootstrap_is_seeded_and_deterministic():
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.7
    first, again = clinical.accuracy_draws(correct, seed=5), clinical.accuracy_draws(correct, seed=5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, clinical.accuracy_draws(correct, seed=6))
    assert first.shape == (clinical.N_BOOT,) and abs(first.mean() - correct.mean()) < 0.01
    both = clinical.accuracy_draws(np.stack([correct, ~correct], 1), seed=5)  # columns on the same resamples
    np.testing.assert_allclose(both[:, 0], first)
    np.testing.assert_allclose(both[:, 1], 1 - first)
    y = rng.integers(0, 3, 200)
    proba = rng.dirichlet(np.ones(3), 200)
    assert clinical.per_class_rows(y, proba.argmax(1), proba, 3) == clinical.per_class_rows(y, proba.argmax(1), proba, 3)


def test_mean_interval_resamples_each_task_within_itself():
    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.9, rng.random(100) < 0.5
    draws = [clinical.accuracy_draws(a, seed=0), clinical.accuracy_draws(b, seed=1)]
    lo, hi = clinical.mean_interval(draws)
    assert lo < (a.mean() + b.mean()) / 2 < hi
    assert hi - lo < clinical._interval(draws[1], 0.95)[1] - clinical._interval(draws[1], 0.95)[0]  # averaging narrows
    empty = clinical.accuracy_draws(np.zeros(0, bool))
    assert clinical.mean_interval([draws[0], empty]) == clinical._interval(draws[0], 0.95)  # a task with no images is left out
    assert all(math.isnan(v) for v in clinical.mean_interval([empty]))


def test_output_is_strict_json_and_formatted_for_people():
    rows = clinical.per_class_rows(np.array([0, 0, 1]), np.array([0, 0, 0]), np.array([[0.9, 0.1]] * 3), 2)
    json.dumps(rows, allow_nan=False)  # NaN would not be strict JSON
    assert clinical.json_safe({"a": (np.float32(1.5), np.nan), "b": np.int64(3), "c": [np.inf]}) == \
        {"a": [1.5, None], "b": 3, "c": [None]}
    assert clinical.format_accuracy(800 / 9, [56.5, 98.0], 9) == \
        "88.9 % (95 % CI 56.5–98.0, 9 images); fewer than 30 images: read with care"
    assert clinical.format_accuracy(90.0, [85.0, 93.6], 300) == "90.0 % (95 % CI 85.0–93.6, 300 images)"
    assert clinical.format_accuracy(100.0, [None, None], 1) == "100.0 % (1 image); fewer than 30 images: read with care"
    assert clinical.format_accuracy(0.0, None, 0) == "no test images"
    sick = clinical.per_class_table(clinical.per_class_rows(Y_TRUE, Y_PRED, n_classes=2, class_names=["normal", "sick"]))[1]
    lo, hi = clinical.wilson_interval(3, 4)
    assert sick["class"] == "sick" and sick["images"] == 4
    assert sick["sensitivity"] == f"0.75 ({lo:.2f}–{hi:.2f})" and sick["auroc"] == "–" and sick["f1"] == "0.67"


def test_confusion_heatmap_writes_counts_colours_shares_and_keeps_repeated_names_apart():
    fig = plots.confusion_heatmap([[4, 2, 0], [1, 3, 0], [0, 0, 0]], ["normal", "sick", "normal"], "TAw")
    heat = fig.data[0]
    assert list(heat.y) == ["0: normal", "1: sick", "2: normal"] and list(heat.x) == list(heat.y)
    assert heat.text[0][1] == "2" and heat.text[2][2] == "0"
    z = np.array(heat.z, dtype=float)
    assert z[0, 1] == pytest.approx(100 * 2 / 6) and z[1, 1] == 75.0 and np.isnan(z[2]).all()  # no true image: blank
    assert fig.layout.title.text == "TAw"
    long = plots.confusion_heatmap(np.eye(3, dtype=int), ["pneumonia: bacterial infection", "b", "c"], "x")
    assert long.layout.margin.l > fig.layout.margin.l and long.layout.margin.b > fig.layout.margin.b


def test_global_probabilities_are_p_t_times_the_heads_softmax():
    p_task = np.array([[0.75, 0.25]])
    subnet_proba = np.array([[[0.6, 0.4, 0.0], [0.2, 0.3, 0.5]]])  # heads of 2 and 3 classes, padded with 0
    pred = Prediction(np.array([0]), np.array([0]), np.array([0]), p_task, np.array([[0, 2]]), subnet_proba=subnet_proba)
    np.testing.assert_allclose(pred.global_proba([0, 2, 5]), [[0.45, 0.3, 0.05, 0.075, 0.125]])
    assert Prediction(np.array([0]), np.array([0]), np.array([0]), p_task, np.array([[0, 2]])).global_proba([0, 2, 5]) is None


# ------------------------------------------------------------------------------- metrics.json
@pytest.fixture(scope="module")
def clinical_run(demo_tasks):
    """Two demo tasks learned, the second tested with images grouped three to a patient."""
    from rerelrp.data.core import Split
    from rerelrp.method.learner import ReReLRP
    from rerelrp.run.runner import SequenceRun

    second = demo_tasks[1]
    grouped = dataclasses.replace(second, test=Split(second.test.images, second.test.labels, np.arange(len(second.test)) // 3))
    tasks = [demo_tasks[0], grouped]
    run = SequenceRun(ReReLRP(**FAST, min_free=0.5), tasks)  # room for the second task to learn
    return run.run(), run.learner, tasks


def test_metrics_json_holds_confusion_per_class_rows_and_intervals_that_agree(clinical_run):
    metrics, learner, tasks = clinical_run
    data = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))  # strict JSON
    n = [len(t.test) for t in tasks]
    assert data["n_test"] == n and data["ci_unit"] == ["image", "group"]
    for j, task in enumerate(tasks):
        matrix = np.array(data["confusion"]["taw"][j])
        assert matrix.shape == (2, 2) and matrix.sum() == n[j]
        assert 100.0 * np.trace(matrix) / n[j] == pytest.approx(data["acc_taw"][-1][j])
        lo, hi = data["taw_ci95"][j]
        assert lo <= data["acc_taw"][-1][j] <= hi
        lo, hi = data["tag_ci95"][j]
        assert lo <= data["acc_tag"][-1][j] <= hi
        rows = data["per_class"][j]
        assert [r["class"] for r in rows] == task.class_names and [r["n"] for r in rows] == list(matrix.sum(1))
        assert rows[1]["sensitivity"] == pytest.approx(matrix[1, 1] / matrix[1].sum())
        assert 0.5 < rows[1]["auroc"] <= 1.0 and rows[1]["auroc_ci95"][0] <= rows[1]["auroc"] <= rows[1]["auroc_ci95"][1]
    assert data["taw_ci95"][0] == [100 * v for v in clinical.wilson_interval(round(data["acc_taw"][-1][0] * n[0] / 100), n[0])]
    tag = np.array(data["confusion"]["tag"])  # over the 4 classes seen, global indices
    assert tag.shape == (4, 4) and tag.sum() == sum(n)
    for j in range(2):  # the diagonal of task j's rows counts its task-agnostic hits
        assert 100.0 * np.trace(tag[2 * j : 2 * j + 2, 2 * j : 2 * j + 2]) / n[j] == pytest.approx(data["acc_tag"][-1][j])
    final = data["final"]
    assert final["taw_ci95"][0] <= final["taw"] <= final["taw_ci95"][1]
    assert final["tag_ci95"][0] <= final["tag"] <= final["tag_ci95"][1]


def test_predictions_carry_each_heads_probabilities(clinical_run, demo_tasks):
    _, learner, _ = clinical_run
    images = demo_tasks[0].test.images[:25]
    pred = learner.predict(images)
    assert pred.subnet_proba.shape == (25, 2, 2)
    np.testing.assert_array_equal(pred.subnet_proba.argmax(-1), pred.subnet_class)
    np.testing.assert_allclose(pred.subnet_proba.sum(-1), 1.0, rtol=1e-6)
    logits = learner.subnetwork_logits(images, 1)
    np.testing.assert_allclose(pred.subnet_proba[:, 1], logits.softmax(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.global_proba(learner.offsets_).sum(1), 1.0, rtol=1e-6)
    # explain reads the newest sub-network through an LRP pass, predict through a plain forward: float noise only
    np.testing.assert_allclose(learner.explain(images[:3]).prediction.subnet_proba, pred.subnet_proba[:3], atol=1e-4)


def test_a_baselines_predictions_carry_each_heads_softmax(demo_tasks):
    from rerelrp.baselines import Finetune

    learner = Finetune(epochs=1, min_steps=0, seed=0)
    for task in demo_tasks[:2]:
        learner.add_task(task)
    pred = learner.predict(demo_tasks[1].test.images[:20])
    assert pred.subnet_proba.shape == (20, 2, 2)
    np.testing.assert_array_equal(pred.subnet_proba.argmax(-1), pred.subnet_class)
    np.testing.assert_allclose(pred.global_proba(learner.offsets_).sum(1), 1.0, rtol=1e-6)


def test_metrics_json_round_trips_and_older_files_still_load(clinical_run):
    metrics, _, _ = clinical_run
    data = json.loads(json.dumps(metrics.to_dict()))
    assert RunMetrics.from_dict(data).to_dict() == data
    old = {k: v for k, v in data.items() if k not in ("n_test", "taw_ci95", "tag_ci95", "balanced_accuracy_taw",
                                                         "ci_unit", "confusion", "per_class")}
    old["final"] = {k: v for k, v in data["final"].items() if not k.endswith("_ci95")}
    again = RunMetrics.from_dict(old).to_dict()
    assert again == old and "confusion" not in again and set(again["final"]) == {"tag", "taw", "forgetting_tag",
                                                                                  "forgetting_taw"}


def test_the_final_interval_is_not_a_point_when_no_error_was_seen():
    from rerelrp.run.metrics import _final_interval

    perfect = [np.ones(200), np.ones(200)]  # every resample of both tasks: 100 %
    lo, hi = _final_interval(perfect, [100.0, 100.0], [20, 6])
    assert (lo, hi) == clinical.wilson_interval(26, 26) and lo < 0.9 and hi == 1.0
    spread = [np.linspace(0.8, 1.0, 200), np.linspace(0.6, 1.0, 200)]
    assert _final_interval(spread, [90.0, 80.0], [20, 6]) == clinical.mean_interval(spread)
