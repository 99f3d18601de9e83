"""orders: exam orders from the HIS and the registration page, study-order links, HIS messages

``orders``: one row per (placer order number, issuer), the fields of
relay.dicom.orders.Order; ``studies.order_pk`` / ``order_match`` / ``order_conflict``:
which order a study was done for and how that was decided (a contradiction goes to the
administrator's reconciliation list); ``patients.merged_into_pk``: an HL7 ADT^A40 merge;
``his_messages``: signed reports on their way to the HIS (ORU^R01, DiagnosticReport).

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0029'
down_revision = '0027'
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'orders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('placer_order_number', sa.String(64), nullable=False),
        sa.Column('placer_issuer', sa.String(128), nullable=False),
        sa.Column('accession_number', sa.String(16), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('patient_pk', sa.Integer(), nullable=True),
        sa.Column('patient_id', sa.String(64), nullable=False),
        sa.Column('patient_id_issuer', sa.String(128), nullable=False),
        sa.Column('patient_name', sa.String(512), nullable=False),
        sa.Column('patient_name_pinyin', sa.String(512), nullable=False),
        sa.Column('patient_sex', sa.String(16), nullable=False),
        sa.Column('patient_birth_date', sa.String(8), nullable=False),
        sa.Column('patient_phone', sa.String(32), nullable=False),
        sa.Column('modality', sa.String(16), nullable=False),
        sa.Column('procedure_code', sa.String(64), nullable=False),
        sa.Column('procedure_description', sa.String(256), nullable=False),
        sa.Column('clinical_diagnosis', sa.Text(), nullable=False),
        sa.Column('exam_purpose', sa.Text(), nullable=False),
        sa.Column('history_summary', sa.Text(), nullable=False),
        sa.Column('ordering_department', sa.String(128), nullable=False),
        sa.Column('ordering_doctor', sa.String(128), nullable=False),
        sa.Column('priority', sa.String(16), nullable=False),
        sa.Column('scheduled_at', UTC, nullable=True),
        sa.Column('scheduled_station_ae', sa.String(16), nullable=False),
        sa.Column('requested_procedure_id', sa.String(16), nullable=False),
        sa.Column('scheduled_step_id', sa.String(16), nullable=False),
        sa.Column('study_instance_uid', sa.String(64), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('source', sa.String(16), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('extra_json', sa.Text(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_orders_site_id_sites')),
        sa.ForeignKeyConstraint(['patient_pk'], ['patients.id'], name=op.f('fk_orders_patient_pk_patients')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
        sa.UniqueConstraint('placer_order_number', 'placer_issuer', name='uq_orders_placer'),
    )
    op.create_index('ix_orders_site_status_scheduled', 'orders', ['site_id', 'status', 'scheduled_at'])
    op.create_index(op.f('ix_orders_accession_number'), 'orders', ['accession_number'])
    op.create_index(op.f('ix_orders_site_id'), 'orders', ['site_id'])
    op.create_index(op.f('ix_orders_patient_pk'), 'orders', ['patient_pk'])
    op.create_index(op.f('ix_orders_study_instance_uid'), 'orders', ['study_instance_uid'])
    op.create_index(op.f('ix_orders_status'), 'orders', ['status'])
    op.create_index(op.f('ix_orders_updated_at'), 'orders', ['updated_at'])

    # Plain ADD COLUMN (no table copy: SQLite's batch mode would drop the TAT triggers on
    # studies); the foreign keys are added where ALTER TABLE can (PostgreSQL).
    op.add_column('studies', sa.Column('order_pk', sa.Integer(), nullable=True))
    op.add_column('studies', sa.Column('order_match', sa.String(16), nullable=False, server_default=sa.text("''")))
    op.add_column('studies', sa.Column('order_conflict', sa.Text(), nullable=False, server_default=sa.text("''")))
    op.create_index(op.f('ix_studies_order_pk'), 'studies', ['order_pk'])
    op.add_column('patients', sa.Column('merged_into_pk', sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        op.create_foreign_key(op.f('fk_studies_order_pk_orders'), 'studies', 'orders', ['order_pk'], ['id'])
        op.create_foreign_key(op.f('fk_patients_merged_into_pk_patients'), 'patients', 'patients',
                              ['merged_into_pk'], ['id'])

    op.create_table(
        'his_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('report_pk', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(16), nullable=False),
        sa.Column('order_pk', sa.Integer(), nullable=True),
        sa.Column('message_id', sa.String(64), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('order_cancelled', sa.Boolean(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', UTC, nullable=False),
        sa.Column('claimed_at', UTC, nullable=True),
        sa.Column('last_attempt_at', UTC, nullable=True),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('ack_code', sa.String(8), nullable=False),
        sa.Column('acked_at', UTC, nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['report_pk'], ['reports.id'], name=op.f('fk_his_messages_report_pk_reports')),
        sa.ForeignKeyConstraint(['order_pk'], ['orders.id'], name=op.f('fk_his_messages_order_pk_orders')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_his_messages')),
        sa.UniqueConstraint('report_pk', 'channel', name='uq_his_messages_report_channel'),
        sa.UniqueConstraint('message_id', name=op.f('uq_his_messages_message_id')),
    )
    op.create_index(op.f('ix_his_messages_report_pk'), 'his_messages', ['report_pk'])
    op.create_index(op.f('ix_his_messages_state'), 'his_messages', ['state'])
    op.create_index(op.f('ix_his_messages_next_attempt_at'), 'his_messages', ['next_attempt_at'])


def downgrade() -> None:
    op.drop_table('his_messages')
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_constraint(op.f('fk_patients_merged_into_pk_patients'), 'patients', type_='foreignkey')
        op.drop_constraint(op.f('fk_studies_order_pk_orders'), 'studies', type_='foreignkey')
    op.drop_index(op.f('ix_studies_order_pk'), 'studies')
    op.execute("ALTER TABLE patients DROP COLUMN merged_into_pk")
    for column in ('order_conflict', 'order_match', 'order_pk'):
        op.execute(f"ALTER TABLE studies DROP COLUMN {column}")
    op.drop_table('orders')
