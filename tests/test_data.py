"""Loading MedMNIST files (real ones and broken ones), the demo, and task sequences."""
import io

import numpy as np
import pytest

from conftest import shared_file
from rerelrp.data import build_sequence, load_dataset, load_demo, load_medmnist, split_into_tasks
from rerelrp.data.core import stratified_holdout
from rerelrp.data.tasks import class_groups
from rerelrp.errors import ConfigError, DataError


def test_real_medmnist_files_load_with_published_sizes_and_names():
    ds = load_medmnist(shared_file("medmnist", "pneumoniamnist.npz"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4708, 524, 624)
    assert ds.class_names == ["normal", "pneumonia"]
    assert ds.image_shape == (28, 28, 1) and ds.train.images.dtype == np.uint8
    retina = load_medmnist(shared_file("medmnist", "retinamnist.npz"))
    assert retina.image_shape == (28, 28, 3) and retina.n_classes == 5
    record = ds.provenance["files"][0]
    assert len(record["sha256"]) == 64 and record["bytes"] > 0


def test_flag_is_looked_up_in_the_data_root(tmp_path):
    src = shared_file("medmnist", "breastmnist.npz")
    (tmp_path / "breastmnist.npz").write_bytes(src.read_bytes())
    ds = load_dataset("breastmnist", root=tmp_path)
    assert ds.class_names == ["malignant", "normal, benign"]


def test_missing_flag_file_says_how_to_get_it_and_downloads_nothing(tmp_path, monkeypatch):
    import medmnist

    monkeypatch.setattr(medmnist, "BloodMNIST", lambda **kw: pytest.fail("must not download unasked"))
    with pytest.raises(DataError, match="--download"):
        load_dataset("bloodmnist", root=tmp_path)


def test_download_when_asked_goes_through_medmnist(tmp_path, monkeypatch):
    import medmnist

    src = shared_file("medmnist", "breastmnist.npz")
    calls = []

    def fake(split, download, root, size):
        calls.append((split, download, size))
        (tmp_path / "breastmnist.npz").write_bytes(src.read_bytes())

    monkeypatch.setattr(medmnist, "BreastMNIST", fake)
    ds = load_dataset("breastmnist", root=tmp_path, download=True)
    assert calls == [("train", True, None)] and len(ds.train) == 546


def test_download_offline_gives_a_clear_message(tmp_path, monkeypatch):
    import medmnist

    def offline(**kw):
        raise RuntimeError("Automatic download failed! <urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(medmnist, "BloodMNIST", offline)
    with pytest.raises(DataError, match="could not be reached.*network may be unavailable"):
        load_dataset("bloodmnist_64", root=tmp_path, download=True)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=20, size=28, classes=2, channels=None):
    rng = np.random.default_rng(0)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    out = {}
    for split in ("train", "val", "test"):
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1).astype(np.uint8)
    return out


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.pop("train_labels"), "missing key.*train_labels"),
        (lambda a: a.update(train_labels=a["train_labels"][:5]), "5 entries but there are 20 images"),
        (lambda a: a.update(test_images=a["test_images"][:0], test_labels=a["test_labels"][:0]), "test split is empty"),
        (lambda a: a.update(train_labels=np.full((20, 1), -1)), "negative label"),
        (lambda a: a.update(train_labels=np.zeros((20, 14), np.uint8)), "multi-label"),
        (lambda a: a.update(train_images=np.zeros((20, 28, 28, 28), np.uint8)), "3D volumes"),
        (lambda a: a.update(test_images=np.zeros((20, 32, 32), np.uint8)), "mixed sizes"),
        (lambda a: a.update(train_images=np.full((20, 28, 28), 300, np.int32)), "expected 0..255"),
        (lambda a: a.update(train_images=np.zeros((20, 28, 28, 5), np.uint8)), "3D volumes"),
    ],
)
def test_broken_npz_files_get_an_error_naming_file_and_problem(tmp_path, mutate, message):
    arrays = good_arrays()
    mutate(arrays)
    path = write_npz(tmp_path / "mine.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_medmnist(path)
    assert str(path) in str(info.value)


def test_labels_beyond_a_known_data_sets_classes_are_rejected(tmp_path):
    arrays = good_arrays()
    arrays["train_labels"][0] = 7  # breastmnist has 2 classes
    with pytest.raises(DataError, match="label 7 but the data set has 2 classes"):
        load_medmnist(write_npz(tmp_path / "breastmnist.npz", **arrays))


def test_chestmnist_is_refused_as_multi_label(tmp_path):
    arrays = good_arrays()
    with pytest.raises(DataError, match="multi-label"):
        load_medmnist(write_npz(tmp_path / "chestmnist.npz", **arrays))


def test_not_an_npz_and_pickled_payloads_are_refused(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not an .npz file"):
        load_medmnist(text)
    evil = tmp_path / "evil.npz"
    np.savez(evil, train_images=np.array([{"a": 1}], dtype=object), train_labels=np.zeros(1),
             test_images=np.zeros((1, 28, 28)), test_labels=np.zeros(1))
    with pytest.raises(DataError, match="pickled"):
        load_medmnist(evil)


def test_missing_val_split_is_carved_stratified_from_train(tmp_path):
    arrays = good_arrays(n=120, classes=4)
    del arrays["val_images"], arrays["val_labels"]
    ds = load_medmnist(write_npz(tmp_path / "noval.npz", **arrays))
    assert len(ds.train) + len(ds.val) == 120 and len(ds.val) == 12  # 3 of each 30-image class
    assert np.bincount(ds.val.labels).tolist() == [3, 3, 3, 3]
    assert "carved" in ds.report.notes[0]
    again = load_medmnist(tmp_path / "noval.npz")
    assert np.array_equal(again.val.labels, ds.val.labels) and np.array_equal(again.val.images, ds.val.images)


def test_unknown_file_gets_numbered_class_names_and_uploads_load_in_memory(tmp_path):
    arrays = good_arrays(classes=3)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    ds = load_medmnist(buffer.getvalue(), name="upload.npz")
    assert ds.class_names == ["class 0", "class 1", "class 2"]
    assert ds.provenance["files"][0]["upload"] is True
    assert not list(tmp_path.iterdir())


def test_demo_is_digits_with_stratified_splits():
    ds = load_demo()
    assert ds.n_classes == 10 and ds.image_shape == (8, 8, 1)
    counts = {s: np.array(c) for s, c in ds.counts().items()}
    per_class = counts["train"] + counts["val"] + counts["test"]
    assert per_class.sum() == 1797 and per_class.min() > 170
    # stratified: every class gives test 25 % and val 10 % of the rest, to rounding (a random split is off by ~5 per class)
    for split, share in (("test", 0.25), ("val", 0.75 * 0.1), ("train", 0.75 * 0.9)):
        assert np.abs(counts[split] - share * per_class).max() <= 1.1, split
        proportions = counts[split] / counts[split].sum()
        assert np.abs(proportions - per_class / per_class.sum()).max() < 0.01, split


def test_the_medical_demo_is_bundled_real_medmnist_under_2_mb():
    from rerelrp.data import MEDICAL_DEMO_SOURCE, expand_sources, medical_demo_paths

    paths = medical_demo_paths()
    assert sum(p.stat().st_size for p in paths) <= 2_000_000  # the repository's limit (data/README.md)
    assert expand_sources(["demo", MEDICAL_DEMO_SOURCE]) == ["demo", *map(str, paths)]
    datasets = [load_dataset(str(p)) for p in paths]
    assert [ds.name for ds in datasets] == ["pneumoniamnist", "breastmnist", "bloodmnist"]
    assert [ds.n_classes for ds in datasets] == [2, 2, 8] and datasets[2].image_shape == (28, 28, 3)
    assert datasets[0].class_names == ["normal", "pneumonia"]
    assert [len(ds.train) for ds in datasets] == [400, 300, 384]
    assert np.bincount(datasets[2].test.labels).tolist() == [12] * 8  # stratified: 12 test images per cell type
    tasks = build_sequence(datasets)
    assert [t.name for t in tasks] == ["pneumoniamnist", "breastmnist", "bloodmnist"]
    with pytest.raises(DataError, match="three data sets"):
        load_dataset(MEDICAL_DEMO_SOURCE)


def test_class_groups_give_the_remainder_to_the_first_tasks():
    assert class_groups(5, 2) == [[0, 1, 2], [3, 4]]
    assert class_groups(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(ConfigError):
        class_groups(3, 4)


def test_split_into_tasks_relabels_locally_and_keeps_every_image():
    ds = load_demo()
    tasks = split_into_tasks(ds, groups=[[3, 1], [0, 2]])
    assert tasks[0].class_names == ["3", "1"]
    assert np.array_equal(tasks[0].train.labels, np.where(ds.train.labels[np.isin(ds.train.labels, [3, 1])] == 3, 0, 1))
    with pytest.raises(ConfigError, match="repeat"):
        split_into_tasks(ds, groups=[[0, 1], [1, 2]])


def test_cross_domain_sequence_is_one_task_per_data_set_and_mixes_gray_and_rgb():
    pneu = load_medmnist(shared_file("medmnist", "pneumoniamnist.npz"))
    retina = load_medmnist(shared_file("medmnist", "retinamnist.npz"))
    tasks = build_sequence([pneu, retina])
    assert [t.name for t in tasks] == ["pneumoniamnist", "retinamnist"]
    assert [t.n_classes for t in tasks] == [2, 5]
    with pytest.raises(ConfigError, match="one each"):
        build_sequence([pneu, retina], n_tasks=3)


def test_stratified_holdout_keeps_singleton_classes_in_train():
    labels = np.array([0, 0, 0, 0, 1])
    keep, hold = stratified_holdout(labels, 0.5, seed=0)
    assert 4 in keep and len(hold) == 2


def test_reloading_a_medmnist_file_gives_the_same_data_set():
    import json

    from rerelrp.data import reload_dataset

    ds = load_medmnist(shared_file("medmnist", "breastmnist.npz"), seed=3)
    spec = json.loads(json.dumps(ds.provenance["reload"]))  # as a workspace stores it
    assert spec == {"loader": "medmnist", "source": str(shared_file("medmnist", "breastmnist.npz")), "seed": 3}
    again = reload_dataset(spec)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(again.split(name).images, ds.split(name).images)
        np.testing.assert_array_equal(again.split(name).labels, ds.split(name).labels)
    assert again.class_names == ds.class_names and again.provenance == ds.provenance


def test_medmnist_and_the_digits_demo_record_their_splits(tmp_path):
    from rerelrp.data.tasks import task_from_classes

    ds = load_medmnist(shared_file("medmnist", "breastmnist.npz"))
    record = ds.provenance["split"]
    assert record["unit"] == "official" and record["warnings"] == [] and ds.report.warnings == []
    assert record["groups"] == {"train": 546, "val": 78, "test": 156}  # the published split, counted in images
    assert {c: e["groups"] for c, e in record["per_class"].items()} == {
        name: {s: n[k] for s, n in ds.counts().items()} for k, name in enumerate(ds.class_names)}
    assert "MedMNIST's official train/val/test splits are used" in ds.report.notes
    assert ds.train.groups is None
    task = task_from_classes(ds, [1])
    assert task.describe()["split"]["groups"] == {s: n[1] for s, n in ds.counts().items()} and task.warnings == []
    assert task.train.groups is None

    arrays = good_arrays(n=40)
    del arrays["val_images"], arrays["val_labels"]
    carved = load_medmnist(write_npz(tmp_path / "noval.npz", **arrays))
    assert "the file's own train/test splits are used" in carved.report.notes

    digits = load_demo()
    assert digits.provenance["split"]["unit"] == "file"  # a seeded split of single images; none is official
    assert digits.provenance["split"]["groups"] == {s: len(digits.split(s)) for s in ("train", "val", "test")}
