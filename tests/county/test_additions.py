"""Instances that arrive after a study was forwarded or read: shown, never merged silently."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.auth.service import Principal
from relay.county.db.engine import session_scope
from relay.county.reading import service
from relay.county.db.models import OutboxEvent, Report, StudyTransition
from relay.county.worklist.service import worklist
from relay.dicom import wire
from relay.dicom.bundle import FrameHeader, encode_bundle
from relay.dicom.vocab import Role
from tests.county.test_bundles import auth, build, send
from tests.county.test_index import index, ingest
from tests.county.test_reading import principal, queue_studies
from tests.county.test_dicomweb import index_all
from tests.county.test_delivery import signed_study
from tests.factories import encode, make_dataset, make_site, sha256


def reader_view(county) -> list:
    with county.sessions() as s:
        return worklist(session=s, principal=Principal(1, "r", Role.RADIOLOGIST, None))


def late_bundle(ds) -> tuple[dict, bytes]:
    """A one-instance bundle whose frame carries the edge's late flag."""
    spec, _ = build([encode(ds)])
    data = encode(ds)
    out = io.BytesIO()
    encode_bundle([(FrameHeader(ds.SOPInstanceUID, sha256(data), len(data), "routine", "CT01", "",
                                late=True), data)], encoding="zstd", out=out)
    spec.update(size=len(out.getvalue()), sha256=sha256(out.getvalue()))
    return spec, out.getvalue()


def test_an_instance_the_edge_flags_late_is_an_addition_on_the_worklist(county):
    _, token = make_site(county)
    first = make_dataset()
    later = make_dataset(StudyInstanceUID=first.StudyInstanceUID)
    with TestClient(create_app(county)) as client:
        for spec, body in (build([encode(first)]), late_bundle(later)):
            send(client, token, spec, body)
            done = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
            assert done.status_code == 200
    index_all(county)
    (item,) = reader_view(county)
    assert item.notes and item.notes[0].startswith("补传图像 1 幅")


def test_an_instance_arriving_while_the_study_is_read_is_marked_not_merged(county):
    (uid,) = queue_studies(county, 1)
    wang = principal(county, "dr.wang")
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=wang, study_uid=uid)
    index(county, ingest(county, encode(make_dataset(StudyInstanceUID=uid)), site_id=county._test_site))
    (item,) = reader_view(county)
    assert item.state == "assigned" and item.assigned_to == "dr.wang"
    assert item.notes[0].startswith("补传图像 1 幅")


def test_an_instance_arriving_after_signing_reopens_the_study_and_keeps_the_report(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county)
    index(county, ingest(county, encode(make_dataset(StudyInstanceUID=uid)), site_id=county._test_site))
    (item,) = reader_view(county)
    assert (item.state, item.assigned_to) == ("queued", None)
    with county.sessions() as s:
        assert s.execute(select(Report.status)).scalar_one() == "signed"
        last = s.execute(select(StudyTransition).order_by(StudyTransition.id.desc()).limit(1)).scalar_one()
        assert last.state == "queued" and last.detail.startswith("reopened")
        assert s.execute(select(OutboxEvent.topic).order_by(OutboxEvent.id.desc()).limit(1)).scalar_one() == "study.reopened"
