"""QIDO-RS: study search paging, newest first, PatientName wildcards whichever way the
repository finds them; series and instance keys, StudyTime, includefield (real PostgreSQL,
real S3, real HTTP with `dicomweb-client`)."""

from __future__ import annotations

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

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


# --- series and instance levels, StudyTime, includefield --------------------------------------

MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def one_study(county: County) -> dict[str, object]:
    """A study of a CT series (#1, head, instances numbered 1-3, stored out of order) and
    an MR series (#2, one instance)."""
    site_id, _ = make_site(county, "qingshan")
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    sops: dict[int, str] = {}
    for number in (3, 1, 2):
        ds = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=ct, SeriesNumber=1, InstanceNumber=number,
                          BodyPartExamined="HEAD", StudyDate="20260301", AccessionNumber="A77")
        index(county, ingest(county, encode(ds), site_id=site_id))
        sops[number] = str(ds.SOPInstanceUID)
    mr_ds = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=mr, SeriesNumber=2, InstanceNumber=1,
                         Modality="MR", SOPClassUID=MR)
    index(county, ingest(county, encode(mr_ds), site_id=site_id))
    return {"study": study, "ct": ct, "mr": mr, "ct_sops": sops, "mr_sop": str(mr_ds.SOPInstanceUID)}


def reader_client(server: str, county: County) -> DICOMwebClient:
    return client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))


def uids(results: list[dict[str, object]], attribute: str) -> list[str]:
    return [str(getattr(pydicom.Dataset.from_json(r), attribute)) for r in results]


def test_series_are_found_by_modality_uid_and_number(server, county, one_study):  # noqa: F811
    dw, study = reader_client(server, county), one_study["study"]
    assert uids(dw.search_for_series(study), "SeriesInstanceUID") == [one_study["ct"], one_study["mr"]]
    assert uids(dw.search_for_series(study, search_filters={"Modality": "MR"}), "SeriesInstanceUID") == \
        [one_study["mr"]]
    assert uids(dw.search_for_series(study, search_filters={"00080060": "CT"}), "Modality") == ["CT"]
    assert uids(dw.search_for_series(study, search_filters={"SeriesNumber": 2}), "Modality") == ["MR"]
    by_uid = dw.search_for_series(study, search_filters={"SeriesInstanceUID": one_study["ct"]})
    assert uids(by_uid, "SeriesInstanceUID") == [one_study["ct"]]
    assert dw.search_for_series(study, search_filters={"Modality": "US"}) == []
    # the study in the path answers StudyInstanceUID: no warning, and another study matches nothing
    assert len(dw.search_for_series(study, search_filters={"StudyInstanceUID": study})) == 2
    assert dw.search_for_series(study, search_filters={"StudyInstanceUID": "1.2.3"}) == []
    assert dw.search_for_instances(study, search_filters={"0020000D": "1.2.3"}) == []


def test_instances_are_found_by_sop_class_uid_and_number(server, county, one_study):  # noqa: F811
    dw, study, ct = reader_client(server, county), one_study["study"], one_study["ct"]
    sops = one_study["ct_sops"]
    assert uids(dw.search_for_instances(study, ct), "SOPInstanceUID") == [sops[1], sops[2], sops[3]]
    assert uids(dw.search_for_instances(study, ct, search_filters={"InstanceNumber": 2}),
                "SOPInstanceUID") == [sops[2]]
    assert uids(dw.search_for_instances(study, search_filters={"SOPClassUID": MR}), "SOPInstanceUID") == \
        [one_study["mr_sop"]]
    both = dw.search_for_instances(study, search_filters={"SOPInstanceUID": f"{sops[3]},{one_study['mr_sop']}"})
    assert sorted(uids(both, "SOPInstanceUID")) == sorted([sops[3], one_study["mr_sop"]])
    # a study's instances carry their series' Modality, and match series keys too
    assert uids(dw.search_for_instances(study, search_filters={"Modality": "MR"}), "Modality") == ["MR"]
    assert dw.search_for_instances(study, one_study["mr"], search_filters={"SOPInstanceUID": sops[1]}) == []


def test_series_and_instances_page_with_limit_and_offset(server, county, one_study):  # noqa: F811
    dw, study, ct = reader_client(server, county), one_study["study"], one_study["ct"]
    sops = one_study["ct_sops"]
    assert uids(dw.search_for_instances(study, ct, limit=2, offset=1), "SOPInstanceUID") == [sops[2], sops[3]]
    assert uids(dw.search_for_instances(study, ct, limit=1), "SOPInstanceUID") == [sops[1]]
    assert uids(dw.search_for_series(study, limit=1, offset=1), "SeriesInstanceUID") == [one_study["mr"]]


def test_includefield_adds_the_asked_attributes_the_index_holds(server, county, one_study):  # noqa: F811
    dw, study = reader_client(server, county), one_study["study"]
    plain = pydicom.Dataset.from_json(dw.search_for_series(study, search_filters={"Modality": "CT"})[0])
    assert "BodyPartExamined" not in plain and "StudyDate" not in plain
    [asked] = dw.search_for_series(study, search_filters={"Modality": "CT"},
                                   fields=["StudyDate", "00080050", "BodyPartExamined"])
    ds = pydicom.Dataset.from_json(asked)
    assert (ds.StudyDate, ds.AccessionNumber, ds.BodyPartExamined) == ("20260301", "A77", "HEAD")
    [everything] = dw.search_for_series(study, search_filters={"Modality": "CT"}, fields=["all"])
    assert pydicom.Dataset.from_json(everything).BodyPartExamined == "HEAD"
    [instance] = dw.search_for_instances(study, search_filters={"InstanceNumber": 3, "Modality": "CT"},
                                         fields=["SeriesDescription", "BodyPartExamined", "StudyDate"])
    assert (pydicom.Dataset.from_json(instance).BodyPartExamined,
            pydicom.Dataset.from_json(instance).StudyDate) == ("HEAD", "20260301")


def test_a_bad_includefield_or_number_is_a_400(server, county, one_study):  # noqa: F811
    headers = {"Authorization": f"Bearer {user_token(server, county, 'reader', Role.RADIOLOGIST)}"}
    base = f"{server}/dicomweb/studies/{one_study['study']}"
    assert requests.get(f"{base}/series", params={"includefield": "NoSuchAttribute"},
                        headers=headers).status_code == 400
    assert requests.get(f"{base}/series", params={"SeriesNumber": "two"}, headers=headers).status_code == 400
    assert requests.get(f"{base}/instances", params={"InstanceNumber": "x"}, headers=headers).status_code == 400


def test_a_key_the_index_cannot_match_is_named_in_a_warning(server, county, one_study):  # noqa: F811
    headers = {"Authorization": f"Bearer {user_token(server, county, 'reader', Role.RADIOLOGIST)}"}
    r = requests.get(f"{server}/dicomweb/studies/{one_study['study']}/series",
                     params={"PerformedProcedureStepStartDate": "20260301", "Modality": "CT"}, headers=headers)
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["Warning"].startswith("299 ") and "PerformedProcedureStepStartDate" in r.headers["Warning"]
    studies = requests.get(f"{server}/dicomweb/studies", params={"00200010": "S1"}, headers=headers)
    assert studies.status_code == 200 and "StudyID" in studies.headers["Warning"]
    assert "Warning" not in requests.get(f"{server}/dicomweb/studies", headers=headers).headers


def test_study_time_matches_a_time_or_a_range(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    by_time = {}
    for time in ("080000", "123015.5", "200000"):
        ds = make_dataset(StudyTime=time)
        index(county, ingest(county, encode(ds), site_id=site_id))
        by_time[time] = str(ds.StudyInstanceUID)
    dw = reader_client(server, county)

    def found(value: str) -> set[str]:
        return set(uids(dw.search_for_studies(search_filters={"StudyTime": value}), "StudyInstanceUID"))

    assert found("1000-1300") == {by_time["123015.5"]}
    assert found("-1230") == {by_time["080000"], by_time["123015.5"]}  # through 12:30:59
    assert found("1231-") == {by_time["200000"]}
    assert found("2000") == {by_time["200000"]}
    assert found("0800-1230") == found("08:00-12:30")
