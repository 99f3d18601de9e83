"""A signed report as DICOM Basic Text SR (TID 2000 shape), for the township PACS.

The SR content tree is built from ``highdicom.sr`` content items, which validate each
item at construction; the document around it is written with pydicom, because highdicom
has no Basic Text SR class, its SR base stamps VerificationDateTime with the build time
(we need ``signed_at``, and identical bytes on rebuild) and it needs evidence datasets
that the signed document does not carry. Pure: bytes out.
"""

from __future__ import annotations

import warnings
from typing import Any

from highdicom.sr import CodeContentItem, ContainerContentItem, ContentSequence, PnameContentItem, TextContentItem
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from relay.county.reports.objects import (
    _CONCEPT_MOD, _CONTAINS, _OBS_CONTEXT, ADDENDUM, BASIC_TEXT_SR, CENTRE, CHINESE, COMMENT, CRITICAL_NOTE,
    CRITICAL_RESULTS, FINDING, FINDINGS, IMPRESSION, IMPRESSIONS, LANGUAGE, OBSERVER_TYPE, PERSON,
    PERSON_OBSERVER, RECOMMENDATION, RECOMMENDATIONS, REPORT_TITLE, SIGNED_DOCUMENT, SUMMARY, ObjectUids,
    ReportObject, StudyHeader, _check, _common, _is_addendum, _part10, _reader, _signed_at, object_uids)
from relay.dicom import signing
from relay.dicom.vocab import ReportKind

def _section(heading: Code, item: Code, text: str) -> ContainerContentItem:
    section = ContainerContentItem(heading, relationship_type=_CONTAINS)
    section.ContentSequence = ContentSequence([TextContentItem(item, text, relationship_type=_CONTAINS)])
    return section


def _observer_name(reader: str) -> PnameContentItem:
    with warnings.catch_warnings():
        # The reader is named by the login name (e.g. 'dr.wang'), a one-component PN
        # by design; highdicom warns about every such name.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name",
                                category=UserWarning)
        return PnameContentItem(PERSON_OBSERVER, reader, relationship_type=_OBS_CONTEXT)


def _content(document: dict[str, Any], signed_json: str, predecessor: ObjectUids | None) -> ContainerContentItem:
    root = ContainerContentItem(REPORT_TITLE, is_content_continuous=False, template_id="2000")
    items: list[Any] = [
        CodeContentItem(LANGUAGE, CHINESE, relationship_type=_CONCEPT_MOD),
        CodeContentItem(OBSERVER_TYPE, PERSON, relationship_type=_OBS_CONTEXT),
        _observer_name(_reader(document)),
    ]
    if predecessor is not None:
        note = (f"补充报告（第 {document['revision']} 版），补充第 {int(document['revision']) - 1} 版报告"
                f"（SOP Instance UID {predecessor.sop_uid}）。")
        items.append(_section(ADDENDUM, COMMENT, note))
    if document.get("critical"):
        items.append(_section(CRITICAL_RESULTS, SUMMARY, CRITICAL_NOTE))
    if str(document.get("findings", "")).strip():
        items.append(_section(FINDINGS, FINDING, str(document["findings"])))
    items.append(_section(IMPRESSIONS, IMPRESSION, str(document["impression"])))
    if str(document.get("advice", "")).strip():
        items.append(_section(RECOMMENDATIONS, RECOMMENDATION, str(document["advice"])))
    items.append(TextContentItem(SIGNED_DOCUMENT, signed_json, relationship_type=_CONTAINS))
    root.ContentSequence = ContentSequence(items)
    return root


def _references(study_uid: str, series: dict[str, list[tuple[str, str]]]) -> Dataset:
    """One study item of a hierarchical SOP instance reference (evidence, predecessors)."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedSeriesSequence = []
    for series_uid, instances in series.items():
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        series_item.ReferencedSOPSequence = []
        for sop_class, sop_uid in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
            series_item.ReferencedSOPSequence.append(ref)
        item.ReferencedSeriesSequence.append(series_item)
    return item


def predecessor_of(document: dict[str, Any]) -> ObjectUids | None:
    """The SR of the revision an addendum follows (revision 1 is the report, later ones addenda)."""
    if not _is_addendum(document):
        return None
    previous = int(document["revision"]) - 1
    if previous < 1:
        raise ValueError("an addendum follows a signed report: its revision is at least 2")
    return object_uids(study_uid=str(document["study_instance_uid"]), revision=previous,
                       kind=ReportKind.REPORT if previous == 1 else ReportKind.ADDENDUM, obj=ReportObject.SR)


def request_item(document: dict[str, Any]) -> Dataset | None:
    """The Referenced Request Sequence item (SR Document General) of the signed document's
    order; None for a study read without an order (and every report signed before orders)."""
    order = document.get("order")
    if not order:
        return None
    item = Dataset()
    item.StudyInstanceUID = str(document["study_instance_uid"])
    item.AccessionNumber = str(order.get("accession_number", ""))
    item.PlacerOrderNumberImagingServiceRequest = str(order.get("placer_order_number", ""))
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = str(order.get("placer_issuer", ""))
    item.OrderPlacerIdentifierSequence = [issuer]
    item.FillerOrderNumberImagingServiceRequest = ""
    item.RequestedProcedureID = str(order.get("requested_procedure_id", ""))
    item.RequestedProcedureDescription = str(order.get("procedure_description", ""))[:64]
    item.RequestedProcedureCodeSequence = []
    return item


def build_sr(*, document: dict[str, Any], study: StudyHeader, signature_b64: str, key_id: str) -> bytes:
    """The signed report as a verified Basic Text SR (TID 2000 shape), DICOM Part 10 bytes.

    The signed JSON (document, key id, signature) rides along in a TEXT item, so the SR
    alone is enough for `relay verify-report`.
    """
    _check(document, study)
    addendum = _is_addendum(document)
    revision, kind = int(document["revision"]), str(document.get("kind", ReportKind.REPORT))
    uids = object_uids(study_uid=study.study_uid, revision=revision, kind=kind, obj=ReportObject.SR)
    at = _signed_at(document)
    signed_json = signing.SignedReport(document, key_id, signature_b64).to_json()
    predecessor = predecessor_of(document)
    ds = Dataset()
    _common(ds, study, sop_class=BASIC_TEXT_SR, uids=uids, modality="SR", series_number=9000 + revision,
            series_description="补充报告" if addendum else "诊断报告", at=at)
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag = "COMPLETE", "VERIFIED", "FINAL"
    observer = Dataset()
    observer.VerifyingObserverName = _reader(document)
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = CENTRE
    observer.VerificationDateTime = at.strftime("%Y%m%d%H%M%S") + at.strftime("%z")
    ds.VerifyingObserverSequence = [observer]
    if predecessor is not None:
        ds.PredecessorDocumentsSequence = [
            _references(study.study_uid, {predecessor.series_uid: [(BASIC_TEXT_SR, predecessor.sop_uid)]})]
    if study.evidence:
        by_series: dict[str, list[tuple[str, str]]] = {}
        for series_uid, sop_class, sop_uid in study.evidence:
            by_series.setdefault(series_uid, []).append((sop_class, sop_uid))
        ds.CurrentRequestedProcedureEvidenceSequence = [_references(study.study_uid, by_series)]
    request = request_item(document)
    if request is not None:
        ds.ReferencedRequestSequence = [request]
    ds.PerformedProcedureCodeSequence = []
    for element in _content(document, signed_json, predecessor):
        ds.add(element)
    return _part10(ds)
