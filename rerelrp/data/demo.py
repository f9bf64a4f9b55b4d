"""The bundled demos, no download needed.

The medical demo (the app opens on it; ``--data medical-demo``): small stratified subsets of real
MedMNIST files, CC BY 4.0 (data/README.md; made by scripts/make_medical_demo.py): chest X-rays
(PneumoniaMNIST), then breast ultrasound (BreastMNIST), then blood-cell microscopy (BloodMNIST),
one task each. The digits demo (``--data demo``): scikit-learn's handwritten digits, 8x8 scans;
split into 5 tasks of 2 digits it is the sequence of the paper's Figure 1.
"""
from pathlib import Path

import numpy as np

from rerelrp.data.core import ImageDataset, LoadReport, Split, check_dataset, image_split_record, stratified_holdout

BUNDLED = Path(__file__).resolve().with_name("bundled")
MEDICAL_DEMO = ("pneumoniamnist", "breastmnist", "bloodmnist")  # in the order they are learned
MEDICAL_DEMO_SOURCE = "medical-demo"


def medical_demo_paths():
    """The bundled files of the medical demo, in task order."""
    return [BUNDLED / f"{name}.npz" for name in MEDICAL_DEMO]


def expand_sources(sources):
    """``sources`` with ``medical-demo`` replaced by its three bundled files."""
    out = []
    for source in sources:
        out.extend(map(str, medical_demo_paths()) if str(source) == MEDICAL_DEMO_SOURCE else [source])
    return out

TEST_FRACTION = 0.25
VAL_FRACTION = 0.1


def load_demo(seed=0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    rest, test = stratified_holdout(labels, TEST_FRACTION, seed)
    train_in_rest, val_in_rest = stratified_holdout(labels[rest], VAL_FRACTION, seed + 1)
    train, val = rest[train_in_rest], rest[val_in_rest]
    splits = {"train": Split(images[train], labels[train]), "val": Split(images[val], labels[val]),
              "test": Split(images[test], labels[test])}
    class_names = [str(d) for d in range(10)]
    ds = ImageDataset(
        name="digits",
        class_names=class_names,
        **splits,
        # no writer is known per scan and none is official: each image is its own unit, like a file
        provenance={"kind": "demo", "source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)",
                    "split": image_split_record("file", class_names, splits),
                    "reload": {"loader": "demo", "seed": seed}},
        report=LoadReport(source="demo", notes=[f"splits: stratified, seed {seed}"]),
    )
    return check_dataset(ds, "demo")
