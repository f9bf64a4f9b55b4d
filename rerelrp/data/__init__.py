"""Loading task data: MedMNIST npz files, DICOM folders or zips, and the bundled digits demo."""
from pathlib import Path

from rerelrp.data.core import ImageDataset, LoadReport, SkippedFile, Split
from rerelrp.data.demo import load_demo
from rerelrp.data.medmnist_npz import load_medmnist
from rerelrp.data.tasks import Task, build_sequence, split_into_tasks, tasks_per_dataset

__all__ = [
    "ImageDataset",
    "LoadReport",
    "SkippedFile",
    "Split",
    "Task",
    "build_sequence",
    "load_dataset",
    "load_demo",
    "load_medmnist",
    "split_into_tasks",
    "tasks_per_dataset",
]


def load_dataset(source, root="./data", download=False, seed=0):
    """One entry for every kind of source: 'demo', a MedMNIST path or flag, a DICOM folder or zip."""
    source = str(source)
    if source == "demo":
        return load_demo(seed=seed)
    path = Path(source)
    if path.is_dir() or path.suffix.lower() == ".zip":
        from rerelrp.data.dicom import load_dicom

        return load_dicom(path, seed=seed)
    return load_medmnist(source, root=root, download=download, seed=seed)
