"""unidentified patients: a study without a usable Patient ID becomes a patient of its own

Before this, an empty (or undecodable) Patient ID was upserted as the patient ``''`` of
its township (or issuer): every study without an ID shared one patient row, so the
worklist showed one person's name for another's study and strangers' studies were
listed as priors. Each such study now gets its own row, keyed ``('', 'study:UID')`` as
``relay.county.studies.identity.patient_key`` makes them, with the study's own name and
the birth date and sex the shared row had; the shared rows left without studies go.
No schema change.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

# The patient rows made from no usable ID: blank, or decoded with replacement characters
# (in the ID or in its issuer), and not already a study's own.
_MERGED = ("(trim(p.patient_id) = '' OR p.patient_id LIKE :bad OR p.issuer LIKE :bad) "
           "AND p.issuer NOT LIKE 'study:%'")
_BAD = {"bad": "%\ufffd%"}


def upgrade() -> None:
    op.execute(sa.text(
        "INSERT INTO patients (patient_id, issuer, name, birth_date, sex) "
        "SELECT '', 'study:' || s.study_uid, s.patient_name, p.birth_date, p.sex "
        f"FROM studies s JOIN patients p ON p.id = s.patient_pk WHERE {_MERGED} AND NOT EXISTS "
        "(SELECT 1 FROM patients n WHERE n.patient_id = '' AND n.issuer = 'study:' || s.study_uid)")
        .bindparams(**_BAD))
    op.execute(sa.text(
        "UPDATE studies SET patient_pk = (SELECT n.id FROM patients n WHERE n.patient_id = '' "
        "AND n.issuer = 'study:' || studies.study_uid) "
        f"WHERE patient_pk IN (SELECT p.id FROM patients p WHERE {_MERGED})").bindparams(**_BAD))
    op.execute(sa.text(
        f"DELETE FROM patients WHERE id IN (SELECT p.id FROM patients p WHERE {_MERGED}) "
        "AND NOT EXISTS (SELECT 1 FROM studies s WHERE s.patient_pk = patients.id)").bindparams(**_BAD))


def downgrade() -> None:
    # Merging the studies back under one shared patient would restore the defect; the
    # split rows are valid patients for the code before this revision too.
    pass
