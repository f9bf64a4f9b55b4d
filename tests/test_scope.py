"""Out-of-scope images ("none of the learned tasks"), `rerelrp run --ood` and `rerelrp predict`."""
import csv
import json

import numpy as np
import pytest

from conftest import shared_file
from rerelrp.cli import main
from rerelrp.data.images import encode_png
from rerelrp.method.scope import (
    MOMENTS,
    N_STATISTICS,
    KthNearest,
    ScopeReference,
    auroc_block,
    input_statistics,
    scope_scores,
    scope_statistics,
    threshold,
)
from rerelrp.model.inputs import LazyInputs, to_input

FAST_ARGS = ["--epochs", "1", "--min-steps", "0", "--prune-samples", "64",
             "--relevance-samples", "64", "--recognizer-samples", "256", "--trees", "20", "--quiet"]
COLUMNS = ["source", "index", "task", "task_name", "class_index", "class_name", "out_of_scope", "scope_score",
           "scope_reason", "p_task_0", "p_task_1"]


def test_knn_distance_is_the_distance_to_the_kth_nearest_row():
    reference = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    rows = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert KthNearest(reference, k=1)(rows) == pytest.approx([0.0, 9.0])
    assert KthNearest(reference, k=2)(rows) == pytest.approx([1.0, 10.0])
    assert KthNearest(reference[:1], k=5)(rows) == pytest.approx([0.0, 10.0])  # k capped by the rows there are
    assert KthNearest(reference)(rows[:0]).shape == (0,)


def test_a_task_claims_an_image_below_its_own_threshold():
    val = np.arange(1, 101, dtype=float)  # its own validation images' distances
    assert threshold(val, 0.05) == pytest.approx(np.quantile(val, 0.95))
    scores = scope_scores(np.array([[50.0, 400.0], [400.0, 400.0], [200.0, 10.0]]), [100.0, 20.0])
    assert scores == pytest.approx([0.5, 4.0, 0.5])  # the closest task (relative to its threshold) decides
    assert list(scores > 1) == [False, True, False]
    block = auroc_block([0.5, 0.9], [1.5, 0.8], "x")
    assert block["auroc"] == pytest.approx(0.75) and block["flagged_out_of_scope"] == 0.5


def test_scope_statistics_add_the_brightness_of_the_border_and_of_the_inside():
    framed = np.zeros((2, 28, 28, 1), np.uint8)
    framed[0, 4:24, 4:24] = 200  # a slice in a dark field, as CT and MR are
    framed[1] = 120  # an image that fills the frame, as X-rays and ultrasound do
    stats = scope_statistics(to_input(framed, 28))
    assert stats.shape == (2, N_STATISTICS) and stats.dtype == np.float32
    assert np.array_equal(stats[:, :MOMENTS], input_statistics(to_input(framed, 28)))  # the seven come first
    border, inside = stats[:, MOMENTS], stats[:, MOMENTS + 1]
    assert border[0] == 0 and inside[0] > 0.5 and border[1] == pytest.approx(inside[1]) == pytest.approx(120 / 255)
    assert np.array_equal(scope_statistics(LazyInputs(framed, 28)), stats)  # batch by batch, the same numbers


def test_statistics_count_as_much_as_the_activations_and_old_workspaces_keep_their_distance():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 100 + N_STATISTICS))  # 100 activations, then the statistics
    odd_stats = np.r_[np.zeros(100), np.full(N_STATISTICS, 3.0)][None]
    odd_acts = np.r_[np.full(100, 3.0), np.zeros(N_STATISTICS)][None]
    scale = reference.std(0) + 1e-6
    plain = [KthNearest(reference / scale)(q / scale)[0] for q in (odd_stats, odd_acts)]
    assert plain[1] > 2 * plain[0]  # plain: the 9 statistics barely count beside 100 activations
    assert ScopeReference(reference, MOMENTS).distance(odd_stats)[0] == pytest.approx(plain[0])  # saved with 7: as before
    blocks = [ScopeReference(reference, N_STATISTICS).distance(q)[0] for q in (odd_stats, odd_acts)]
    assert blocks[0] == pytest.approx(blocks[1], rel=0.2)  # two equal blocks


def test_a_tasks_scope_reference_is_made_once_and_anew_when_its_rows_are_replaced():
    from rerelrp.method.recognition import RelevanceStore

    rng = np.random.default_rng(1)
    store, sizes = RelevanceStore(), {"a": 4}
    store.add_task(0, rng.random((30, 8)).astype(np.float32), 2, sizes, kept_flat=np.ones(4, bool))
    store.scope_stats.append(rng.random((30, N_STATISTICS)).astype(np.float32))
    rows = rng.random((3, 4 + N_STATISTICS)).astype(np.float32)
    search = store.scope_search(0)
    assert store.scope_search(0) is search
    assert np.array_equal(search.distance(rows), ScopeReference(store.scope_reference(0), N_STATISTICS).distance(rows))
    store.rows[0][0] = store.rows[0][0] * 2  # a restored learner's store holds new arrays
    assert store.scope_search(0) is not search


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """pneumonia -> breast learned by the CLI (fast settings), with retina as the out-of-scope set."""
    root = tmp_path_factory.mktemp("scope")
    files = [shared_file("medmnist", f"{name}mnist.npz") for name in ("pneumonia", "breast", "retina")]
    assert main(["run", "--data", str(files[0]), "--data", str(files[1]), "--ood", str(files[2]),
                 "--out", str(root / "run"), "--workspace", str(root / "ws"), *FAST_ARGS]) == 0
    return root


def test_run_with_ood_reports_how_well_the_scope_score_separates(workspace):
    block, = json.loads((workspace / "run" / "metrics.json").read_text())["out_of_scope"]
    assert block["source"].endswith("retinamnist.npz") and block["n_out_of_scope"] == 400
    assert block["n_in_scope"] == 624 + 156  # the test images of both learned tasks
    # even after one epoch per task, colour fundus photos look like neither X-rays nor ultrasound
    assert block["auroc"] > 0.8 and block["flagged_out_of_scope"] > block["flagged_in_scope"]
    assert block["flagged_in_scope"] < 0.15  # the threshold allows 5 % of each task's validation images


def test_predict_reads_dicom_png_and_npz_and_skips_what_it_cannot(workspace, capsys):
    pngs = workspace / "pngs"
    pngs.mkdir()
    retina = np.load(shared_file("medmnist", "retinamnist.npz"))["test_images"][:3]
    for i, image in enumerate(retina):
        (pngs / f"retina{i}.png").write_bytes(encode_png(image))
    (pngs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    ct = shared_file("dicom", "ct_vs_mr", "ct")
    n_ct = sum(1 for p in ct.rglob("*") if p.is_file()) - 1  # DIRFILE is a DICOM directory, not an image
    breast = shared_file("medmnist", "breastmnist.npz")
    out = workspace / "preds.csv"
    assert main(["predict", "--workspace", str(workspace / "ws"), str(pngs), str(ct), str(breast),
                 str(workspace / "missing.dcm"), "--out", str(out), "--explain", str(workspace / "maps"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.dcm: does not exist" in err and "DIRFILE: no pixel data" in err
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS
    sources = [row["source"] for row in rows]
    assert sum(s.endswith(".png") for s in sources) == 3 and not any("broken" in s for s in sources)
    assert sum(s.startswith(str(ct)) for s in sources) == n_ct
    npz_rows = [row for row in rows if row["source"] == str(breast)]
    assert [int(r["index"]) for r in npz_rows] == list(range(156))  # the test split, in order
    for row in rows:
        assert row["task_name"] in ("pneumoniamnist", "breastmnist") and row["out_of_scope"] in ("True", "False")
        assert float(row["p_task_0"]) + float(row["p_task_1"]) == pytest.approx(1.0, abs=1e-3)
        by_modality = row["scope_reason"].startswith("modality ")  # the DICOM header names no learned modality
        assert (float(row["scope_score"]) > 1 or by_modality) == (row["out_of_scope"] == "True")
    ct_rows = [r for r in rows if r["source"].startswith(str(ct))]
    assert all(r["scope_reason"] == "modality CT: no learned task is CT (tasks: CR/DX/RG, US)" for r in ct_rows)
    # CT slices and retina photos are of no learned task; most breast test images are of one
    foreign = [r for r in rows if r["source"] != str(breast)]
    assert np.mean([r["out_of_scope"] == "True" for r in foreign]) > np.mean([r["out_of_scope"] == "True"
                                                                              for r in npz_rows])
    assert len(list((workspace / "maps").glob("*.png"))) == 2 * len(rows)  # one heatmap per sub-network


def test_predict_with_nothing_readable_fails_clearly(workspace, capsys):
    bad = workspace / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image")
    assert main(["predict", "--workspace", str(workspace / "ws"), str(bad), "--out", str(workspace / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: not a PNG, JPEG or DICOM image" in err and "no readable image" in err
    assert not (workspace / "x.csv").exists()


def test_a_saved_model_keeps_its_scope_and_an_older_one_answers_unknown(workspace, tmp_path):
    from rerelrp.store.workspace import load_workspace

    learner, _, _ = load_workspace(workspace / "ws")
    images = np.load(shared_file("medmnist", "bloodmnist.npz"))["test_images"][:8]
    prediction = learner.predict(images)
    assert np.isfinite(prediction.scope_score).all()
    assert np.array_equal(prediction.out_of_scope, prediction.scope_score > 1)
    learner.set_params(scope_rate=0.5)  # a stricter threshold flags at least as many
    assert learner.predict(images).out_of_scope.sum() >= prediction.out_of_scope.sum()
    learner.store_.scope = [np.zeros(0, np.float32) for _ in learner.store_.scope]  # as saved by rerelrp 0.2.0
    old = learner.predict(images)
    assert np.isnan(old.scope_score).all() and not old.out_of_scope.any()
    assert np.array_equal(old.task, prediction.task)
