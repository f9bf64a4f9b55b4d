"""What identifies a patient in a DICOM file, and how none of it leaves the loader.

Nothing identifying is copied into a data set, its provenance or its report. The report lists
which identifying *keywords* a load met (never their values): :func:`scan_identifiers` finds them,
and remembers where their values are so that :func:`scrub` can take them out of an error message
(a decoder may quote the file) before the message becomes a skip reason. The grouping keys of
``group_by`` (patient ID, study and series UIDs) are identifying too: they are read in memory for
the split and never stored.
"""
from __future__ import annotations

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


def scrub(text, where):
    """``text`` with every identifying value (found at ``where`` in the file) replaced by "[removed]".

    Values are matched as stored and with "^" (the name separator) read as a space; values shorter
    than 3 characters are left, as they would remove ordinary words and numbers.
    """
    from pydicom.multival import MultiValue

    values = set()
    for dataset, tag in where:
        try:
            value = dataset[tag].value
        except Exception:  # noqa: BLE001 - unreadable values cannot be in a message either
            continue
        for v in value if isinstance(value, (list, tuple, MultiValue)) else [value]:
            values |= {str(v).strip(), str(v).replace("^", " ").strip()}
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, REMOVED)
    return text
