"""Orders at the county: idempotent on placer number + issuer, changes bump the revision,
a cancel keeps the row, the patient is made from a usable ID only (PostgreSQL)."""

from __future__ import annotations

import pytest

from relay.county.db.models import Patient
from relay.county.orders.service import OrderError, UpsertOutcome, cancel_order, orders_for_site, upsert_order
from relay.dicom.orders import Order, OrderStatus
from tests.factories import make_site


def _order(**kw: object) -> Order:
    base: dict[str, object] = dict(placer_order_number="HIS-1001", placer_issuer="HIS.XZ", accession_number="A1001",
                                   site="township-a", patient_id="P-1", patient_id_issuer="HIS.XZ",
                                   patient_name="王^小明", patient_name_pinyin="Wang^Xiaoming", patient_sex="M",
                                   patient_birth_date="19600102", modality="DX", procedure_description="胸部正位",
                                   clinical_diagnosis="咳嗽待查", scheduled_at="2026-12-07T09:00:00+08:00")
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def test_an_order_sent_twice_is_one_row_and_a_change_bumps_its_revision(county) -> None:
    make_site(county)
    with county.sessions() as s:
        assert upsert_order(s, _order()).outcome is UpsertOutcome.CREATED
        s.commit()
    with county.sessions() as s:
        assert upsert_order(s, _order()).outcome is UpsertOutcome.UNCHANGED
        changed = upsert_order(s, _order(exam_purpose="排除肺炎"))
        assert changed.outcome is UpsertOutcome.UPDATED and changed.row.revision == 2
        s.commit()
    with county.sessions() as s:
        result = cancel_order(s, placer_order_number="HIS-1001", placer_issuer="HIS.XZ")
        assert result.outcome is UpsertOutcome.CANCELLED
        s.commit()
        from relay.county.db.models import Site
        site = s.query(Site).filter_by(name="township-a").one()
        (synced,) = orders_for_site(s, site, now=result.row.scheduled_at)
        assert synced.status == OrderStatus.CANCELLED and synced.revision == 3
        assert synced.patient_name == "王^小明" and synced.exam_purpose == "排除肺炎"
        patient = s.get(Patient, result.row.patient_pk)
        assert patient is not None and (patient.patient_id, patient.issuer, patient.name) == ("P-1", "HIS.XZ", "王^小明")


def test_an_order_for_an_unknown_township_or_without_an_accession_is_refused(county) -> None:
    make_site(county)
    with county.sessions() as s:
        with pytest.raises(OrderError) as unknown:
            upsert_order(s, _order(site="nowhere"))
        assert unknown.value.field == "site"
        with pytest.raises(OrderError) as empty:
            upsert_order(s, _order(accession_number=" "))
        assert empty.value.field == "accession_number"


def test_an_order_without_a_patient_id_makes_no_patient(county) -> None:
    make_site(county)
    with county.sessions() as s:
        row = upsert_order(s, _order(patient_id="", patient_id_issuer="")).row
        assert row.patient_pk is None
