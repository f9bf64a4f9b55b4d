"""The default recognisers: class statistics instead of rows (rerelrp/method/task_gaussians.py)."""
import dataclasses
import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from sklearn.covariance import OAS

from conftest import FAST
from rerelrp.method.learner import ReReLRP
from rerelrp.method.scope import scope_statistics
from rerelrp.method.subnetworks import Subnetworks
from rerelrp.method.task_gaussians import TEMPERATURE, ClassMoments, TaskGaussians, _pack, _unpack, features, oas
from rerelrp.model.inputs import to_input
from rerelrp.store.workspace import save_workspace


def small(task, n_train):
    """``task`` with its first ``n_train`` training images (a count no unit layer has)."""
    return dataclasses.replace(task, train=task.train.subset(np.arange(n_train)))


@pytest.fixture(scope="module")
def learners(demo_tasks):
    """The same two tasks learned with Gaussian (the default) and with forest recognisers."""
    tasks = [small(demo_tasks[0], 233), small(demo_tasks[1], 239)]
    out = {}
    for recognizer in ("gaussian", "forest"):
        learner = ReReLRP(**dict(FAST, recognizer_samples=4096), recognizer=recognizer)
        for task in tasks:
            learner.add_task(task)
        out[recognizer] = learner
    return out, tasks


def test_class_moments_added_in_batches_equal_the_rows_statistics():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(50, 4)) + 3.0, rng.integers(0, 3, 50)
    moments = ClassMoments(4, 4)  # class 3 has no image
    moments.add(z[:17], y[:17])
    moments.add(z[17:], y[17:])
    means = np.stack([z[y == c].mean(0) for c in range(3)])
    centred = z - means[y]
    assert np.array_equal(moments.counts, np.r_[np.bincount(y), 0])
    assert np.allclose(moments.means[:3], means) and np.all(moments.means[3] == 0)
    assert np.allclose(moments.scatter, centred.T @ centred)


def test_oas_on_the_covariance_alone_equals_sklearn_on_the_rows():
    rng = np.random.default_rng(1)
    for n, d in ((30, 8), (500, 20), (12, 40)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        centred = x - x.mean(0)
        assert np.allclose(oas(centred.T @ centred / n, n), OAS(assume_centered=True).fit(centred).covariance_)


def test_the_packed_covariance_is_positive_definite_even_when_units_never_fire():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 30)) * np.r_[np.ones(25), np.zeros(5)]  # 5 units never fire: a singular covariance
    cov = x.T @ x / 100
    packed, scale = _pack(cov)
    assert packed.dtype == np.float16 and len(packed) == 30 * 31 // 2
    back = _unpack(packed, scale, 30)
    assert np.linalg.eigvalsh(back).min() > -1e-9
    assert np.abs(back - cov).max() < 5e-3 * np.abs(cov).max()


def test_prediction_is_the_formula_written_out_one_image_and_one_subnetwork_at_a_time(learners, monkeypatch):
    """P_T against the slow path: each image alone through each sub-network alone, the OAS covariance
    inverted, the class mixtures, the softmax over tasks and the chain; and no LRP on the way."""
    learner, tasks = learners[0]["gaussian"], learners[1]
    images = np.concatenate([t.test.images[:6] for t in tasks])
    monkeypatch.setattr(Subnetworks, "lrp", lambda *a, **k: pytest.fail("predict ran LRP"))
    pred = learner.predict(images)
    store, sizes = learner.store_, learner.ledger_.layer_sizes
    sub = learner._subnetworks()
    x = to_input(images, learner.input_size_)
    for i in range(len(images)):
        _, acts = sub.forward_signals(x[i : i + 1], 0)
        z = features(acts[0, store.columns(0, sizes)].numpy())
        precision = np.linalg.inv(oas(_unpack(store.cov[0], store.cov_scale[0], len(z)), store.n_images(0))
                                  + np.eye(len(z)) * 1e-6 * np.trace(oas(_unpack(store.cov[0], store.cov_scale[0], len(z)),
                                                                         store.n_images(0))) / len(z))
        scores = []
        for s in (0, 1):
            terms = [np.log(n) - 0.5 * (z - mu) @ precision @ (z - mu)
                     for n, mu in zip(store.counts[0][s], store.means[0][s].astype(np.float64)) if n > 0]
            scores.append(np.logaddexp.reduce(terms))
        p0 = np.exp(scores[0] / TEMPERATURE) / np.exp(np.array(scores) / TEMPERATURE).sum()
        assert np.allclose(pred.p_task[i], [p0, 1 - p0], atol=1e-6)
    assert np.mean(pred.task == np.repeat([0, 1], 6)) >= 0.75  # the two digit tasks are told apart


def test_predict_and_explain_recognise_alike(learners):
    learner, tasks = learners[0]["gaussian"], learners[1]
    images = np.concatenate([t.test.images[:8] for t in tasks])
    pred, explained = learner.predict(images), learner.explain(images).prediction
    assert np.allclose(pred.p_task, explained.p_task, atol=1e-4)
    assert np.allclose(pred.scope_score, explained.scope_score, atol=1e-4)


def test_the_scope_check_claims_own_images_and_flags_noise(learners):
    learner, tasks = learners[0]["gaussian"], learners[1]
    own = learner.predict(np.concatenate([t.test.images for t in tasks]))
    noise = learner.predict(np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8))
    assert np.mean(own.out_of_scope) < 0.25
    assert np.all(noise.out_of_scope)


def _arrays_of_saved_workspace(learner, tasks, path):
    save_workspace(path, learner, tasks=tasks)
    snapshot = path / "snapshots" / json.loads((path / "CURRENT").read_text())["snapshot"]
    arrays = safetensors.numpy.load((snapshot / "arrays.safetensors").read_bytes())
    tensors = safetensors.numpy.load((snapshot / "network.safetensors").read_bytes())
    return {**arrays, **tensors}


def test_a_saved_workspace_keeps_no_array_with_a_row_per_training_image(learners, tmp_path):
    """Every array of a saved workspace, the network included: none has one row per training image of
    a task (or per validation image) by default; the paper's forests keep such rows."""
    (by_kind, tasks) = learners
    per_image = {len(t.train) for t in tasks} | {len(t.val) for t in tasks}
    gaussian = _arrays_of_saved_workspace(by_kind["gaussian"], tasks, tmp_path / "g")
    assert not [name for name, a in gaussian.items() if a.ndim and a.shape[0] in per_image]
    forest = _arrays_of_saved_workspace(by_kind["forest"], tasks, tmp_path / "f")
    assert {"rows/0/0", "rows/0/1", "rows/1/1", "scope_stats/0", "scope/0"} <= {
        name for name, a in forest.items() if a.ndim and a.shape[0] in per_image}
    assert by_kind["gaussian"].store_.nbytes_of_task(0) < by_kind["forest"].store_.nbytes_of_task(0) / 5


def test_a_store_saved_with_a_broken_array_is_refused_naming_it(learners):
    learner = learners[0]["gaussian"]
    sizes, heads = learner.ledger_.layer_sizes, [len(t["classes"]) for t in learner.tasks_]
    arrays = learner.store_.to_arrays()
    again = TaskGaussians.from_arrays(arrays, 2, sizes, heads)
    assert all(np.array_equal(a, again.to_arrays()[k]) for k, a in arrays.items())
    broken = {
        "gauss/cov/1": dict(arrays, **{"gauss/cov/1": arrays["gauss/cov/1"].astype(np.float32)}),
        "gauss/means/0/1": dict(arrays, **{"gauss/means/0/1": np.full_like(arrays["gauss/means/0/1"], np.nan)}),
        "gauss/counts/0/0": {k: v for k, v in arrays.items() if k != "gauss/counts/0/0"},
        "gauss/active/1": dict(arrays, **{"gauss/active/1": arrays["gauss/active/1"] + 10_000}),
        "unexpected": dict(arrays, **{"rows/0/0": np.zeros((3, 3), np.float32)}),
    }
    for name, bad in broken.items():
        with pytest.raises(ValueError, match=name):
            TaskGaussians.from_arrays(bad, 2, sizes, heads)


def test_a_learner_saved_before_the_setting_keeps_its_forests(learners):
    learner, tasks = learners[0]["forest"], learners[1]
    state = learner.export_state()
    del state["params"]["recognizer"]  # what a workspace of an earlier rerelrp holds
    old = ReReLRP.from_state(state)
    assert old.recognizer == "forest" and len(old.recognizers_) == 1
    images = tasks[1].test.images[:10]
    assert np.array_equal(old.predict(images).p_task, learner.predict(images).p_task)


def test_the_statistics_read_every_training_image_in_passes(learners):
    learner, tasks = learners[0]["gaussian"], learners[1]
    assert [int(learner.store_.counts[0][s].sum()) for s in (0, 1)] == [len(t.train) for t in tasks]
    stats = scope_statistics(to_input(tasks[1].train.images, learner.input_size_))
    labels = torch.as_tensor(tasks[1].train.labels).numpy()
    means = np.stack([stats[labels == c].mean(0) for c in range(tasks[1].n_classes)])
    assert np.allclose(learner.store_.scope_means[1], means, atol=1e-5)
