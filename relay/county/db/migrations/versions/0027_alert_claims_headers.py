"""alert claims and instance headers: one sender per critical alert; metadata from the index

``report_deliveries.critical_claimed_at`` and ``escalation_claimed_at``: the moment an
alert round took the township webhook or the escalation of a delivery to send it. A round
claims in a short transaction (a conditional UPDATE: only one round wins), commits, sends,
then records the result; a claim older than the lease is taken again (a round that died
between send and record: at-least-once, the receiver dedupes by the idempotency key).

``instance_headers``: each indexed instance's header as DICOM JSON (no pixel data), written
by the indexer, so that WADO-RS metadata is answered from the index, not by reading the
whole object from the store per instance.

Revision ID: 0027
Revises: 0025
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0027'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('report_deliveries', sa.Column('critical_claimed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('report_deliveries', sa.Column('escalation_claimed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'instance_headers',
        sa.Column('instance_pk', sa.Integer(), nullable=False),
        sa.Column('header_json', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['instance_pk'], ['instances.id'], name=op.f('fk_instance_headers_instance_pk_instances'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('instance_pk', name=op.f('pk_instance_headers')),
    )


def downgrade() -> None:
    op.drop_table('instance_headers')
    op.execute("ALTER TABLE report_deliveries DROP COLUMN escalation_claimed_at")
    op.execute("ALTER TABLE report_deliveries DROP COLUMN critical_claimed_at")
