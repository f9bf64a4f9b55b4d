"""Does "none of the learned tasks" hold on real scans, not only on MedMNIST files? (docs/scope-real.md)

    OMP_NUM_THREADS=1 python bench/scope_real.py --workspace /tmp/ws_pb [--json bench/out/scope_real.json]

The model is pneumoniamnist -> breastmnist at default settings (trained into ``--workspace`` by
``rerelrp run`` when it is not there yet, reused otherwise). Every image goes the way ``rerelrp predict``
takes it: files through :func:`rerelrp.run.batch_predict.collect` (DICOM through the project's reader, with
its Modality), arrays through ``stack_images``, then ``learner.predict`` and the modality rule. Groups:
every DICOM image under the shared data's dicom/ (by folder and Modality), every image among the
DICOM files pydicom ships (held out: not looked at while the rule was chosen), scikit-learn's two sample
photographs, blank and noise images, BloodMNIST and RetinaMNIST test splits (none of the tasks) and
the model's own test images (pneumonia, breast: in scope). Nothing here sets a threshold.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rerelrp.cli import main as cli_main
from rerelrp.data import load_dataset
from rerelrp.data.images import stack_images
from rerelrp.method.modality import apply_modality
from rerelrp.run.batch_predict import BATCH, Item, collect
from rerelrp.store.workspace import is_workspace, load_workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("pneumoniamnist", "breastmnist")


def train(workspace):
    """The model under test, at default settings (a few minutes on one CPU thread)."""
    args = ["run", *[a for flag in TASKS for a in ("--data", flag)], "--data-root", str(SHARED / "medmnist"),
            "--workspace", str(workspace), "--out", str(Path(workspace).with_name(Path(workspace).name + "_run")),
            "--quiet"]
    if cli_main(args) != 0:
        sys.exit("training failed")


def groups(size):
    """``{name: (items, in scope?)}``: every image this study scores."""
    out = {}
    dicom = SHARED / "dicom"
    items, skipped = collect([dicom], dicom_size=size)
    for skip in skipped:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    for item in items:
        folder = Path(item.source).parent.relative_to(dicom)
        out.setdefault(f"DICOM {item.modality or '?'}: {folder}", ([], False))[0].append(item)
    import pydicom.data

    # held out: the real files pydicom ships (NM, US, CT, MR, secondary captures) were not looked at
    # while the scope rule was chosen on the groups above
    shipped = Path(pydicom.data.__file__).parent / "test_files"
    items, _ = collect([shipped], dicom_size=size)
    for item in items:
        out.setdefault(f"held out: pydicom's files, {item.modality or 'no modality'}", ([], False))[0].append(item)
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    out["photographs (sklearn china, flower)"] = (
        [Item(Path(name).name, 0, image) for name, image in zip(photos.filenames, photos.images)], False)
    out["blank (0, 128, 255; gray)"] = ([Item(f"blank {v}", 0, np.full((64, 64, 1), v, np.uint8)) for v in (0, 128, 255)],
                                        False)
    rng = np.random.default_rng(0)
    out["uniform noise (8 gray, 8 RGB)"] = (
        [Item(f"noise {i}", 0, rng.integers(0, 256, (64, 64, 1 if i < 8 else 3), dtype=np.uint8)) for i in range(16)], False)
    for flag, inside in (("bloodmnist", False), ("retinamnist", False), ("pneumoniamnist", True), ("breastmnist", True)):
        images = load_dataset(SHARED / "medmnist" / f"{flag}.npz").test.images
        out[f"{flag} test"] = ([Item(flag, i, image) for i, image in enumerate(images)], inside)
    return out


def score(learner, items):
    """Scope scores, flags of the score alone and of score + modality rule, and the recognised tasks."""
    parts = []
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        prediction = learner.predict(stack_images([item.image for item in batch], learner.input_size_))
        by_score = prediction.out_of_scope  # apply_modality replaces the array, never changes it
        apply_modality(prediction, [item.modality for item in batch], learner.tasks_)
        parts.append((prediction.scope_score, by_score, prediction.out_of_scope, prediction.task))
    return [np.concatenate(p) for p in zip(*parts)]


def machine():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {torch.get_num_threads()} torch thread(s), {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/ws_pb"))
    parser.add_argument("--json", type=Path, default=None, help="also write the per-group figures here")
    args = parser.parse_args(argv)
    if not is_workspace(args.workspace):
        train(args.workspace)
    learner, _, _ = load_workspace(args.workspace, device="cpu")
    names = [t["name"] for t in learner.tasks_]
    table = []
    for name, (items, inside) in groups(learner.input_size_).items():
        scores, by_score, flagged, task = score(learner, items)
        table.append({"group": name, "in_scope": inside, "n": len(items),
                      "flagged_score": float(by_score.mean()), "flagged": float(flagged.mean()),
                      "median_score": float(np.median(scores)), "min_score": float(scores.min()),
                      "answered": {names[t]: int((task == t).sum()) for t in range(len(names))}})
    print(f"machine: {machine()}; workspace {args.workspace}; scope_rate {learner.scope_rate}")
    print("| group | in scope | n | flagged by the score | flagged, score + modality | median score | min score |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['group']} | {'yes' if row['in_scope'] else 'no'} | {row['n']} | {row['flagged_score']:.1%} | "
              f"{row['flagged']:.1%} | {row['median_score']:.2f} | {row['min_score']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "groups": table}, indent=1))


if __name__ == "__main__":
    main()
