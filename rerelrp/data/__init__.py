"""Loading task data: MedMNIST npz files, DICOM folders or zips, and the bundled digits demo."""
from pathlib import Path

from rerelrp.data.core import ImageDataset, LoadReport, SkippedFile, Split
from rerelrp.data.demo import MEDICAL_DEMO_SOURCE, expand_sources, load_demo, medical_demo_paths
from rerelrp.data.dicom import load_dicom
from rerelrp.data.medmnist_npz import load_medmnist
from rerelrp.data.tasks import Task, build_sequence, split_into_tasks, task_from_classes, tasks_per_dataset
from rerelrp.errors import DataError

__all__ = [
    "MEDICAL_DEMO_SOURCE",
    "ImageDataset",
    "LoadReport",
    "SkippedFile",
    "Split",
    "Task",
    "build_sequence",
    "expand_sources",
    "load_dataset",
    "load_demo",
    "load_medmnist",
    "medical_demo_paths",
    "reload_dataset",
    "reload_tasks",
    "split_into_tasks",
    "tasks_per_dataset",
]


def load_dataset(source, root="./data", download=False, seed=0, group_by="auto"):
    """One entry for every kind of source: 'demo', a MedMNIST path or flag, a DICOM folder or zip
    (``medical-demo`` is three data sets: see :func:`expand_sources`). ``group_by`` is the DICOM
    splitting unit (see :func:`rerelrp.data.dicom.load_dicom`); the others come with their splits."""
    source = str(source)
    if source == MEDICAL_DEMO_SOURCE:
        raise DataError(source, "the medical demo is three data sets, one task each: expand it with expand_sources()")
    if source == "demo":
        return load_demo(seed=seed)
    path = Path(source)
    if path.is_dir() or path.suffix.lower() == ".zip":

        return load_dicom(path, seed=seed, group_by=group_by)
    return load_medmnist(source, root=root, download=download, seed=seed)


def reload_dataset(spec):
    """Load a data set again from the ``reload`` record its loader left in its provenance.

    Only files on disk leave such a record (uploads are never stored, so they cannot be re-read);
    the record holds the path and the loader's options, never pixels.
    """
    loader = spec.get("loader")
    if loader == "demo":
        return load_demo(seed=spec.get("seed", 0))
    if loader == "medmnist":
        return load_medmnist(spec["source"], seed=spec.get("seed", 0))
    if loader == "dicom":

        options = ("seed", "size", "window", "frames", "max_frames", "group_by", "manifest", "name")
        return load_dicom(spec["source"], **{k: spec[k] for k in options if spec.get(k) is not None})
    raise DataError(spec.get("source", "?"), f"no way to load this data set again (loader {loader!r})")


def reload_tasks(task_records):
    """The tasks described by ``task_records`` (``Task.describe()`` dicts), rebuilt from their sources.

    Raises :class:`DataError` naming the first task whose data cannot be loaded again (an upload,
    a moved file); callers check the result against saved fingerprints.
    """

    loaded, tasks = {}, []
    for record in task_records:
        spec = (record.get("provenance") or {}).get("reload")
        if not spec:
            raise DataError(record["name"], "its data were uploaded and are not stored, so they cannot be loaded again")
        key = repr(sorted(spec.items()))
        if key not in loaded:
            loaded[key] = reload_dataset(spec)
        ds = loaded[key]
        missing = [c for c in record["classes"] if c not in ds.class_names]
        if missing:
            raise DataError(spec.get("source", ds.name), f"no longer has the class(es) {missing} of task {record['name']}")
        tasks.append(task_from_classes(ds, [ds.class_names.index(c) for c in record["classes"]], name=record["name"]))
    return tasks
