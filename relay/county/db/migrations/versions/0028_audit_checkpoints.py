"""audit checkpoints: the signed anchors of the audit chain; TRUNCATE and SQLite blocked

``audit_checkpoints`` keeps every checkpoint the worker signed (count + head id + head hash
+ time, Ed25519 under a county key kept outside the database); ``round`` is unique, so two
workers write one checkpoint per round. The database copy is only one of several: the
checkpoint folder and the edges keep theirs, and every copy is checked by its signature.

Append-only, like ``audit_events``: PostgreSQL now also refuses TRUNCATE (a statement-level
trigger) on both tables, and SQLite, which had no trigger at all, refuses UPDATE and DELETE.
Note: an Alembic ``batch_alter_table`` on these tables in SQLite recreates the table and
drops its triggers; a later migration doing that must create them again.

Revision ID: 0028
Revises: 0024
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0028'
down_revision = '0024'
branch_labels = None
depends_on = None

TABLES = ("audit_events", "audit_checkpoints")


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('head_id', sa.BigInteger(), nullable=False),
    sa.Column('head_hash', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints')),
    sa.UniqueConstraint('round', name=op.f('uq_audit_checkpoints_round'))
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # The function of migration 0008 raises 'audit_events is append-only'; reused here.
        op.execute("""
            CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
            FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""")
        for table in TABLES:
            op.execute(f"""
                CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()""")
    elif dialect == "sqlite":
        for table in TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"""
                    CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}
                    BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END""")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints")
    elif dialect == "sqlite":
        for table in TABLES:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    op.drop_table('audit_checkpoints')
