"""QIDO-RS study search: paging, newest first, PatientName wildcards whichever way the
repository finds them (real PostgreSQL, real S3, real HTTP with `dicomweb-client`)."""

from __future__ import annotations

import pydicom
import pytest

from relay.county.context import County
from relay.county.dicomweb import repository
from relay.dicom.vocab import Role
from tests.county.test_dicomweb import client_for, server, user_token  # noqa: F401 (fixture)
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site

# (PatientName, PatientID, StudyDate, Modality), in the order they are stored
PEOPLE = [
    ("丁^伟", "D001", "20260105", "CT"),
    ("王^芳", "W001", "20260107", "DX"),
    ("Ding^Min=丁^敏", "D002", "20260110", "CR"),
    ("丁^伟", "D001", "20260110", "CT"),  # same day as the one before: the later one first
    ("李^娜", "L001", "20260111", "US"),
    ("丁^强", "D003", "20260102", "DX"),
    ("王^丁", "W002", "20260120", "CT"),  # 丁 as a given name: not a match for 丁*
    ("丁^磊", "D004", "20260115", "MR"),
]


@pytest.fixture
def studies(county: County) -> list[str]:
    """Study UIDs of PEOPLE, one study each, stored and indexed in that order."""
    site_id, _ = make_site(county, "qingshan")
    uids = []
    for name, patient_id, date, modality in PEOPLE:
        ds = make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName=name, PatientID=patient_id,
                          StudyDate=date, Modality=modality)
        index(county, ingest(county, encode(ds), site_id=site_id))
        uids.append(str(ds.StudyInstanceUID))
    return uids


def newest_first(uids: list[str], wanted: list[int]) -> list[str]:
    """UIDs of PEOPLE[wanted], by StudyDate descending, later stored first on a tie."""
    return [uids[i] for i in sorted(wanted, key=lambda i: (PEOPLE[i][2], i), reverse=True)]


def query(patient_name: str | None, *, limit: int, offset: int) -> repository.StudyQuery:
    return repository.StudyQuery(study_uids=[], patient_name=patient_name, patient_id=None,
                                 accession_number=None, study_date=None, modality=None,
                                 site_id=None, limit=limit, offset=offset)


def test_a_name_search_pages_alike_whether_it_gathers_or_walks(county, studies):
    ding = newest_first(studies, [0, 2, 3, 5, 7])
    for offset in (0, 2, 4, 6):
        q = query("丁*", limit=2, offset=offset)
        with county.sessions() as s:
            gathered = [row.study_uid for row in repository.search_studies(s, q)]
            walked = [row.study_uid for row in repository.search_studies(s, q, name_fanout=0)]
            at_the_edge = [row.study_uid for row in repository.search_studies(s, q, name_fanout=4)]
        assert gathered == walked == at_the_edge == ding[offset:offset + 2]


def test_a_name_nobody_has_finds_nothing(county, studies):
    with county.sessions() as s:
        assert repository.search_studies(s, query("赵*", limit=10, offset=0)) == []


def test_qido_pages_with_limit_and_offset_newest_first(server, county, studies):  # noqa: F811
    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    everyone = newest_first(studies, list(range(len(PEOPLE))))
    page = dw.search_for_studies(offset=2, limit=3)
    assert [pydicom.Dataset.from_json(s).StudyInstanceUID for s in page] == everyone[2:5]
    ding = dw.search_for_studies(search_filters={"PatientName": "丁*"}, offset=1, limit=10)
    assert [pydicom.Dataset.from_json(s).StudyInstanceUID for s in ding] == newest_first(studies, [0, 2, 3, 5, 7])[1:]


def test_a_search_result_describes_the_study_and_its_patient(server, county, studies):  # noqa: F811
    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    [found] = dw.search_for_studies(search_filters={"PatientName": "*敏"})
    ds = pydicom.Dataset.from_json(found)
    assert (str(ds.PatientName), ds.PatientID, ds.StudyDate, ds.ModalitiesInStudy) == \
        ("Ding^Min=丁^敏", "D002", "20260110", "CR")
    assert (ds.NumberOfStudyRelatedSeries, ds.NumberOfStudyRelatedInstances) == (1, 1)
    assert "IssuerOfPatientID" not in ds or not ds.IssuerOfPatientID  # a township's own IDs: no issuer shown
    # dicomweb-client sends Host without the port; the URL follows the Host the client used
    assert found["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{ds.StudyInstanceUID}")
