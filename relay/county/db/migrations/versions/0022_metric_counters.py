"""metric counters: /metrics without counting whole tables (owned by the metrics work)

``metric_deltas`` receives one row per change to a Prometheus figure, written by triggers
in the transaction of the change (so a rolled-back ingest counts nothing, and every way a
row is written, services or bulk imports, counts): an instance inserted (count and bytes,
by site), a study inserted, deleted or changing state or priority (the ``relay_studies``
gauge), a study first having both its arrival and assignment milestones (the
``relay_tat_arrival_to_assignment_seconds`` histogram, by the priority it had then). Writers
only insert, so townships ingesting at once never queue behind a shared counter row; a
scrape folds the deltas into ``metric_counters``. Existing rows are back-filled into
``metric_counters``.

The triggers are created before the back-fill, in the same transaction (PostgreSQL): a
write that races the migration waits for its commit, and then counts through its delta.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

BUCKETS_S = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800)
"""relay.county.metrics.collector.TAT_BUCKETS_S as of this revision (changing those needs a migration)."""

SQLITE_TRIGGERS = ["metric_instances", "metric_studies_insert", "metric_studies_delete", "metric_studies_update",
                   "metric_tat_assign_insert", "metric_tat_assign_update"]


def _seconds(dialect: str, start: str, end: str) -> str:
    if dialect == "postgresql":
        return f"date_part('epoch', {end} - {start})"
    # julianday() is a day fraction in a double: the raw difference of two times 300 s
    # apart can come out a hair above 300 and land in the next bucket. The stored times
    # are whole milliseconds, so rounding to them makes the seconds exact.
    return f"(round((julianday({end}) - julianday({start})) * 86400000.0) / 1000.0)"


def _bucket(seconds: str) -> str:
    """The label ``le`` of the smallest bucket holding ``seconds`` ('inf' past the last)."""
    whens = " ".join(f"WHEN {seconds} <= {le} THEN '{le}'" for le in BUCKETS_S)
    return f"(CASE {whens} ELSE 'inf' END)"


def _assign_deltas(dialect: str, row: str) -> str:
    """VALUES of the two deltas one observed arrival-to-assignment time of study ``row`` adds."""
    d = _seconds(dialect, f"{row}.tat_arrived_at", f"{row}.tat_assigned_at")
    return (f"('tat_assign', {row}.priority || '|' || {_bucket(d)}, 1), "
            f"('tat_assign_sum', {row}.priority, {d})")


ASSIGNED = "{r}.tat_arrived_at IS NOT NULL AND {r}.tat_assigned_at IS NOT NULL"
FIRST_ASSIGNED = f"{ASSIGNED.format(r='NEW')} AND (OLD.tat_arrived_at IS NULL OR OLD.tat_assigned_at IS NULL)"

PG_FUNCTIONS = [
    """CREATE FUNCTION metric_instances() RETURNS trigger AS $$
BEGIN
  INSERT INTO metric_deltas (name, labels, value)
  VALUES ('instances', NEW.site_id::text, 1), ('instance_bytes', NEW.site_id::text, NEW.size);
  RETURN NULL;
END $$ LANGUAGE plpgsql""",
    """CREATE FUNCTION metric_studies() RETURNS trigger AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO metric_deltas (name, labels, value) VALUES ('studies', OLD.state || '|' || OLD.priority, -1);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO metric_deltas (name, labels, value) VALUES ('studies', NEW.state || '|' || NEW.priority, 1);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql""",
    f"""CREATE FUNCTION metric_tat_assign() RETURNS trigger AS $$
BEGIN
  INSERT INTO metric_deltas (name, labels, value) VALUES {_assign_deltas('postgresql', 'NEW')};
  RETURN NULL;
END $$ LANGUAGE plpgsql""",
]

PG_TRIGGERS = [
    """CREATE TRIGGER metric_instances AFTER INSERT ON instances
       FOR EACH ROW EXECUTE FUNCTION metric_instances()""",
    """CREATE TRIGGER metric_studies AFTER INSERT OR DELETE ON studies
       FOR EACH ROW EXECUTE FUNCTION metric_studies()""",
    """CREATE TRIGGER metric_studies_update AFTER UPDATE OF state, priority ON studies FOR EACH ROW
       WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.priority IS DISTINCT FROM NEW.priority)
       EXECUTE FUNCTION metric_studies()""",
    f"""CREATE TRIGGER metric_tat_assign_insert AFTER INSERT ON studies FOR EACH ROW
       WHEN ({ASSIGNED.format(r='NEW')}) EXECUTE FUNCTION metric_tat_assign()""",
    f"""CREATE TRIGGER metric_tat_assign_update AFTER UPDATE OF tat_arrived_at, tat_assigned_at ON studies
       FOR EACH ROW WHEN ({FIRST_ASSIGNED}) EXECUTE FUNCTION metric_tat_assign()""",
]

PG_DROP = [
    "DROP TRIGGER IF EXISTS metric_instances ON instances",
    *(f"DROP TRIGGER IF EXISTS {t} ON studies"
      for t in ("metric_studies", "metric_studies_update", "metric_tat_assign_insert", "metric_tat_assign_update")),
    *(f"DROP FUNCTION IF EXISTS {f}()" for f in ("metric_instances", "metric_studies", "metric_tat_assign")),
]


def _sqlite_triggers() -> list[str]:
    def insert(values: str) -> str:
        return f"INSERT INTO metric_deltas (name, labels, value) VALUES {values};"

    new_study = insert("('studies', NEW.state || '|' || NEW.priority, 1)")
    old_study = insert("('studies', OLD.state || '|' || OLD.priority, -1)")
    return [
        f"""CREATE TRIGGER metric_instances AFTER INSERT ON instances BEGIN
            {insert("('instances', CAST(NEW.site_id AS TEXT), 1), ('instance_bytes', CAST(NEW.site_id AS TEXT), NEW.size)")}
            END""",
        f"CREATE TRIGGER metric_studies_insert AFTER INSERT ON studies BEGIN {new_study} END",
        f"CREATE TRIGGER metric_studies_delete AFTER DELETE ON studies BEGIN {old_study} END",
        f"""CREATE TRIGGER metric_studies_update AFTER UPDATE OF state, priority ON studies
            WHEN OLD.state IS NOT NEW.state OR OLD.priority IS NOT NEW.priority BEGIN {old_study} {new_study} END""",
        f"""CREATE TRIGGER metric_tat_assign_insert AFTER INSERT ON studies WHEN {ASSIGNED.format(r='NEW')}
            BEGIN {insert(_assign_deltas('sqlite', 'NEW'))} END""",
        f"""CREATE TRIGGER metric_tat_assign_update AFTER UPDATE OF tat_arrived_at, tat_assigned_at ON studies
            WHEN {FIRST_ASSIGNED} BEGIN {insert(_assign_deltas('sqlite', 'NEW'))} END""",
    ]


def _backfill(dialect: str) -> None:
    d = _seconds(dialect, "tat_arrived_at", "tat_assigned_at")
    op.execute("""INSERT INTO metric_counters (name, labels, value)
                  SELECT 'instances', CAST(site_id AS TEXT), count(*) FROM instances GROUP BY site_id
                  UNION ALL
                  SELECT 'instance_bytes', CAST(site_id AS TEXT), sum(size) FROM instances GROUP BY site_id
                  UNION ALL
                  SELECT 'studies', state || '|' || priority, count(*) FROM studies GROUP BY state, priority""")
    op.execute(f"""INSERT INTO metric_counters (name, labels, value)
                   SELECT 'tat_assign', priority || '|' || b, count(*)
                   FROM (SELECT priority, {_bucket(d)} AS b FROM studies WHERE {ASSIGNED.format(r='studies')}) o
                   GROUP BY priority, b
                   UNION ALL
                   SELECT 'tat_assign_sum', priority, sum({d}) FROM studies WHERE {ASSIGNED.format(r='studies')}
                   GROUP BY priority""")


def upgrade() -> None:
    op.create_table(
        'metric_deltas',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('labels', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_deltas')),
    )
    op.create_table(
        'metric_counters',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('labels', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name', 'labels', name=op.f('pk_metric_counters')),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for statement in PG_FUNCTIONS + PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _sqlite_triggers():
            op.execute(statement)
    _backfill(dialect)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_DROP:
            op.execute(statement)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table('metric_counters')
    op.drop_table('metric_deltas')
