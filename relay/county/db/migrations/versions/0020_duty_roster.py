"""duty roster: time-based duty roster (owned by the reading-queue work); studies.patient_name

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'duty_shifts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('weekday', sa.Integer(), nullable=True),
        sa.Column('on_date', sa.Date(), nullable=True),
        sa.Column('start_time', sa.Time(), nullable=False),
        sa.Column('end_time', sa.Time(), nullable=False),
        sa.Column('label', sa.String(length=64), nullable=False),
        sa.Column('leave', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.CheckConstraint('(weekday IS NULL) <> (on_date IS NULL)', name=op.f('ck_duty_shifts_weekly_or_dated')),
        sa.CheckConstraint('weekday IS NULL OR (weekday >= 0 AND weekday <= 6)',
                           name=op.f('ck_duty_shifts_weekday_range')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_duty_shifts_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_duty_shifts')),
    )
    with op.batch_alter_table('duty_shifts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_duty_shifts_user_id'), ['user_id'], unique=False)
    # The name each study's instances carry (a corrected name must not vanish into the
    # patient row's first one); existing studies take their patient's name.
    op.add_column('studies', sa.Column('patient_name', sa.String(length=512), server_default=sa.text("''"),
                                       nullable=False))
    op.execute("UPDATE studies SET patient_name = (SELECT p.name FROM patients p WHERE p.id = studies.patient_pk)")


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy of studies would trip over its TAT triggers.
    op.execute("ALTER TABLE studies DROP COLUMN patient_name")
    with op.batch_alter_table('duty_shifts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_duty_shifts_user_id'))
    op.drop_table('duty_shifts')
