"""The modality rule: an image whose DICOM header names a modality no learned task has is out of scope."""
import csv

import numpy as np
import pytest

from conftest import shared_file
from rerelrp.data.images import encode_png
from rerelrp.method.base import Prediction
from rerelrp.method.modality import (
    GROUPS,
    apply_modality,
    input_modality,
    medmnist_group,
    read_image_with_modality,
    scope_texts,
    task_modalities,
)

XRAY = {"name": "pneumoniamnist", "classes": ["normal", "pneumonia"],
        "provenance": {"kind": "medmnist", "flag": "pneumoniamnist", "files": [{"path": "pneumoniamnist.npz"}]}}
ULTRASOUND = {"name": "breastmnist", "classes": ["malignant", "normal, benign"],
              "provenance": {"kind": "medmnist", "flag": "breastmnist", "files": [{"path": "breastmnist.npz"}]}}
DIGITS = {"name": "digits t0", "classes": ["0", "1"], "provenance": {"kind": "demo", "source": "sklearn"}}
MR_REASON = "modality MR: no learned task is MR (tasks: CR/DX/RG, US)"


def dicom_task(rows, classes):
    return {"name": "scans", "classes": classes, "provenance": {"kind": "dicom", "files": rows}}


@pytest.mark.parametrize("flag, group", [
    ("pneumoniamnist", "X-ray"), ("chestmnist", "X-ray"), ("breastmnist", "ultrasound"),
    ("bloodmnist", "microscopy"), ("pathmnist", "microscopy"), ("tissuemnist", "microscopy"),
    ("retinamnist", "fundus photography"), ("dermamnist", "dermatoscopy"),
    ("octmnist", "OCT"),  # optical coherence tomography, not computed tomography
    ("organamnist", "CT"), ("organsmnist", "CT"), ("notamnist", None), (None, None),
])
def test_medmnist_flags_map_to_their_modality_from_medmnist_own_description(flag, group):
    assert medmnist_group(flag) == group


def test_dicom_codes_are_canonical_and_codes_that_say_nothing_are_unknown():
    assert input_modality(" mr ") == "MR" and input_modality("CR") == "CR" and input_modality("US") == "US"
    for code in ("SC", "OT", "", None, "XYZ"):  # secondary capture, other: what the image shows is not said
        assert input_modality(code) is None


def test_a_task_modality_comes_from_its_saved_record():
    assert task_modalities(XRAY) == set(GROUPS["X-ray"]) == {"CR", "DX", "RG"}
    assert task_modalities(ULTRASOUND) == {"US"}
    rows = [{"modality": "CT", "class": "ct"}, {"modality": "MR", "class": "mr"}]
    assert task_modalities(dicom_task(rows, ["ct", "mr"])) == {"CT", "MR"}
    assert task_modalities(dicom_task(rows, ["mr"])) == {"MR"}  # a task of some classes of a data set
    assert task_modalities(dicom_task([{"modality": "DX", "class": "a"}], ["a"])) == {"CR", "DX", "RG"}
    # no rule where the modality cannot be told: a file coded OT, the digits demo, an unnamed .npz, nothing saved
    assert task_modalities(dicom_task(rows + [{"modality": "OT", "class": "mr"}], ["ct", "mr"])) is None
    assert task_modalities(DIGITS) is None
    assert task_modalities({"provenance": {"kind": "medmnist", "flag": None}}) is None
    assert task_modalities({}) is None


def prediction(n, scores):
    scores = np.asarray(scores, float)
    return Prediction(np.zeros(n, int), np.zeros(n, int), np.zeros(n, int), np.full((n, 2), 0.5), np.zeros((n, 2), int),
                      ["x"] * n, scores, scores > 1)


def test_an_mr_image_shown_to_xray_and_ultrasound_tasks_is_out_of_scope_whatever_its_score():
    pred = prediction(5, [0.5, 0.5, 0.5, 0.5, 1.5])
    apply_modality(pred, ["MR", "CR", None, "SC", None], [XRAY, ULTRASOUND])
    assert list(pred.out_of_scope) == [True, False, False, False, True]
    assert pred.scope_reason == [MR_REASON, None, None, None, None]  # CR: an X-ray task claims it; None, SC: no rule
    assert scope_texts(pred) == [MR_REASON, "", "", "", "scope score 1.50 > 1"]
    assert list(pred.scope_score) == [0.5, 0.5, 0.5, 0.5, 1.5]  # the score itself is left as it was


def test_no_rule_when_a_learned_task_has_an_unknown_modality_or_the_lengths_differ():
    pred = apply_modality(prediction(2, [0.5, 0.5]), ["MR", "CT"], [XRAY, DIGITS])
    assert not pred.out_of_scope.any() and pred.scope_reason == [None, None]
    with pytest.raises(ValueError, match="1 modalities for 2 images"):
        apply_modality(prediction(2, [0.5, 0.5]), ["MR"], [XRAY])


def test_real_files_the_cr_chest_is_an_xray_and_the_brain_series_is_mr():
    chest = shared_file("dicom", "single", "dwv_gdcm-CR-MONO1-10-chest.dcm")
    image, code = read_image_with_modality(chest.read_bytes(), chest.name, dicom_size=28)
    assert image.shape == (28, 28, 1) and code == "CR" and input_modality(code) in GROUPS["X-ray"]
    assert apply_modality(prediction(1, [0.5]), [code], [XRAY, ULTRASOUND]).scope_reason == [None]
    brain = sorted(p for p in shared_file("dicom", "mr_brain_series").iterdir() if p.is_file())
    assert len(brain) == 6
    assert {read_image_with_modality(p.read_bytes(), p.name, 28)[1] for p in brain} == {"MR"}
    png = encode_png(np.full((8, 8, 1), 7, np.uint8))
    assert read_image_with_modality(png, "x.png")[1] is None  # a PNG says nothing about its modality


def test_a_real_dicom_task_records_its_modalities():
    from rerelrp.data import build_sequence
    from rerelrp.data.dicom import load_dicom

    task, = build_sequence([load_dicom(shared_file("dicom", "ct_vs_mr"), size=16)])
    assert task_modalities(task.describe()) == {"CT", "MR"}


class StubLearner:
    """What ``predict_files`` reads of a learner: X-ray and ultrasound tasks, every image scored in scope."""

    tasks_ = [XRAY, ULTRASOUND]
    input_size_ = 28

    def predict(self, images):
        return prediction(len(images), np.full(len(images), 0.5))


def test_rerelrp_predict_flags_an_mr_file_and_writes_the_reason(tmp_path):
    from rerelrp.run.batch_predict import collect, predict_files

    files = [shared_file("dicom", "mr_brain_series"), shared_file("dicom", "single", "dwv_gdcm-CR-MONO1-10-chest.dcm")]
    items, skipped = collect(files, dicom_size=28)
    assert not skipped and [item.modality for item in items] == ["MR"] * 6 + ["CR"]
    rows = predict_files(StubLearner(), items, tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["out_of_scope"] for r in written] == ["True"] * 6 + ["False"]
    assert [r["scope_reason"] for r in written] == [MR_REASON] * 6 + [""]
    assert rows[0]["scope_reason"] == MR_REASON
