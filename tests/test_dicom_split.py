"""Splitting DICOM data by patient: the automatic unit per class, its warnings, group codes, privacy.

The files are synthetic DICOM objects written with pydicom in ``tmp_path`` (8x8 pixels; only the
headers matter here), plus the real ``ct_vs_mr`` folder of ../shared, where each class is one patient.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerelrp.data import load_dataset, reload_dataset
from rerelrp.data.dicom import load_dicom
from rerelrp.data.tasks import split_into_tasks, task_from_classes
from rerelrp.errors import DataError

CT_VS_MR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom" / "ct_vs_mr"
SPLITS = ("train", "val", "test")


def write_class(root, name, patients, studies=2, series=1, files=2, with_patient_id=True):
    """``patients`` x ``studies`` x ``series`` x ``files`` DICOM files of class ``name``.

    Returns {path relative to root: (patient ID, study UID, series UID)}: the identifiers written,
    which the tests check never come out of the loader.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    written = {}
    rng = np.random.default_rng(len(name) * 1000 + patients)
    folder = root / name
    folder.mkdir(parents=True)
    for p in range(patients):
        patient = f"PID-{name}-{p:04d}-SECRET"
        for s in range(studies):
            study = generate_uid()
            for r in range(series):
                series_uid = generate_uid()
                for f in range(files):
                    ds = Dataset()
                    ds.file_meta = FileMetaDataset()
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
                    ds.Modality = "MR"
                    if with_patient_id:
                        ds.PatientID = patient
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
                    ds.Rows = ds.Columns = 8
                    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
                    ds.PixelData = rng.integers(0, 4096, (8, 8), dtype=np.uint16).tobytes()
                    rel = f"{name}/p{p}s{s}r{r}f{f}.dcm"
                    ds.save_as(root / rel, enforce_file_format=True)
                    written[rel] = (patient if with_patient_id else None, study, series_uid)
    return written


def splits_of(ds, written, level):
    """{patient / study / series identifier: the set of splits its files went to}."""
    index = {"patient": 0, "study": 1, "series": 2}[level]
    out = {}
    for f in ds.provenance["files"]:
        out.setdefault(written[f["path"]][index], set()).add(f["split"])
    return out


def all_codes(ds):
    return {s: ds.split(s).groups for s in SPLITS}


def test_auto_splits_by_patient_and_no_patient_is_in_two_splits(tmp_path):
    written = write_class(tmp_path, "a", 10) | write_class(tmp_path, "b", 10)
    ds = load_dicom(tmp_path, size=8, seed=0)
    assert ds.provenance["settings"]["group_by"] == "auto"
    assert all(len(s) == 1 for s in splits_of(ds, written, "patient").values())
    record = ds.provenance["split"]
    assert record["unit"] == "patient" and record["warnings"] == [] and ds.report.warnings == []
    for name in ("a", "b"):
        entry = record["per_class"][name]
        assert entry["unit"] == "patient" and entry["patients"] == 10
        assert sum(entry["groups"].values()) == 10 and entry["groups"]["val"] >= 1 and entry["groups"]["test"] >= 1
    assert record["groups"] == {s: sum(record["per_class"][c]["groups"][s] for c in "ab") for s in SPLITS}
    # every image carries its patient's code: the 4 images of a patient share one, no code is in two splits
    codes = all_codes(ds)
    for s in SPLITS:
        assert codes[s].dtype == np.int64 and len(codes[s]) == len(ds.split(s))
        assert len(set(codes[s])) == record["groups"][s]
        assert np.all(np.bincount(codes[s])[np.unique(codes[s])] == 4)
    assert not set(codes["train"]) & set(codes["test"]) and not set(codes["val"]) & set(codes["test"])
    assert sorted(np.concatenate(list(codes.values())).tolist()) == sorted(list(range(20)) * 4)  # 0..G-1
    assert any("a by patient (10 patients)" in n for n in ds.report.notes)
    by_file = load_dicom(tmp_path, size=8, seed=0, group_by="file")  # the check above can fail: files do mix
    assert any(len(s) > 1 for s in splits_of(by_file, written, "patient").values())


def test_a_class_with_two_patients_falls_back_to_study_with_a_warning(tmp_path):
    written = write_class(tmp_path, "many", 10) | write_class(tmp_path, "few", 2)  # few: 2 patients, 4 studies
    ds = load_dicom(tmp_path, size=8, seed=1)
    record = ds.provenance["split"]
    assert record["unit"] == "mixed"
    assert record["per_class"]["few"]["unit"] == "study" and record["per_class"]["few"]["patients"] == 2
    assert record["per_class"]["many"]["unit"] == "patient"
    assert ds.report.warnings == record["warnings"] == [
        "class 'few': 2 patients (fewer than 3): split by study instead; test figures then measure new studies of "
        "2 patients that may also have images in training, not new patients"
    ]
    assert record["per_class"]["few"]["warnings"] == ds.report.warnings and record["per_class"]["many"]["warnings"] == []
    assert all(len(s) == 1 for s in splits_of(ds, written, "study").values())
    few = [f for f in ds.provenance["files"] if f["class"] == "few"]
    assert {f["split"] for f in few} == set(SPLITS)


def test_a_class_without_patient_id_is_split_by_study(tmp_path):
    written = write_class(tmp_path, "anon", 3, studies=2, with_patient_id=False) | write_class(tmp_path, "named", 5)
    ds = load_dicom(tmp_path, size=8)
    entry = ds.provenance["split"]["per_class"]["anon"]
    assert entry["unit"] == "study" and entry["patients"] is None and sum(entry["groups"].values()) == 6
    assert ds.report.warnings == []
    assert all(len(s) == 1 for s in splits_of(ds, written, "study").values())
    assert any("anon by study (6 studies; no PatientID)" in n for n in ds.report.notes)


@pytest.mark.parametrize(("studies", "files", "sentence"), [
    (1, 6, "test figures then measure other images of the same scan of the same patient, not new patients"),
    (2, 3, "test figures then measure new images of the same patient, not new patients"),
])
def test_a_single_patient_class_is_split_by_file_and_says_so(tmp_path, studies, files, sentence):
    write_class(tmp_path, "one", 1, studies=studies, files=files)
    write_class(tmp_path, "other", 5)
    ds = load_dicom(tmp_path, size=8)
    entry = ds.provenance["split"]["per_class"]["one"]
    assert entry["unit"] == "file" and entry["patients"] == 1 and sum(entry["groups"].values()) == 6
    assert ds.report.warnings == [f"class 'one': 1 patient (fewer than 3): split by file instead; {sentence}"]
    assert ds.counts()["test"][ds.class_names.index("one")] >= 1  # its images are tested, and the warning says how


def test_an_explicit_unit_is_kept_and_warns_about_small_classes(tmp_path):
    write_class(tmp_path, "few", 2)
    write_class(tmp_path, "many", 10)
    write_class(tmp_path, "one", 1, studies=1, files=6)
    ds = load_dicom(tmp_path, size=8, group_by="patient")
    per_class = ds.provenance["split"]["per_class"]
    assert {c: e["unit"] for c, e in per_class.items()} == {"few": "patient", "many": "patient", "one": "patient"}
    assert ds.report.warnings == [
        "class 'few': 2 patients (fewer than 3): all its images are used for training, so it has no val or test images",
        "class 'one': 1 patient (fewer than 3): all its images are used for training, so it has no val or test images",
    ]
    assert per_class["few"]["groups"] == {"train": 2, "val": 0, "test": 0}
    by_file = load_dicom(tmp_path, size=8, group_by="file")
    assert by_file.provenance["split"]["unit"] == "file"
    assert by_file.report.warnings == ["class 'one': 1 patient, split by file; test figures then measure other images "
                                       "of the same scan of the same patient, not new patients"]
    assert by_file.train.groups is not None  # file codes: each file its own group
    assert len(set(np.concatenate([by_file.split(s).groups for s in SPLITS]))) == 4 * 2 + 4 * 10 + 6


def test_an_explicit_unit_too_coarse_for_every_class_is_an_error_pointing_to_auto(tmp_path):
    write_class(tmp_path, "a", 2)
    write_class(tmp_path, "b", 1)
    with pytest.raises(DataError, match="at least 3 patients") as err:
        load_dicom(tmp_path, size=8, group_by="patient")
    assert "a 2, b 1" in err.value.problem and "group_by='auto'" in err.value.problem
    ds = load_dicom(tmp_path, size=8)  # auto: a by study (4), b by file (4 files)
    assert {c: e["unit"] for c, e in ds.provenance["split"]["per_class"].items()} == {"a": "study", "b": "file"}


def test_the_manifest_split_column_wins_and_a_patient_in_two_splits_is_warned_about(tmp_path):
    written = write_class(tmp_path, "a", 4) | write_class(tmp_path, "b", 4)
    rows, expected = ["path,label,split"], {}
    for rel, (patient, _, _) in written.items():
        p = int(patient.split("-")[2])
        split = "train" if p < 2 else ("val" if p == 2 else "test")
        if rel == "a/p0s1r0f1.dcm":
            split = "test"  # patient 0 of class a on both sides of the line
        rows.append(f"{rel},{rel.split('/')[0]},{split}")
        expected[rel] = split
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    ds = load_dicom(tmp_path, size=8, group_by="patient")
    assert {f["path"]: f["split"] for f in ds.provenance["files"]} == expected
    assert "splits taken from the manifest's split column (group_by is not used)" in ds.report.notes
    record = ds.provenance["split"]
    assert record["unit"] == "manifest" and record["per_class"]["a"]["patients"] == 4
    assert record["per_class"]["a"]["groups"] == {"train": 7, "val": 4, "test": 5}
    assert ds.report.warnings == ["class 'a': the manifest puts 1 of 4 patients in more than one split: test figures "
                                  "then partly measure patients seen in training"]


def test_no_identifier_reaches_provenance_report_or_task_records(tmp_path):
    written = write_class(tmp_path, "a", 10) | write_class(tmp_path, "few", 2) | write_class(tmp_path, "one", 1, files=3)
    secrets = {v for ids in written.values() for v in ids if v}
    assert len(secrets) == 13 + 26 + 26  # patients, studies, series
    ds = load_dicom(tmp_path, size=8)
    tasks = split_into_tasks(ds, groups=[[0], [1, 2]])
    texts = [json.dumps(ds.provenance), json.dumps(ds.report.to_dict()), repr(ds.report)]
    texts += [json.dumps(t.describe()) for t in tasks] + [json.dumps(t.warnings) for t in tasks]
    for text in texts:
        leaked = [s for s in secrets if s in text]
        assert not leaked, leaked[:3]
    assert len(ds.report.warnings) == 2 and "PID" not in " ".join(ds.report.warnings)


def test_group_codes_and_split_records_follow_the_images_into_tasks(tmp_path):
    write_class(tmp_path, "a", 10)
    write_class(tmp_path, "few", 2)
    write_class(tmp_path, "one", 1, studies=1, files=6)
    ds = load_dicom(tmp_path, size=8)
    task = task_from_classes(ds, [2, 1], name="t")  # one, few
    for s in SPLITS:
        kept = np.isin(ds.split(s).labels, [1, 2])
        np.testing.assert_array_equal(task.split(s).groups, ds.split(s).groups[kept])
    described = task.describe()
    split = described["split"]
    assert set(split["per_class"]) == {"one", "few"} and split["unit"] == "mixed"
    per_class = ds.provenance["split"]["per_class"]
    assert split["groups"] == {s: per_class["one"]["groups"][s] + per_class["few"]["groups"][s] for s in SPLITS}
    assert per_class["a"]["warnings"] == [] and len(ds.report.warnings) == 2
    assert task.warnings == split["warnings"] == per_class["one"]["warnings"] + per_class["few"]["warnings"]  # task order
    assert "groups" not in json.dumps({k: v for k, v in described.items() if k not in ("split", "provenance")})
    first = task_from_classes(ds, [0])
    assert first.warnings == [] and first.describe()["split"]["unit"] == "patient"
    sub = task.test.subset(np.array([0]))
    assert sub.groups.tolist() == task.test.groups[:1].tolist()


def test_load_dataset_and_reload_keep_the_unit_old_file_records_reload_by_file(tmp_path):
    write_class(tmp_path, "a", 10)
    write_class(tmp_path, "b", 10)
    auto = load_dataset(str(tmp_path), seed=2)
    by_file = load_dataset(str(tmp_path), seed=2, group_by="file")
    assert auto.provenance["split"]["unit"] == "patient" and by_file.provenance["split"]["unit"] == "file"
    assert [f["split"] for f in auto.provenance["files"]] != [f["split"] for f in by_file.provenance["files"]]
    for ds in (auto, by_file):  # a workspace stores the record as JSON; an old one says "file"
        again = reload_dataset(json.loads(json.dumps(ds.provenance["reload"])))
        assert again.provenance == ds.provenance and again.report.to_dict() == ds.report.to_dict()
        for s in SPLITS:
            np.testing.assert_array_equal(again.split(s).images, ds.split(s).images)
            np.testing.assert_array_equal(again.split(s).groups, ds.split(s).groups)


@pytest.mark.skipif(not CT_VS_MR.is_dir(), reason=f"real DICOM folder not found at {CT_VS_MR} (checkout without ../shared)")
def test_real_ct_vs_mr_warns_that_each_class_is_one_patient():
    ds = load_dicom(CT_VS_MR, size=16)
    record = ds.provenance["split"]
    assert record["unit"] == "file"
    assert {c: (e["unit"], e["patients"]) for c, e in record["per_class"].items()} == {"ct": ("file", 1), "mr": ("file", 1)}
    assert ds.report.warnings == [
        f"class '{c}': 1 patient (fewer than 3): split by file instead; test figures then measure other images of "
        "the same scan of the same patient, not new patients" for c in ("ct", "mr")
    ]
    assert record["groups"] == {"train": 125, "val": 27, "test": 26}  # 28 + 150 files, each its own group


def test_data_page_splits_by_patient_by_default_and_shows_the_warnings(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("RERELRP_APP_KEY", f"test-split-{tmp_path.name}")
    monkeypatch.setenv("RERELRP_WORKSPACES", str(tmp_path / "workspaces"))
    monkeypatch.setenv("RERELRP_APP_DEMO", "digits")
    write_class(tmp_path / "scans", "many", 5)
    write_class(tmp_path / "scans", "one", 1, studies=1, files=6)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(root / "app.py"), default_timeout=180)
        at.run()
        at.segmented_control(key="source").set_value("dicom_folder").run()
        assert at.selectbox(key="dicom_group").value == "auto"
        assert "patient" in at.selectbox(key="dicom_group").help
        assert at.selectbox(key="dicom_window").value == "stored in the file"
        at.selectbox(key="dicom_window").set_value("CT soft tissue (40 / 400)")
        at.text_input(key="dicom_folder").set_value(str(tmp_path / "scans")).run()
        next(b for b in at.button if b.label == "Load folder").click()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        from pages.common import get_state  # the app folder is on sys.path now

        loaded = get_state().datasets["scans"]
        assert loaded.provenance["reload"]["window"] in ((40.0, 400.0), [40.0, 400.0])  # the window chosen is kept
        assert not at.get("progress")  # the reading bar goes once the files are read
        shown = [w.value for w in at.warning]
        assert ("class 'one': 1 patient (fewer than 3): split by file instead; test figures then measure other images "
                "of the same scan of the same patient, not new patients") in shown
        assert not any("PID-" in text for text in shown + [c.value for c in at.caption])
    finally:
        st.cache_resource.clear()
