"""`rerelrp run` end to end: the metrics other tools read, run.json, and clean failures."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from rerelrp.cli import main

FAST_ARGS = ["--epochs", "1", "--min-steps", "0", "--prune-samples", "64",
             "--relevance-samples", "64", "--recognizer-samples", "64", "--trees", "20", "--quiet"]


def test_run_on_the_demo_writes_the_documented_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", "demo", "--tasks", "2", "--out", str(out), *FAST_ARGS]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [t["classes"] for t in metrics["tasks"]] == [["0", "1", "2", "3", "4"], ["5", "6", "7", "8", "9"]]
    assert [len(r) for r in metrics["acc_tag"]] == [1, 2] and [len(r) for r in metrics["acc_taw"]] == [1, 2]
    assert len(metrics["task_recognition"]) == 2 and metrics["task_recognition"][0] == 100.0
    assert set(metrics["final"]) == {"tag", "taw", "forgetting_tag", "forgetting_taw", "tag_ci95", "taw_ci95"}
    assert metrics["final"]["forgetting_taw"] == 0.0
    assert set(metrics["seconds"][1]) == {"train", "relevance", "prune", "recognizer", "eval"}
    assert {row["layer"] for row in metrics["capacity"][1]} >= {"conv1", "fc1"}
    assert all(b > 0 for b in metrics["stored_bytes"])
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["epochs"] == 1 and record["config"]["n_trees"] == 20 and record["versions"]["torch"]
    assert "final: TAg" in capsys.readouterr().out


def test_run_json_holds_the_sha256_of_every_input_file(tmp_path):
    breast = shared_file("medmnist", "breastmnist.npz")
    out = tmp_path / "run"
    assert main(["run", "--data", str(breast), "--out", str(out), *FAST_ARGS]) == 0
    files = json.loads((out / "run.json").read_text())["data"]["files"]
    import hashlib

    assert files[0]["sha256"] == hashlib.sha256(breast.read_bytes()).hexdigest()


def test_reference_bounds_run_through_the_same_metrics(tmp_path):
    """Fine-tuning forgets the first task; joint training, which sees it again, keeps it."""
    final = {}
    for method in ("finetune", "joint"):
        out = tmp_path / method
        assert main(["run", "--data", "demo", "--tasks", "2", "--method", method, "--out", str(out), *FAST_ARGS,
                     "--epochs", "3"]) == 0
        final[method] = json.loads((out / "metrics.json").read_text())
    tag_ft, tag_joint = final["finetune"]["acc_tag"], final["joint"]["acc_tag"]
    assert tag_ft[0][0] > 60 and tag_joint[0][0] > 60  # both learned task 0
    assert tag_ft[1][0] < 10  # after task 1, fine-tuning calls every task-0 image a task-1 class
    assert tag_joint[1][0] > tag_ft[1][0] + 50
    assert final["finetune"]["final"]["forgetting_tag"] > 50 and final["joint"]["stored_bytes"][1] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.npz"], "missing.npz: file not found"),
        (["--data", "bloodmnist"], "--download"),
        (["--data", "demo", "--tasks", "11"], "cannot split 10 classes into 11 tasks"),
        (["--data", "demo", "--tasks", "0"], "cannot split 10 classes into 0 tasks"),
        (["--data", "demo", "--device", "tpu"], "device must be one of auto, cpu, cuda, mps, not 'tpu'"),
        (["--data", "demo", "--net", "vgg19"], "net must be one of vgg, vgg11, lenet, resnet18, not 'vgg19'"),
        (["--data", "demo", "--acc-drop", "-3"], "acc_drop"),
        (["--data", "demo", "--seed", "-1"], "seed must be in [0, 4294967295], not -1"),
        (["--data", "demo", "--min-free", "1"], "min_free must be in [0, 1), not 1.0"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(tmp_path, capsys, args, message):
    assert main(["run", *args, "--out", str(tmp_path / "o"), "--data-root", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_run_on_a_real_dicom_folder_ct_vs_mr_reports_every_skipped_file(tmp_path):
    """A 2-class task from real scanner files: CT (shared + pydicom's JPEG 2000 CTs) against MR."""
    import shutil

    from pydicom.data import get_testdata_file

    data = tmp_path / "ct_vs_mr"
    (data / "ct").mkdir(parents=True)
    (data / "mr").mkdir()
    for src in [shared_file("dicom", "single", "pydicom_CT_small.dcm"), shared_file("dicom", "single", "dwv_dicompyler-ct.0.dcm"),
                get_testdata_file("693_J2KI.dcm"), get_testdata_file("J2K_pixelrep_mismatch.dcm")]:
        shutil.copy(src, data / "ct" / Path(src).name)
    for src in sorted(shared_file("dicom", "mr_brain_series").iterdir()) + sorted(shared_file("dicom", "mr_epi_pair").iterdir()):
        shutil.copy(src, data / "mr" / src.name)  # the EPI folder's README-Series.txt comes along: not DICOM
    shutil.copy(get_testdata_file("rtplan.dcm"), data / "mr" / "rtplan.dcm")  # a DICOM object without an image
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), *FAST_ARGS]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == [{"name": "ct_vs_mr t0", "classes": ["ct", "mr"]}]
    confusion, n = np.array(metrics["confusion"]["taw"][0]), metrics["n_test"][0]
    assert len(metrics["acc_taw"]) == 1 and confusion.sum() == n  # the figure is what the test images give
    assert metrics["final"]["taw"] == pytest.approx(100.0 * np.trace(confusion) / n)
    lo, hi = metrics["final"]["taw_ci95"]
    assert lo <= metrics["final"]["taw"] <= hi and hi - lo > 0  # a few test images: never a bare point
    split = json.loads((out / "run.json").read_text())["data"]["tasks"][0]["split"]
    assert split["unit"] in ("patient", "study", "series", "file", "mixed") and set(split["groups"]) == {"train", "val", "test"}
    record = json.loads((out / "run.json").read_text())
    skipped = {s["path"]: s["reason"] for s in record["load_reports"][0]["skipped"]}
    assert set(skipped) == {"mr/README-Series.txt", "mr/rtplan.dcm"}
    assert "not a DICOM file" in skipped["mr/README-Series.txt"] and "not an image" in skipped["mr/rtplan.dcm"]
    files = {f["path"]: f for f in record["data"]["files"]}
    assert len(files) == 12 and files["ct/693_J2KI.dcm"]["modality"] == "CT"
    assert "PatientName" in record["load_reports"][0]["dropped_identifiers"]
    assert "PatientName" not in json.dumps(record["data"]) and "PatientID" not in json.dumps(record["data"])


def test_a_task_that_learned_nothing_is_warned_about_loudly(tmp_path, capsys):
    """An untrained network (a learning rate of 1e-6 for one epoch) must not pass silently."""
    out = tmp_path / "run"
    args = ["run", "--data", "demo", "--tasks", "2", "--out", str(out), *FAST_ARGS, "--lr", "1e-6"]
    assert main(args) == 0
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert len(warnings) == 2 and all(any("learned nothing" in w for w in per_task) for per_task in warnings)
    assert "WARNING task 0:" in capsys.readouterr().err  # printed although --quiet


def test_explicit_options_are_the_ones_the_command_line_gave():
    from rerelrp.cli.parser import explicit_options

    argv = ["run", "--data", "a.npz", "--data", "b.npz", "--epochs", "3", "--out", "x", "--quiet"]
    assert explicit_options(argv, "run") == {"data", "epochs", "out", "quiet"}
    assert explicit_options(["run", "--data", "demo", "--out", "x"], "run") == {"data", "out"}
