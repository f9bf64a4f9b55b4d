"""CRP on zennit 0.5 (issue 25): conditional heatmaps sum as CRP promises, and reference patches stay in memory."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from rerelrp.data import build_sequence, load_dataset
from rerelrp.lrp.concepts import concepts, conditional_heatmaps, reference_patches
from rerelrp.method.learner import ReReLRP
from rerelrp.run.runner import SequenceRun


@pytest.fixture(scope="module")
def learned():
    tasks = build_sequence([load_dataset("demo")], 2)
    learner = ReReLRP(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
                      device="cpu")
    SequenceRun(learner, tasks).run()
    return learner, tasks


def test_a_first_layer_unit_heatmap_sums_to_the_unit_relevance(learned):
    """Below conv1 only the composite's flat rule acts, which conserves relevance exactly."""
    learner, tasks = learned
    image = tasks[1].test.images[0]
    first = learner.net_.unit_layers[0]
    kept = np.flatnonzero(learner.ledger_.task(1)[first.name])
    rel, heats, _ = conditional_heatmaps(learner, image, 1, first.name, kept)
    assert np.abs(rel).sum() > 0
    np.testing.assert_allclose(heats.sum((1, 2)), rel, rtol=1e-3, atol=1e-6)


def test_the_units_of_a_layer_add_up_to_the_ordinary_heatmap(learned):
    learner, tasks = learned
    image = tasks[0].test.images[3]
    layer = learner.net_.unit_layers[1]
    every = range(learner.ledger_.layer_sizes[layer.name])
    rel, heats, full = conditional_heatmaps(learner, image, 0, layer.name, every)
    np.testing.assert_allclose(heats.sum(0), full, rtol=1e-4, atol=1e-6)
    explained = learner.explain(image[None]).heatmaps[0, 0]
    np.testing.assert_allclose(full, explained, rtol=1e-4, atol=1e-6)  # the same LRP as Explain shows
    dropped = [u for u in every if not learner.ledger_.task(0)[layer.name][u]]
    assert np.abs(rel[dropped]).max(initial=0.0) == 0.0  # a unit the sub-network dropped carries nothing


def test_reference_patches_are_parts_of_the_task_images_and_nothing_reaches_the_disk(learned, tmp_path, monkeypatch):
    learner, tasks = learned
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tempfile.gettempdir()))
    images = tasks[0].train.images[:40]
    layer = learner.net_.unit_layers[0].name
    patches = reference_patches(learner, images, 0, layer, 0, top=3)
    assert len(patches) == 3 and all(p.dtype == np.uint8 and p.ndim == 3 for p in patches)
    found = concepts(learner, tasks[0].test.images[0], 0, [(layer, 0), (layer, 1)], images, references=2)
    assert [(c.layer, c.unit) for c in found] == [(layer, 0), (layer, 1)] and all(len(c.references) == 2 for c in found)
    assert os.listdir(tmp_path) == [] and set(os.listdir(tempfile.gettempdir())) <= before | {".lock"}
