"""tat dashboard: turnaround dashboard aggregation (owned by the TAT work)

Per-study milestone columns on ``studies`` (the first transition into each state, the
edge's earliest receipt, who signed first), kept by triggers so that every way a
transition or an instance row is written (services, bulk imports) keeps them right;
an index on ``studies.created_at`` for the dashboard windows. Existing rows are
back-filled from the recorded transitions.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

MILESTONES = {"arrived": "tat_arrived_at", "assigned": "tat_assigned_at", "reading": "tat_reading_at",
              "signed": "tat_signed_at", "delivered": "tat_delivered_at", "acknowledged": "tat_acknowledged_at"}
"""Transition state -> the column holding the first time the study entered it."""

EDGE_MIN = "(SELECT min(i.edge_received_at) FROM instances i WHERE i.study_uid = studies.study_uid)"

PG_TRANSITION = """
CREATE FUNCTION studies_tat_transition() RETURNS trigger AS $$
BEGIN
  IF NEW.state = 'arrived' THEN
    UPDATE studies SET tat_arrived_at = NEW.at, tat_edge_at = LEAST(tat_edge_at, %(edge)s)
     WHERE id = NEW.study_pk AND tat_arrived_at IS NULL;
  ELSIF NEW.state = 'signed' THEN
    UPDATE studies SET tat_signed_at = NEW.at, tat_reader = NEW.actor
     WHERE id = NEW.study_pk AND tat_signed_at IS NULL;
  %(others)s
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql""" % {
    "edge": EDGE_MIN,
    "others": "\n  ".join(
        f"ELSIF NEW.state = '{state}' THEN UPDATE studies SET {col} = NEW.at "
        f"WHERE id = NEW.study_pk AND {col} IS NULL;"
        for state, col in MILESTONES.items() if state not in ("arrived", "signed")),
}

PG_INSTANCE = """
CREATE FUNCTION studies_tat_edge() RETURNS trigger AS $$
BEGIN
  IF NEW.edge_received_at IS NOT NULL THEN
    UPDATE studies SET tat_edge_at = NEW.edge_received_at
     WHERE study_uid = NEW.study_uid AND (tat_edge_at IS NULL OR tat_edge_at > NEW.edge_received_at);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql"""


def _sqlite_triggers() -> list[str]:
    statements = [
        f"""CREATE TRIGGER studies_tat_arrived AFTER INSERT ON study_transitions WHEN NEW.state = 'arrived'
        BEGIN UPDATE studies SET tat_arrived_at = NEW.at,
          tat_edge_at = CASE WHEN tat_edge_at IS NULL OR {EDGE_MIN} < tat_edge_at THEN {EDGE_MIN} ELSE tat_edge_at END
          WHERE id = NEW.study_pk AND tat_arrived_at IS NULL; END""",
        """CREATE TRIGGER studies_tat_signed AFTER INSERT ON study_transitions WHEN NEW.state = 'signed'
        BEGIN UPDATE studies SET tat_signed_at = NEW.at, tat_reader = NEW.actor
          WHERE id = NEW.study_pk AND tat_signed_at IS NULL; END""",
    ]
    for state, col in MILESTONES.items():
        if state not in ("arrived", "signed"):
            statements.append(
                f"""CREATE TRIGGER studies_tat_{state} AFTER INSERT ON study_transitions WHEN NEW.state = '{state}'
                BEGIN UPDATE studies SET {col} = NEW.at WHERE id = NEW.study_pk AND {col} IS NULL; END""")
    edge = """BEGIN UPDATE studies SET tat_edge_at = NEW.edge_received_at WHERE study_uid = NEW.study_uid
          AND (tat_edge_at IS NULL OR tat_edge_at > NEW.edge_received_at); END"""
    statements.append(f"CREATE TRIGGER studies_tat_edge_insert AFTER INSERT ON instances "
                      f"WHEN NEW.edge_received_at IS NOT NULL {edge}")
    statements.append(f"CREATE TRIGGER studies_tat_edge_update AFTER UPDATE OF edge_received_at, indexed_at "
                      f"ON instances WHEN NEW.edge_received_at IS NOT NULL {edge}")
    return statements


SQLITE_TRIGGERS = ["studies_tat_arrived", "studies_tat_signed", "studies_tat_edge_insert", "studies_tat_edge_update",
                   *(f"studies_tat_{s}" for s in MILESTONES if s not in ("arrived", "signed"))]


def _backfill() -> None:
    for state, col in MILESTONES.items():
        op.execute(f"""UPDATE studies SET {col} = (SELECT t.at FROM study_transitions t
                       WHERE t.study_pk = studies.id AND t.state = '{state}' ORDER BY t.id LIMIT 1)""")
    op.execute("""UPDATE studies SET tat_reader = (SELECT t.actor FROM study_transitions t
                  WHERE t.study_pk = studies.id AND t.state = 'signed' ORDER BY t.id LIMIT 1)""")
    op.execute(f"UPDATE studies SET tat_edge_at = {EDGE_MIN}")


def upgrade() -> None:
    for col in ("tat_edge_at", *MILESTONES.values()):
        op.add_column("studies", sa.Column(col, sa.DateTime(timezone=True), nullable=True))
    op.add_column("studies", sa.Column("tat_reader", sa.String(length=128), nullable=True))
    op.create_index("ix_studies_created_at", "studies", ["created_at"], unique=False)
    _backfill()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_TRANSITION)
        op.execute("""CREATE TRIGGER studies_tat_transition AFTER INSERT ON study_transitions
                      FOR EACH ROW EXECUTE FUNCTION studies_tat_transition()""")
        op.execute(PG_INSTANCE)
        op.execute("""CREATE TRIGGER studies_tat_edge AFTER INSERT OR UPDATE OF edge_received_at, indexed_at
                      ON instances FOR EACH ROW EXECUTE FUNCTION studies_tat_edge()""")
    else:
        for statement in _sqlite_triggers():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS studies_tat_transition ON study_transitions")
        op.execute("DROP TRIGGER IF EXISTS studies_tat_edge ON instances")
        op.execute("DROP FUNCTION IF EXISTS studies_tat_transition()")
        op.execute("DROP FUNCTION IF EXISTS studies_tat_edge()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_studies_created_at", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        for col in ("tat_reader", "tat_edge_at", *MILESTONES.values()):
            batch.drop_column(col)
