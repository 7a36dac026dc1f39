"""Years of operation (schema version 3): the ``status_counts`` ledger that ``pnfsmon
status`` reads instead of scanning ``statuses``, and ``statuses.problem_seen``, which
``pnfsmon db prune`` uses to keep every check of a file that is or was a problem.

Both are filled from the rows already there, in one pass each.

Revision ID: 0003
Revises: 0002
Created: 2026-11-24"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
PROBLEMS = (2, 3, 4, 5)  # corrupted, missing, timeout, unreadable at this revision


def upgrade() -> None:
    counts = op.create_table(
        "status_counts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("first_check", sa.Boolean, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_status_counts"),
    )
    # A plain ADD COLUMN on every backend (SQLite too, thanks to the constant default): a
    # batch copy of statuses would cost a full rewrite at ten million rows.
    op.add_column("statuses", sa.Column("problem_seen", sa.Boolean, nullable=False,
                                        server_default=sa.false()))
    statuses = sa.table("statuses", sa.column("id"), sa.column("site"), sa.column("status"),
                        sa.column("size"), sa.column("recorded_from"),
                        sa.column("problem_seen"))
    events = sa.table("events", sa.column("file_id"), sa.column("status"))
    # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression as the
    # same one as in the SELECT list.
    first = sa.case((statuses.c.recorded_from == sa.literal_column("'first_check'"), sa.true()),
                    else_=sa.false())
    op.execute(counts.insert().from_select(
        ["site", "status", "first_check", "files", "bytes"],
        sa.select(statuses.c.site, statuses.c.status, first, sa.func.count(),
                  sa.func.coalesce(sa.func.sum(statuses.c.size), 0))
        .group_by(statuses.c.site, statuses.c.status, first)))
    op.execute(statuses.update().where(sa.or_(
        statuses.c.status.in_(PROBLEMS),
        sa.exists().where(events.c.file_id == statuses.c.id, events.c.status.in_(PROBLEMS)),
    )).values(problem_seen=sa.true()))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))


def downgrade() -> None:
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("problem_seen")
    op.drop_table("status_counts")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
