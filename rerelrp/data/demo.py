"""The bundled demo: scikit-learn's handwritten digits (real scans shipped with scikit-learn).

No download, no file: the app starts on it and ``--data demo`` selects it. Split into 5 tasks of
2 digits it is the sequence of the paper's Figure 1.
"""
import numpy as np

from rerelrp.data.core import ImageDataset, LoadReport, Split, check_dataset, stratified_holdout

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
    ds = ImageDataset(
        name="digits",
        class_names=[str(d) for d in range(10)],
        train=Split(images[train], labels[train]),
        val=Split(images[val], labels[val]),
        test=Split(images[test], labels[test]),
        provenance={"kind": "demo", "source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)",
                    "reload": {"loader": "demo", "seed": seed}},
        report=LoadReport(source="demo", notes=[f"splits: stratified, seed {seed}"]),
    )
    return check_dataset(ds, "demo")
