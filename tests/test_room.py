"""Making room: a search that leaves a layer short of min_free drops the shortfall and fine-tunes, or changes nothing."""
import shutil

import numpy as np
import pytest
import torch

from conftest import shared_file
from rerelrp.method.learner import ReReLRP
from rerelrp.method.pruning import PruneResult
from rerelrp.method.room import make_room, room_needed

SLICES = {"a": slice(0, 5), "b": slice(5, 10)}


def _pruned():
    """All ten units kept: at min_free 0.4 both layers of five are two free units short."""
    return PruneResult(kept=np.ones(10, bool), base_acc=90.0, kept_acc=90.0, threshold=89.75, tolerance=0.25,
                       evaluations=3, n_images=400, shortfall={"a": 2, "b": 2})


def _tune(net, log):
    def tune(kept):
        log.append(kept.copy())
        with torch.no_grad():
            net.weight.add_(1.0)
        return 7
    return tune


def test_a_fine_tune_that_holds_the_threshold_is_kept_and_closes_the_shortfall():
    net, log = torch.nn.Linear(3, 3), []
    scores = np.array([5, 1, 4, 2, 9, 3, 8, 1, 7, 6], float)
    frozen = np.zeros(10, bool)
    frozen[7] = True  # kept by an earlier task: never dropped, never free
    result = make_room(net, _pruned(), scores, frozen, SLICES, 0.4, _tune(net, log), lambda kept: 90.0)
    # per layer its two least relevant units, never the most relevant (4, 6) nor a frozen one (7)
    assert sorted(np.flatnonzero(~result.kept)) == [1, 3, 5, 9]
    assert result.kept[7] and result.kept[4] and result.kept[6]
    assert result.shortfall == {} and result.kept_acc == 90.0
    assert result.room == {"dropped": 4, "steps": 7, "acc": 90.0, "accepted": True}
    assert np.array_equal(log[0], result.kept), "the fine-tune should run with the dropped units masked"


def test_a_fine_tune_that_loses_accuracy_puts_every_weight_back_bit_for_bit():
    net, log = torch.nn.Linear(3, 3), []
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruned = _pruned()
    result = make_room(net, pruned, np.arange(10, dtype=float), np.zeros(10, bool), SLICES, 0.4,
                       _tune(net, log), lambda kept: 89.5)
    assert log, "the fine-tune should have run"
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert result.kept.all() and result.shortfall == pruned.shortfall and result.kept_acc == 90.0
    assert result.room["accepted"] is False and result.room["acc"] == 89.5


def test_each_layer_keeps_its_most_relevant_unit_even_when_room_is_short():
    net = torch.nn.Linear(3, 3)
    slices = {"a": slice(0, 2)}
    pruned = PruneResult(np.ones(2, bool), 90.0, 90.0, 89.75, 0.25, 1, 400, {"a": 2})
    result = make_room(net, pruned, np.array([1.0, 2.0]), np.zeros(2, bool), slices, 1.0, _tune(net, []),
                       lambda kept: 90.0)
    assert result.kept.tolist() == [False, True] and result.shortfall == {"a": 1}


def test_room_is_tried_only_where_the_cut_could_not_lose_a_single_image():
    small, large = _pruned(), _pruned()
    small.n_images, large.n_images = 399, 400  # at a tolerance of 0.25 points, 400 images allow losing one
    assert room_needed(small) and not room_needed(large)
    small.shortfall = {}
    assert not room_needed(small)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """42 real DICOM files in three classes (14 CT, 20 MR EPI, 8 brain MR): a small first task."""
    ct_vs_mr = shared_file("dicom", "ct_vs_mr")
    root = tmp_path_factory.mktemp("small")
    picks = {
        "ct": sorted(p for p in (ct_vs_mr / "ct").iterdir() if p.name != "DIRFILE")[:14],
        "mr_epi": sorted((ct_vs_mr / "mr").iterdir())[:20],
        "mr_brain": sorted(shared_file("dicom", "mr_brain_series").glob("*.dcm"))
        + sorted(shared_file("dicom", "mr_epi_pair").glob("*.dcm")),
    }
    for name, files in picks.items():
        (root / name).mkdir()
        for f in files:
            shutil.copy(f, root / name / f.name)
    return root


def test_a_small_first_task_leaves_min_free_of_every_layer_without_losing_validation_accuracy(small_folder):
    from rerelrp.data import build_sequence, load_dataset

    task = build_sequence([load_dataset(small_folder, seed=0)])[0]
    learner = ReReLRP(seed=0, device="cpu").add_task(task)
    prune = learner.history_[0].prune
    assert prune["room"]["dropped"] > 0, "the search alone should have left a layer short (the case this covers)"
    assert prune["room"]["accepted"] and prune["shortfall"] == {}
    assert all(row["free_share"] >= learner.min_free for row in learner.capacity()), learner.capacity()
    assert prune["val_acc_kept"] >= prune["val_acc_full"]


def test_reports_say_what_making_room_did():
    from rerelrp.report.content import growth

    kept = {"dropped": 13, "steps": 100, "acc": 100.0, "accepted": True}
    rejected = {"dropped": 5, "steps": 100, "acc": 97.2, "accepted": False}
    text = growth([{}, {"conv1": 4}], [kept, rejected])
    assert text.startswith("Room made: task 0 dropped 13 more units and was fine-tuned 100 steps")
    assert "task 1 dropped 5" in text and "97.2 %" in text and "Layers grown (units added): before task 1: conv1 +4." in text
    assert growth([{}], [None]) == "" and growth([{}], [{"dropped": 0, "steps": 0, "acc": 1.0, "accepted": False}]) == ""
