"""Shared fixtures: where the real test data lives, and a learner configuration fast enough for CI."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# small enough that a 2-task demo run takes seconds on 2 CPU cores
FAST = dict(epochs=1, min_steps=0, prune_samples=64, relevance_samples=64, recognizer_samples=64, n_trees=20, seed=0)


def _devices():
    """cpu, and cuda / mps where present (skipped with the reason elsewhere): tests that promise the
    same behaviour on every device take this as a parameter."""
    mps = getattr(torch.backends, "mps", None)
    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
        pytest.param("mps", marks=pytest.mark.skipif(not (mps and mps.is_available()), reason="no Apple MPS here")),
    ]


DEVICES = _devices()


def shared_file(*parts):
    """A real file from ../shared/data, or a skip saying it is missing (never a fabricated stand-in)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not present: {path} (see ../shared/data/SOURCES.md)")
    return path


@pytest.fixture(scope="session")
def demo_tasks():
    from rerelrp.data import build_sequence, load_dataset

    return build_sequence([load_dataset("demo")])
