"""The watchdog (schema version 6): the ``check_ages`` ledger, how many files of each site
were last verified in each hour (or wait for a first verdict since then), which ``pnfsmon
status`` sums for overdue files and verification ages instead of scanning ``statuses``.

Filled from the rows already there, in one pass (the rule is ``schema.ages.stamp``).

Revision ID: 0006
Revises: 0005
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
# Status codes at this revision: ok and the problems; changed; vanished, nearline and lost
# (revision 0004's).
VERIFIED, CHANGED, UNWATCHED = "(1, 2, 3, 4, 5)", "(1, 2, 3, 4, 5, 6)", "(7, 8, 9)"


def upgrade() -> None:
    ages = op.create_table(
        "check_ages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("hour", sa.BigInteger),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("last_recorded", sa.Double),
        sa.PrimaryKeyConstraint("id", name="pk_check_ages"),
    )
    statuses = sa.table("statuses", sa.column("site"), sa.column("status"),
                        sa.column("checked"), sa.column("crawl_gen"))
    s = statuses.c
    crawls = sa.table("crawls", sa.column("id"), sa.column("started"))
    # Literals, not bound parameters: PostgreSQL must see the GROUP BY expressions as the
    # same ones as in the SELECT list.
    verified = s.status.op("IN")(sa.literal_column(VERIFIED))
    kept = s.status.op("IN")(sa.literal_column(CHANGED))
    hours = sa.case((kept, s.checked), else_=crawls.c.started) / sa.literal_column("3600.0")
    if op.get_bind().dialect.name == "sqlite":
        hour = sa.cast(hours, sa.BigInteger)  # truncates: the floor of a positive time
    else:
        hour = sa.cast(sa.func.floor(hours), sa.BigInteger)
    rows = (sa.select(s.site.label("site"),
                      sa.case((verified, sa.true()), else_=sa.false()).label("verified"),
                      hour.label("hour"), sa.case((kept, s.checked), else_=None).label("last"))
            .select_from(statuses.outerjoin(crawls, crawls.c.id == s.crawl_gen))
            .where(s.status.op("NOT IN")(sa.literal_column(UNWATCHED)))
            .subquery())
    op.execute(ages.insert().from_select(
        ["site", "verified", "hour", "files", "last_recorded"],
        sa.select(rows.c.site, rows.c.verified, rows.c.hour, sa.func.count(),
                  sa.func.max(rows.c.last))
        .group_by(rows.c.site, rows.c.verified, rows.c.hour)))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="6"))


def downgrade() -> None:
    op.drop_table("check_ages")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="5"))
