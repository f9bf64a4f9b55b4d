"""Large or memory-mapped image arrays are cut into tasks by index; `rerelrp unpack` makes files mappable."""
import json
import zipfile

import numpy as np
import pytest
from test_cli import FAST_ARGS
from test_data import good_arrays

from conftest import shared_file
from rerelrp.cli import main
from rerelrp.data import build_sequence, load_dataset
from rerelrp.data.core import IndexedRows, is_mapped
from rerelrp.data.medmnist_npz import load_medmnist


def test_an_unpacked_real_file_is_mapped_and_cut_into_the_same_tasks(tmp_path, capsys):
    packed = shared_file("medmnist", "pneumoniamnist.npz")
    copy = tmp_path / "unpacked" / "pneumoniamnist.npz"  # the folder is made
    assert main(["unpack", str(packed), str(copy)]) == 0
    assert "stored uncompressed" in capsys.readouterr().out
    assert {i.compress_type for i in zipfile.ZipFile(copy).infolist()} == {zipfile.ZIP_STORED}
    whole, mapped = load_dataset(str(packed)), load_dataset(str(copy))
    assert not is_mapped(whole.train.images) and is_mapped(mapped.train.images)
    assert mapped.class_names == whole.class_names and mapped.provenance["files"][0]["sha256"] != ""
    for a, b in zip(build_sequence([whole], 1), build_sequence([mapped], 1), strict=True):
        for split in ("train", "val", "test"):
            rows = b.split(split).images
            assert isinstance(rows, IndexedRows) and rows.shape == a.split(split).images.shape
            assert np.array_equal(np.asarray(rows), a.split(split).images)
            assert np.array_equal(b.split(split).labels, a.split(split).labels)


def test_mapped_rows_index_like_the_copy_they_stand_for(tmp_path):
    path = tmp_path / "four.npz"
    np.savez(path, **good_arrays(n=40, classes=4, channels=3))
    ds = load_medmnist(path)
    source = ds.train.images
    rows = build_sequence([ds], 2)[1].train.images  # classes 2 and 3
    index = np.flatnonzero(ds.train.labels >= 2)
    assert isinstance(rows, IndexedRows) and len(rows) == len(index) == 20 and rows.ndim == 4
    assert np.array_equal(rows[3], source[index[3]]) and np.array_equal(rows[2:5], source[index[2:5]])
    assert np.array_equal(rows[[4, 0]], source[index[[4, 0]]])
    assert np.array_equal(np.asarray(rows.rows([1, 2])), source[index[[1, 2]]])
    assert np.asarray(rows, dtype=np.float32).dtype == np.float32


def test_runs_on_mapped_and_indexed_images_give_the_same_metrics_as_on_copies(tmp_path, monkeypatch):
    arrays = good_arrays(n=60, classes=4, channels=3)
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    np.savez(tmp_path / "stored.npz", **arrays)
    results = []
    for name, lazy_bytes in (("packed", 2**26), ("stored", 2**26), ("packed", 0)):  # 0: every split by index
        monkeypatch.setattr("rerelrp.data.core.LAZY_BYTES", lazy_bytes)
        ds = load_medmnist(tmp_path / f"{name}.npz")
        assert isinstance(build_sequence([ds], 2)[0].train.images, IndexedRows) == (name == "stored" or lazy_bytes == 0)
        out = tmp_path / f"out-{name}-{lazy_bytes}"
        assert main(["run", "--data", str(tmp_path / f"{name}.npz"), "--tasks", "2", "--out", str(out), *FAST_ARGS]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        results.append((metrics["acc_taw"], metrics["acc_tag"]))
    assert results[0] == results[1] == results[2]


def test_unpack_refuses_to_overwrite_and_says_what_is_not_an_archive(tmp_path, capsys):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    assert main(["unpack", str(text), str(tmp_path / "out.npz")]) == 2
    assert "not a readable .npz archive" in capsys.readouterr().err and not (tmp_path / "out.npz").exists()
    assert main(["unpack", str(text), str(text)]) == 2
    assert "exists" in capsys.readouterr().err and text.read_text() == "hello"


def test_a_large_compressed_file_gets_a_note_on_unpacking(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, **good_arrays())
    monkeypatch.setattr("rerelrp.data.medmnist_npz.BIG", 100)
    assert any("rerelrp unpack big.npz" in note for note in load_medmnist(path).report.notes)
    np.savez(path, **good_arrays())
    assert not any("unpack" in note for note in load_medmnist(path).report.notes)


@pytest.mark.parametrize("order", ["C", "F"])
def test_mapped_members_keep_their_memory_order(tmp_path, order):
    images = np.asfortranarray(good_arrays()["train_images"]) if order == "F" else good_arrays()["train_images"]
    arrays = good_arrays() | {"train_images": images}
    np.savez(tmp_path / "o.npz", **arrays)
    assert np.array_equal(load_medmnist(tmp_path / "o.npz").train.images[..., 0], good_arrays()["train_images"])
