"""Make the bundled medical demo from the real MedMNIST files (CC BY 4.0, see data/README.md).

    python scripts/make_medical_demo.py [--source ../shared/data/medmnist]

Writes stratified, seeded subsets of PneumoniaMNIST (chest X-ray), BreastMNIST (breast ultrasound)
and BloodMNIST (blood-cell microscopy), 28x28, to rerelrp/data/bundled/ under their MedMNIST names
(so class names come from MedMNIST's own metadata).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "rerelrp" / "data" / "bundled"
# images per split, for the whole data set (pneumonia, breast) or per class (blood)
SIZES = {
    "pneumoniamnist": {"train": 400, "val": 80, "test": 160},
    "breastmnist": {"train": 300, "val": 60, "test": 120},
    "bloodmnist": {"train": 48, "val": 8, "test": 12},  # per class: 8 classes
}
LIMIT_BYTES = 2_000_000


def stratified(labels, n, rng, per_class=False):
    """Indices of n images (or n per class), classes in their original proportions (or equal), sorted."""
    chosen = []
    classes, counts = np.unique(labels, return_counts=True)
    for c, count in zip(classes, counts):
        take = n if per_class else max(1, round(n * count / len(labels)))
        chosen.extend(rng.choice(np.flatnonzero(labels == c), size=min(take, count), replace=False))
    return np.sort(np.asarray(chosen))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "medmnist")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, sizes in SIZES.items():
        data = np.load(args.source / f"{name}.npz")
        rng = np.random.default_rng(20261201)
        arrays = {}
        for split, n in sizes.items():
            labels = data[f"{split}_labels"].reshape(-1)
            index = stratified(labels, n, rng, per_class=name == "bloodmnist")
            arrays[f"{split}_images"] = data[f"{split}_images"][index]
            arrays[f"{split}_labels"] = data[f"{split}_labels"][index]
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        total += path.stat().st_size
        print(f"{path.relative_to(ROOT)}: " + ", ".join(f"{s} {len(arrays[f'{s}_labels'])}" for s in sizes)
              + f" ({path.stat().st_size / 1e6:.2f} MB)")
    print(f"total {total / 1e6:.2f} MB")
    if total > LIMIT_BYTES:
        raise SystemExit(f"the demo is {total / 1e6:.2f} MB, more than the {LIMIT_BYTES / 1e6:.0f} MB the repository allows")


if __name__ == "__main__":
    main()
