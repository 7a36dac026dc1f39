"""Due times (schema version 8): ``statuses.claim_key`` of a checked file becomes the time it
is next due (its last check plus its site's ``recheck_after``) instead of the time of that
check, so one claim reads one range of the claim index (``claim_key <= now``) whatever the
mix of sites and periods; ``site_schedule`` keeps the period each site's keys hold.

Revision 0007 kept the time of the last check; the code before this revision judged every
check without ``--site`` (and every report) by the 30-day default, so the keys move by that:
no site has a row yet, which means the default. The next crawl, check or ``condor submit``
with a configuration file brings each site to its ``recheck_after`` (``schema.schedule``).
Keys of 0 (due at once), -1 (asked for) and NULL (leased, not to be checked) stay.

Revision ID: 0008
Revises: 0007
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DEFAULT_RECHECK = 30 * 86400.0  # the default period when this revision was written
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
statuses = sa.table("statuses", sa.column("site"), sa.column("claim_key", sa.Double))
schedule = sa.table("site_schedule", sa.column("site"), sa.column("recheck_after", sa.Double))


def upgrade() -> None:
    op.create_table(
        "site_schedule",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("recheck_after", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("site", name="pk_site_schedule"),
    )
    op.execute(statuses.update().where(statuses.c.claim_key > 0)
               .values(claim_key=statuses.c.claim_key + DEFAULT_RECHECK))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="8"))


def downgrade() -> None:
    # Back to the time of the last check: each site's due times less the period they hold.
    period = sa.func.coalesce(
        sa.select(schedule.c.recheck_after).where(schedule.c.site == statuses.c.site)
        .scalar_subquery(), DEFAULT_RECHECK)
    op.execute(statuses.update().where(statuses.c.claim_key > 0)
               .values(claim_key=statuses.c.claim_key - period))
    op.drop_table("site_schedule")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="7"))
