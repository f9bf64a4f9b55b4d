"""What identifies a patient in a DICOM file, and how none of it leaves the loader.

Nothing identifying is copied into a data set, its provenance or its report. The report lists
which identifying *keywords* a load met (never their values): :func:`scan_identifiers` finds them,
and remembers where their values are so that :func:`scrub` can take them out of an error message
(a decoder may quote the file) before the message becomes a skip reason. The grouping keys of
``group_by`` (patient ID, study and series UIDs) are identifying too: they are read in memory for
the split and never stored.
"""
from __future__ import annotations

import re
from contextlib import suppress

# group_by unit -> the attribute whose value makes one group ("file": every file is its own group), coarse to fine
GROUPINGS = {"patient": "PatientID", "study": "StudyInstanceUID", "series": "SeriesInstanceUID", "file": None}
# what load_dicom's group_by accepts: "auto" picks a unit of GROUPINGS per class (see assemble)
GROUP_BY = ("auto", *GROUPINGS)

# Identifying attributes (after the DICOM basic confidentiality profile, PS3.15 E.1). Besides these,
# every person name (PN), date (DA), date-time (DT), time (TM) and instance UID counts as identifying.
IDENTIFYING = frozenset(
    """
    PatientName PatientID IssuerOfPatientID OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    PatientBirthDate PatientBirthTime PatientBirthName PatientMotherBirthName PatientSex PatientAge
    PatientSize PatientWeight PatientAddress PatientTelephoneNumbers PatientTelecomInformation
    MilitaryRank BranchOfService MedicalRecordLocator EthnicGroup Occupation AdditionalPatientHistory
    PatientComments PatientInsurancePlanCodeSequence PatientReligiousPreference CountryOfResidence
    RegionOfResidence ResponsiblePerson ResponsibleOrganization PregnancyStatus
    InstitutionName InstitutionAddress InstitutionalDepartmentName InstitutionCodeSequence
    ReferringPhysicianName ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers
    PerformingPhysicianName OperatorsName PhysiciansOfRecord NameOfPhysiciansReadingStudy
    RequestingPhysician ScheduledPerformingPhysicianName
    AccessionNumber StudyID StudyInstanceUID SeriesInstanceUID SOPInstanceUID
    MediaStorageSOPInstanceUID FrameOfReferenceUID SynchronizationFrameOfReferenceUID
    ReferencedSOPInstanceUID IrradiationEventUID ConcatenationUID DimensionOrganizationUID
    StationName DeviceSerialNumber StudyDescription SeriesDescription RequestedProcedureDescription
    PerformedProcedureStepDescription PerformedProcedureStepID RequestedProcedureID
    ScheduledProcedureStepID ImageComments RequestAttributesSequence ReferencedPatientSequence
    ReferencedStudySequence ContentCreatorName VerifyingObserverName PersonName
    """.split()
)
REMOVED = "[removed]"


def is_identifying(keyword, vr):
    """Whether an attribute (its keyword and dictionary VR) identifies a patient, a visit or a person."""
    return bool(keyword) and (
        keyword in IDENTIFYING
        or vr in ("PN", "DA", "DT", "TM")
        or (vr == "UI" and keyword.endswith(("InstanceUID", "FrameOfReferenceUID")))
    )


def scan_identifiers(ds, found, values):
    """Add the identifying keywords present in ``ds`` to ``found``; where their values are to ``values``.

    The file meta, the data set and the items of every public sequence (at any depth) are scanned;
    private elements are only noted (the return value says whether there were any): they and the
    sequences under them are never copied, so not looked into. ``values`` gets (data set, tag) pairs;
    a value is read only if a message must be scrubbed.

    Only tags are looked at (and sequences opened), never other values: ``pydicom.Dataset.walk`` would
    do the same recursion but converts every element's value on the way, which made a load of real
    scanner files about four times slower (most of the time went into private vendor elements).
    """
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    private = False
    stack = [ds, getattr(ds, "file_meta", None)]
    while stack:
        current = stack.pop()
        if current is None:
            continue
        for tag in list(current.keys()):
            if tag.is_private:
                private = True
                continue
            keyword = keyword_for_tag(tag)
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = ""
            if vr == "SQ":
                with suppress(Exception):  # an unreadable sequence is simply not copied
                    stack.extend(current[tag].value or [])
            if is_identifying(keyword, vr):
                found.add(keyword)
                if vr != "SQ":
                    values.append((current, tag))  # read only if a message must be scrubbed
    return private


def scrub(text, where, keep=()):
    """``text`` with every identifying value (found at ``where`` in the file) replaced by "[removed]".

    Only the file's own values of identifying attributes are replaced, wherever they occur; values
    are matched as stored, with "^" (the name separator) read as a space, as Python quotes them in a
    message (``repr``) and, for a value that cannot be converted, as its raw bytes. Values shorter than
    3 characters are left, as they would remove ordinary words and numbers. ``keep``: parts of ``text``
    known not to identify anyone (see :class:`~rerelrp.data.dicom.skips.Skip`), left as they are.
    """
    kept = [(m.start(), m.end()) for k in set(keep) if k for m in re.finditer(re.escape(k), text)]
    removed = [False] * len(text)
    for value in identifying_values(where):
        if len(value) < 3:
            continue
        at = text.find(value)
        while at >= 0:
            end = at + len(value)
            if not any(a <= at and end <= b for a, b in kept):  # a value inside a kept part is that part's text
                removed[at:end] = [True] * len(value)
            at = text.find(value, at + 1)
    out = []
    for i, char in enumerate(text):
        if not removed[i]:
            out.append(char)
        elif i == 0 or not removed[i - 1]:
            out.append(REMOVED)
    return "".join(out)


def identifying_values(where):
    """Every text form of the values at ``where`` that a message could quote (see :func:`scrub`)."""
    from pydicom.multival import MultiValue

    values = set()
    for dataset, tag in where:
        forms = []
        with suppress(Exception):  # a value that cannot be read raw is not quoted raw either
            raw = dataset.get_item(tag).value
            if isinstance(raw, bytes):
                forms += [raw, *raw.split(b"\\")]
        with suppress(Exception):  # a value that cannot be converted: its raw bytes (above) remain
            value = dataset[tag].value
            forms += list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        for v in forms:
            if v is None:  # an empty value (str(None) would remove the word "None")
                continue
            if isinstance(v, bytes):
                values |= {repr(v)[2:-1].strip(), v.decode("latin-1").strip(), v.decode("utf-8", "replace").strip()}
                v = v.decode("latin-1")
            text = str(v)
            values |= {text.strip(), text.replace("^", " ").strip(), repr(text)[1:-1].strip()}
    values.discard("")
    return values
