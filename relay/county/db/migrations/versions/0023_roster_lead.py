"""roster lead: a shift can make its reader the on-duty lead (值班组长); escalations name who

``duty_shifts.lead`` marks a roster line whose reader is the county's on-duty lead for its
span; an unacknowledged critical result is escalated to the lead(s) on duty at that moment.
``report_deliveries.escalated_to`` records whom (usernames, comma-separated; empty when no
lead was on duty) next to the existing ``escalated_at``.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('duty_shifts', sa.Column('lead', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.add_column('report_deliveries', sa.Column('escalated_to', sa.String(length=512), server_default=sa.text("''"),
                                                 nullable=False))


def downgrade() -> None:
    op.execute("ALTER TABLE report_deliveries DROP COLUMN escalated_to")
    op.execute("ALTER TABLE duty_shifts DROP COLUMN lead")
