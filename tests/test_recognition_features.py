"""bench/recognition_features.py rebuilds the package's Gaussian recognisers from a trained model; its
"mean, whole covariance" variant must be the package's own, or its other rows compare with nothing."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST
from rerelrp.data import build_sequence, load_dataset
from rerelrp.lrp.relevance import unit_activation
from rerelrp.method.learner import ReReLRP

spec = importlib.util.spec_from_file_location(
    "recognition_features", Path(__file__).resolve().parents[1] / "bench" / "recognition_features.py")
study_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_module)


@pytest.fixture(scope="module")
def study():
    tasks = build_sequence([load_dataset("demo", seed=0)], None)[:3]
    learner = ReReLRP(**FAST)
    for task in tasks:
        learner.add_task(task)
    return study_module.Study(learner, tasks), learner, tasks


def test_the_mean_summary_is_the_packages_unit_activation(study):
    s, learner, tasks = study
    sub = learner._subnetworks()
    x = torch.as_tensor(study_module.to_input(tasks[2].val.images, learner.input_size_))
    _, acts = sub.forward_signals(x, 0)
    np.testing.assert_allclose(s.signals[0, 2, "val"][:, :, 0], acts.numpy(), rtol=1e-4, atol=1e-5)
    out = torch.randn(3, 4, 5, 5)
    np.testing.assert_allclose(study_module._summaries(out)[:, :, 0], unit_activation(out), rtol=1e-6)


def test_mean_with_a_whole_covariance_recognises_as_the_package_does(study):
    s, learner, tasks = study
    truth = np.concatenate([np.full(len(t.val), i) for i, t in enumerate(tasks)])
    package = np.concatenate([learner.predict(t.val.images).task for t in tasks])
    nbytes, recognition = s.evaluate((0,), "full")
    # the package keeps the covariance's factor in float16: a few images near a boundary may move
    assert abs(recognition[8] - 100.0 * np.mean(package == truth)) <= 100.0 * 2 / len(truth)
    assert nbytes > 0


def test_a_rank_as_large_as_the_features_is_the_whole_covariance(study):
    s, _, _ = study
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6))
    cov = a.T @ a / 40
    group = np.zeros(6, int)
    np.testing.assert_allclose(study_module._approx(cov, "rank6", group)[0], cov, atol=1e-5)
    assert np.allclose(study_module._approx(cov, "summary", group)[0], cov)  # one summary: one block
    layered = study_module._approx(cov, "layer", np.array([0, 0, 10, 10, 10, 20]))[0]
    assert layered[0, 2] == 0 and layered[2, 4] == cov[2, 4] and layered[5, 5] == cov[5, 5]
