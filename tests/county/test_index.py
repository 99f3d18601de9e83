"""Indexing a stored instance onto the reading queue, on real PostgreSQL and S3."""

from __future__ import annotations

from sqlalchemy import func, select

from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance, Patient, ReadingItem, Series, Study, StudyTransition
from relay.county.ingest.service import Upload, ingest_instance
from relay.county.studies.service import index_instance
from relay.county.auth.service import Principal
from relay.county.worklist.service import worklist
from relay.dicom.vocab import Priority, Role
from tests.factories import encode, make_dataset, make_site, sha256

from relay.county.db.models import Site


def ingest(county: County, data: bytes, *, site_id: int, priority: Priority = Priority.ROUTINE) -> int:
    with session_scope(county.sessions) as s:
        site = s.get(Site, site_id)
        up = Upload(data=data, claimed_sha256=sha256(data), priority=priority, calling_ae="M1",
                    edge_received_at=None)
        result = ingest_instance(session=s, store=county.store, site=site, upload=up, max_bytes=10**8)
    assert result.instance_id is not None
    return result.instance_id


def index(county: County, instance_id: int) -> None:
    with session_scope(county.sessions) as s:
        index_instance(session=s, store=county.store, instance_id=instance_id)


def reader() -> Principal:
    return Principal(user_id=1, username="r", role=Role.RADIOLOGIST, site_id=None)


def counts(county: County) -> tuple[int, ...]:
    with county.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in
                     (Patient, Study, Series, Instance, StudyTransition, ReadingItem))


def test_gb18030_and_utf8_names_reach_the_worklist_exact(county):
    site_id, _ = make_site(county)
    gb = make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明", PatientID="G1")
    utf = make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Li^Na=李^娜", PatientID="U1")
    for ds in (gb, utf):
        index(county, ingest(county, encode(ds), site_id=site_id))
    with county.sessions() as s:
        names = {i.patient_id: i.patient_name for i in worklist(session=s, principal=reader())}
    assert names == {"G1": "王^小明", "U1": "Li^Na=李^娜"}


def test_the_gb18030_bytes_are_really_gb18030_on_the_wire(county):
    data = encode(make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明"))
    assert "王".encode("gb18030") in data and "王".encode("utf-8") not in data


def test_indexing_twice_leaves_the_same_rows(county):
    site_id, _ = make_site(county)
    iid = ingest(county, encode(make_dataset()), site_id=site_id)
    index(county, iid)
    first = counts(county)
    index(county, iid)
    assert counts(county) == first == (1, 1, 1, 1, 2, 1)


def test_series_of_one_study_make_one_worklist_item_with_both_modalities(county):
    site_id, _ = make_site(county)
    study = make_dataset()
    other_series = make_dataset(StudyInstanceUID=study.StudyInstanceUID, Modality="SR",
                                PatientID=study.PatientID)
    for ds in (study, other_series):
        index(county, ingest(county, encode(ds), site_id=site_id))
    with county.sessions() as s:
        items = worklist(session=s, principal=reader())
    assert len(items) == 1 and items[0].modality == "CT\\SR"


def test_stat_studies_come_first_and_a_stat_instance_escalates_its_study(county):
    site_id, _ = make_site(county)
    routine_a, routine_b, stat = make_dataset(), make_dataset(), make_dataset()
    index(county, ingest(county, encode(routine_a), site_id=site_id))
    index(county, ingest(county, encode(routine_b), site_id=site_id))
    index(county, ingest(county, encode(stat), site_id=site_id, priority=Priority.STAT))
    late_stat = make_dataset(StudyInstanceUID=routine_b.StudyInstanceUID)
    index(county, ingest(county, encode(late_stat), site_id=site_id, priority=Priority.STAT))
    with county.sessions() as s:
        items = worklist(session=s, principal=reader())
    order = [(i.study_instance_uid, i.priority) for i in items]
    assert order == [(routine_b.StudyInstanceUID, "stat"), (stat.StudyInstanceUID, "stat"),
                     (routine_a.StudyInstanceUID, "routine")]


def test_a_technician_sees_only_the_studies_of_their_site(county):
    a_id, _ = make_site(county, "township-a")
    b_id, _ = make_site(county, "township-b")
    index(county, ingest(county, encode(make_dataset(PatientID="A1")), site_id=a_id))
    index(county, ingest(county, encode(make_dataset(PatientID="B1")), site_id=b_id))
    tech_a = Principal(user_id=9, username="t", role=Role.TECHNICIAN, site_id=a_id)
    with county.sessions() as s:
        assert [i.patient_id for i in worklist(session=s, principal=tech_a)] == ["A1"]
        assert len(worklist(session=s, principal=reader())) == 2


def test_same_patient_id_at_two_townships_is_two_patients(county):
    a_id, _ = make_site(county, "township-a")
    b_id, _ = make_site(county, "township-b")
    index(county, ingest(county, encode(make_dataset(PatientID="0001", PatientName="A")), site_id=a_id))
    index(county, ingest(county, encode(make_dataset(PatientID="0001", PatientName="B")), site_id=b_id))
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Patient)) == 2
