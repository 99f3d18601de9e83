"""signing key validity: each published key names its owner, validity and revocation

``signing_keys.valid_from`` (from the key's creation), ``valid_until`` (set when the
reader makes a newer key), ``revocation_reason`` and ``revoked_by`` (who revoked it)
next to the existing ``revoked_at``. Only readers sign from now on: keys of other
roles (administrators could make them before) end now.

Revision ID: 0025
Revises: 0028
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0025'
down_revision = '0028'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revocation_reason', sa.String(length=500), server_default=sa.text("''"),
                                      nullable=False))
        batch_op.add_column(sa.Column('revoked_by', sa.String(length=128), server_default=sa.text("''"),
                                      nullable=False))
    op.execute("UPDATE signing_keys SET valid_from = created_at")
    op.execute("UPDATE signing_keys SET valid_until = CURRENT_TIMESTAMP WHERE valid_until IS NULL AND user_id IN "
               "(SELECT id FROM users WHERE role <> 'radiologist')")
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('valid_from', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_column('revoked_by')
        batch_op.drop_column('revocation_reason')
        batch_op.drop_column('valid_until')
        batch_op.drop_column('valid_from')
