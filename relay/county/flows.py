"""Work that crosses the county's domains, called by the worker's tasks.

A signed report's renderings are built by reports, stored as instances of the study by
ingest, indexed through the jobs queue and added to the report's delivery, and queued for
the hospital's HIS (relay.county.his) once its PDF exists: no one domain
owns the whole path, so it lives here, above them all.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.context import County
from relay.county.db.models import Patient, Report, ReportDelivery, Site, Study
from relay.county.errors import NotFound
from relay.county.his.delivery import create_messages
from relay.county.ingest.service import Upload, ingest_instance
from relay.county.jobs import enqueue_committed
from relay.county.reports import pdf as pdf_rendering
from relay.county.reports import sr as sr_rendering
from relay.county.reports.delivery import RENDERINGS, add_objects, object_key, put_object
from relay.county.reports.objects import StudyHeader
from relay.dicom.vocab import Priority, ReportStatus


def attach_renderings(county: County, report_id: int) -> dict[str, str]:
    """Build the SR, the printable PDF and the Encapsulated PDF of a signed report, store
    them (the DICOM ones as instances of the study, visible through DICOMweb), and add
    them to the delivery; return their keys. Returns {} at once when there is nothing to
    do (no such signed report, or already attached); deterministic UIDs, bytes and keys
    make a run interrupted halfway a harmless duplicate."""
    with county.sessions() as session:
        report = session.get(Report, report_id)
        found = session.execute(select(ReportDelivery).where(ReportDelivery.report_pk == report_id)).scalar_one_or_none()
        if report is None or report.status != ReportStatus.SIGNED or found is None or \
                set(RENDERINGS) <= set(json.loads(found.object_keys_json)):
            return {}
        study = session.get(Study, report.study_pk)
        site = session.get(Site, study.site_id) if study is not None else None
        if study is None or site is None:
            raise NotFound(f"report {report_id}: its study or site is gone")
        header = _study_header(session, study)
        document = json.loads(report.document_json)
        sr = sr_rendering.build_sr(document=document, study=header, signature_b64=report.signature, key_id=report.key_id)
        pdf = pdf_rendering.build_pdf(document=document, study=header, key_id=report.key_id, signature_b64=report.signature)
        encapsulated = pdf_rendering.build_encapsulated_pdf(pdf=pdf, document=document, study=header)
        pending, keys = [], {"pdf": put_object(county.store, object_key(study.study_uid, report.revision, "report.pdf"), pdf)}
        for name, data in (("sr", sr), ("encapsulated_pdf", encapsulated)):
            # Stored once, as an instance of the study; the delivery points at that object.
            upload = Upload(data=data, claimed_sha256=None, priority=Priority.ROUTINE,
                            calling_ae="COUNTY_REPORT", edge_received_at=None)
            result = ingest_instance(session=session, store=county.store, site=site, upload=upload,
                                     max_bytes=county.settings.max_instance_bytes)
            keys[name] = result.object_key
            pending += [result.instance_id] if result.instance_id is not None else []
        # The instances are committed; their indexing is enqueued before the delivery is
        # marked, so a failed enqueue makes the retry (which is not yet early) send it again.
        enqueue_committed(county.celery, county.settings, pending)
        # The HIS's messages (one per channel) commit with the delivery's renderings: the PDF
        # they carry is stored, and a retry that finds the renderings attached has nothing to do.
        create_messages(session=session, settings=county.settings, report=report, study=study)
        add_objects(session=session, delivery=found, keys=keys)
    return keys


def _study_header(session: Session, study: Study) -> StudyHeader:
    patient = session.get(Patient, study.patient_pk)
    site = session.get(Site, study.site_id)
    # The study's own name: a corrected name on a later study must come back as corrected,
    # not as the first name indexed for this patient ID.
    name = study.patient_name or (patient.name if patient else "")
    return StudyHeader(study_uid=study.study_uid, patient_name=name,
                       patient_id=patient.patient_id if patient else "",
                       birth_date=patient.birth_date if patient else "", sex=patient.sex if patient else "",
                       accession_number=study.accession_number, study_date=study.study_date,
                       study_time=study.study_time, institution=site.display_name if site else "",
                       modality=study.modalities.replace("\\", "/"), study_description=study.description)
