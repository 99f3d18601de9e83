"""reader regions: body regions (BodyPartExamined) a reader reads, beside the modalities

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # empty for every existing reader: any region, so assignment goes on as before
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_regions', sa.String(length=256), server_default=sa.text("''"),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('body_regions')
