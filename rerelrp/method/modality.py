"""Which imaging modality each learned task is, and a rule that an image of no learned modality is out of scope.

The scope score (:mod:`rerelrp.method.scope`) compares what an image looks like with each task's stored rows.
A DICOM file also *says* what it is: its Modality attribute (CT, MR, CR, US, ...). When that code is
known and no learned task was trained on that modality, no task can claim the image, whatever the
score: an MR brain slice shown to a chest X-ray -> breast ultrasound model is out of scope.

A task's modality comes from its saved record (``Task.describe()``): DICOM files carry their Modality
code; a MedMNIST file names its flag, and MedMNIST's description of the flag names the modality.
Both map to a small vocabulary of DICOM codes. Anything unknown (a digits demo, an unnamed ``.npz``,
a DICOM file coded SC or OT, a PNG upload) gives None: "no rule", never a guess. When any learned task
is None the rule is off, since that task could be of any modality.
"""
from __future__ import annotations

import re

import numpy as np

from rerelrp.data.dicom import read_dicom_image_with_meta
from rerelrp.data.images import read_image, sniff
from rerelrp.data.medmnist_npz import medmnist_info

# groups of DICOM Modality codes that show the same kind of image; an input code outside all of them
# (SC secondary capture, OT other, ...) says nothing about what the image shows
GROUPS = {
    "X-ray": frozenset({"CR", "DX", "RG"}),  # projection radiography (computed, digital, radiographic)
    "mammography": frozenset({"MG"}),
    "fluoroscopy": frozenset({"RF", "XA"}),
    "ultrasound": frozenset({"US"}),
    "CT": frozenset({"CT"}),
    "MR": frozenset({"MR"}),
    "PET": frozenset({"PT"}),
    "nuclear medicine": frozenset({"NM"}),
    "microscopy": frozenset({"SM", "GM"}),  # slide microscopy, general microscopy
    "fundus photography": frozenset({"OP", "XC"}),  # ophthalmic photography; fundus cameras also write XC
    "OCT": frozenset({"OPT"}),
    "dermatoscopy": frozenset({"XC"}),  # external-camera photography
    "endoscopy": frozenset({"ES"}),
}
KNOWN_CODES = frozenset().union(*GROUPS.values())

# MedMNIST descriptions (medmnist.INFO[flag]["description"]) -> group, first match wins: OCT before CT
DESCRIPTION_KEYWORDS = (
    (re.compile(r"optical coherence tomography", re.I), "OCT"),
    (re.compile(r"fundus", re.I), "fundus photography"),
    (re.compile(r"dermatoscop", re.I), "dermatoscopy"),
    (re.compile(r"ultrasound", re.I), "ultrasound"),
    (re.compile(r"x-ray", re.I), "X-ray"),
    (re.compile(r"computed tomography|\bCT\b"), "CT"),
    (re.compile(r"magnetic resonance|\bMRA?\b"), "MR"),
    (re.compile(r"histolog|microscop", re.I), "microscopy"),
)
# flags whose description names no modality; MedMNIST's paper (Table 1) calls both "Microscope"
FLAG_GROUPS = {"bloodmnist": "microscopy", "tissuemnist": "microscopy"}


def input_modality(code):
    """The canonical code of a DICOM Modality value, or None when it is empty or says nothing (SC, OT, ...)."""
    code = str(code or "").strip().upper()
    return code if code in KNOWN_CODES else None


def group_codes(code):
    """Every code that shows the same kind of image as ``code`` (CR -> CR, DX, RG); empty for an unknown one."""
    return frozenset().union(*(codes for codes in GROUPS.values() if code in codes))


def medmnist_group(flag):
    """The group of a MedMNIST flag from MedMNIST's own description, or None (unknown flag, no modality named)."""
    if not flag:
        return None
    if flag in FLAG_GROUPS:
        return FLAG_GROUPS[flag]

    description = (medmnist_info(flag) or {}).get("description", "")
    return next((group for pattern, group in DESCRIPTION_KEYWORDS if pattern.search(description)), None)


def task_modalities(task_record):
    """The DICOM codes a learned task was trained on (a set), or None when that cannot be told.

    ``task_record``: the task's saved dict (``Task.describe()``). DICOM tasks: the Modality of every
    file of the task's classes (any file without a known code gives None); MedMNIST: the flag's group.
    """
    provenance = (task_record or {}).get("provenance") or {}
    if provenance.get("kind") == "medmnist":
        group = medmnist_group(provenance.get("flag"))
        return set(GROUPS[group]) if group else None
    files = provenance.get("files") or []
    if not files or "modality" not in files[0]:
        return None
    classes = set(task_record.get("classes") or [])
    own = [row for row in files if row.get("class") in classes] or files  # a class-split data set keeps all files
    codes = [input_modality(row.get("modality")) for row in own]
    if any(code is None for code in codes):
        return None
    return set().union(*(group_codes(code) for code in codes))


def describe_codes(codes):
    """'CR/DX/RG' for a set of codes (sorted, for messages)."""
    return "/".join(sorted(codes))


def modality_reason(code, task_sets):
    """Why an input of modality ``code`` is out of scope, or None when a task (or an unknown one) may claim it."""
    code = input_modality(code)
    if code is None or any(codes is None or code in codes for codes in task_sets):
        return None
    learned = ", ".join(dict.fromkeys(describe_codes(codes) for codes in task_sets))
    return f"modality {code}: no learned task is {code} (tasks: {learned})"


def apply_modality(prediction, input_modalities, task_records):
    """Flag every image whose known modality no learned task has, whatever its scope score; returns ``prediction``.

    ``input_modalities``: one DICOM Modality value per image (None for PNG, JPEG or ``.npz`` rows).
    Sets ``out_of_scope[i]`` and ``scope_reason[i]`` (None where the modality rule did not decide).
    """
    n = len(prediction.task)
    if len(input_modalities) != n:
        raise ValueError(f"{len(input_modalities)} modalities for {n} images")
    task_sets = [task_modalities(record) for record in task_records]
    reasons = [modality_reason(code, task_sets) for code in input_modalities] if task_sets else [None] * n
    flagged = np.array([reason is not None for reason in reasons], bool)
    base = np.zeros(n, bool) if prediction.out_of_scope is None else np.asarray(prediction.out_of_scope, bool)
    prediction.out_of_scope = base | flagged
    previous = prediction.scope_reason or [None] * n
    prediction.scope_reason = [reason or old for reason, old in zip(reasons, previous)]
    return prediction


def scope_texts(prediction):
    """One plain-text line per image for tables and CSVs: why it is out of scope, '' when it is in scope."""
    n = len(prediction.task)
    flagged = np.zeros(n, bool) if prediction.out_of_scope is None else np.asarray(prediction.out_of_scope, bool)
    scores = np.full(n, np.nan) if prediction.scope_score is None else np.asarray(prediction.scope_score, float)
    reasons = prediction.scope_reason or [None] * n
    return [reason or (f"scope score {score:.2f} > 1" if flag else "")
            for flag, score, reason in zip(flagged, scores, reasons)]


def read_image_with_modality(data, name="upload", dicom_size=64):
    """``(image, DICOM Modality or None)`` from a file's bytes: the image as :func:`rerelrp.data.images.read_image`
    reads it, and what a DICOM header says it shows (a PNG or JPEG says nothing)."""

    data = bytes(data)
    if data and sniff(data) == "dicom":
        image, meta = read_dicom_image_with_meta(data, name, dicom_size)
        return image, meta.get("modality") or None
    return read_image(data, name, dicom_size=dicom_size), None
